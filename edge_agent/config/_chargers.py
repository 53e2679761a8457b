"""The `chargers:` section and what hangs off it: Modbus endpoints, billing meters, RFID readers.

A charger entry is a `ChargerConfig` (Modbus, the default) or, with `protocol: ocpp`, an
`OcppChargerConfig` (in `_ocpp`); both are a `ChargerBase`, which holds what load management and
the sessions need whatever the protocol.

Each section's dataclass carries its settings; the `_check_*` functions below are its cross-field
checks, registered by class in `_load`. Checks across sections (evse_id references, shared buses)
are in `_load` too.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from yaml.nodes import MappingNode

from ._reader import (
    _INVALID,
    _Context,
    _Entries,
    _failsafe_current_problem,
    _hint,
    _join,
    _key_line,
    _line,
    _number,
    _ok,
    _setting,
    _topic_level_problem,
    _Values,
)

# The model names of contract/site-config.md; used when drivers.modbus cannot tell us its maps.
CHARGER_MODELS = (
    "bender-cc613",
    "heidelberg-energy-control",
    "abb-terra-ac",
    "alfen-ng9xx",
    "schneider-evlink-pro-ac",
    "phoenix-charx",
    "etrel-inch",
    "peblar",
)
METER_MODELS = (
    "eastron-sdm630",
    "eastron-sdm120",
    "eastron-sdm72",
    "carlo-gavazzi-em340",
    "abb-b23",
)

# The OCPP quirk maps of drivers/ocpp/quirks; used when drivers.ocpp cannot tell us its maps.
OCPP_MODELS = (
    "ctek-chargestorm",
    "easee-charge",
    "easee-home",
    "generic-ocpp16",
    "wallbox-pulsar",
    "zaptec-go",
    "zaptec-pro",
)

BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


def ocpp_model_names(ctx: _Context) -> frozenset[str]:
    """The OCPP charger models: `known_ocpp_models`, else drivers.ocpp.available_quirk_models()."""
    return ctx.model_names(ctx.known_ocpp_models, "available_quirk_models", OCPP_MODELS, module="drivers.ocpp")


@dataclass(frozen=True, kw_only=True)
class ModbusEndpoint:
    """Where a Modbus device answers: `host`/`port` (TCP) or `serial` (RTU), and its unit id.

    After loading, `transport` is always set, `port` is set exactly when there is a `host`, and
    `baudrate`/`parity`/`stopbits` can only be set with `serial`; None there means the model's
    factory setting, and `unit` None means the model's usual unit id.
    """

    transport: str = _setting(
        "str", "default: tcp with host, rtu with serial; rtu-over-tcp for a serial gateway",
        default="tcp", choices=("tcp", "rtu", "rtu-over-tcp"),
    )
    host: str | None = _setting("str", "Modbus TCP host", default=None)
    port: int | None = _setting("int", "Modbus TCP port, default 502", default=502, min=1, max=65535)
    serial: str | None = _setting("str", "serial port of the RS-485 bus", default=None)
    baudrate: int | None = _setting("int", "default: the model's", default=None, choices=BAUDRATES)
    parity: str | None = _setting("str", "default: the model's", default=None, choices=("N", "E", "O"))
    stopbits: int | None = _setting("int", "default: the model's", default=None, choices=(1, 2))
    unit: int | None = _setting("int", "Modbus unit id; default: the model's", default=None, min=0, max=255)


@dataclass(frozen=True, kw_only=True)
class MeterConfig(ModbusEndpoint):
    model: str = _setting("str", "a meter register map, e.g. eastron-sdm630")


PROTOCOLS = ("modbus", "ocpp")


@dataclass(frozen=True, kw_only=True)
class ChargerBase:
    """What every charger entry has, whatever its protocol: its EVSE id and its place in load
    management. `protocol`, `model` and `connector` are on both kinds too, each with its own
    meaning and range."""

    evse_id: str = _setting("str", "the EVSE's id in topics and events", check=_topic_level_problem)
    max_current_a: float | None = _setting(
        "number", "what a session is offered; default: the charger's maximum", default=None,
        min=6, max=80,
    )
    failsafe_current_a: float | None = _setting(
        "number", "current the charger falls back to if the gateway dies; default: load management's",
        default=None, min=0, max=80, check=_failsafe_current_problem,
    )
    circuit: str | None = _setting(
        "str", "id of a circuits entry; default: on the site connection", default=None
    )
    phases: int = _setting("int", "what the charger is wired for", default=3, choices=(1, 3))
    phase_l1: str = _setting(
        "str", "which site phase the charger's L1 is on", default="L1", choices=("L1", "L2", "L3")
    )
    priority: int = _setting("int", "higher is served first", default=0, min=-9, max=9)


@dataclass(frozen=True, kw_only=True)
class ChargerConfig(ChargerBase, ModbusEndpoint):
    """A Modbus charger (`protocol: modbus`, the default): the gateway polls it."""

    # Keys of an OCPP charger, refused here with the reason rather than as unknown.
    _FOREIGN_KEYS: ClassVar[Mapping[str, str]] = {
        key: "is an OCPP setting; add protocol: ocpp for a charger that connects to the gateway by OCPP"
        for key in ("charge_point_id", "password_file")
    }

    protocol: Literal["modbus"] = _setting(
        "str", "modbus (the gateway polls the charger) or ocpp (the charger connects to the gateway)",
        default="modbus", choices=PROTOCOLS,
    )
    model: str = _setting("str", "a charger register map shipped in drivers/modbus/maps")
    connector: int | None = _setting(
        "int", "charge point behind the unit (phoenix-charx, etrel-inch duo)", default=None,
        min=1, max=255,
    )
    timeout_s: float = _setting("number", "Modbus response timeout", default=1.0, min=0.05, max=30)
    retries: int = _setting("int", "Modbus retries per request", default=1, min=0, max=10)
    failsafe_timeout_s: float | None = _setting(
        "number", "seconds without the gateway before the charger falls back: the setpoint validity set in "
        "ACE (alfen-ng9xx), else the timeout written to the charger; default: what the charger reports, "
        "else the model's", default=None, min=2, max=3600,
    )
    meter: MeterConfig | None = _setting(
        "section", "billing meter; its lifetime register is the session's energy", default=None,
        item=MeterConfig,
    )


@dataclass(frozen=True, kw_only=True)
class ReaderConfig:
    driver: str = _setting(
        "str", "reader type; charger: the card reader built into that EVSE's charger",
        choices=("rdm6300", "pn532", "hid", "charger"),
    )
    port: str | None = _setting("str", "serial port (rdm6300)", default=None)
    device: str | None = _setting(
        "str", "nfcpy device (pn532, e.g. usb) or input device (hid)", default=None
    )
    evse_id: str | None = _setting(
        "str", "the EVSE this reader is mounted on; default: site-wide", default=None
    )


def _check_endpoint(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    has_host, has_serial = "host" in entries, "serial" in entries
    line = _line(node)
    if has_host and has_serial:
        ctx.issue(_join(path, "serial"), _key_line(entries, "serial", node),
                  "give either host (Modbus TCP) or serial (Modbus RTU), not both")
    elif not has_host and not has_serial:
        ctx.issue(path, line, "needs host (Modbus TCP) or serial (Modbus RTU)")
    if "transport" not in entries:
        values["transport"] = "rtu" if has_serial and not has_host else "tcp"
    transport = values["transport"]
    if transport in ("tcp", "rtu-over-tcp") and has_serial and not has_host:
        ctx.issue(_join(path, "transport"), _key_line(entries, "transport", node),
                  f"transport {transport} needs host, not serial")
    if transport == "rtu" and has_host and not has_serial:
        ctx.issue(_join(path, "transport"), _key_line(entries, "transport", node),
                  "transport rtu needs serial, not host (rtu-over-tcp for a serial gateway)")
    if not has_host:
        if "port" in entries:
            ctx.issue(_join(path, "port"), _key_line(entries, "port", node),
                      "port is the TCP port and needs host; the serial port goes in serial")
        values["port"] = None
    if not has_serial:
        for key in ("baudrate", "parity", "stopbits"):
            if key in entries:
                ctx.issue(_join(path, key), _key_line(entries, key, node),
                          f"{key} is a serial setting and needs serial")


def _check_model(ctx: _Context, values: _Values, entries: _Entries, path: str,
                 known: frozenset[str], what: str, *, other: tuple[frozenset[str], str] | None = None,
                 list_known: bool = False) -> None:
    """`model` is one of `known`. `other` is the other protocol's models and what to say of one
    of them; `list_known` lists the known models even when one is close."""
    model = values["model"]
    if _ok(model) and model is not None and model not in known:
        listed = f" (known: {', '.join(sorted(known)) or 'none'})"
        if other is not None and model in other[0]:
            hint = f": {other[1]}{listed if list_known else ''}"
        else:
            hint = _hint(model, known)
            hint = hint + listed if list_known else hint or listed
        ctx.issue(_join(path, "model"), _line(entries["model"][1]), f"unknown {what} model '{model}'{hint}")


def _check_charger_common(ctx: _Context, values: _Values, entries: _Entries, path: str) -> None:
    failsafe, maximum = values["failsafe_current_a"], values["max_current_a"]
    if _ok(failsafe, maximum) and failsafe is not None and maximum is not None and failsafe > maximum:
        ctx.issue(_join(path, "failsafe_current_a"), _line(entries["failsafe_current_a"][1]),
                  f"must not exceed max_current_a ({_number(maximum)}), got {_number(failsafe)}")


def _check_meter(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    _check_endpoint(ctx, values, entries, node, path)
    known = ctx.model_names(ctx.known_meter_models, "available_meter_models", METER_MODELS)
    _check_model(ctx, values, entries, path, known, "meter")


def _check_charger(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    _check_endpoint(ctx, values, entries, node, path)
    known = ctx.model_names(ctx.known_models, "available_models", CHARGER_MODELS)
    model = values["model"]
    if _ok(model) and model is not None and model not in known:
        # The OCPP models are looked up only here: drivers.ocpp is not small.
        _check_model(ctx, values, entries, path, known, "charger", other=(
            ocpp_model_names(ctx), "that is an OCPP charger; add protocol: ocpp and its charge_point_id"))
    _check_charger_common(ctx, values, entries, path)


def _check_reader(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    driver = values["driver"]
    if driver in (None, _INVALID):
        return
    if driver == "charger":  # read through the charger's own Modbus map: no port of its own
        for key in ("port", "device"):
            if key in entries:
                ctx.issue(_join(path, key), _key_line(entries, key, node),
                          "is not used by driver charger (the charger's map has the reader)")
        if "evse_id" not in entries:
            ctx.issue(_join(path, "evse_id"), _line(node), "is required for driver charger")
        return
    needed, unused = ("port", "device") if driver == "rdm6300" else ("device", "port")
    if needed not in entries:
        ctx.issue(_join(path, needed), _line(node), f"is required for driver {driver}")
    if unused in entries:
        ctx.issue(_join(path, unused), _key_line(entries, unused, node),
                  f"is not used by driver {driver} (it takes {needed})")
