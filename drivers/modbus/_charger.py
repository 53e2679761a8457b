"""One generic Modbus charger driver; what differs per model is in its register map."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drivers.api import Charger, ChargerReading, Measurement, Meter
from drivers.errors import ModbusExceptionResponse, NoValue, UnsupportedByModel

from ._bus import ModbusDevice
from ._registermap import Register, RegisterMap, Table, decode, encode, raw_value

_METER_ROLES = ("energy", "power", "current_l1", "current_l2", "current_l3")
_PHASES = ("current_l1", "current_l2", "current_l3")


@dataclass(frozen=True, slots=True)
class _Read:
    table: Table
    address: int
    count: int
    roles: tuple[str, ...]


def _plan(regmap: RegisterMap, roles: tuple[str, ...]) -> tuple[_Read, ...]:
    """Group the roles into as few requests as the map's read blocks allow, each trimmed to what is needed."""
    groups: dict[tuple[Table, int, int], list[Register]] = {}
    for role in roles:
        reg = regmap.register(role)
        if reg is None:
            continue
        block = next((b for b in regmap.read_blocks if b.covers(reg)), None)
        key = (block.table, block.address, block.count) if block else (reg.table, reg.address, reg.words)
        groups.setdefault(key, []).append(reg)
    reads = []
    for (table, _, _), regs in groups.items():
        start = min(r.address for r in regs)
        end = max(r.end for r in regs)
        reads.append(_Read(table, start, end - start, tuple(r.role for r in regs)))
    # The state read goes first, so a dead device is reported at its state register.
    return tuple(sorted(reads, key=lambda r: ("state" not in r.roles, r.table, r.address)))


