"""Register maps: one YAML file per charger model, read by one generic driver.

Maps live in ``drivers/modbus/maps/<model>.yaml``. Unknown keys are errors; every error
names the file and the key path (``bender-cc613.yaml: registers.energy.type: ...``).

Schema (optional keys show their default)::

    model: bender-cc613            # must equal the file name
    vendor: Bender
    description: ...               # optional
    transport:
      kind: tcp | rtu
      unit: 255                    # default Modbus unit id (device_id)
      port: 502                    # tcp only
      baudrate: 19200              # rtu only
      bytesize: 8                  # rtu only, optional (8)
      parity: E                    # rtu only: N | E | O
      stopbits: 1                  # rtu only, optional (1)
      frame_gap_s: 0.1             # optional (0): quiet time on the link before each frame to this device
    registers:                     # by role; any lower-case name, these have meaning to the driver:
      <role>:                      #   state, energy, power, current_l1..3, setpoint,
        address: 122               #   failsafe_current, failsafe_timeout
        table: holding | input | coil
        type: uint16 | int16 | uint32 | int32 | uint64 | float32 | ascii | bool   (bool = coil only)
        count: 2                   # ascii only: registers (two characters each)
        word_order: BE | LSW       # optional (BE); 32/64-bit types only. LSW = low word first
        scale: 0.001               # optional (1): value = raw * scale, in `unit`
        unit: A                    # unit after scaling; checked per role (energy Wh|VAh, power W|VA, ...)
        no_value: [0xFFFFFFFF]     # optional: raw values meaning "no value now" (NoValue, retry next poll)
    read_blocks:                   # optional: spans the device answers in one request
      - {table: input, address: 4, count: 15}
    states: {1: A, 2: B}           # raw state value -> IEC 61851 letter
    control:
      register: setpoint           # role written to set the offered current
      stop_value: 0                # raw value that stops / pauses charging
      min_current_a: 6             # below this, set_max_current pauses
      max_current_a: 32            # protocol ceiling; create_charger(max_current_a=) may lower it
    setup:                         # optional
      writes:                      # raw holding-register writes on connect, in order
        - {address: 258, value: 4}
    failsafe:                      # optional; needs roles failsafe_current and failsafe_timeout
      current_a: 6                 # default, written to failsafe_current after setup.writes
      timeout_s: 15                # default, written to failsafe_timeout last
    keepalive:                     # optional (none)
      kind: traffic | rewrite_setpoint   # any transaction resets the watchdog | setpoint must be re-written
      every: 0.25                  # act when this share of failsafe.timeout_s has passed
    identity: [firmware]           # roles identity() reads

A register's raw value is its words combined per ``word_order`` as an unsigned integer;
``no_value`` compares against that, before the type is applied.
"""
from __future__ import annotations

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
DataType = Literal["uint16", "int16", "uint32", "int32", "uint64", "float32", "ascii", "bool"]
WordOrder = Literal["BE", "LSW"]

TABLES: tuple[Table, ...] = ("holding", "input", "coil")
TYPE_WORDS: dict[str, int] = {
    "uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "uint64": 4, "float32": 2, "bool": 1,
}
DATA_TYPES = (*TYPE_WORDS, "ascii")
_MAX_READ = 125  # registers per read request (Modbus limit)

# Role -> units it may carry after scaling. Roles not listed accept any unit.
_ROLE_UNITS: dict[str, tuple[str | None, ...]] = {
    "state": (None,),
    "energy": ("Wh", "VAh"),
    "power": ("W", "VA"),
    "current_l1": ("A",),
    "current_l2": ("A",),
    "current_l3": ("A",),
    "setpoint": ("A",),
    "failsafe_current": ("A",),
    "failsafe_timeout": ("s",),
}
_ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


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

    @property
    def end(self) -> int:
        return self.address + self.words


@dataclass(frozen=True, slots=True)
class Transport:
    kind: Literal["tcp", "rtu"]
    unit: int
    port: int | None = None
    baudrate: int | None = None
    bytesize: int = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    frame_gap_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReadBlock:
    table: Table
    address: int
    count: int

    def covers(self, reg: Register) -> bool:
        return reg.table == self.table and self.address <= reg.address and reg.end <= self.address + self.count


