"""Register maps: one YAML file per device model, read by one generic driver per device kind.

Charger maps live in ``drivers/modbus/maps/<model>.yaml``, meter maps in
``drivers/modbus/meters/<model>.yaml``. Unknown keys are errors; every error names the file
and the key path (``bender-cc613.yaml: registers.energy.type: ...``).

Schema (optional keys show their default; "charger only" keys are errors in a meter map)::

    model: bender-cc613            # must equal the file name
    vendor: Bender
    description: ...               # optional
    transport:
      kind: tcp | rtu              # the usual transport (what create_charger picks by default)
      kinds: [tcp, rtu]            # optional ([kind]): transports the device offers at all;
                                   #   rtu also allows rtu-over-tcp (a serial server)
      unit: 255                    # default Modbus unit id (device_id)
      port: 502                    # default TCP port; required when kinds has tcp
      baudrate: 19200              # serial factory setting; optional (omit when unknown:
      parity: E                    #   the installer must then give it): N | E | O
      bytesize: 8                  # optional (8)
      stopbits: 1                  # optional (1)
      frame_gap_s: 0.1             # optional (0): quiet time on the link before each frame to this device
      station_unit: 200            # optional: unit of the station's registers (`station: true`)
      write_multiple: false        # optional: write single registers with FC16 too (FC6 refused)
      max_read: 125                # optional: registers the device answers in one request
    registers:                     # by role; any lower-case name. Roles with meaning to the drivers:
      <role>:                      #   state, energy (lifetime), session_energy, power, current_l1..3,
                                   #   voltage_l1..3, setpoint, failsafe_current, failsafe_timeout,
                                   #   rfid_uid (a built-in card reader), energy_export
        address: 122               # wire (PDU) address, 0-based
        table: holding | input | coil
        type: uint16 | int16 | uint32 | int32 | uint64 | int64 | float32 | float64 | ascii | bool
        count: 2                   # ascii only: registers (two characters each)
        word_order: BE | LSW       # optional (BE); multi-register types only. LSW = low word first
        scale: 0.001               # optional (1): value = raw * scale, in `unit`
        unit: A                    # unit after scaling; checked per role (energy Wh|VAh, power W|VA, ...)
        no_value: [0xFFFFFFFF]     # optional: raw values meaning "no value now" (NoValue, retry next poll);
                                   #   a float that decodes to NaN is always "no value"
        shift: 8                   # optional (0), unsigned types: value = (raw >> shift) & mask
        mask: 0x7F                 # optional (all bits)
        access: r | w | rw         # optional: r, or rw for roles the driver writes. w = write-only:
        readback: setpoint_readback   #   reads go to the `readback` role (same unit) instead
        station: false             # optional: belongs to the station, not the charge point: read from
                                   #   transport.station_unit and never shifted by connectors.stride
    read_blocks:                   # optional: spans the device answers in one request
      - {table: input, address: 4, count: 15, station: false}
    identity: [firmware]           # optional: roles identity() reads (probe, scan)
    signature: {model_name: B23}   # optional: identity values that tell this model from others (scan)

    # charger maps only:
    states:                        # raw state value -> IEC 61851 letter. Keys are strings when the
      1: A                         #   state register is ascii ("B1": B). A value may depend on
      5: {role: socket_state, mask: 0x100, set: B, clear: A}   # another register's bits
    control:
      register: setpoint           # role written to set the offered current (int or float holding)
      stop_value: 0                # raw value that stops / pauses charging
      min_current_a: 6             # below this, set_max_current pauses
      max_current_a: 32            # protocol ceiling; create_charger(max_current_a=) may lower it
      pause: {address: 2, value: 1}   # optional: pause/disable writes this trigger instead of stop_value;
                                   #   the next current >= min_current_a resumes
    connectors:                    # optional: several charge points behind one unit
      max: 2
      stride: 100                  # charge point n's registers are at address + (n-1) * stride
    setup:                         # optional
      writes:                      # raw holding-register writes on connect, in order
        - {address: 258, value: 4}
    never_write:                   # optional: addresses the drivers refuse to write, with the reason
      - {address: 16645, why: "...", station: false}   # station: not shifted by connectors
    failsafe:                      # optional: what the charger does on its own when the gateway goes quiet
      current_a: 6                 # default fallback current (the share while a session is enabled)
      timeout_s: 15                # default timeout, used only until the device tells its own
      set_by: gateway | device     # optional (gateway): gateway = the driver writes current_roles (0 while
                                   #   no session is enabled, the share while one is) then failsafe_timeout
                                   #   (when mapped) at setup and reads the timeout back; device = configured
                                   #   on the charger (Alfen ACE), only read; the timeout is learned from a
                                   #   `setpoint_validity` register (remaining validity, read right after a
                                   #   setpoint write) where the map has one
      current_roles: [failsafe_current]   # optional: roles the current goes to (Schneider 1p + 3p)
    keepalive:                     # optional (none)
      kind: traffic | rewrite_setpoint | write   # any transaction resets the watchdog | the setpoint
                                   #   must be re-written | a register must be written (life bit)
      every: 0.25                  # act when this share (at most 0.4) of the fail-safe timeout has passed, or
      every_s: 2                   #   every this many seconds (one of the two)
      register: life_bit           # kind write: role written ...
      value: 1                     #   ... with this raw value
      disabled_when: 2             # kind write, optional: the register reads this when the device has
                                   #   the feature switched off (checked at setup)

    # meter maps: registers must have energy (lifetime import, Wh); no states/control/failsafe.

A register's raw value is its words combined per ``word_order`` as an unsigned integer;
``no_value`` compares against that, before shift, mask and the type are applied.
"""
from __future__ import annotations

