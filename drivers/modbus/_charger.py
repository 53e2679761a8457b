"""One generic Modbus charger driver; what differs per model is in its register map.

What the map cannot say is in no model-specific code either: every quirk of the eight
supported chargers is expressed as map data (see maps/README.md): Alfen's expiring
setpoint (keepalive rewrite_setpoint) and station unit (station_unit), Schneider's life bit
(keepalive write) and word-swapped floats (word_order LSW), ABB's write-only setpoint with a
readback, its "others" state (a conditional state) and its stop register (never_write),
Bender's 0xFFFFFFFF (no_value), Heidelberg's standby (setup.writes), Etrel's pause trigger
(control.pause), and models without a lifetime counter (session_energy, which this driver
turns into a lifetime counter with drivers.energy.SessionEnergyLifetime).

The fail-safe and its timeout are in _failsafe, decoding the polled words in _chargerreading.
"""
from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from drivers.api import (
    Charger,
    ChargerReading,
    FailsafeReporter,
    Identifier,
    KeepAlive,
    Measurement,
    Meter,
    OwnEnergyCounter,
)
from drivers.energy import SessionEnergyLifetime
from drivers.errors import DeviceError, ModbusExceptionResponse, NoValue, UnsupportedByModel

from ._bus import ModbusDevice
from ._chargerreading import ChargerDecoding
from ._failsafe import ChargerFailsafe, unbilled_fallback_warning
from ._mapcodec import encode, raw_value, raw_words
from ._mapio import METER_ROLES, MapIO
from ._maptypes import ConditionalState, RegisterMap

__all__ = ["ModbusCharger", "unbilled_fallback_warning"]  # the technician tool imports the warning from here

log = logging.getLogger("drivers.modbus")