class ModbusCharger:
    """A charger driven over Modbus as its register map says. Implements drivers.api Charger and Meter.

    Call ``setup()`` once after creating it, then ``poll()`` and ``keepalive()`` every cycle.
    ``energy_wh`` is the map's lifetime counter; for models whose map gives it in VAh
    (Heidelberg) it is apparent energy, not billing-grade active energy.
    """

    def __init__(
        self,
        *,
        name: str,
        regmap: RegisterMap,
        device: ModbusDevice,
        max_current_a: float | None = None,
        failsafe_current_a: float | None = None,
        failsafe_timeout_s: float | None = None,
    ) -> None:
        control = regmap.control
        max_a = control.max_current_a if max_current_a is None else float(max_current_a)
        if not control.min_current_a <= max_a <= control.max_current_a:
            raise ValueError(
                f"{name}: max_current_a {max_a} is outside {control.min_current_a}..{control.max_current_a}"
                f" for {regmap.model}"
            )
        self.name = name
        self.regmap = regmap
        self.device = device
        self.max_current_a = max_a
        self.failsafe_current_a: float | None = None
        self.failsafe_timeout_s: float | None = None
        if regmap.failsafe is not None:
            current = regmap.failsafe.current_a if failsafe_current_a is None else float(failsafe_current_a)
            if current and not control.min_current_a <= current <= max_a:
                raise ValueError(f"{name}: failsafe_current_a {current} is neither 0 nor within {control.min_current_a}..{max_a}")
            timeout = regmap.failsafe.timeout_s if failsafe_timeout_s is None else float(failsafe_timeout_s)
            for role, value in (("failsafe_current", current), ("failsafe_timeout", timeout)):
                encode(self._reg(role), value)  # fails now, not at setup, if the register cannot hold it
            self.failsafe_current_a, self.failsafe_timeout_s = current, timeout
        elif failsafe_current_a is not None or failsafe_timeout_s is not None:
            raise ValueError(f"{name}: {regmap.model} has no fail-safe registers")

        self._setpoint = self._reg(control.register)
        self._poll_plan = _plan(regmap, ("state", *_METER_ROLES, control.register))
        self._state_plan = _plan(regmap, ("state",))
        self._meter_plan = _plan(regmap, _METER_ROLES)

        self._enabled = True
        self._paused = False
        self._current_a = control.min_current_a
        self._commanded = False  # a setpoint was asked for; only then is there one to keep alive
        self._dirty = False  # the last setpoint write failed
        self._last_setpoint_write = 0.0
        self._setup_recoveries: int | None = None  # device.recoveries when setup last ran

    def __repr__(self) -> str:
        return f"ModbusCharger({self.name!r}, {self.regmap.model}, {self.device.link.name} unit {self.device.unit})"

    @property
    def model(self) -> str:
        return self.regmap.model

    # drivers.api.Charger

    async def status(self) -> str:
        words = await self._read(self._state_plan)
        return self._state(words["state"])

    async def enabled(self) -> bool:
        words = await self._read_register(self._setpoint)
        return raw_value(self._setpoint, words) != self.regmap.control.stop_value

    async def enable(self, on: bool) -> None:
        """Off writes the stop value; on writes the last set current (the minimum if none was set yet)."""
        self._enabled = on
        await self._write_setpoint()

    async def set_max_current(self, amps: float) -> None:
        """Clamp to min..max_current_a; below the minimum (6 A) means pause. Written only while enabled.

        A pause lasts until a current of at least the minimum is set: enable(True) writes the
        last set current, and a pause was the last one, so it does not override load management.
        """
        if amps < self.regmap.control.min_current_a:
            self._paused = True
        else:
            self._paused = False
            self._current_a = min(float(amps), self.max_current_a)
        if self._enabled:
            await self._write_setpoint()
        else:
            self._commanded = True

    # drivers.api.Meter

    async def measure(self) -> Measurement:
        return self._measurement(await self._read(self._meter_plan))

    # Polling and upkeep

    async def poll(self) -> ChargerReading:
        """State, lifetime energy, power, currents and the setpoint readback, in as few requests as the map allows.

        Raises NoValue when the state or the energy counter has no value this time; power and
        currents without a value come back as None.
        """
        words = await self._read(self._poll_plan)
        state = self._state(words["state"])
        offered = decode(self._setpoint, words[self._setpoint.role])
        return ChargerReading(
            iec61851=state,
            measurement=self._measurement(words),
            offered_current_a=float(offered),
        )

    async def setup(self) -> None:
        """Write the map's setup registers, then the fail-safe current, then the fail-safe timeout."""
        for address, value in self.regmap.setup_writes:
            await self.device.write_register(address, value)
        if self.failsafe_current_a is not None and self.failsafe_timeout_s is not None:
            # The fallback current is in place before the watchdog that applies it is armed.
            await self._write_value(self._reg("failsafe_current"), self.failsafe_current_a)
            await self._write_value(self._reg("failsafe_timeout"), self.failsafe_timeout_s)
        self._setup_recoveries = self.device.recoveries

    async def keepalive(self) -> None:
        """Call once per poll cycle; writes or reads only when the model needs it now.

        After the device was unavailable and answers again, setup and the setpoint are
        written again, since a rebooted charger forgets them.
        """
        if self._setup_recoveries is not None and self._setup_recoveries != self.device.recoveries:
            await self.setup()
            self._dirty = self._dirty or self._commanded
        if self._dirty:
            await self._write_setpoint()
            return
        keepalive, timeout = self.regmap.keepalive, self.failsafe_timeout_s
        if keepalive is None or timeout is None:
            return
        due = timeout * keepalive.every
        now = time.monotonic()
        if keepalive.kind == "traffic":
            if now - self.device.last_ok >= due:
                await self.status()
        elif self._commanded and now - self._last_setpoint_write >= due:
            await self._write_setpoint()

    async def identity(self) -> dict[str, str | int | float | bool | None]:
        """Model plus the map's identity registers; None where the device rejects one (older firmware)."""
        out: dict[str, str | int | float | bool | None] = {"model": self.regmap.model}
        for role in self.regmap.identity:
            reg = self._reg(role)
            try:
                out[role] = decode(reg, await self._read_register(reg))
            except ModbusExceptionResponse:
                out[role] = None
        return out

    # Internals

    def _reg(self, role: str) -> Register:
        reg = self.regmap.register(role)
        if reg is None:
            raise UnsupportedByModel(f"{self.regmap.model} has no {role} register", device=self.name)
        return reg

    def _target_raw(self) -> list[int]:
        control = self.regmap.control
        if not self._enabled or self._paused:
            return encode(self._setpoint, control.stop_value * self._setpoint.scale)
        # Round down to the register's resolution: never offer more than asked.
        steps = math.floor(self._current_a / self._setpoint.scale + 1e-9)
        return encode(self._setpoint, steps * self._setpoint.scale)

    async def _write_setpoint(self) -> None:
        self._commanded = True
        self._dirty = True
        await self._write_words(self._setpoint, self._target_raw())
        self._dirty = False
        self._last_setpoint_write = time.monotonic()

    async def _write_value(self, reg: Register, value: float) -> None:
        await self._write_words(reg, encode(reg, value))

    async def _write_words(self, reg: Register, words: list[int]) -> None:
        if reg.table == "coil":
            await self.device.write_coil(reg.address, bool(words[0]))
        elif len(words) == 1:
            await self.device.write_register(reg.address, words[0])
        else:
            await self.device.write_registers(reg.address, words)

    async def _read_register(self, reg: Register) -> list[int]:
        words = await self._read((_Read(reg.table, reg.address, reg.words, (reg.role,)),))
        return words[reg.role]

    async def _read(self, plan: tuple[_Read, ...]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for read in plan:
            if read.table == "holding":
                words = await self.device.read_holding(read.address, read.count)
            elif read.table == "input":
                words = await self.device.read_input(read.address, read.count)
            else:
                words = [int(b) for b in await self.device.read_coils(read.address, read.count)]
            for role in read.roles:
                reg = self.regmap.registers[role]
                offset = reg.address - read.address
                out[role] = words[offset : offset + reg.words]
        return out

    def _value(self, role: str, words: list[int]) -> int | float:
        reg = self.regmap.registers[role]
        raw = raw_value(reg, words)
        if raw in reg.no_value:
            raise NoValue(f"{role} reads 0x{raw:X}, which means no value", device=self.name, register=reg.address)
        value = decode(reg, words)
        assert isinstance(value, (int, float))
        return value

    def _optional(self, role: str, words: dict[str, list[int]]) -> int | float | None:
        if role not in words:
            return None
        try:
            return self._value(role, words[role])
        except NoValue:
            return None

    def _state(self, words: list[int]) -> str:
        raw = raw_value(self.regmap.registers["state"], words)
        letter = self.regmap.states.get(raw)
        if letter is None:
            address = self.regmap.registers["state"].address
            raise NoValue(f"state value {raw} is not in the map", device=self.name, register=address)
        return letter

    def _measurement(self, words: dict[str, list[int]]) -> Measurement:
        energy = round(self._value("energy", words["energy"])) if "energy" in words else None
        power = self._optional("power", words)
        phases = [self._optional(role, words) for role in _PHASES]
        currents = None
        if all(p is not None for p in phases):
            currents = tuple(round(float(p), 3) for p in phases)  # type: ignore[arg-type]
        return Measurement(
            energy_wh=energy,
            power_w=None if power is None else round(power),
            currents_a=currents,  # type: ignore[arg-type]
        )


if TYPE_CHECKING:
    _charger: type[Charger] = ModbusCharger
    _meter: type[Meter] = ModbusCharger