import dataclasses
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml

from drivers.api import IEC61851_STATES

Table = Literal["holding", "input", "coil"]
DataType = Literal[
    "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64", "ascii", "bool"
]
WordOrder = Literal["BE", "LSW"]
Kind = Literal["charger", "meter"]
Access = Literal["r", "w", "rw"]

TABLES: tuple[Table, ...] = ("holding", "input", "coil")
TYPE_WORDS: dict[str, int] = {
    "uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "uint64": 4, "int64": 4,
    "float32": 2, "float64": 4, "bool": 1,
}
DATA_TYPES = (*TYPE_WORDS, "ascii")
INTEGER_TYPES = ("uint16", "int16", "uint32", "int32", "uint64", "int64")
_UNSIGNED = ("uint16", "uint32", "uint64")
MAX_READ = 125  # registers per read request (Modbus limit)
MAX_KEEPALIVE_SHARE = 0.4  # a keep-alive comes at least this often per fail-safe timeout: one lost cycle never trips it
TRANSPORT_KINDS = ("tcp", "rtu")

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


class MapError(ValueError):
    """A register map is malformed. The message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Register:
    role: str
    address: int
    table: Table
    type: DataType
    words: int  # registers on the wire
    word_order: WordOrder = "BE"
    scale: float = 1.0
    unit: str | None = None
    no_value: frozenset[int] = frozenset()
    shift: int = 0
    mask: int | None = None
    access: Access = "r"
    readback: str | None = None
    station: bool = False

    @property
    def end(self) -> int:
        return self.address + self.words

    @property
    def readable(self) -> bool:
        return self.access != "w"

    @property
    def writable(self) -> bool:
        return self.access != "r"


@dataclass(frozen=True, slots=True)
class Transport:
    kind: Literal["tcp", "rtu"]
    unit: int
    kinds: tuple[str, ...] = ()
    port: int | None = None
    baudrate: int | None = None
    bytesize: int = 8
    parity: Literal["N", "E", "O"] | None = None
    stopbits: int = 1
    frame_gap_s: float = 0.0
    station_unit: int | None = None
    write_multiple: bool = False
    max_read: int = MAX_READ


@dataclass(frozen=True, slots=True)
class ReadBlock:
    table: Table
    address: int
    count: int
    station: bool = False

    def covers(self, reg: Register) -> bool:
        return (
            reg.table == self.table
            and reg.station == self.station
            and self.address <= reg.address
            and reg.end <= self.address + self.count
        )


@dataclass(frozen=True, slots=True)
class ConditionalState:
    """A state value whose letter depends on bits of another register (ABB's "others")."""

    role: str
    mask: int
    set: str
    clear: str


@dataclass(frozen=True, slots=True)
class Control:
    register: str
    stop_value: int
    min_current_a: float
    max_current_a: float
    pause: tuple[int, int] | None = None  # (address, raw value): a trigger written to pause instead


@dataclass(frozen=True, slots=True)
class NeverWrite:
    address: int
    why: str
    station: bool = False


@dataclass(frozen=True, slots=True)
class Connectors:
    max: int
    stride: int


@dataclass(frozen=True, slots=True)
class Failsafe:
    current_a: float
    timeout_s: float
    set_by: Literal["gateway", "device"] = "gateway"
    current_roles: tuple[str, ...] = ("failsafe_current",)


@dataclass(frozen=True, slots=True)
class Keepalive:
    kind: Literal["traffic", "rewrite_setpoint", "write"]
    every: float | None = None  # share of the fail-safe timeout
    every_s: float | None = None  # or a fixed period
    register: str | None = None
    value: int | None = None
    disabled_when: int | None = None

    def period_s(self, timeout_s: float | None) -> float | None:
        if self.every_s is not None:
            return self.every_s
        if self.every is not None and timeout_s:
            return self.every * timeout_s
        return None


@dataclass(frozen=True, slots=True)
class RegisterMap:
    model: str
    vendor: str
    description: str
    transport: Transport
    registers: Mapping[str, Register]
    read_blocks: tuple[ReadBlock, ...]
    states: Mapping[int | str, str | ConditionalState]
    control: Control | None
    setup_writes: tuple[tuple[int, int], ...]
    failsafe: Failsafe | None
    keepalive: Keepalive | None
    identity: tuple[str, ...]
    source: str
    kind: Kind = "charger"
    connectors: Connectors | None = None
    never_write: tuple[NeverWrite, ...] = ()
    signature: Mapping[str, tuple[str | int, ...]] = dataclasses.field(default_factory=dict)
    connector: int = 1  # which charge point the addresses are for

    def register(self, role: str) -> Register | None:
        return self.registers.get(role)

    def for_connector(self, connector: int | None) -> RegisterMap:
        """The map with charge point `connector`'s addresses (1 is the file's own)."""
        if connector is None or connector == 1:
            return self
        if self.connectors is None:
            raise MapError(f"{self.source}: {self.model} has one charge point per unit; connector {connector} does not exist")
        if not 1 <= connector <= self.connectors.max:
            raise MapError(f"{self.source}: connector {connector} is outside 1..{self.connectors.max}")
        offset = (connector - 1) * self.connectors.stride
        registers = {
            role: reg if reg.station else dataclasses.replace(reg, address=reg.address + offset)
            for role, reg in self.registers.items()
        }
        blocks = tuple(b if b.station else dataclasses.replace(b, address=b.address + offset) for b in self.read_blocks)
        never = tuple(n if n.station else dataclasses.replace(n, address=n.address + offset) for n in self.never_write)
        control = self.control
        if control is not None and control.pause is not None:
            control = dataclasses.replace(control, pause=(control.pause[0] + offset, control.pause[1]))
        return dataclasses.replace(
            self, registers=registers, read_blocks=blocks, never_write=never, control=control, connector=connector
        )

    def forbidden(self) -> dict[int, str]:
        """Addresses the drivers refuse to write -> why."""
        return {n.address: n.why for n in self.never_write}

    def readable(self, role: str) -> Register | None:
        """The register reads of `role` go to: itself, or its readback for write-only registers."""
        reg = self.registers.get(role)
        if reg is None:
            return None
        if reg.readable:
            return reg
        return self.registers.get(reg.readback) if reg.readback else None


_STRUCT = {
    "uint16": "H", "int16": "h", "uint32": "I", "int32": "i", "uint64": "Q", "int64": "q",
    "float32": "f", "float64": "d",
}


def raw_value(reg: Register, words: list[int]) -> int:
    """The register's words as one unsigned integer, high word first after applying word order."""
    ordered = list(reversed(words)) if reg.word_order == "LSW" else list(words)
    out = 0
    for word in ordered:
        out = (out << 16) | (word & 0xFFFF)
    return out


def raw_words(reg: Register, raw: int) -> list[int]:
    """An unsigned raw value (as ``raw_value`` gives it) back to words in wire order."""
    words = [(raw >> (16 * (reg.words - 1 - i))) & 0xFFFF for i in range(reg.words)]
    return list(reversed(words)) if reg.word_order == "LSW" else words


def field_value(reg: Register, raw: int) -> int:
    """An unsigned raw value after the register's shift and mask."""
    value = raw >> reg.shift
    return value & reg.mask if reg.mask is not None else value


def decode(reg: Register, words: list[int]) -> int | float | str | bool:
    """Words (in wire order) to the value in the register's unit. Sentinels are the caller's business."""
    if len(words) != reg.words:
        raise ValueError(f"{reg.role}: expected {reg.words} registers, got {len(words)}")
    if reg.type == "bool":
        return bool(words[0])
    if reg.type == "ascii":
        text = b"".join(w.to_bytes(2, "big") for w in words)
        return text.decode("ascii", errors="replace").strip("\x00 ")
    raw = raw_value(reg, words)
    if reg.shift or reg.mask is not None:
        value: int | float = field_value(reg, raw)
    else:
        value = struct.unpack(f">{_STRUCT[reg.type]}", raw.to_bytes(2 * reg.words, "big"))[0]
    if reg.scale == 1 and reg.type not in ("float32", "float64"):
        return int(value)
    return value * reg.scale


def encode(reg: Register, value: float | int | str | bool) -> list[int]:
    """Value in the register's unit to words in wire order. Raises ValueError if it does not fit."""
    if reg.type == "bool":
        return [1 if value else 0]
    if reg.type == "ascii":
        data = str(value).encode("ascii").ljust(2 * reg.words, b"\x00")
        if len(data) > 2 * reg.words:
            raise ValueError(f"{reg.role}: {value!r} is longer than {2 * reg.words} characters")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if reg.type in ("float32", "float64"):
        packed = struct.pack(f">{_STRUCT[reg.type]}", float(value) / reg.scale)
    else:
        if isinstance(value, int) and reg.scale == 1:
            number = value  # exact, also beyond a float's 53 bits (64-bit serial numbers)
        else:
            scaled = float(value) / reg.scale
            number = round(scaled)
            if not math.isclose(number, scaled, abs_tol=1e-6):
                raise ValueError(f"{reg.role}: {value} is not a multiple of {reg.scale} {reg.unit or ''}".rstrip())
        if reg.shift or reg.mask is not None:
            if number < 0 or (reg.mask is not None and number > reg.mask):
                raise ValueError(f"{reg.role}: {value} does not fit its bit field")
            number <<= reg.shift
        try:
            packed = struct.pack(f">{_STRUCT[reg.type]}", number)
        except struct.error:
            raise ValueError(f"{reg.role}: {value} does not fit {reg.type} at scale {reg.scale}") from None
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    return list(reversed(words)) if reg.word_order == "LSW" else words


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


class _Parser:
    def __init__(self, source: str, kind: Kind) -> None:
        self.source = source
        self.kind = kind

    def fail(self, key: str, message: str) -> MapError:
        return MapError(f"{self.source}: {key}: {message}" if key else f"{self.source}: {message}")

    def section(
        self, data: Any, key: str, *, required: set[str], optional: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a mapping, got {type(data).__name__}")
        for name in data:
            if name not in required and name not in optional:
                raise self.fail(f"{key}.{name}" if key else str(name), "unknown key")
        for name in sorted(required):
            if name not in data:
                raise self.fail(f"{key}.{name}" if key else name, "missing")
        return data

    def int_(self, value: Any, key: str, *, lo: int = 0, hi: int = 0xFFFF) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.fail(key, f"{value} is outside {lo}..{hi}")
        return value

    def bool_(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def number(self, value: Any, key: str, *, positive: bool = False, lo: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(key, f"must be > 0, got {value}")
        if lo is not None and value < lo:
            raise self.fail(key, f"must be >= {lo}, got {value}")
        return float(value)

    def choice(self, value: Any, key: str, options: tuple[Any, ...]) -> Any:
        if value not in options:
            raise self.fail(key, f"{value!r} is not one of {', '.join(map(str, options))}")
        return value

    def str_(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def role_ref(self, value: Any, key: str, registers: Mapping[str, Register]) -> str:
        role = self.str_(value, key)
        if role not in registers:
            raise self.fail(key, f"names role {role!r}, which is not in registers")
        return role

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

    def states(self, data: Any, registers: Mapping[str, Register]) -> dict[int | str, str | ConditionalState]:
        if not isinstance(data, dict) or not data:
            raise self.fail("states", "must be a non-empty mapping of raw value -> IEC 61851 letter")
        textual = registers["state"].type == "ascii"
        out: dict[int | str, str | ConditionalState] = {}
        letters: set[str] = set()
        for value, letter in data.items():
            key = f"states.{value}"
            if textual:
                raw_key: int | str = self.str_(value, key)
            else:
                raw_key = self.int_(value, key, lo=0, hi=0xFFFFFFFF)
            if isinstance(letter, dict):
                cond = self.section(letter, key, required={"role", "mask", "set", "clear"})
                state = ConditionalState(
                    role=self.role_ref(cond["role"], f"{key}.role", registers),
                    mask=self.int_(cond["mask"], f"{key}.mask", lo=1, hi=0xFFFFFFFF),
                    set=self.choice(cond["set"], f"{key}.set", IEC61851_STATES),
                    clear=self.choice(cond["clear"], f"{key}.clear", IEC61851_STATES),
                )
                if registers[state.role].type not in INTEGER_TYPES:
                    raise self.fail(f"{key}.role", "must be an integer register")
                out[raw_key] = state
                letters.update((state.set, state.clear))
            else:
                out[raw_key] = self.choice(letter, key, IEC61851_STATES)
                letters.add(letter)
        for letter in ("A", "B", "C"):
            if letter not in letters:
                raise self.fail("states", f"no raw value maps to {letter}")
        return out

    def control(self, data: Any, registers: Mapping[str, Register]) -> Control:
        key = "control"
        raw = self.section(
            data, key, required={"register", "stop_value", "min_current_a", "max_current_a"}, optional={"pause"}
        )
        role = self.role_ref(raw["register"], f"{key}.register", registers)
        reg = registers[role]
        if reg.table != "holding" or reg.type not in (*INTEGER_TYPES, "float32", "float64"):
            raise self.fail(f"{key}.register", f"role {role!r} must be a numeric holding register")
        if not reg.writable:
            raise self.fail(f"registers.{role}.access", "the control register must be writable")
        if not reg.readable and reg.readback is None:
            raise self.fail(f"registers.{role}.readback", "a write-only control register needs a readback")
        lo = self.number(raw["min_current_a"], f"{key}.min_current_a", positive=True)
        hi = self.number(raw["max_current_a"], f"{key}.max_current_a", positive=True)
        if hi < lo:
            raise self.fail(f"{key}.max_current_a", f"{hi} is below min_current_a {lo}")
        pause = None
        if "pause" in raw:
            p = self.section(raw["pause"], f"{key}.pause", required={"address", "value"})
            pause = (self.int_(p["address"], f"{key}.pause.address"), self.int_(p["value"], f"{key}.pause.value"))
        return Control(role, self.int_(raw["stop_value"], f"{key}.stop_value", hi=0xFFFFFFFF), lo, hi, pause)

    def connectors(self, data: Any, registers: Mapping[str, Register]) -> Connectors | None:
        if data is None:
            return None
        raw = self.section(data, "connectors", required={"max", "stride"})
        result = Connectors(
            self.int_(raw["max"], "connectors.max", lo=2, hi=64),
            self.int_(raw["stride"], "connectors.stride", lo=1),
        )
        reach = (result.max - 1) * result.stride
        for role, reg in registers.items():
            if not reg.station and reg.end + reach > 0x10000:
                raise self.fail(f"registers.{role}.address", f"connector {result.max} would run past 65535")
        return result

    def never_write(self, data: Any) -> tuple[NeverWrite, ...]:
        if not isinstance(data, list):
            raise self.fail("never_write", "must be a list")
        out = []
        for i, item in enumerate(data):
            key = f"never_write[{i}]"
            raw = self.section(item, key, required={"address", "why"}, optional={"station"})
            out.append(NeverWrite(
                self.int_(raw["address"], f"{key}.address"),
                self.str_(raw["why"], f"{key}.why"),
                self.bool_(raw.get("station", False), f"{key}.station"),
            ))
        return tuple(out)

    def setup(self, data: Any, never_write: Mapping[int, str]) -> tuple[tuple[int, int], ...]:
        raw = self.section(data, "setup", required=set(), optional={"writes"})
        writes = raw.get("writes", [])
        if not isinstance(writes, list):
            raise self.fail("setup.writes", "must be a list")
        out = []
        for i, item in enumerate(writes):
            key = f"setup.writes[{i}]"
            w = self.section(item, key, required={"address", "value"})
            address = self.int_(w["address"], f"{key}.address")
            if address in never_write:
                raise self.fail(f"{key}.address", f"is in never_write ({never_write[address]})")
            out.append((address, self.int_(w["value"], f"{key}.value")))
        return tuple(out)

    def failsafe(self, data: Any, registers: Mapping[str, Register], control: Control) -> Failsafe | None:
        if data is None:
            return None
        key = "failsafe"
        raw = self.section(data, key, required={"current_a", "timeout_s"}, optional={"set_by", "current_roles"})
        set_by = self.choice(raw.get("set_by", "gateway"), f"{key}.set_by", ("gateway", "device"))
        roles_raw = raw.get("current_roles", ["failsafe_current"])
        if not isinstance(roles_raw, list) or not roles_raw:
            raise self.fail(f"{key}.current_roles", "must be a non-empty list of roles")
        roles = tuple(self.str_(r, f"{key}.current_roles") for r in roles_raw)
        if set_by == "gateway":
            for role in roles:
                if role not in registers:
                    raise self.fail(key, f"needs register role {role}")
                reg = registers[role]
                if reg.table != "holding" or not reg.writable:
                    raise self.fail(f"registers.{role}.table", "must be a writable holding register (it is written)")
                if reg.unit != "A":
                    raise self.fail(f"registers.{role}.unit", "a fail-safe current is in A")
            timeout = registers.get("failsafe_timeout")
            if timeout is not None and (timeout.table != "holding" or not timeout.writable):
                raise self.fail("registers.failsafe_timeout.table", "must be a writable holding register (it is written)")
        elif "current_roles" in raw:
            raise self.fail(f"{key}.current_roles", "only for set_by gateway")
        current = self.number(raw["current_a"], f"{key}.current_a", lo=0.0)
        if current and not control.min_current_a <= current <= control.max_current_a:
            raise self.fail(f"{key}.current_a", f"{current} is neither 0 nor within control min..max")
        return Failsafe(current, self.number(raw["timeout_s"], f"{key}.timeout_s", positive=True), set_by, roles)

    def keepalive(self, data: Any, failsafe: Failsafe | None, registers: Mapping[str, Register]) -> Keepalive | None:
        if data is None:
            return None
        key = "keepalive"
        raw = self.section(
            data, key, required={"kind"}, optional={"every", "every_s", "register", "value", "disabled_when"}
        )
        kind = self.choice(raw["kind"], f"{key}.kind", ("traffic", "rewrite_setpoint", "write"))
        if ("every" in raw) == ("every_s" in raw):
            raise self.fail(key, "give exactly one of every (share of the fail-safe timeout) or every_s")
        every = every_s = None
        if "every" in raw:
            if failsafe is None:
                raise self.fail(key, "needs a failsafe section (the timeout it keeps alive)")
            every = self.number(raw["every"], f"{key}.every", positive=True)
            if every > MAX_KEEPALIVE_SHARE:
                raise self.fail(f"{key}.every", f"must be at most {MAX_KEEPALIVE_SHARE} of the timeout, got {every}")
        else:
            every_s = self.number(raw["every_s"], f"{key}.every_s", positive=True)
        register = value = disabled = None
        if kind == "write":
            for name in ("register", "value"):
                if name not in raw:
                    raise self.fail(f"{key}.{name}", "missing (kind write)")
            register = self.role_ref(raw["register"], f"{key}.register", registers)
            if registers[register].table != "holding":
                raise self.fail(f"{key}.register", "must be a holding register")
            value = self.int_(raw["value"], f"{key}.value")
            if "disabled_when" in raw:
                disabled = self.int_(raw["disabled_when"], f"{key}.disabled_when")
        else:
            for name in ("register", "value", "disabled_when"):
                if name in raw:
                    raise self.fail(f"{key}.{name}", "only for kind write")
        return Keepalive(kind, every, every_s, register, value, disabled)

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
