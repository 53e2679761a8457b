"""Loading the packaged maps, and checking a map file as a whole (its top level, transport and registers).

The charger-only sections are checked in _mapcontrol; the schema is in maps/README.md.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from ._mapcontrol import ChargerSections
from ._maptypes import (
    DATA_TYPES,
    MAX_READ,
    TABLES,
    TRANSPORT_KINDS,
    TYPE_WORDS,
    Kind,
    MapError,
    ReadBlock,
    Register,
    RegisterMap,
    Transport,
)

_UNSIGNED = ("uint16", "uint32", "uint64")

# Role -> units it may carry after scaling. Roles not listed accept any unit.
_ROLE_UNITS: dict[str, tuple[str | None, ...]] = {
    "state": (None,),
    "energy": ("Wh", "VAh"),
    "energy_export": ("Wh",),
    "session_energy": ("Wh", "VAh"),
    "power": ("W", "VA"),
    "current_l1": ("A",),
    "current_l2": ("A",),
    "current_l3": ("A",),
    "voltage_l1": ("V",),
    "voltage_l2": ("V",),
    "voltage_l3": ("V",),
    "setpoint": ("A",),
    "failsafe_current": ("A",),
    "failsafe_timeout": ("s",),
    "rfid_uid": (None,),
}
_ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def available_models() -> list[str]:
    """Charger models with a map in the package, sorted."""
    return _names("maps")


def available_meter_models() -> list[str]:
    """Meter models with a map in the package, sorted."""
    return _names("meters")


def load_map(model: str) -> RegisterMap:
    """Load and validate the packaged charger map of `model` (e.g. "bender-cc613")."""
    return _load(model, "maps", "charger", available_models)


def load_meter_map(model: str) -> RegisterMap:
    """Load and validate the packaged meter map of `model` (e.g. "eastron-sdm630")."""
    return _load(model, "meters", "meter", available_meter_models)


def load_any_map(model: str) -> RegisterMap:
    """A charger or meter map by model name (the technician's tools take either)."""
    if model in available_meter_models():
        return load_meter_map(model)
    if model in available_models():
        return load_map(model)
    known = ", ".join(available_models() + available_meter_models())
    raise MapError(f"unknown model {model!r}; known: {known}")


def parse_map(text: str, *, source: str, kind: Kind = "charger") -> RegisterMap:
    """Parse and validate map text. `source` is the file name used in errors and checked against `model`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MapError(f"{source}: not valid YAML: {exc}") from None
    return _Parser(source, kind).parse(data)


def _names(folder: str) -> list[str]:
    return sorted(
        entry.name.removesuffix(".yaml") for entry in _dir(folder).iterdir() if entry.name.endswith(".yaml")
    )


def _load(model: str, folder: str, kind: Kind, known: Any) -> RegisterMap:
    resource = _dir(folder).joinpath(f"{model}.yaml")
    if not isinstance(model, str) or not _MODEL_NAME.match(model) or not resource.is_file():
        raise MapError(f"unknown {kind} model {model!r}; known: {', '.join(known())}")
    return parse_map(resource.read_text(encoding="utf-8"), source=f"{model}.yaml", kind=kind)


def _dir(folder: str) -> Any:
    return resources.files("drivers.modbus").joinpath(folder)


_CHARGER_ONLY = frozenset({"states", "control", "setup", "failsafe", "keepalive", "connectors", "never_write"})


class _Parser(ChargerSections):
    # -- top level --

    def parse(self, data: Any) -> RegisterMap:
        required = {"model", "vendor", "transport", "registers"}
        optional = {"description", "read_blocks", "identity", "signature"}
        if self.kind == "charger":
            required |= {"states", "control"}
            optional |= {"setup", "failsafe", "keepalive", "connectors", "never_write"}
        if isinstance(data, dict) and self.kind == "meter":
            for name in data:
                if name in _CHARGER_ONLY:
                    raise self.fail(str(name), "only for charger maps")
        top = self.section(data, "", required=required, optional=optional)
        model = self.str_(top["model"], "model")
        if f"{model}.yaml" != self.source.rsplit("/", 1)[-1]:
            raise self.fail("model", f"{model!r} does not match the file name")
        transport = self.transport(top["transport"])
        written = self.written_roles(top)
        registers = self.registers(top["registers"], written)
        blocks = self.read_blocks(top.get("read_blocks", []), transport)
        identity = self.identity(top.get("identity", []), registers)
        signature = self.signature(top.get("signature", {}), registers)
        if self.kind == "meter":
            if "energy" not in registers:
                raise self.fail("registers.energy", "missing (a meter's lifetime import register)")
            return RegisterMap(
                model=model, vendor=self.str_(top["vendor"], "vendor"), description=str(top.get("description", "")),
                transport=transport, registers=registers, read_blocks=blocks, states={}, control=None,
                setup_writes=(), failsafe=None, keepalive=None, identity=identity, source=self.source,
                kind="meter", signature=signature,
            )
        if "state" not in registers:
            raise self.fail("registers.state", "missing (every charger has a state register)")
        if not registers["state"].readable:
            raise self.fail("registers.state.access", "the state register must be readable")
        if "energy" not in registers and "session_energy" not in registers:
            raise self.fail("registers", "needs energy (lifetime) or session_energy")
        states = self.states(top["states"], registers)
        control = self.control(top["control"], registers)
        connectors = self.connectors(top.get("connectors"), registers)
        never_write = self.never_write(top.get("never_write", []))
        forbidden = {n.address: n.why for n in never_write}
        writes = self.setup(top.get("setup", {}), forbidden)
        if control.pause is not None and control.pause[0] in forbidden:
            raise self.fail("control.pause.address", f"is in never_write ({forbidden[control.pause[0]]})")
        failsafe = self.failsafe(top.get("failsafe"), registers, control)
        keepalive = self.keepalive(top.get("keepalive"), failsafe, registers)
        for role in written:
            reg = registers.get(role)
            if reg is not None and reg.table != "coil" and any(a in forbidden for a in range(reg.address, reg.end)):
                raise self.fail(f"registers.{role}.address", "overlaps never_write")
        if control.pause is not None and control.pause[0] in range(
            registers[control.register].address, registers[control.register].end
        ):
            raise self.fail("control.pause.address", "must not be the control register")
        return RegisterMap(
            model=model,
            vendor=self.str_(top["vendor"], "vendor"),
            description=str(top.get("description", "")),
            transport=transport,
            registers=registers,
            read_blocks=blocks,
            states=states,
            control=control,
            setup_writes=writes,
            failsafe=failsafe,
            keepalive=keepalive,
            identity=identity,
            source=self.source,
            kind="charger",
            connectors=connectors,
            never_write=never_write,
            signature=signature,
        )

    def written_roles(self, top: Any) -> set[str]:
        """Roles the driver writes, which default to access rw."""
        if not isinstance(top, dict) or self.kind != "charger":
            return set()
        out: set[str] = set()
        control = top.get("control")
        if isinstance(control, dict) and isinstance(control.get("register"), str):
            out.add(control["register"])
        failsafe = top.get("failsafe")
        if isinstance(failsafe, dict) and failsafe.get("set_by", "gateway") == "gateway":
            roles = failsafe.get("current_roles", ["failsafe_current"])
            if isinstance(roles, list):
                out.update(r for r in roles if isinstance(r, str))
            out.add("failsafe_timeout")
        keepalive = top.get("keepalive")
        if isinstance(keepalive, dict) and isinstance(keepalive.get("register"), str):
            out.add(keepalive["register"])
        return out

    def transport(self, data: Any) -> Transport:
        key = "transport"
        raw = self.section(
            data, key, required={"kind", "unit"},
            optional={"kinds", "port", "baudrate", "bytesize", "parity", "stopbits", "frame_gap_s",
                      "station_unit", "write_multiple", "max_read"},
        )
        kind = self.choice(raw["kind"], f"{key}.kind", TRANSPORT_KINDS)
        kinds_raw = raw.get("kinds", [kind])
        if not isinstance(kinds_raw, list) or not kinds_raw:
            raise self.fail(f"{key}.kinds", "must be a non-empty list of tcp, rtu")
        kinds = tuple(self.choice(k, f"{key}.kinds", TRANSPORT_KINDS) for k in kinds_raw)
        if kind not in kinds:
            raise self.fail(f"{key}.kinds", f"does not include kind {kind}")
        if "tcp" in kinds and "port" not in raw:
            raise self.fail(f"{key}.port", "missing (the device offers tcp)")
        if "rtu" not in kinds:
            for name in ("baudrate", "bytesize", "parity", "stopbits"):
                if name in raw:
                    raise self.fail(f"{key}.{name}", "only for devices that offer rtu")
        return Transport(
            kind=kind,
            kinds=kinds,
            unit=self.int_(raw["unit"], f"{key}.unit", lo=0, hi=255),
            port=self.int_(raw["port"], f"{key}.port", lo=1) if "port" in raw else None,
            baudrate=self.int_(raw["baudrate"], f"{key}.baudrate", lo=300, hi=1_000_000) if "baudrate" in raw else None,
            bytesize=self.choice(raw.get("bytesize", 8), f"{key}.bytesize", (7, 8)),
            parity=self.choice(raw["parity"], f"{key}.parity", ("N", "E", "O")) if "parity" in raw else None,
            stopbits=self.choice(raw.get("stopbits", 1), f"{key}.stopbits", (1, 2)),
            frame_gap_s=self.number(raw.get("frame_gap_s", 0.0), f"{key}.frame_gap_s", lo=0.0),
            station_unit=(
                self.int_(raw["station_unit"], f"{key}.station_unit", lo=1, hi=255) if "station_unit" in raw else None
            ),
            write_multiple=self.bool_(raw.get("write_multiple", False), f"{key}.write_multiple"),
            max_read=self.int_(raw.get("max_read", MAX_READ), f"{key}.max_read", lo=1, hi=MAX_READ),
        )

    def registers(self, data: Any, written: set[str]) -> dict[str, Register]:
        if not isinstance(data, dict) or not data:
            raise self.fail("registers", "must be a non-empty mapping of role -> register")
        out: dict[str, Register] = {}
        for role, spec in data.items():
            if not isinstance(role, str) or not _ROLE_NAME.match(role):
                raise self.fail(f"registers.{role}", "role names are lower-case identifiers")
            out[role] = self.register(role, spec, role in written)
        for role, reg in out.items():
            key = f"registers.{role}.readback"
            if reg.readback is None:
                continue
            back = out.get(reg.readback)
            if back is None:
                raise self.fail(key, f"names role {reg.readback!r}, which is not in registers")
            if not back.readable or back.readback is not None:
                raise self.fail(key, f"role {reg.readback!r} must be a plain readable register")
            if back.unit != reg.unit:
                raise self.fail(key, f"role {reg.readback!r} is in {back.unit}, not {reg.unit}")
        return out

    def register(self, role: str, data: Any, written: bool) -> Register:
        key = f"registers.{role}"
        raw = self.section(
            data, key, required={"address", "table", "type"},
            optional={"count", "word_order", "scale", "unit", "no_value", "shift", "mask", "access",
                      "readback", "station"},
        )
        table = self.choice(raw["table"], f"{key}.table", TABLES)
        dtype = self.choice(raw["type"], f"{key}.type", DATA_TYPES)
        if (table == "coil") != (dtype == "bool"):
            raise self.fail(f"{key}.type", "coils take type bool, and bool is only for coils")
        if dtype == "ascii":
            if "count" not in raw:
                raise self.fail(f"{key}.count", "missing (type ascii)")
            words = self.int_(raw["count"], f"{key}.count", lo=1, hi=MAX_READ)
        else:
            if "count" in raw:
                raise self.fail(f"{key}.count", f"only for type ascii; {dtype} has a fixed size")
            words = TYPE_WORDS[dtype]
        word_order = self.choice(raw.get("word_order", "BE"), f"{key}.word_order", ("BE", "LSW"))
        if "word_order" in raw and words == 1:
            raise self.fail(f"{key}.word_order", f"meaningless for one-register type {dtype}")
        address = self.int_(raw["address"], f"{key}.address")
        if address + words > 0x10000:
            raise self.fail(f"{key}.address", "register runs past 65535")
        scale = self.number(raw.get("scale", 1), f"{key}.scale", positive=True)
        unit = raw.get("unit")
        if unit is not None:
            unit = self.str_(unit, f"{key}.unit")
        if dtype in ("ascii", "bool") and ("scale" in raw or unit is not None):
            raise self.fail(f"{key}.scale" if "scale" in raw else f"{key}.unit", f"meaningless for type {dtype}")
        allowed_units = _ROLE_UNITS.get(role)
        if allowed_units is not None and unit not in allowed_units:
            shown = ", ".join("(none)" if u is None else u for u in allowed_units)
            raise self.fail(f"{key}.unit", f"{unit!r} is not a unit for role {role} (expected {shown})")
        no_value = raw.get("no_value", [])
        if not isinstance(no_value, list):
            raise self.fail(f"{key}.no_value", "must be a list of raw values")
        top = (1 << (16 * words)) - 1
        sentinels = frozenset(self.int_(v, f"{key}.no_value", lo=0, hi=top) for v in no_value)
        shift, mask = 0, None
        if "shift" in raw or "mask" in raw:
            if dtype not in _UNSIGNED:
                raise self.fail(f"{key}.shift" if "shift" in raw else f"{key}.mask", "only for unsigned integer types")
            shift = self.int_(raw.get("shift", 0), f"{key}.shift", lo=0, hi=16 * words - 1)
            if "mask" in raw:
                mask = self.int_(raw["mask"], f"{key}.mask", lo=1, hi=top)
        access = self.choice(raw.get("access", "rw" if written else "r"), f"{key}.access", ("r", "w", "rw"))
        readback = raw.get("readback")
        if readback is not None:
            readback = self.str_(readback, f"{key}.readback")
            if access != "w":
                raise self.fail(f"{key}.readback", "only for write-only registers (access w)")
        station = self.bool_(raw.get("station", False), f"{key}.station")
        return Register(
            role, address, table, dtype, words, word_order, scale, unit, sentinels, shift, mask, access, readback, station
        )

    def read_blocks(self, data: Any, transport: Transport) -> tuple[ReadBlock, ...]:
        if not isinstance(data, list):
            raise self.fail("read_blocks", "must be a list")
        out = []
        for i, item in enumerate(data):
            key = f"read_blocks[{i}]"
            raw = self.section(item, key, required={"table", "address", "count"}, optional={"station"})
            table = self.choice(raw["table"], f"{key}.table", TABLES)
            if table == "coil":
                raise self.fail(f"{key}.table", "read blocks are for registers")
            address = self.int_(raw["address"], f"{key}.address")
            count = self.int_(raw["count"], f"{key}.count", lo=1, hi=MAX_READ)
            if count > transport.max_read:
                raise self.fail(f"{key}.count", f"{count} is more than transport.max_read {transport.max_read}")
            if address + count > 0x10000:
                raise self.fail(f"{key}.count", "block runs past 65535")
            out.append(ReadBlock(table, address, count, self.bool_(raw.get("station", False), f"{key}.station")))
        return tuple(out)

    def identity(self, data: Any, registers: Mapping[str, Register]) -> tuple[str, ...]:
        if not isinstance(data, list):
            raise self.fail("identity", "must be a list of roles")
        for i, role in enumerate(data):
            if role not in registers:
                raise self.fail(f"identity[{i}]", f"names role {role!r}, which is not in registers")
            if not registers[role].readable:
                raise self.fail(f"identity[{i}]", f"role {role!r} is write-only")
        return tuple(data)

    def signature(self, data: Any, registers: Mapping[str, Register]) -> dict[str, tuple[str | int, ...]]:
        if not isinstance(data, dict):
            raise self.fail("signature", "must be a mapping of role -> value or list of values")
        out: dict[str, tuple[str | int, ...]] = {}
        for role, expected in data.items():
            key = f"signature.{role}"
            self.role_ref(role, key, registers)
            values = expected if isinstance(expected, list) else [expected]
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (str, int)):
                    raise self.fail(key, f"values must be strings or integers, got {v!r}")
            out[role] = tuple(values)
        return out