class ModbusCharger(ChargerFailsafe, ChargerDecoding):
    """A charger driven over Modbus as its register map says. Implements drivers.api Charger and Meter
    (and Identifier where the map has an ``rfid_uid`` register: see ``has_identifier``).

    Call ``setup()`` once after creating it, then ``poll()`` and ``keepalive()`` every cycle, at
    least every ``keepalive_interval_s`` (re-read it: it changes once the device told its timeout).
    Where the gateway sets the fail-safe current it is 0 except between enable(True) and
    enable(False), when it is ``failsafe_current_a`` (the session's load-management share). ``energy_wh`` in a reading is, in this order: the
    billing meter's lifetime register (when the charger has a ``meter``), the map's lifetime
    counter (``energy``; VAh on Heidelberg, not billing-grade), or the lifetime counter the
    driver builds from the session register (``energy_counter``, for ABB and Etrel).
    """

    def __init__(
        self,
        *,
        name: str,
        regmap: RegisterMap,
        device: ModbusDevice,
        station_device: ModbusDevice | None = None,
        max_current_a: float | None = None,
        failsafe_current_a: float | None = None,
        failsafe_timeout_s: float | None = None,
        meter: Meter | None = None,
        energy_counter: SessionEnergyLifetime | None = None,
        energy_counter_error: Exception | None = None,
    ) -> None:
        control = regmap.control
        if control is None:
            raise ValueError(f"{name}: {regmap.model} is not a charger map")
        max_a = control.max_current_a if max_current_a is None else float(max_current_a)
        if not control.min_current_a <= max_a <= control.max_current_a:
            raise ValueError(
                f"{name}: max_current_a {max_a} is outside {control.min_current_a}..{control.max_current_a}"
                f" for {regmap.model}"
            )
        self.name = name
        self.regmap = regmap
        self.device = device
        self.io = MapIO(name=name, regmap=regmap, device=device, station=station_device)
        self.max_current_a = max_a
        self.meter = meter
        self.failsafe_current_a: float | None = None  # gateway-armed: the share while a session is enabled
        # The timeout: the config's (stated), else what the device reported (learned), else the map's.
        self._stated_timeout_s: float | None = None
        self._default_timeout_s: float | None = None
        self.device_timeout_s: float | None = None  # as the device reported it (readback, Alfen's 1208)
        self.device_failsafe_current_a: float | None = None  # set_by device: the safe current read at setup
        failsafe = regmap.failsafe
        if failsafe is not None:
            timeout = failsafe.timeout_s if failsafe_timeout_s is None else float(failsafe_timeout_s)
            if timeout <= 0:
                raise ValueError(f"{name}: failsafe_timeout_s must be > 0, got {timeout}")
            self._stated_timeout_s = None if failsafe_timeout_s is None else timeout
            self._default_timeout_s = failsafe.timeout_s
            if failsafe.set_by == "device":
                if failsafe_current_a is not None:
                    raise ValueError(
                        f"{name}: {regmap.model}'s fail-safe current is configured on the charger, not by the gateway"
                    )
            else:
                current = failsafe.current_a if failsafe_current_a is None else float(failsafe_current_a)
                if current and not control.min_current_a <= current <= max_a:
                    raise ValueError(
                        f"{name}: failsafe_current_a {current} is neither 0 nor within {control.min_current_a}..{max_a}"
                    )
                for role in failsafe.current_roles:
                    encode(self.io.reg(role), current)  # fails now, not at setup, if the register cannot hold it
                if regmap.register("failsafe_timeout") is not None:
                    try:
                        encode(self.io.reg("failsafe_timeout"), timeout)
                    except ValueError as exc:
                        raise ValueError(f"{name}: failsafe_timeout_s {timeout:g} cannot be written to"
                                         f" {regmap.model}: {exc}") from None
                self.failsafe_current_a = current
        elif failsafe_current_a is not None or failsafe_timeout_s is not None:
            given = "failsafe_current_a" if failsafe_current_a is not None else "failsafe_timeout_s"
            raise ValueError(f"{name}: {given}: {regmap.model} has no fail-safe registers")

        self._energy_role: str | None = None
        if meter is None:
            if regmap.register("energy") is not None:
                self._energy_role = "energy"
            else:
                self._energy_role = "session_energy"
                if energy_counter is None and energy_counter_error is None:
                    energy_counter = SessionEnergyLifetime(name=f"{name} lifetime energy")
                    log.warning(
                        "%s: %s has no lifetime energy register and no billing meter; its lifetime counter"
                        " is kept in memory only", name, regmap.model,
                    )
        self.energy_counter = energy_counter
        self._counter_error = energy_counter_error

        self._setpoint = self.io.reg(control.register)
        state_roles = ("state", *{s.role for s in regmap.states.values() if isinstance(s, ConditionalState)})
        own_meter = () if meter is not None else tuple(r for r in (self._energy_role, *METER_ROLES[1:]) if r)
        self._poll_roles = (*state_roles, *own_meter, control.register)
        self._state_roles = state_roles
        self._meter_roles = own_meter

        self._enabled = True
        self._paused = False
        self._current_a = control.min_current_a
        self._commanded = False  # a setpoint was asked for; only then is there one to keep alive
        self._dirty = False  # the last setpoint write failed
        self._last_setpoint_write = 0.0
        self._last_keepalive_write = 0.0
        self._keepalive_disabled = False
        self._setup_recoveries: int | None = None  # device.recoveries when setup last ran
        self.failsafe_problem: str | None = None  # why the fail-safe could not be written, if so
        # Gateway-armed fail-safe current: 0 unless a session is enabled (enable(True) .. enable(False)).
        self._session_enabled = False
        self._failsafe_written: float | None = None  # the fail-safe current the device holds, as last written
        self._failsafe_dirty = False  # the last fail-safe current write failed: retried by keepalive()
        self._learn_validity = self.io.has("setpoint_validity")  # read it after the next setpoint write
        self._timeout_logged: float | None = None
        self._timeout_mismatch_warned: float | None = None
        self._stuck_since: float | None = None  # the session register stays 0 while power flows
        self._stuck_reported = False

    def __repr__(self) -> str:
        return f"ModbusCharger({self.name!r}, {self.regmap.model}, {self.device.link.name} unit {self.device.unit})"

    @property
    def model(self) -> str:
        return self.regmap.model

    @property
    def has_identifier(self) -> bool:
        """Whether identify() can work: the map has a built-in reader's UID register."""
        return self.io.has("rfid_uid")

    # State and control: enable and set_max_current are drivers.api.Charger's; status and enabled read back

    async def status(self) -> str:
        words = await self.io.read_roles(*self._state_roles)
        return self._state(words)

    async def enabled(self) -> bool:
        control = self.regmap.control
        assert control is not None
        commanded = self._enabled and not self._paused
        if control.pause is not None:
            return commanded  # a pause trigger leaves nothing to read back
        words = await self.io.read_register(control.register)
        reg = self.io.source(control.register)
        raw = raw_value(reg, words)
        if raw in reg.no_value:
            return commanded  # e.g. Schneider's 99 while no charge is in progress
        return raw != control.stop_value

    async def enable(self, on: bool) -> None:
        """Off writes the stop value (or the pause trigger); on writes the last set current (the minimum if none was set yet).

        Where the gateway sets the fail-safe current: off writes 0 before the stop, so there is no
        moment in which a timeout would give current to a car without a session; on writes the
        share after the setpoint (the car charges sooner, and a gateway dying in between leaves 0).
        """
        self._enabled = on
        self._session_enabled = on
        if on:
            await self._write_setpoint()
            await self._write_failsafe_current()
        else:
            await self._write_failsafe_current()
            await self._write_setpoint()

    async def set_max_current(self, amps: float) -> None:
        """Clamp to min..max_current_a; below the minimum (6 A) means pause. Written only while enabled.

        A pause lasts until a current of at least the minimum is set: enable(True) writes the
        last set current, and a pause was the last one, so it does not override load management.
        """
        control = self.regmap.control
        assert control is not None
        if amps < control.min_current_a:
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
        if self.meter is not None:
            return await self.meter.measure()
        return await self._measurement(await self.io.read_roles(*self._meter_roles))

    # Polling and upkeep

    async def poll(self) -> ChargerReading:
        """State, lifetime energy, power, currents and the setpoint readback, in as few requests as the map allows.

        Raises NoValue when the state or the energy counter has no value this time; power and
        currents without a value come back as None. With a billing meter, the measurement is the meter's.
        """
        words = await self.io.read_roles(*self._poll_roles)
        state = self._state(words)
        offered = self.io.optional(self.regmap.control.register, words)  # type: ignore[union-attr]
        if self.meter is not None:
            measurement = await self.meter.measure()
        else:
            measurement = await self._measurement(words)
        return ChargerReading(
            iec61851=state,
            measurement=measurement,
            offered_current_a=None if offered is None else float(offered),
        )

    async def setup(self) -> None:
        """Check the connector, write the map's setup registers, then the fail-safe current(s), then its timeout."""
        regmap = self.regmap
        if regmap.connectors is not None and self.io.has("connector_count"):
            count = self.io.value("connector_count", await self.io.read_register("connector_count"))
            if regmap.connector > count:
                raise UnsupportedByModel(
                    f"connector {regmap.connector} does not exist: the station reports {count} charge point(s)",
                    device=self.name, register=self.io.source("connector_count").address,
                )
        for address, value in regmap.setup_writes:
            await self.device.write_register(address, value)
        failsafe = regmap.failsafe
        if failsafe is not None and failsafe.set_by == "gateway" and self.failsafe_current_a is not None:
            # The fallback current (0 without a session) is in place before the watchdog that applies it is armed.
            self._failsafe_written = None  # a rebooted charger holds its factory value
            await self._write_failsafe_current()
            written = self._written_timeout_s
            if regmap.register("failsafe_timeout") is not None and written is not None and self.failsafe_problem is None:
                try:
                    await self.io.write_value("failsafe_timeout", written)
                except ModbusExceptionResponse as exc:
                    # Older firmware (ABB < 1.9) lacks the registers; the charger still charges.
                    self._failsafe_refused(exc)
                else:
                    await self._read_back_timeout(written)
        elif failsafe is not None and failsafe.set_by == "device":
            if self.io.has(failsafe.current_roles[0]):
                current = await self._read_optional(failsafe.current_roles[0])
                if current is not None and current != self.device_failsafe_current_a and current > 0:
                    log.warning("%s: %s", self.name, unbilled_fallback_warning(current, self.failsafe_timeout_s))
                self.device_failsafe_current_a = current
            self._learn_validity = self.io.has("setpoint_validity")  # a rebooted charger may have another one
        keepalive = regmap.keepalive
        if keepalive is not None and keepalive.kind == "write":
            assert keepalive.register is not None
            disabled = False
            if keepalive.disabled_when is not None:
                words = await self.io.read_register(keepalive.register)
                disabled = raw_value(self.io.source(keepalive.register), words) == keepalive.disabled_when
            if disabled and not self._keepalive_disabled:
                log.info("%s: %s keep-alive is switched off on the charger", self.name, keepalive.register)
            self._keepalive_disabled = disabled
            if not disabled:
                await self._write_keepalive()
        self._setup_recoveries = self.device.recoveries

    async def keepalive(self) -> None:
        """Call once per poll cycle; writes or reads only when the model needs it now.

        After the device was unavailable and answers again, setup and the setpoint are
        written again, since a rebooted charger forgets them.
        """
        if self._setup_recoveries is not None and self._setup_recoveries != self.device.recoveries:
            await self.setup()
            self._dirty = self._dirty or self._commanded
        await self._write_failsafe_current()  # no I/O unless it failed or was not reached (a setpoint write failed)
        if self._dirty:
            await self._write_setpoint()
        keepalive = self.regmap.keepalive
        period = self.keepalive_interval_s
        if keepalive is None or period is None:
            return
        now = time.monotonic()
        if keepalive.kind == "traffic":
            if now - self.device.last_ok >= period:
                await self.status()
        elif keepalive.kind == "rewrite_setpoint":
            if self._commanded and now - self._last_setpoint_write >= period:
                await self._write_setpoint()
        elif not self._keepalive_disabled and now - self._last_keepalive_write >= period:
            await self._write_keepalive()

    async def identity(self) -> dict[str, str | int | float | bool | None]:
        """Model plus the map's identity registers; None where the device rejects one (older firmware)."""
        return await self.io.identity()

    # Internals

    def _target_words(self) -> tuple[int, list[int]]:
        """(address, words) of the write that makes the charger offer what is wanted now."""
        control = self.regmap.control
        assert control is not None
        reg = self._setpoint
        if not self._enabled or self._paused:
            if control.pause is not None:
                return control.pause[0], [control.pause[1]]
            return reg.address, raw_words(reg, control.stop_value)
        # Round down to the register's resolution: never offer more than asked.
        steps = math.floor(self._current_a / reg.scale + 1e-9)
        return reg.address, encode(reg, steps * reg.scale)

    async def _write_setpoint(self) -> None:
        self._commanded = True
        self._dirty = True
        address, words = self._target_words()
        device = self.io.station if self._setpoint.station else self.device
        if len(words) == 1:
            await device.write_register(address, words[0])
        else:
            await device.write_registers(address, words)
        self._dirty = False
        self._last_setpoint_write = time.monotonic()
        if self._learn_validity:
            await self._learn_setpoint_validity()

    async def _write_keepalive(self) -> None:
        keepalive = self.regmap.keepalive
        assert keepalive is not None and keepalive.register is not None and keepalive.value is not None
        reg = self.io.reg(keepalive.register)
        device = self.io.station if reg.station else self.device
        await device.write_register(reg.address, keepalive.value)
        self._last_keepalive_write = time.monotonic()


if TYPE_CHECKING:  # static checks: ModbusCharger has the core and every optional ability of drivers.api
    _charger: type[Charger] = ModbusCharger
    _meter: type[Meter] = ModbusCharger
    _identifier: type[Identifier] = ModbusCharger
    _keepalive: type[KeepAlive] = ModbusCharger
    _energy_counter: type[OwnEnergyCounter] = ModbusCharger
    _failsafe: type[FailsafeReporter] = ModbusCharger
    _errors: type[DeviceError] = NoValue
