"""A charge point's payloads to the plain types of `_api`, leniently where chargers are sloppy.

The `ocpp` library hands a handler the payload with snake_case keys. For the messages whose schema
check is skipped (see `_link`), the fields the gateway relies on are checked here: a missing or
mistyped one is answered with the OCPP error the schema check would have given, while values
outside OCPP's enums are kept (and logged once) and a meter value that cannot be read is left out
(and logged once), naming the message and the field.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ocpp.exceptions import ProtocolError, TypeConstraintViolationError

from ._api import ENERGY_IMPORT_REGISTER, AuthStatus, BootInfo, IdTagStatus, MeterSample

Warn = Callable[[str, str], None]  # (key it is logged once under, message)

MEASURANDS = frozenset({
    "Current.Export", "Current.Import", "Current.Offered",
    "Energy.Active.Export.Register", "Energy.Active.Import.Register",
    "Energy.Reactive.Export.Register", "Energy.Reactive.Import.Register",
    "Energy.Active.Export.Interval", "Energy.Active.Import.Interval",
    "Energy.Reactive.Export.Interval", "Energy.Reactive.Import.Interval",
    "Frequency", "Power.Active.Export", "Power.Active.Import", "Power.Factor", "Power.Offered",
    "Power.Reactive.Export", "Power.Reactive.Import", "RPM", "SoC", "Temperature", "Voltage",
})
CONTEXTS = frozenset({"Interruption.Begin", "Interruption.End", "Other", "Sample.Clock", "Sample.Periodic",
                      "Transaction.Begin", "Transaction.End", "Trigger"})
PHASES = frozenset({"L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1"})
LOCATIONS = frozenset({"Inlet", "Outlet", "Body", "Cable", "EV"})
STATUSES = frozenset({"Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing",
                      "Reserved", "Unavailable", "Faulted"})
ERROR_CODES = frozenset({
    "ConnectorLockFailure", "EVCommunicationError", "GroundFailure", "HighTemperature", "InternalError",
    "LocalListConflict", "NoError", "OtherError", "OverCurrentFailure", "PowerMeterFailure",
    "PowerSwitchFailure", "ReaderFailure", "ResetFailure", "UnderVoltage", "OverVoltage", "WeakSignal",
})

# OCPP 1.6 UnitOfMeasure, looked up case-insensitively: (the unit kept, the factor to it).
_UNITS: dict[str, tuple[str, float]] = {
    u.casefold(): (u, 1.0) for u in ("Wh", "varh", "W", "VA", "var", "A", "V", "Celsius", "Fahrenheit", "K",
                                     "Percent")
} | {"kwh": ("Wh", 1000.0), "kvarh": ("varh", 1000.0), "kw": ("W", 1000.0), "kva": ("VA", 1000.0),
     "kvar": ("var", 1000.0)}

# The units (after scaling) a measurand may come in; the first is its unit when the charger gives
# none. OCPP's default unit is Wh for every measurand, but chargers leave it out for currents and
# voltages too, where Wh makes no sense. Measurands not listed take any unit, and "" for none.
_FITTING_UNITS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Energy.Active.", ("Wh",)),
    ("Energy.Reactive.", ("varh",)),
    ("Power.Active.", ("W",)),
    ("Power.Offered", ("W",)),
    ("Power.Reactive.", ("var", "VA")),
    ("Current.", ("A",)),
    ("Voltage", ("V",)),
    ("SoC", ("Percent",)),
    ("Temperature", ("Celsius", "Fahrenheit", "K")),
)


def timestamp(value: Any) -> datetime | None:
    """An OCPP dateTime as an aware UTC datetime (one without an offset is taken as UTC); None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def iso(moment: datetime) -> str:
    """An aware datetime as OCPP writes it: UTC, milliseconds, Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def required_int(payload: Mapping[str, Any], key: str) -> int:
    """An integer field the gateway needs; a whole float (12.0, or 12.4 rounded) is taken too."""
    if key not in payload or payload[key] is None:
        raise ProtocolError(details={"cause": f"{_camel(key)} is missing"})
    value = optional_int(payload, key)
    assert value is not None
    return value


def optional_int(payload: Mapping[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeConstraintViolationError(
            details={"cause": f"{_camel(key)} must be an integer, got {value!r}"})
    return value if isinstance(value, int) else round(float(value))


def required_str(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None:
        raise ProtocolError(details={"cause": f"{_camel(key)} is missing"})
    if not isinstance(value, str):
        raise TypeConstraintViolationError(
            details={"cause": f"{_camel(key)} must be a string, got {value!r}"})
    return value


def optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    """A free-text field: kept if it is a string, else None (nothing the gateway acts on)."""
    value = payload.get(key)
    return value if isinstance(value, str) else None


def enum_value(payload: Mapping[str, Any], key: str, known: frozenset[str], warn: Warn) -> str:
    """A required enum field, kept as sent even outside OCPP's values (logged once per value)."""
    value = required_str(payload, key)
    if value not in known:
        warn(f"{key}={value}", f"{_camel(key)} {value!r} is not an OCPP 1.6 value; passed on as it is")
    return value


