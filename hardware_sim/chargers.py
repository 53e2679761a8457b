"""Charger simulators that follow the driver's register maps, served by real pymodbus servers.

    cp = SimCharger("bender-cc613", speed=60)
    server = await serve_tcp([cp], host="127.0.0.1", port=0)   # server.port is the bound port
    cp.plug(); cp.set_ev_requesting(True)
    ...
    await server.close()

Every model in drivers/modbus/maps has a simulator: SimCharger(model). Addresses, types, scales,
word orders, readbacks, station units and connector offsets come from ``drivers.modbus.load_map``,
so a sim and the driver cannot disagree about a register without the map being wrong for both
(the conformance tests check the maps against the vendor documentation on their own).

The EV model: unplugged -> A; plugged -> B; plugged, enabled (setpoint >= the model's minimum)
and requesting -> C. In C the car draws min(setpoint, ev_max_current_a) on every phase at
230 V, and the lifetime counter integrates that power times `speed`. The session counter
(``session_energy``) starts again at every plug-in.

The fail-safe is simulated from the map: once armed, a charger whose keep-alive lapses falls
back to its fail-safe current (`failsafe_active`):
  * keepalive traffic (Heidelberg, ABB): any request within the timeout register's value;
  * rewrite_setpoint (Bender, Alfen): a setpoint write within the timeout register's value, or
    within `validity_s` for Alfen, whose validity is set on the station (ACE), not by Modbus; its
    1208 reads the remaining validity in whole seconds rounded up (the full one right after a write);
  * write (Schneider's life bit): the keep-alive register written within `life_bit_timeout_s`.
The fallback current is the fail-safe current register; a register still at its "not
configured" sentinel (ABB's 0xFF) means the charger stops with an error instead. A firmware that
clamps a written timeout to its own range: `failsafe_timeout_range_s`.

Model quirks the sims also reproduce: write-only registers refuse reads, devices that take only
FC16 refuse FC6 (Etrel), a control register with a no-value sentinel reads it while not
charging (Schneider's 99), a pause trigger (Etrel), ABB's start/stop register clearing the
app's charging-enabled flag, Heidelberg's standby (`standby_after_s`: it stops answering
unless register 258 is 4), a station unit for identity (Alfen 200), several charge points
behind one unit (CHARX, Etrel Duo: several sims with the same unit, different `connector`).
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Coroutine, Iterable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import (
    ConditionalState,
    Register,
    RegisterMap,
    decode,
    encode,
    load_map,
    raw_value,
    raw_words,
)

T = TypeVar("T")

_FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 4: "input"} | dict.fromkeys((3, 6, 16, 22, 23), "holding")
_WRITE_FCS = {5, 6, 15, 16, 22, 23}

# What the identity registers of each simulated model read; anything else reads "SIM" or 0.
_IDENTITY: dict[str, dict[str, str | int | float]] = {
    "bender-cc613": {"firmware": "5.30", "protocol_version": "0.6", "model_name": "CC613-SIM"},
    "heidelberg-energy-control": {
        "layout_version": 0x0108, "firmware": 4242, "hardware_max_current": 16, "hardware_min_current": 6,
    },
    "abb-terra-ac": {"serial_number": 0x5422040049200025, "firmware": 0x01090500, "hardware_max_current": 32.0},
    "alfen-ng9xx": {
        "name": "ALF_1000-SIM", "manufacturer": "Alfen NV", "table_version": 1, "firmware": "6.4.0-4210",
        "platform": "NG910", "serial_number": "ACE0000001", "station_max_current": 32.0, "sockets": 1,
    },
    "schneider-evlink-pro-ac": {"firmware_major": 3, "firmware_minor": 2, "firmware_build": 14},
    "phoenix-charx": {"device_name": "CHARX-SIM", "firmware": "1.5", "meter_type": 1},
    "etrel-inch": {
        "serial_number": "ETR0000001", "model_name": "INCH Home", "hardware_version": "HW1", "firmware": "5.2.1",
    },
    "peblar": {"serial_number": "PBL-SIM-0001", "product_number": "6004-2202-7010", "firmware": "1.8.0+1+WL-1",
               "phases": 3},
}


class SimModbusUnit:
    """What every simulated Modbus device has: a register image built from its map, a lock, a
    write log, silence and the pymodbus plumbing. Thread-safe: drive it from any thread."""

    regmap: RegisterMap

    def __init__(self, regmap: RegisterMap, *, unit: int | None, max_read: int | None, serve_station: bool) -> None:
        self.regmap = regmap
        self.model = regmap.model
        self.unit = regmap.transport.unit if unit is None else unit
        self.station_unit = regmap.transport.station_unit if serve_station else None
        self.max_read = regmap.transport.max_read if max_read is None else max_read
        self.writes: list[tuple[float, int, int]] = []  # (time.monotonic(), register, value) per register written by a client
        self.requests = 0
        self._lock = threading.Lock()
        self._silent = False
        self._no_value = False
        self._image: dict[tuple[str, int], int] = {}
        self._station: set[tuple[str, int]] = set()  # served on the station unit
        self._shared: set[tuple[str, int]] = set()  # the station's registers, wherever they are served
        self._writable: set[tuple[str, int]] = set()
        self._write_only: set[tuple[str, int]] = set()

    # -- the outside world --

    def set_silent(self, silent: bool) -> None:
        """Stop (or resume) answering anything: a dead device or a cut cable."""
        with self._lock:
            self._silent = silent

    def set_no_value(self, on: bool) -> None:
        """Live registers with a "no value" sentinel in the map read that sentinel (Bender without a meter)."""
        with self._lock:
            self._no_value = on

    def register(self, address: int, table: str = "holding") -> int:
        with self._lock:
            self._advance(time.monotonic())
            self._refresh_live()
            return self._image[(table, address)]

    def writes_to(self, address: int) -> list[int]:
        return [value for _, register, value in list(self.writes) if register == address]

    # -- image --

    def _build_image(self) -> None:
        regmap = self.regmap
        self._image.clear()
        for reg in regmap.registers.values():
            for i in range(reg.words):
                key = (reg.table, reg.address + i)
                self._image[key] = 0
                if reg.station:
                    self._shared.add(key)
                    if self.station_unit is not None:
                        self._station.add(key)
                if reg.writable:
                    self._writable.add(key)
                if not reg.readable:
                    self._write_only.add(key)
        for block in regmap.read_blocks:
            for address in range(block.address, block.address + block.count):
                key = (block.table, address)
                self._image.setdefault(key, 0)
                if block.station:
                    self._shared.add(key)
                    if self.station_unit is not None:
                        self._station.add(key)

    def _put(self, reg: Register, value: float | int | str) -> None:
        for i, word in enumerate(encode(reg, value)):
            self._image[(reg.table, reg.address + i)] = word

    def _put_raw(self, reg: Register, raw: int) -> None:
        for i, word in enumerate(raw_words(reg, raw)):
            self._image[(reg.table, reg.address + i)] = word

    def _words(self, reg: Register) -> list[int]:
        return [self._image[(reg.table, reg.address + i)] for i in range(reg.words)]

    def _raw(self, reg: Register) -> int:
        return raw_value(reg, self._words(reg))

    def _value(self, reg: Register) -> Any:
        return decode(reg, self._words(reg))

    def _put_live(self, reg: Register, value: float) -> None:
        if self._no_value and reg.no_value:
            self._put_raw(reg, min(reg.no_value))
        elif reg.type.startswith("float"):
            self._put(reg, value)
        else:
            steps = math.floor(value / reg.scale + 1e-6)  # counters tick over whole units, like the real thing
            self._put(reg, steps * reg.scale)

    def addresses(self, station: bool) -> set[tuple[str, int]]:
        return {key for key in self._image if (key in self._station) == station}

    # -- hooks for the device models --

    def _advance(self, now: float) -> None:
        """Move the model to `now` (energy, timers). Called with the lock held."""

    def _refresh_live(self) -> None:
        """Write live values into the image. Called with the lock held."""

    def _present(self, table: str, address: int, word: int) -> int:
        """The word a read returns for an image word (a register that reads differently than it was written)."""
        return word

    def _asleep(self, now: float) -> bool:
        """True while the device does not answer (standby)."""
        return False

    def _apply_writes(self, table: str, address: int, values: list[int], now: float) -> ExcCodes | None:
        for offset, value in enumerate(values):
            self._image[(table, address + offset)] = value
        return None

    # -- one request, from the pymodbus side --

    def handle(
        self, function_code: int, table: str, address: int, count: int, set_values: list[int] | None
    ) -> list[int] | ExcCodes | None:
        """Answer one request for this device's addresses. None means: stay silent."""
        with self._lock:
            now = time.monotonic()
            if self._silent or self._asleep(now):
                return None
            self.requests += 1
            self._advance(now)
            self._touch(now)
            writing = function_code in _WRITE_FCS
            if writing and function_code == 6 and self.regmap.transport.write_multiple:
                return ExcCodes.ILLEGAL_FUNCTION
            if not writing:
                if count > self.max_read:
                    return ExcCodes.ILLEGAL_VALUE
                if any((table, a) in self._write_only for a in range(address, address + count)):
                    return ExcCodes.ILLEGAL_ADDRESS
            if writing and set_values:
                if any((table, a) not in self._writable for a in range(address, address + len(set_values))):
                    return ExcCodes.ILLEGAL_ADDRESS
                for offset, value in enumerate(set_values):
                    self.writes.append((now, address + offset, int(value)))
                result = self._apply_writes(table, address, [int(v) for v in set_values], now)
                if result is not None:
                    return result
            self._refresh_live()
            return [self._present(table, a, self._image.get((table, a), 0)) for a in range(address, address + count)]

    def _touch(self, now: float) -> None:
        """A request arrived (any request keeps a traffic watchdog alive)."""


