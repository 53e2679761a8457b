"""What a register map is: its dataclasses, the names of its tables and types, and MapError.

The schema of the YAML files these are read from is in maps/README.md.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

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
MAX_READ = 125  # registers per read request (Modbus limit)
MAX_KEEPALIVE_SHARE = 0.4  # a keep-alive comes at least this often per fail-safe timeout: one lost cycle never trips it
TRANSPORT_KINDS = ("tcp", "rtu")


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