def boot_info(payload: Mapping[str, Any]) -> BootInfo:
    return BootInfo(
        vendor=required_str(payload, "charge_point_vendor"),
        model=required_str(payload, "charge_point_model"),
        charge_point_serial=optional_str(payload, "charge_point_serial_number"),
        charge_box_serial=optional_str(payload, "charge_box_serial_number"),
        firmware_version=optional_str(payload, "firmware_version"),
        iccid=optional_str(payload, "iccid"),
        imsi=optional_str(payload, "imsi"),
        meter_type=optional_str(payload, "meter_type"),
        meter_serial=optional_str(payload, "meter_serial_number"),
    )


def id_tag_info(status: IdTagStatus) -> dict[str, Any]:
    """An IdTagStatus as OCPP's IdTagInfo (snake_case keys, as the library's payloads have them)."""
    info: dict[str, Any] = {"status": AuthStatus(status.status).value}
    if status.expiry is not None:
        info["expiry_date"] = iso(status.expiry)
    if status.parent_id_tag is not None:
        info["parent_id_tag"] = status.parent_id_tag
    return info


def meter_samples(meter_values: Any, warn: Warn, name: str = "meterValue") -> tuple[MeterSample, ...]:
    """The `meterValue` (or StopTransaction's `transactionData`) list as samples; what cannot be read
    is left out and logged once (`warn` adds the message's name), naming the field.
    """
    if meter_values is None:
        return ()
    if not isinstance(meter_values, list):
        warn(name, f"{name} is not a list ({type(meter_values).__name__}); no samples taken")
        return ()
    samples: list[MeterSample] = []
    for i, entry in enumerate(meter_values):
        field = f"{name}[{i}]"
        if not isinstance(entry, dict):
            warn(f"{name}[]", f"{field} is not an object; left out")
            continue
        moment = timestamp(entry.get("timestamp"))
        if moment is None:
            warn("timestamp", f"{field}.timestamp {entry.get('timestamp')!r} is not a dateTime; left out")
            continue
        values = entry.get("sampled_value")
        if not isinstance(values, list):
            warn("sampledValue", f"{field}.sampledValue is not a list; left out")
            continue
        for j, raw in enumerate(values):
            sample = _sample(raw, moment, f"{field}.sampledValue[{j}]", warn)
            if sample is not None:
                samples.append(sample)
    return tuple(samples)


def _sample(raw: Any, moment: datetime, where: str, warn: Warn) -> MeterSample | None:
    if not isinstance(raw, dict):
        warn("sampledValue[]", f"{where} is not an object; left out")
        return None
    if raw.get("format") == "SignedData":
        return None  # a signed blob (OCMF and the like), not a number
    measurand = raw.get("measurand") or ENERGY_IMPORT_REGISTER
    if not isinstance(measurand, str) or measurand not in MEASURANDS:
        warn(f"measurand={measurand}", f"{where}.measurand {measurand!r} is not an OCPP 1.6 measurand; left out")
        return None
    value = raw.get("value")
    try:
        number = float(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        warn(f"value:{measurand}", f"{where}.value {value!r} ({measurand}) is not a number; left out")
        return None
    fitting = next((units for prefix, units in _FITTING_UNITS if measurand.startswith(prefix)), None)
    given = raw.get("unit")
    if given is None:
        unit, factor = (fitting[0] if fitting else ""), 1.0
    elif isinstance(given, str) and given.casefold() in _UNITS:
        unit, factor = _UNITS[given.casefold()]
    else:
        warn(f"unit={given}", f"{where}.unit {given!r} ({measurand}) is not an OCPP 1.6 unit; left out")
        return None
    if fitting is not None and unit not in fitting:
        warn(f"unit={given}:{measurand}", f"{where}.unit {given!r} does not fit {measurand}; left out")
        return None
    return MeterSample(
        measurand=measurand,
        value=number * factor,
        unit=unit,
        context=_kept(raw, "context", CONTEXTS, where, warn) or "Sample.Periodic",
        timestamp=moment,
        phase=_kept(raw, "phase", PHASES, where, warn),
        location=_kept(raw, "location", LOCATIONS, where, warn),
    )


def _kept(raw: Mapping[str, Any], key: str, known: frozenset[str], where: str, warn: Warn) -> str | None:
    """An optional enum of a sampled value: kept as sent (logged once when it is not OCPP's)."""
    value = raw.get(key)
    if value is None:
        return None
    value = str(value)
    if value not in known:
        warn(f"{key}={value}", f"{where}.{key} {value!r} is not an OCPP 1.6 value; passed on as it is")
    return value


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)