class SimCharger(SimModbusUnit):
    """One simulated charge point (one Modbus unit, or one connector of a unit)."""

    def __init__(
        self,
        model: str,
        *,
        unit: int | None = None,
        connector: int = 1,
        ev_max_current_a: float = 32,
        speed: float = 1.0,
        energy_wh: float = 1_000_000,
        phases: int = 3,
        voltage_v: float = 230.0,
        validity_s: float = 60.0,
        safe_current_a: float = 6.0,
        life_bit_timeout_s: float = 10.0,
        life_bit_enabled: bool = True,
        standby_after_s: float | None = None,
        connector_count: int | None = None,
        serve_station: bool = True,
        max_read: int | None = None,
        session_register_works: bool = True,
        failsafe_timeout_range_s: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(load_map(model).for_connector(connector), unit=unit, max_read=max_read, serve_station=serve_station)
        regmap = self.regmap
        assert regmap.control is not None
        self.connector = connector
        self.ev_max_current_a = ev_max_current_a
        self.speed = speed
        self.phases = phases
        self.voltage_v = voltage_v
        self.validity_s = validity_s
        self.safe_current_a = safe_current_a
        self.life_bit_timeout_s = life_bit_timeout_s
        self.life_bit_enabled = life_bit_enabled
        self.standby_after_s = standby_after_s
        self.connector_count = connector_count or connector
        self.session_register_works = session_register_works  # False: reads 0 (some Etrel firmware)
        self.failsafe_timeout_range_s = failsafe_timeout_range_s  # firmware that clamps a written timeout
        self._control = regmap.control
        self._setpoint = regmap.registers[regmap.control.register]
        self._energy_wh = float(energy_wh)
        self._session_wh = 0.0
        self._plugged = False
        self._requesting = False
        self._forced_state: int | str | None = None
        self._card: str | None = None
        self._t = time.monotonic()
        self._build_image()
        extra = [(a, False) for a, _ in regmap.setup_writes] + [(n.address, n.station) for n in regmap.never_write]
        if regmap.control.pause is not None:
            extra.append((regmap.control.pause[0], False))
        for address, station in extra:
            key = ("holding", address)
            self._image.setdefault(key, 0)
            self._writable.add(key)
            if station:
                self._shared.add(key)
                if self.station_unit is not None:
                    self._station.add(key)
        self._power_on()

    # -- the EV and the outside world --

    def plug(self) -> None:
        with self._lock:
            self._advance(time.monotonic())
            if not self._plugged:
                self._session_wh = 0.0
                self._ended = False
            self._plugged = True
            self._standby = False

    def unplug(self) -> None:
        with self._lock:
            self._advance(time.monotonic())
            self._plugged = False
            self._requesting = False
            self._standby_since = time.monotonic()

    def set_ev_requesting(self, requesting: bool) -> None:
        """The car wants energy (it only gets it while plugged and the charger is enabled)."""
        with self._lock:
            self._advance(time.monotonic())
            self._requesting = requesting

    def force_state(self, raw: int | str | None) -> None:
        """Present this raw state value (any value of the map's states table) until None."""
        with self._lock:
            self._forced_state = raw

    def present_card(self, uid: str | None) -> None:
        """A card at the built-in reader (rfid_uid register); None takes it away."""
        if self.regmap.register("rfid_uid") is None:
            raise ValueError(f"{self.model} has no built-in reader in its map")
        with self._lock:
            self._card = uid

    def app_enable(self) -> None:
        """ABB: the owner re-enables charging in the app after a stop written to 0x4105."""
        with self._lock:
            self._app_enabled = True

    def reboot(self) -> None:
        """Power-cycle: setup, fail-safe and setpoint registers go back to defaults; the lifetime counter stays."""
        with self._lock:
            self._advance(time.monotonic())
            self._power_on()

    # -- what a test looks at --

    @property
    def energy_wh(self) -> float:
        with self._lock:
            self._advance(time.monotonic())
            return self._energy_wh

    @property
    def session_wh(self) -> float:
        with self._lock:
            self._advance(time.monotonic())
            return self._session_wh

    @property
    def state(self) -> str:
        with self._lock:
            self._advance(time.monotonic())
            return self._letter()

    @property
    def setpoint_a(self) -> float:
        """The current the charger would offer now (0 when stopped), fail-safe included."""
        with self._lock:
            self._advance(time.monotonic())
            return self._setpoint_a()

    @property
    def failsafe_active(self) -> bool:
        with self._lock:
            self._advance(time.monotonic())
            return self._failsafe_active

    @property
    def app_enabled(self) -> bool:
        with self._lock:
            return self._app_enabled

    @property
    def asleep(self) -> bool:
        with self._lock:
            return self._asleep(time.monotonic())

    # -- model, with self._lock held --

    def _power_on(self) -> None:
        regmap = self.regmap
        for key in list(self._image):
            self._image[key] = 0
        ident = _IDENTITY.get(self.model, {})
        for role, reg in regmap.registers.items():
            if role in ident:
                self._put(reg, ident[role])
            elif role in regmap.identity:
                self._put(reg, "SIM" if reg.type == "ascii" else 0)
        if "connector_count" in regmap.registers:
            self._put(regmap.registers["connector_count"], self.connector_count)
        # Unconfigured chargers come up offering their maximum, with the factory fail-safe timeout.
        self._store(self._setpoint, self._control.max_current_a)
        failsafe = regmap.failsafe
        if failsafe is not None:
            if failsafe.set_by == "device":
                self._put(regmap.registers["failsafe_current"], self.safe_current_a)
            else:
                for role in failsafe.current_roles:
                    reg = regmap.registers[role]
                    back = regmap.registers.get(reg.readback) if reg.readback else None
                    if back is not None and back.no_value:
                        self._put_raw(reg, min(back.no_value))  # "not configured" (ABB 0xFF)
                        self._put_raw(back, min(back.no_value))
                    else:
                        self._store(reg, 0)
                timeout = regmap.registers.get("failsafe_timeout")
                if timeout is not None:
                    factory = failsafe.timeout_s if regmap.keepalive is not None and regmap.keepalive.kind == "traffic" else 0
                    self._store(timeout, factory)
        keepalive = regmap.keepalive
        if keepalive is not None and keepalive.kind == "write" and keepalive.register is not None:
            disabled = keepalive.disabled_when if not self.life_bit_enabled and keepalive.disabled_when is not None else 0
            self._put_raw(regmap.registers[keepalive.register], disabled)
        now = time.monotonic()
        self._failsafe_active = False
        self._paused = False
        self._ended = False
        self._app_enabled = True
        self._standby = False
        self._standby_since = now
        self._last_request = self._last_setpoint_write = self._last_keepalive_write = now

    def _store(self, reg: Register, value: float) -> None:
        """A value as written: into the register and its readback."""
        self._put(reg, value)
        if reg.readback:
            back = self.regmap.registers[reg.readback]
            self._put(back, value)

    def _written_setpoint_a(self) -> float:
        raw = self._raw(self._setpoint)
        if raw == self._control.stop_value:
            return 0.0
        return float(self._value(self._setpoint))

    def _failsafe_current_a(self) -> float:
        failsafe = self.regmap.failsafe
        if failsafe is None:
            return 0.0
        reg = self.regmap.registers[failsafe.current_roles[0]]
        back = self.regmap.registers.get(reg.readback) if reg.readback else None
        if back is not None and self._raw(reg) in back.no_value:
            return 0.0  # not configured: the charger stops
        return float(self._value(reg))

    def _setpoint_a(self) -> float:
        if not self._app_enabled or self._paused:
            return 0.0
        if self._failsafe_active:
            return self._failsafe_current_a()
        return self._written_setpoint_a()

    def _offered_a(self) -> float:
        setpoint = self._setpoint_a()
        return min(setpoint, self.ev_max_current_a) if setpoint >= self._control.min_current_a else 0.0

    def _letter(self) -> str:
        if not self._plugged:
            return "A"
        return "C" if self._requesting and not self._ended and self._offered_a() > 0 else "B"

    def _power_w(self) -> float:
        return self._offered_a() * self.voltage_v * self.phases if self._letter() == "C" else 0.0

    def _advance(self, now: float) -> None:
        delta = self._power_w() * (now - self._t) * self.speed / 3600.0
        self._energy_wh += delta
        self._session_wh += delta
        self._t = now
        self._check_watchdog(now)

    def _watchdog(self) -> tuple[float, float] | None:
        """(timeout, time of the last keep-alive) of the armed watchdog, or None."""
        keepalive, registers = self.regmap.keepalive, self.regmap.registers
        if keepalive is None:
            return None
        timeout_reg = registers.get("failsafe_timeout")
        if keepalive.kind == "write":
            if not self.life_bit_enabled:
                return None
            return self.life_bit_timeout_s, self._last_keepalive_write
        if timeout_reg is not None:
            timeout = float(self._value(timeout_reg))
        else:
            timeout = self.validity_s  # set on the station (Alfen ACE)
        last = self._last_request if keepalive.kind == "traffic" else self._last_setpoint_write
        return (timeout, last) if timeout else None

    def _check_watchdog(self, now: float) -> None:
        if self._failsafe_active:
            return
        watchdog = self._watchdog()
        if watchdog is not None and now - watchdog[1] > watchdog[0]:
            self._failsafe_active = True

    def _touch(self, now: float) -> None:
        self._last_request = now

    def _asleep(self, now: float) -> bool:
        standby = self.regmap.registers.get("standby")
        if self.standby_after_s is None or self._plugged or standby is None:
            return False
        if self._raw(standby) == dict(self.regmap.setup_writes).get(standby.address):
            return False  # the gateway switched standby off
        if not self._standby and now - self._standby_since > self.standby_after_s:
            self._standby = True
        return self._standby

    def _apply_writes(self, table: str, address: int, values: list[int], now: float) -> ExcCodes | None:
        if table != "holding":
            return ExcCodes.ILLEGAL_ADDRESS
        control, setpoint = self._control, self._setpoint
        end = address + len(values)
        if address <= setpoint.address < end:
            if setpoint.end > end:
                return ExcCodes.ILLEGAL_ADDRESS  # a 32-bit value must be written in one request
            words = values[setpoint.address - address : setpoint.end - address]
            raw = raw_value(setpoint, words)
            amps = float(decode(setpoint, words))
            if raw != control.stop_value and not control.min_current_a <= amps <= control.max_current_a:
                return ExcCodes.ILLEGAL_VALUE
            self._last_setpoint_write = now
            self._failsafe_active = False
            if amps >= control.min_current_a:
                self._paused = False
        super()._apply_writes(table, address, values, now)
        written = set(range(address, end))
        timeout = self.regmap.registers.get("failsafe_timeout")
        if timeout is not None and timeout.address in written and self.failsafe_timeout_range_s is not None:
            lo, hi = self.failsafe_timeout_range_s
            self._put(timeout, min(max(float(decode(timeout, self._words(timeout))), lo), hi))
        for reg in self.regmap.registers.values():
            if reg.readback and reg.table == "holding" and reg.address in written:
                self._put(self.regmap.registers[reg.readback], decode(reg, self._words(reg)))
        keepalive = self.regmap.keepalive
        if keepalive is not None and keepalive.kind == "write" and keepalive.register is not None:
            life = self.regmap.registers[keepalive.register]
            if life.address in written and values[life.address - address] == keepalive.value and self.life_bit_enabled:
                self._last_keepalive_write = now
                self._failsafe_active = False
                self._put_raw(life, 0)  # the station resets it, so the next write is news
        if control.pause is not None and control.pause[0] in written and values[control.pause[0] - address] == control.pause[1]:
            self._paused = True
        for never in self.regmap.never_write:
            if never.address in written:
                self._never_written(never.address, values[never.address - address])
        return None

    def _never_written(self, address: int, value: int) -> None:
        """What a register the driver must never write does to the device when written anyway."""
        if self.model == "abb-terra-ac" and address == 0x4105 and value == 1:
            self._app_enabled = False  # stop clears the app-granted charging-enabled flag
        elif self.model == "etrel-inch" and address == 1:
            self._ended = True  # the session ends for good

    def _state_raw(self, letter: str) -> int | str:
        for raw, mapped in self.regmap.states.items():
            if isinstance(mapped, ConditionalState):
                if letter in (mapped.set, mapped.clear):
                    continue  # a conditional value is only shown when forced
            elif mapped == letter:
                return raw
        raise ValueError(f"{self.model}: no state value maps to {letter}")

    def _refresh_live(self) -> None:
        registers = self.regmap.registers
        letter = self._letter()
        offered = self._offered_a() if letter == "C" else 0.0
        values: dict[str, float] = {
            "energy": self._energy_wh,
            "session_energy": self._session_wh if self.session_register_works else 0.0,
            "power": self._power_w(),
            "current_l1": offered,
            "current_l2": offered if self.phases == 3 else 0.0,
            "current_l3": offered if self.phases == 3 else 0.0,
            "voltage_l1": self.voltage_v,
            "voltage_l2": self.voltage_v if self.phases == 3 else 0.0,
            "voltage_l3": self.voltage_v if self.phases == 3 else 0.0,
            "applied_current": self._setpoint_a(),
        }
        for role, value in values.items():
            reg = registers.get(role)
            if reg is not None:
                self._put_live(reg, value)
        state_reg = registers["state"]
        raw_state = self._forced_state if self._forced_state is not None else self._state_raw(letter)
        if isinstance(raw_state, str):
            self._put(state_reg, raw_state)
        else:
            self._put(state_reg, raw_state)
        for mapped in self.regmap.states.values():
            if isinstance(mapped, ConditionalState):
                cond = registers[mapped.role]
                self._put_raw(cond, (mapped.mask | 0x011) if self._plugged else 0x001)
        if "rfid_uid" in registers:
            self._put(registers["rfid_uid"], self._card or "")
        watchdog = self._watchdog()
        if "setpoint_validity" in registers:
            # Whole seconds, rounded up: right after a setpoint write it reads the full validity (Alfen).
            remaining = 0.0 if watchdog is None else max(0.0, watchdog[0] - (time.monotonic() - watchdog[1]))
            self._put(registers["setpoint_validity"], math.ceil(remaining))
        if "setpoint_in_use" in registers:
            self._put(registers["setpoint_in_use"], 0 if self._failsafe_active else 1)
        if "error_code" in registers:
            lost = self._failsafe_active and self._failsafe_current_a() == 0
            self._put(registers["error_code"], 16384 if lost else 0)  # ABB: Modbus communication lost

    def _present(self, table: str, address: int, word: int) -> int:
        reg = self._setpoint
        in_setpoint = reg.readable and reg.no_value and reg.table == table and reg.address <= address < reg.end
        if in_setpoint and self._letter() != "C":
            return raw_words(reg, min(reg.no_value))[address - reg.address]  # Schneider: 99 while not charging
        return word


# -- serving --


def _unit_groups(sims: Sequence[SimModbusUnit]) -> dict[int, list[tuple[SimModbusUnit, bool]]]:
    groups: dict[int, list[tuple[SimModbusUnit, bool]]] = {}
    for sim in sims:
        groups.setdefault(sim.unit, []).append((sim, False))
        if sim.station_unit is not None:
            groups.setdefault(sim.station_unit, []).append((sim, True))
    if 0 in groups:
        raise ValueError("unit 0 is the broadcast address")
    for unit, parts in groups.items():
        seen: dict[tuple[str, int], SimModbusUnit] = {}
        for sim, station in parts:
            for key in sim.addresses(station):
                if key in seen and seen[key] is not sim:
                    if key in sim._shared:  # noqa: SLF001
                        continue  # two charge points of one station: the first one answers for the station
                    raise ValueError(f"two simulated devices answer unit {unit} {key[0]} register {key[1]}")
                seen.setdefault(key, sim)
    return groups


def _simdevice(unit: int, parts: list[tuple[SimModbusUnit, bool]]) -> SimDevice:
    owner: dict[tuple[str, int], SimModbusUnit] = {}
    for sim, station in parts:
        for key in sim.addresses(station):
            owner.setdefault(key, sim)
    writable: set[tuple[str, int]] = set()
    for sim, _ in parts:
        writable |= sim._writable  # noqa: SLF001
    by_table: dict[str, list[int]] = {}
    for tbl, addr in owner:
        by_table.setdefault(tbl, []).append(addr)
    tables: dict[str, list[SimData]] = {"coil": [], "discrete": [], "holding": [], "input": []}
    for tbl, addresses in by_table.items():
        for start, count, readonly in _runs(sorted(addresses), {a for t, a in writable if t == tbl}):
            if tbl == "coil":
                tables[tbl].append(SimData(address=start, values=[False] * count, datatype=DataType.BITS))
            else:
                tables[tbl].append(SimData(address=start, count=count, values=0, datatype=DataType.REGISTERS, readonly=readonly))
    for tbl in ("coil", "discrete"):
        if not tables[tbl]:
            # pymodbus needs every table non-empty; park a never-used bit far away.
            tables[tbl].append(SimData(address=0xFFF0, values=[False] * 16, datatype=DataType.BITS))
    for tbl in ("holding", "input"):
        if not tables[tbl]:
            tables[tbl].append(SimData(address=0xFFFE, count=1, datatype=DataType.INVALID))

    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        table = _FC_TABLE.get(function_code, "holding")
        values = [int(v) for v in set_values] if set_values and function_code in _WRITE_FCS else None
        span = range(address, address + (len(values) if values else count))
        involved: list[SimModbusUnit] = []
        for a in span:
            sim = owner.get((table, a))
            if sim is None:
                return ExcCodes.ILLEGAL_ADDRESS
            if sim not in involved:
                involved.append(sim)
        if any(sim._silent for sim, _ in parts):  # noqa: SLF001
            raise NoSuchIdException("silent")  # the server then sends nothing
        for sim, _ in parts:
            if sim not in involved:
                with sim._lock:  # noqa: SLF001
                    sim._touch(time.monotonic())  # the station saw traffic  # noqa: SLF001
        for sim in involved:
            own = [a for a in span if owner[(table, a)] is sim]
            lo, hi = own[0], own[-1] + 1
            sub = values[lo - address : hi - address] if values else None
            answer = sim.handle(function_code, table, lo, hi - lo, sub)
            if answer is None:
                raise NoSuchIdException("asleep")
            if isinstance(answer, ExcCodes):
                return answer
            for a, word in zip(range(lo, hi), answer):
                if 0 <= a - start_address < len(registers):
                    registers[a - start_address] = word
        return None

    return SimDevice(id=unit, simdata=(tables["coil"], tables["discrete"], tables["holding"], tables["input"]), action=action)


def _runs(addresses: list[int], writable: set[int]) -> list[tuple[int, int, bool]]:
    """Contiguous address runs of equal writability: (start, count, readonly)."""
    runs: list[tuple[int, int, bool]] = []
    for addr in addresses:
        readonly = addr not in writable
        if runs and runs[-1][0] + runs[-1][1] == addr and runs[-1][2] == readonly:
            start, count, _ = runs[-1]
            runs[-1] = (start, count + 1, readonly)
        else:
            runs.append((addr, 1, readonly))
    return runs


async def _nobody(*_: Any) -> ExcCodes | None:
    raise NoSuchIdException("no such unit")  # silence, as on a real bus


def _devices(sims: Sequence[SimModbusUnit]) -> list[SimDevice]:
    groups = _unit_groups(sims)
    everything = SimData(address=0, count=0x10000, values=0, datatype=DataType.REGISTERS)
    catch_all = SimDevice(id=0, simdata=[everything], action=_nobody)
    return [_simdevice(unit, parts) for unit, parts in groups.items()] + [catch_all]


def _silencer(sims: Sequence[SimModbusUnit], unit_offset: int) -> Any:
    """Drop outgoing frames of silent or sleeping units (also exception answers the datastore gives before the hook)."""
    groups = _unit_groups(sims)

    def trace_packet(sending: bool, data: bytes) -> bytes:
        if sending and len(data) > unit_offset:
            parts = groups.get(data[unit_offset], [])
            now = time.monotonic()
            if any(sim._silent or sim._asleep(now) for sim, _ in parts):  # noqa: SLF001
                return b""
        return data

    return trace_packet


class SimServer:
    """A running simulator server. `port` is the bound TCP port; `path` the serial port."""

    def __init__(
        self,
        server: ModbusTcpServer | ModbusSerialServer,
        sims: Sequence[SimModbusUnit],
        *,
        port: int | None = None,
        path: str | None = None,
    ) -> None:
        self._server = server
        self.sims = list(sims)
        self.chargers = self.sims  # the name older callers use
        self.port = port
        self.path = path

    async def close(self) -> None:
        await self._server.shutdown()  # type: ignore[no-untyped-call]


async def serve_tcp(sims: Sequence[SimModbusUnit], host: str = "127.0.0.1", port: int = 0) -> SimServer:
    """Serve the devices (one unit each) on Modbus TCP. port=0 binds a free port; see .port."""
    server = ModbusTcpServer(_devices(sims), address=(host, port), ignore_missing_devices=True, trace_packet=_silencer(sims, 6))
    await server.serve_forever(background=True)
    bound = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return SimServer(server, sims, port=bound)


async def serve_rtu_over_tcp(sims: Sequence[SimModbusUnit], host: str = "127.0.0.1", port: int = 0) -> SimServer:
    """Serve the devices as an RS-485 bus behind a serial server: RTU frames over TCP."""
    server = ModbusTcpServer(
        _devices(sims), framer=FramerType.RTU, address=(host, port), ignore_missing_devices=True,
        trace_packet=_silencer(sims, 0),
    )
    await server.serve_forever(background=True)
    bound = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return SimServer(server, sims, port=bound)


async def serve_rtu(sims: Sequence[SimModbusUnit], port_path: str, baudrate: int = 19200, *, parity: str = "N") -> SimServer:
    """Serve the devices as units on one Modbus RTU bus at `port_path` (e.g. SocatPair.b)."""
    server = ModbusSerialServer(
        _devices(sims),
        framer=FramerType.RTU,
        port=port_path,
        baudrate=baudrate,
        parity=parity,
        ignore_missing_devices=True,
        trace_packet=_silencer(sims, 0),
    )
    await server.serve_forever(background=True)
    return SimServer(server, sims, path=port_path)


class SimChargerThread:
    """A background event loop for simulators (chargers and meters), for synchronous code (pytest, demo scripts).

    with SimChargerThread() as sims:
        server = sims.serve_tcp([cp])
        ...
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[SimServer] = []

    def start(self) -> SimChargerThread:
        if self._thread is not None:
            return self
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="sim-chargers", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run a coroutine on the simulator loop and wait for its result."""
        if self._loop is None:
            raise RuntimeError("SimChargerThread is not started")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout_s)

    def serve_tcp(self, sims: Sequence[SimModbusUnit], host: str = "127.0.0.1", port: int = 0) -> SimServer:
        return self._keep(self.call(serve_tcp(sims, host, port)))

    def serve_rtu_over_tcp(self, sims: Sequence[SimModbusUnit], host: str = "127.0.0.1", port: int = 0) -> SimServer:
        return self._keep(self.call(serve_rtu_over_tcp(sims, host, port)))

    def serve_rtu(
        self, sims: Sequence[SimModbusUnit], port_path: str, baudrate: int = 19200, *, parity: str = "N"
    ) -> SimServer:
        return self._keep(self.call(serve_rtu(sims, port_path, baudrate, parity=parity)))

    def _keep(self, server: SimServer) -> SimServer:
        self._servers.append(server)
        return server

    def close_server(self, server: SimServer) -> None:
        self.call(server.close())
        if server in self._servers:
            self._servers.remove(server)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        for server in list(self._servers):
            self.close_server(server)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop = None
        self._thread = None

    def __enter__(self) -> SimChargerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_in_thread() -> SimChargerThread:
    """A started SimChargerThread; call .stop() when done (or use it as a context manager)."""
    return SimChargerThread().start()


def charger_models() -> Iterable[str]:
    """Every charger model a SimCharger can be made of."""
    from drivers.modbus import available_models

    return available_models()
