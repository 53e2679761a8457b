"""OCPP quirk maps: what one charger model does differently from the OCPP 1.6J standard.

One YAML file per model in quirks/, read by the one OCPP driver; the schema is in quirks/README.md.
Unknown keys are errors, and every error names the file and the key path, as for the Modbus maps.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import yaml

EnergyUnit = Literal["Wh", "kWh"]
RateUnit = Literal["A", "W"]
ProfileKind = Literal["Absolute", "Relative"]

ENERGY_UNITS: tuple[EnergyUnit, ...] = ("Wh", "kWh")
RATE_UNITS: tuple[RateUnit, ...] = ("A", "W")
PROFILE_KINDS: tuple[ProfileKind, ...] = ("Absolute", "Relative")
# The messages a charge point sends (OCPP 1.6J), the ones schema_lenient may name.
CHARGER_MESSAGES = (
    "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction",
    "StatusNotification", "StopTransaction",
)
# O16 §4.8/§4.10: the Central System SHALL answer transaction messages, whatever its sanity checks
# say, or the charger retries them; chargers send invalid enums there and in StatusNotification
# (lbbrhzn/ocpp #1248 errorCode "Error", #1576 unit "Hz").
DEFAULT_SCHEMA_LENIENT = frozenset({"MeterValues", "StartTransaction", "StatusNotification", "StopTransaction"})

_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_CONFIG_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,49}$")  # CiString50, as OCPP 1.6 keys are spelled


class QuirksError(ValueError):
    """A quirk map is malformed. The message names the file and the key path."""


@dataclass(frozen=True, slots=True)
class ConfigValue:
    """A configuration key the model needs set at every boot, on top of the site's own keys."""

    key: str
    value: str  # as sent in ChangeConfiguration: booleans "true"/"false", lists comma-separated
    why: str


@dataclass(frozen=True, slots=True)
class SmartCharging:
    """What the model's SetChargingProfile accepts, and how often it may be written."""

    tx_profile: bool = True  # accepts TxProfile; False: the live share goes in a TxDefaultProfile
    default_profile: bool = True  # accepts TxDefaultProfile (the stored fail-safe)
    rate_unit: RateUnit | None = None  # None: unknown; ChargingScheduleAllowedChargingRateUnit decides
    profile_kind: ProfileKind = "Absolute"
    max_periods: int | None = None  # None: unknown (ChargingScheduleMaxPeriods says)
    max_stack_level: int | None = None  # None: unknown (ChargeProfileMaxStackLevel says)
    profile_writes_per_day: int | None = None  # None: no limit known
    profile_min_interval_s: float = 0.0  # least time between two profile writes
    live_current_key: str | None = None  # a configuration key for live current changes instead of profiles


@dataclass(frozen=True, slots=True)
class OcppQuirks:
    """One model's quirk map. Defaults are the standard's behaviour (generic-ocpp16)."""

    model: str
    vendor: str
    description: str = ""
    sources: tuple[str, ...] = ()
    energy_unit: EnergyUnit = "Wh"  # the unit of a sampledValue that gives none (O16: Wh)
    connectors: int = 1
    factory_defaults: Mapping[str, str] = field(default_factory=dict)  # documented values out of the box
    configuration: tuple[ConfigValue, ...] = ()
    read_only: Mapping[str, str] = field(default_factory=dict)  # key -> why it is never written
    smart_charging: SmartCharging = SmartCharging()
    remote_start_required: bool = False  # starts a transaction only on RemoteStartTransaction
    offline_tx_id_negative: bool = False  # known to send transactionId -1 for offline-started transactions
    schema_lenient: frozenset[str] = DEFAULT_SCHEMA_LENIENT  # messages checked without the JSON schema
    local_list_max_length: int | None = None  # None: unknown (LocalAuthListMaxLength says)
    notes: Mapping[str, str] = field(default_factory=dict)  # key path -> why, where the file gave one
    source: str = ""  # the file it was read from

    def why(self, path: str) -> str | None:
        """The reason the file gives for the value at `path` ("smart_charging.tx_profile"), if any."""
        return self.notes.get(path)


def available_quirk_models() -> list[str]:
    """OCPP models with a quirk map in the package, sorted."""
    return sorted(
        entry.name.removesuffix(".yaml") for entry in _dir().iterdir() if entry.name.endswith(".yaml")
    )


def load_quirks(model: str) -> OcppQuirks:
    """Load and validate the packaged quirk map of `model` (e.g. "zaptec-go")."""
    resource = _dir().joinpath(f"{model}.yaml")
    if not isinstance(model, str) or not _MODEL_NAME.match(model) or not resource.is_file():
        raise QuirksError(f"unknown OCPP model {model!r}; known: {', '.join(available_quirk_models())}")
    return parse_quirks(resource.read_text(encoding="utf-8"), f"{model}.yaml")