@dataclass(frozen=True, slots=True)
class Control:
    register: str
    stop_value: int
    min_current_a: float
    max_current_a: float


@dataclass(frozen=True, slots=True)
class Failsafe:
    current_a: float
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Keepalive:
    kind: Literal["traffic", "rewrite_setpoint"]
    every: float


@dataclass(frozen=True, slots=True)
class RegisterMap:
    model: str
    vendor: str
    description: str
    transport: Transport
    registers: Mapping[str, Register]
    read_blocks: tuple[ReadBlock, ...]
    states: Mapping[int, str]
    control: Control
    setup_writes: tuple[tuple[int, int], ...]
    failsafe: Failsafe | None
    keepalive: Keepalive | None
    identity: tuple[str, ...]
    source: str

    def register(self, role: str) -> Register | None:
        return self.registers.get(role)


_STRUCT = {"uint16": "H", "int16": "h", "uint32": "I", "int32": "i", "uint64": "Q", "float32": "f"}


def raw_value(reg: Register, words: list[int]) -> int:
    """The register's words as one unsigned integer, high word first after applying word order."""
    ordered = list(reversed(words)) if reg.word_order == "LSW" else list(words)
    out = 0
    for word in ordered:
        out = (out << 16) | (word & 0xFFFF)
    return out


def decode(reg: Register, words: list[int]) -> int | float | str | bool:
    """Words (in wire order) to the value in the register's unit. Sentinels are the caller's business."""
    if len(words) != reg.words:
        raise ValueError(f"{reg.role}: expected {reg.words} registers, got {len(words)}")
    if reg.type == "bool":
        return bool(words[0])
    if reg.type == "ascii":
        text = b"".join(w.to_bytes(2, "big") for w in words)
        return text.decode("ascii", errors="replace").strip("\x00 ")
    raw = raw_value(reg, words).to_bytes(2 * reg.words, "big")
    value: int | float = struct.unpack(f">{_STRUCT[reg.type]}", raw)[0]
    if reg.scale == 1 and reg.type != "float32":
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
    scaled = float(value) / reg.scale
    if reg.type == "float32":
        packed = struct.pack(">f", scaled)
    else:
        number = round(scaled)
        if not math.isclose(number, scaled, abs_tol=1e-6):
            raise ValueError(f"{reg.role}: {value} is not a multiple of {reg.scale} {reg.unit or ''}".rstrip())
        try:
            packed = struct.pack(f">{_STRUCT[reg.type]}", number)
        except struct.error:
            raise ValueError(f"{reg.role}: {value} does not fit {reg.type} at scale {reg.scale}") from None
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    return list(reversed(words)) if reg.word_order == "LSW" else words


def available_models() -> list[str]:
    """Models with a map in the package, sorted."""
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in _maps_dir().iterdir()
        if entry.name.endswith(".yaml")
    )


def load_map(model: str) -> RegisterMap:
    """Load and validate the packaged map of `model` (e.g. "bender-cc613")."""
    resource = _maps_dir().joinpath(f"{model}.yaml")
    if not _ROLE_NAME.match(model.replace("-", "_")) or not resource.is_file():
        raise MapError(f"unknown charger model {model!r}; known: {', '.join(available_models())}")
    return parse_map(resource.read_text(encoding="utf-8"), source=f"{model}.yaml")


