"""Reading and writing a device by its register map: request planning, decoding, sentinels.

Shared by the charger and the meter driver. Roles are read in as few requests as the map's read
blocks and the device's `max_read` allow; a write-only role is read through its readback; a
station role goes to the station unit. When a device refuses a block it was expected to answer
(some Eastron SDM72 take only ~10 registers per read), the block is split into one read per
role from then on.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from drivers.api import Measurement
from drivers.errors import ModbusExceptionResponse, NoValue, UnsupportedByModel

from ._bus import ModbusDevice
from ._mapcodec import decode, encode, raw_value
from ._maptypes import Register, RegisterMap, Table

log = logging.getLogger("drivers.modbus")

PHASES = ("current_l1", "current_l2", "current_l3")
METER_ROLES = ("energy", "power", *PHASES)


@dataclass(frozen=True, slots=True)
class Read:
    table: Table
    address: int
    count: int
    roles: tuple[str, ...]
    station: bool = False


class MapIO:
    """One device (and its station unit, if the map has one) seen through its register map."""

    def __init__(self, *, name: str, regmap: RegisterMap, device: ModbusDevice, station: ModbusDevice | None = None) -> None:
        self.name = name
        self.regmap = regmap
        self.device = device
        self.station = station or device
        self._split: set[Read] = set()
        self._plans: dict[tuple[str, ...], tuple[Read, ...]] = {}

    # -- registers --

    def reg(self, role: str) -> Register:
        reg = self.regmap.register(role)
        if reg is None:
            raise UnsupportedByModel(f"{self.regmap.model} has no {role} register", device=self.name)
        return reg

    def source(self, role: str) -> Register:
        """The register a read of `role` goes to (the readback of a write-only one)."""
        reg = self.regmap.readable(role)
        if reg is None:
            raise UnsupportedByModel(f"{self.regmap.model} cannot read {role} (write-only, no readback)", device=self.name)
        return reg

    def has(self, role: str) -> bool:
        return self.regmap.readable(role) is not None

    # -- reading --

    def plan(self, roles: tuple[str, ...]) -> tuple[Read, ...]:
        """Group the roles into as few requests as the map's read blocks allow, each trimmed to what is needed."""
        cached = self._plans.get(roles)
        if cached is not None:
            return cached
        groups: dict[tuple[Table, int, int, bool], list[tuple[str, Register]]] = {}
        for role in dict.fromkeys(roles):
            reg = self.regmap.readable(role)
            if reg is None:
                continue
            block = next((b for b in self.regmap.read_blocks if b.covers(reg)), None)
            key = (block.table, block.address, block.count, block.station) if block else (reg.table, reg.address, reg.words, reg.station)
            groups.setdefault(key, []).append((role, reg))
        reads = []
        for (table, _, _, station), members in groups.items():
            start = min(r.address for _, r in members)
            end = max(r.end for _, r in members)
            reads.append(Read(table, start, end - start, tuple(role for role, _ in members), station))
        # The state read goes first, so a dead device is reported at its state register.
        plan = tuple(sorted(reads, key=lambda r: ("state" not in r.roles, r.station, r.table, r.address)))
        self._plans[roles] = plan
        return plan

    async def read_roles(self, *roles: str) -> dict[str, list[int]]:
        return await self.read(self.plan(tuple(roles)))

    async def read(self, plan: tuple[Read, ...]) -> dict[str, list[int]]:
        """Words per role (of the register the role is read from)."""
        out: dict[str, list[int]] = {}
        for read in plan:
            if read in self._split:
                for role in read.roles:
                    out.update(await self._read_one(read, role))
                continue
            try:
                words = await self._transfer(read.table, read.address, read.count, read.station)
            except ModbusExceptionResponse as exc:
                if len(read.roles) < 2:
                    raise
                parts: dict[str, list[int]] = {}
                for role in read.roles:
                    parts.update(await self._read_one(read, role))
                self._split.add(read)
                log.info(
                    "%s: %s refused %d registers at %d in one read (%s); reading them one by one from now on",
                    self.name, self.regmap.model, read.count, read.address, exc,
                )
                out.update(parts)
                continue
            for role in read.roles:
                reg = self.source(role)
                offset = reg.address - read.address
                out[role] = words[offset : offset + reg.words]
        return out

    async def _read_one(self, read: Read, role: str) -> dict[str, list[int]]:
        reg = self.source(role)
        return {role: await self._transfer(reg.table, reg.address, reg.words, read.station)}

    async def read_register(self, role: str) -> list[int]:
        reg = self.source(role)
        return (await self.read((Read(reg.table, reg.address, reg.words, (role,), reg.station),)))[role]

    async def _transfer(self, table: Table, address: int, count: int, station: bool) -> list[int]:
        device = self.station if station else self.device
        if table == "holding":
            return await device.read_holding(address, count)
        if table == "input":
            return await device.read_input(address, count)
        return [int(b) for b in await device.read_coils(address, count)]

    # -- decoding --

    def value(self, role: str, words: list[int]) -> int | float:
        """The number in `role`'s unit; NoValue for a sentinel or a float NaN."""
        reg = self.source(role)
        raw = raw_value(reg, words)
        if raw in reg.no_value:
            raise NoValue(f"{role} reads 0x{raw:X}, which means no value", device=self.name, register=reg.address)
        value = decode(reg, words)
        if isinstance(value, float) and not math.isfinite(value):
            raise NoValue(f"{role} reads {value}, which means no value", device=self.name, register=reg.address)
        assert isinstance(value, (int, float)) and not isinstance(value, bool)
        return value

    def optional(self, role: str, words: dict[str, list[int]]) -> int | float | None:
        if role not in words:
            return None
        try:
            return self.value(role, words[role])
        except NoValue:
            return None

    def text_or_value(self, role: str, words: list[int]) -> str | int | float | bool | None:
        """For identity: a value, None for a sentinel."""
        reg = self.source(role)
        if reg.type in ("ascii", "bool"):
            return decode(reg, words)
        try:
            return self.value(role, words)
        except NoValue:
            return None

    def measurement(self, words: dict[str, list[int]], *, energy_wh: int | None = None) -> Measurement:
        """Energy (the map's lifetime register unless given), power and currents.

        Raises NoValue when the energy has no value; power and currents without a value are None.
        A map with only L1 (single phase) reports L2 and L3 as 0.
        """
        if energy_wh is None and "energy" in words:
            energy_wh = round(self.value("energy", words["energy"]))
        power = self.optional("power", words)
        currents = None
        if "current_l1" in words:
            phases = [self.optional(role, words) if self.has(role) else 0.0 for role in PHASES]
            if all(p is not None for p in phases):
                currents = tuple(round(float(p), 3) for p in phases)  # type: ignore[arg-type]
        return Measurement(
            energy_wh=energy_wh,
            power_w=None if power is None else round(power),
            currents_a=currents,  # type: ignore[arg-type]
        )

    # -- writing --

    async def write_value(self, role: str, value: float | int | str) -> None:
        reg = self.reg(role)
        await self.write_words(reg, encode(reg, value))

    async def write_words(self, reg: Register, words: list[int]) -> None:
        device = self.station if reg.station else self.device
        if reg.table == "coil":
            await device.write_coil(reg.address, bool(words[0]))
        elif len(words) == 1:
            await device.write_register(reg.address, words[0])
        else:
            await device.write_registers(reg.address, words)

    async def identity(self) -> dict[str, str | int | float | bool | None]:
        """Model plus the map's identity registers; None where the device rejects one (older firmware)."""
        out: dict[str, str | int | float | bool | None] = {"model": self.regmap.model}
        for role in self.regmap.identity:
            try:
                out[role] = self.text_or_value(role, await self.read_register(role))
            except ModbusExceptionResponse:
                out[role] = None
        return out