def parse_quirks(text: str, name: str) -> OcppQuirks:
    """Parse and validate quirk-map text. `name` is the file name used in errors and checked against `model`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise QuirksError(f"{name}: not valid YAML: {exc}") from None
    return _Parser(name).parse(data)


def _dir() -> Any:
    return resources.files("drivers.ocpp").joinpath("quirks")


_TOP_REQUIRED = {"model", "vendor", "sources"}
_TOP_OPTIONAL = {
    "description", "energy_unit", "connectors", "factory_defaults", "configuration", "read_only",
    "smart_charging", "remote_start_required", "offline_tx_id_negative", "schema_lenient",
    "local_list_max_length",
}
_SMART_KEYS = {
    "tx_profile", "default_profile", "rate_unit", "profile_kind", "max_periods", "max_stack_level",
    "profile_writes_per_day", "profile_min_interval_s", "live_current_key",
}


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.notes: dict[str, str] = {}

    def fail(self, key: str, message: str) -> QuirksError:
        return QuirksError(f"{self.source}: {key}: {message}" if key else f"{self.source}: {message}")

    # -- the file --

    def parse(self, data: Any) -> OcppQuirks:
        top = self.section(data, "", required=_TOP_REQUIRED, optional=_TOP_OPTIONAL)
        model = self.str_(top["model"], "model")
        if f"{model}.yaml" != self.source.rsplit("/", 1)[-1]:
            raise self.fail("model", f"{model!r} does not match the file name")
        sources = top["sources"]
        if not isinstance(sources, list) or not sources:
            raise self.fail("sources", "must be a non-empty list of where the values come from")
        energy_unit = self.choice(self.value(top, "energy_unit", "Wh"), "energy_unit", ENERGY_UNITS)
        configuration = self.configuration(top.get("configuration", {}))
        read_only = self.read_only(top.get("read_only", {}))
        never = {k.casefold() for k in read_only}
        for entry in configuration:
            if entry.key.casefold() in never:
                raise self.fail(f"configuration.{entry.key}", "is also in read_only")
        return OcppQuirks(
            model=model,
            vendor=self.str_(top["vendor"], "vendor"),
            description=self.str_(top["description"], "description") if "description" in top else "",
            sources=tuple(self.str_(s, f"sources[{i}]") for i, s in enumerate(sources)),
            energy_unit=energy_unit,
            connectors=self.int_(self.value(top, "connectors", 1), "connectors", lo=1, hi=8),
            factory_defaults=self.factory_defaults(top.get("factory_defaults", {})),
            configuration=configuration,
            read_only=read_only,
            smart_charging=self.smart_charging(top.get("smart_charging", {})),
            remote_start_required=self.bool_(
                self.value(top, "remote_start_required", False), "remote_start_required"
            ),
            offline_tx_id_negative=self.bool_(
                self.value(top, "offline_tx_id_negative", False), "offline_tx_id_negative"
            ),
            schema_lenient=self.schema_lenient(top),
            local_list_max_length=self.optional_int(
                self.value(top, "local_list_max_length", None), "local_list_max_length", lo=1, hi=100_000
            ),
            notes=dict(self.notes),
            source=self.source,
        )

    def configuration(self, data: Any) -> tuple[ConfigValue, ...]:
        if not isinstance(data, dict):
            raise self.fail("configuration", "must be a mapping of key -> {value, why}")
        out: list[ConfigValue] = []
        for key, spec in data.items():
            path = f"configuration.{key}"
            self.config_key(key, path)
            if any(c.key.casefold() == key.casefold() for c in out):
                raise self.fail(path, "given twice (OCPP keys are case-insensitive)")
            raw = self.section(spec, path, required={"value", "why"})
            out.append(ConfigValue(str(key), self.config_value(raw["value"], f"{path}.value"),
                                   self.str_(raw["why"], f"{path}.why")))
        return tuple(out)

    def read_only(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            raise self.fail("read_only", "must be a mapping of key -> why it is never written")
        out: dict[str, str] = {}
        for key, why in data.items():
            self.config_key(key, f"read_only.{key}")
            out[str(key)] = self.str_(why, f"read_only.{key}")
        return out

    def factory_defaults(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            raise self.fail("factory_defaults", "must be a mapping of key -> value")
        out: dict[str, str] = {}
        for key, value in data.items():
            self.config_key(key, f"factory_defaults.{key}")
            out[str(key)] = self.config_value(value, f"factory_defaults.{key}")
        return out

    def smart_charging(self, data: Any) -> SmartCharging:
        key = "smart_charging"
        raw = self.section(data, key, required=set(), optional=_SMART_KEYS)
        tx_profile = self.bool_(self.value(raw, "tx_profile", True, key), f"{key}.tx_profile")
        default_profile = self.bool_(self.value(raw, "default_profile", True, key), f"{key}.default_profile")
        live_key = self.value(raw, "live_current_key", None, key)
        if live_key is not None:
            self.config_key(live_key, f"{key}.live_current_key")
        if not tx_profile and not default_profile and live_key is None:
            raise self.fail(key, "no TxProfile, no TxDefaultProfile and no live_current_key: nothing controls the current")
        rate_unit = self.value(raw, "rate_unit", None, key)
        if rate_unit is not None:
            rate_unit = self.choice(rate_unit, f"{key}.rate_unit", RATE_UNITS)
        writes = self.optional_int(
            self.value(raw, "profile_writes_per_day", None, key), f"{key}.profile_writes_per_day", lo=1, hi=100_000
        )
        return SmartCharging(
            tx_profile=tx_profile,
            default_profile=default_profile,
            rate_unit=rate_unit,
            profile_kind=self.choice(self.value(raw, "profile_kind", "Absolute", key), f"{key}.profile_kind", PROFILE_KINDS),
            max_periods=self.optional_int(self.value(raw, "max_periods", None, key), f"{key}.max_periods", lo=1, hi=1000),
            max_stack_level=self.optional_int(
                self.value(raw, "max_stack_level", None, key), f"{key}.max_stack_level", lo=0, hi=1000
            ),
            profile_writes_per_day=writes,
            profile_min_interval_s=self.number(
                self.value(raw, "profile_min_interval_s", 0, key), f"{key}.profile_min_interval_s", hi=86_400.0
            ),
            live_current_key=live_key,
        )

    def schema_lenient(self, top: dict[str, Any]) -> frozenset[str]:
        raw = self.value(top, "schema_lenient", sorted(DEFAULT_SCHEMA_LENIENT))
        if not isinstance(raw, list):
            raise self.fail("schema_lenient", "must be a list of message names")
        names = [self.choice(name, f"schema_lenient[{i}]", CHARGER_MESSAGES) for i, name in enumerate(raw)]
        if len(set(names)) != len(names):
            raise self.fail("schema_lenient", "names a message twice")
        return frozenset(names)

    # -- values --

    def value(self, data: dict[str, Any], name: str, default: Any, parent: str = "") -> Any:
        """A value given bare or as {value: ..., why: ...}; the why is kept in notes by key path."""
        path = f"{parent}.{name}" if parent else name
        raw = data.get(name, default)
        if isinstance(raw, dict):
            spec = self.section(raw, path, required={"value", "why"})
            self.notes[path] = self.str_(spec["why"], f"{path}.why")
            return spec["value"]
        return raw

    def section(self, data: Any, key: str, *, required: set[str], optional: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a mapping, got {type(data).__name__}")
        allowed = required | (optional or set())
        for name in data:
            if name not in allowed:
                raise self.fail(f"{key}.{name}" if key else str(name), "unknown key")
        for name in sorted(required):
            if name not in data:
                raise self.fail(f"{key}.{name}" if key else name, "missing")
        return data

    def config_key(self, key: Any, path: str) -> str:
        if not isinstance(key, str) or not _CONFIG_KEY.match(key):
            raise self.fail(path, f"{key!r} is not an OCPP configuration key (a letter, then letters, digits, _; <= 50)")
        return key

    def config_value(self, value: Any, path: str) -> str:
        """Configuration values travel as strings: true/false, decimal integers, comma-separated lists."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and len(value) <= 500:
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
            joined = ",".join(value)
            if len(joined) <= 500:
                return joined
        raise self.fail(path, f"must be a boolean, an integer, a string or a list of strings (<= 500 characters), got {value!r}")

    def int_(self, value: Any, key: str, *, lo: int, hi: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.fail(key, f"{value} is outside {lo}..{hi}")
        return value

    def optional_int(self, value: Any, key: str, *, lo: int, hi: int) -> int | None:
        return None if value is None else self.int_(value, key, lo=lo, hi=hi)

    def number(self, value: Any, key: str, *, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {value!r}")
        if not 0 <= value <= hi:
            raise self.fail(key, f"{value} is outside 0..{hi:g}")
        return float(value)

    def bool_(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def choice(self, value: Any, key: str, options: tuple[Any, ...]) -> Any:
        if value not in options:
            raise self.fail(key, f"{value!r} is not one of {', '.join(map(str, options))}")
        return value

    def str_(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value