def parse_map(text: str, *, source: str) -> RegisterMap:
    """Parse and validate map text. `source` is the file name used in errors and checked against `model`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MapError(f"{source}: not valid YAML: {exc}") from None
    return _Parser(source).parse(data)


def _maps_dir() -> Any:
    return resources.files("drivers.modbus").joinpath("maps")


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

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

    def number(self, value: Any, key: str, *, positive: bool = False, lo: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(key, f"must be > 0, got {value}")
        if lo is not None and value < lo:
            raise self.fail(key, f"must be >= {lo}, got {value}")
        return float(value)

    def choice(self, value: Any, key: str, options: tuple[str, ...]) -> Any:
        if value not in options:
            raise self.fail(key, f"{value!r} is not one of {', '.join(map(str, options))}")
        return value

    def str_(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def parse(self, data: Any) -> RegisterMap:
        top = self.section(
            data, "",
            required={"model", "vendor", "transport", "registers", "states", "control"},
            optional={"description", "read_blocks", "setup", "failsafe", "keepalive", "identity"},
        )
        model = self.str_(top["model"], "model")
        if f"{model}.yaml" != self.source.rsplit("/", 1)[-1]:
            raise self.fail("model", f"{model!r} does not match the file name")
        transport = self.transport(top["transport"])
        registers = self.registers(top["registers"])
        blocks = self.read_blocks(top.get("read_blocks", []))
        states = self.states(top["states"])
        control = self.control(top["control"], registers)
        writes = self.setup(top.get("setup", {}))
        failsafe = self.failsafe(top.get("failsafe"), registers, control)
        keepalive = self.keepalive(top.get("keepalive"), failsafe)
        identity = self.identity(top.get("identity", []), registers)
        if "state" not in registers:
            raise self.fail("registers.state", "missing (every charger has a state register)")
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
        )

    def transport(self, data: Any) -> Transport:
        key = "transport"
        raw = self.section(
            data, key, required={"kind", "unit"},
            optional={"port", "baudrate", "bytesize", "parity", "stopbits", "frame_gap_s"},
        )
        kind = self.choice(raw["kind"], f"{key}.kind", ("tcp", "rtu"))
        serial_only = {"baudrate", "bytesize", "parity", "stopbits"}
        if kind == "tcp":
            if misplaced := serial_only & raw.keys():
                raise self.fail(f"{key}.{sorted(misplaced)[0]}", "only for kind rtu")
            if "port" not in raw:
                raise self.fail(f"{key}.port", "missing (kind tcp)")
        else:
            if "port" in raw:
                raise self.fail(f"{key}.port", "only for kind tcp")
            for name in ("baudrate", "parity"):
                if name not in raw:
                    raise self.fail(f"{key}.{name}", "missing (kind rtu)")
        return Transport(
            kind=kind,
            unit=self.int_(raw["unit"], f"{key}.unit", lo=0, hi=255),
            port=self.int_(raw["port"], f"{key}.port", lo=1) if "port" in raw else None,
            baudrate=self.int_(raw["baudrate"], f"{key}.baudrate", lo=300, hi=1_000_000) if "baudrate" in raw else None,
            bytesize=self.choice(raw.get("bytesize", 8), f"{key}.bytesize", (7, 8)),  # type: ignore[arg-type]
            parity=self.choice(raw.get("parity", "N"), f"{key}.parity", ("N", "E", "O")),
            stopbits=self.choice(raw.get("stopbits", 1), f"{key}.stopbits", (1, 2)),  # type: ignore[arg-type]
            frame_gap_s=self.number(raw.get("frame_gap_s", 0.0), f"{key}.frame_gap_s", lo=0.0),
        )

    def registers(self, data: Any) -> dict[str, Register]:
        if not isinstance(data, dict) or not data:
            raise self.fail("registers", "must be a non-empty mapping of role -> register")
        out: dict[str, Register] = {}
        for role, spec in data.items():
            if not isinstance(role, str) or not _ROLE_NAME.match(role):
                raise self.fail(f"registers.{role}", "role names are lower-case identifiers")
            out[role] = self.register(role, spec)
        return out

    def register(self, role: str, data: Any) -> Register:
        key = f"registers.{role}"
        raw = self.section(
            data, key, required={"address", "table", "type"},
            optional={"count", "word_order", "scale", "unit", "no_value"},
        )
        table = self.choice(raw["table"], f"{key}.table", TABLES)
        dtype = self.choice(raw["type"], f"{key}.type", DATA_TYPES)
        if (table == "coil") != (dtype == "bool"):
            raise self.fail(f"{key}.type", "coils take type bool, and bool is only for coils")
        if dtype == "ascii":
            if "count" not in raw:
                raise self.fail(f"{key}.count", "missing (type ascii)")
            words = self.int_(raw["count"], f"{key}.count", lo=1, hi=_MAX_READ)
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
        return Register(role, address, table, dtype, words, word_order, scale, unit, sentinels)

    def read_blocks(self, data: Any) -> tuple[ReadBlock, ...]:
        if not isinstance(data, list):
            raise self.fail("read_blocks", "must be a list")
        out = []
        for i, item in enumerate(data):
            key = f"read_blocks[{i}]"
            raw = self.section(item, key, required={"table", "address", "count"})
            table = self.choice(raw["table"], f"{key}.table", TABLES)
            if table == "coil":
                raise self.fail(f"{key}.table", "read blocks are for registers")
            address = self.int_(raw["address"], f"{key}.address")
            count = self.int_(raw["count"], f"{key}.count", lo=1, hi=_MAX_READ)
            if address + count > 0x10000:
                raise self.fail(f"{key}.count", "block runs past 65535")
            out.append(ReadBlock(table, address, count))
        return tuple(out)

    def states(self, data: Any) -> dict[int, str]:
        if not isinstance(data, dict) or not data:
            raise self.fail("states", "must be a non-empty mapping of raw value -> IEC 61851 letter")
        out = {}
        for value, letter in data.items():
            key = f"states.{value}"
            out[self.int_(value, key)] = self.choice(letter, key, IEC61851_STATES)
        for letter in ("A", "B", "C"):
            if letter not in out.values():
                raise self.fail("states", f"no raw value maps to {letter}")
        return out

    def control(self, data: Any, registers: Mapping[str, Register]) -> Control:
        key = "control"
        raw = self.section(data, key, required={"register", "stop_value", "min_current_a", "max_current_a"})
        role = self.str_(raw["register"], f"{key}.register")
        reg = registers.get(role)
        if reg is None:
            raise self.fail(f"{key}.register", f"names role {role!r}, which is not in registers")
        if reg.table != "holding" or reg.type not in ("uint16", "int16", "uint32", "int32"):
            raise self.fail(f"{key}.register", f"role {role!r} must be an integer holding register")
        lo = self.number(raw["min_current_a"], f"{key}.min_current_a", positive=True)
        hi = self.number(raw["max_current_a"], f"{key}.max_current_a", positive=True)
        if hi < lo:
            raise self.fail(f"{key}.max_current_a", f"{hi} is below min_current_a {lo}")
        return Control(role, self.int_(raw["stop_value"], f"{key}.stop_value"), lo, hi)

    def setup(self, data: Any) -> tuple[tuple[int, int], ...]:
        raw = self.section(data, "setup", required=set(), optional={"writes"})
        writes = raw.get("writes", [])
        if not isinstance(writes, list):
            raise self.fail("setup.writes", "must be a list")
        out = []
        for i, item in enumerate(writes):
            key = f"setup.writes[{i}]"
            w = self.section(item, key, required={"address", "value"})
            out.append((self.int_(w["address"], f"{key}.address"), self.int_(w["value"], f"{key}.value")))
        return tuple(out)

    def failsafe(self, data: Any, registers: Mapping[str, Register], control: Control) -> Failsafe | None:
        if data is None:
            return None
        key = "failsafe"
        raw = self.section(data, key, required={"current_a", "timeout_s"})
        for role in ("failsafe_current", "failsafe_timeout"):
            if role not in registers:
                raise self.fail(key, f"needs register role {role}")
            if registers[role].table != "holding":
                raise self.fail(f"registers.{role}.table", "must be holding (it is written)")
        current = self.number(raw["current_a"], f"{key}.current_a", lo=0.0)
        if current and not control.min_current_a <= current <= control.max_current_a:
            raise self.fail(f"{key}.current_a", f"{current} is neither 0 nor within control min..max")
        return Failsafe(current, self.number(raw["timeout_s"], f"{key}.timeout_s", positive=True))

    def keepalive(self, data: Any, failsafe: Failsafe | None) -> Keepalive | None:
        if data is None:
            return None
        key = "keepalive"
        raw = self.section(data, key, required={"kind", "every"})
        if failsafe is None:
            raise self.fail(key, "needs a failsafe section (the timeout it keeps alive)")
        every = self.number(raw["every"], f"{key}.every", positive=True)
        if every >= 1:
            raise self.fail(f"{key}.every", "must be a fraction of the timeout, below 1")
        return Keepalive(self.choice(raw["kind"], f"{key}.kind", ("traffic", "rewrite_setpoint")), every)

    def identity(self, data: Any, registers: Mapping[str, Register]) -> tuple[str, ...]:
        if not isinstance(data, list):
            raise self.fail("identity", "must be a list of roles")
        for i, role in enumerate(data):
            if role not in registers:
                raise self.fail(f"identity[{i}]", f"names role {role!r}, which is not in registers")
        return tuple(data)
