"""One generic Modbus charger driver; what differs per model is in its register map.

What the map cannot say is in no model-specific code either: every quirk of the eight
supported chargers is expressed as map data (see _registermap's schema): Alfen's expiring
setpoint (keepalive rewrite_setpoint) and station unit (station_unit), Schneider's life bit
(keepalive write) and word-swapped floats (word_order LSW), ABB's write-only setpoint with a
readback, its "others" state (a conditional state) and its stop register (never_write),
Bender's 0xFFFFFFFF (no_value), Heidelberg's standby (setup.writes), Etrel's pause trigger
(control.pause), and models without a lifetime counter (session_energy, which this driver
turns into a lifetime counter with drivers.energy.SessionEnergyLifetime).
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
from drivers.errors import DeviceError, EnergyCounterError, ModbusExceptionResponse, NoValue, UnsupportedByModel
from drivers.tokens import InvalidToken, normalize_uid

from ._bus import ModbusDevice
from ._mapio import METER_ROLES, MapIO
from ._registermap import (
    MAX_KEEPALIVE_SHARE,
    ConditionalState,
    RegisterMap,
    encode,
    field_value,
    raw_value,
    raw_words,
)

log = logging.getLogger("drivers.modbus")

FailsafeReport = dict[str, str | int | float | bool | None]
SESSION_STUCK_POWER_W = 500.0
SESSION_STUCK_AFTER_S = 120.0
UNKNOWN_TIMEOUT_PERIOD_S = 3.0  # keep-alive period while the device has not told its timeout yet
TIMEOUT_TOLERANCE_S = 1.0  # a timeout read back this close to the one stated is the same one


def unbilled_fallback_warning(current_a: float | str, timeout_s: float | str | None) -> str:
    """What a charger whose safe current is set on the device itself (Alfen, in ACE) does without its gateway."""
    after = f"{timeout_s:g} s" if isinstance(timeout_s, (int, float)) else (timeout_s or "its setpoint validity")
    amps = f"{current_a:g} A" if isinstance(current_a, (int, float)) else current_a
    return (f"a plugged car will charge at {amps}, unbilled, whenever the gateway is down for more than {after}"
            " (the safe current is set on the charger, not by the gateway): set the safe current to 0 A in"
            " ACE Service Installer")


class ModbusCharger:
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

    @property
    def failsafe_timeout_s(self) -> float | None:
        """The device's keep-alive timeout, as best known: for a device-set one (Alfen's validity) the
        config's, else what the device reported, else None until it has; for a gateway-armed one
        what the device read back, else what is written (the config's, else the map's)."""
        failsafe = self.regmap.failsafe
        if failsafe is None:
            return None
        if failsafe.set_by == "device":
            if self._stated_timeout_s is not None:
                return self._stated_timeout_s
            if self.io.has("setpoint_validity"):
                return self.device_timeout_s
            return self._default_timeout_s
        if self.device_timeout_s is not None:
            return self.device_timeout_s
        return self._written_timeout_s

    @property
    def _written_timeout_s(self) -> float | None:
        return self._stated_timeout_s if self._stated_timeout_s is not None else self._default_timeout_s

    @property
    def keepalive_interval_s(self) -> float | None:
        """keepalive() must be called at least this often (None: the model needs no keep-alive).

        At most 0.4 of the device's timeout; every few seconds while the timeout is not known yet.
        May change once the device told its timeout: callers re-read it every cycle.
        """
        keepalive = self.regmap.keepalive
        if keepalive is None:
            return None
        timeout = self.failsafe_timeout_s
        if keepalive.every_s is not None:
            return keepalive.every_s if timeout is None else min(keepalive.every_s, MAX_KEEPALIVE_SHARE * timeout)
        if timeout is None:
            return UNKNOWN_TIMEOUT_PERIOD_S
        return min(keepalive.every or MAX_KEEPALIVE_SHARE, MAX_KEEPALIVE_SHARE) * timeout

    @property
    def failsafe_current_now_a(self) -> float | None:
        """What the charger gives a plugged car if the gateway goes quiet now (None: not known)."""
        failsafe = self.regmap.failsafe
        if failsafe is None:
            return None
        if failsafe.set_by == "device":
            return self.device_failsafe_current_a
        return self._failsafe_written

    @property
    def failsafe_warning(self) -> str | None:
        """Plain words for a technician when a gateway outage gives current no session pays for."""
        failsafe = self.regmap.failsafe
        if failsafe is None:
            return None
        if failsafe.set_by == "device":
            current = self.device_failsafe_current_a
            if current == 0:
                return None
            return unbilled_fallback_warning(
                "its safe current (not read yet)" if current is None else current, self.failsafe_timeout_s)
        if self.failsafe_problem is not None:
            return f"the fail-safe current could not be set on the charger: {self.failsafe_problem}"
        return None

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

    # drivers.api.Identifier

    async def identify(self) -> str | None:
        """The UID of the card at the built-in reader, normalised, or None when there is none."""
        words = await self.io.read_register("rfid_uid")
        reg = self.io.source("rfid_uid")
        if reg.type == "ascii":
            text = str(self.io.text_or_value("rfid_uid", words) or "").strip("\x00 ")
            if not text or set(text) <= {"0"}:
                return None
        else:
            raw = raw_value(reg, words)
            if raw == 0 or raw in reg.no_value:
                return None
            text = raw.to_bytes(2 * reg.words, "big").hex()
        try:
            return normalize_uid(text)
        except InvalidToken:
            raise NoValue(f"rfid_uid reads {text!r}, which is not a hex UID", device=self.name, register=reg.address) from None

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

    async def failsafe_status(self) -> FailsafeReport:
        """What the charger would do if the gateway went quiet, as read from it (reads only).

        ``configured`` is True when the charger has a timeout armed and a fallback current,
        False when it has not, None when the model has no such registers.
        """
        failsafe = self.regmap.failsafe
        if failsafe is None:
            return {"configured": None, "set_by": None, "current_a": None, "timeout_s": None,
                    "note": f"{self.model} has no fail-safe registers known: if the gateway dies the last current stays"}
        report: FailsafeReport = {"set_by": failsafe.set_by, "current_a": None, "timeout_s": None}
        current_role = failsafe.current_roles[0]
        if self.io.has(current_role):
            report["current_a"] = await self._read_optional(current_role)
        if self.io.has("failsafe_timeout"):
            report["timeout_s"] = await self._read_optional("failsafe_timeout")
        elif failsafe.set_by == "device":
            report["timeout_s"] = self.failsafe_timeout_s
            report["note"] = "the timeout is configured on the charger; this is what the driver uses"
            if self.io.has("setpoint_validity") and self.device_timeout_s is not None:
                report["device_timeout_s"] = self.device_timeout_s
        keepalive = self.regmap.keepalive
        if keepalive is not None and keepalive.kind == "write" and keepalive.disabled_when is not None:
            assert keepalive.register is not None
            words = await self.io.read_register(keepalive.register)
            if raw_value(self.io.source(keepalive.register), words) == keepalive.disabled_when:
                report["configured"] = False
                report["note"] = f"the {keepalive.register} keep-alive is switched off on the charger"
                return report
        timeout = report["timeout_s"]
        report["configured"] = report["current_a"] is not None and (timeout is None or bool(timeout))
        current = report["current_a"]
        if failsafe.set_by == "device" and isinstance(current, (int, float)) and current > 0:
            report["warning"] = unbilled_fallback_warning(current, self.failsafe_timeout_s)
        return report

    # Internals

    async def _read_optional(self, role: str) -> int | float | None:
        try:
            return self.io.value(role, await self.io.read_register(role))
        except (NoValue, ModbusExceptionResponse):
            return None

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

    async def _learn_setpoint_validity(self) -> None:
        """Right after a setpoint write the remaining validity (Alfen 1208) is the whole validity set in ACE."""
        try:
            validity = await self._read_optional("setpoint_validity")
        except DeviceError as exc:
            log.info("%s: cannot read the setpoint validity yet (%s); re-writing every %g s until then",
                     self.name, exc, UNKNOWN_TIMEOUT_PERIOD_S)
            return
        if validity is None or validity <= 0:
            return  # no value now: tried again after the next write
        self._learn_validity = False
        address = self.io.source("setpoint_validity").address
        self._learned_timeout(float(validity), source=f"setpoint validity (register {address})")

    async def _read_back_timeout(self, written: float) -> None:
        """What a gateway-armed timeout really is on the device (it may clamp or ignore what was written)."""
        if not self.io.has("failsafe_timeout"):
            return
        try:
            held = await self._read_optional("failsafe_timeout")
        except DeviceError:
            return  # the poll says so; the written value is used meanwhile
        if held is None:
            return
        if held <= 0:
            if self._timeout_mismatch_warned != held:
                self._timeout_mismatch_warned = held
                log.warning("%s: the charger reads back a fail-safe timeout of 0 (switched off) after %g s was"
                            " written: it will not fall back if the gateway dies", self.name, written)
            self.device_timeout_s = None
            return
        address = self.io.source("failsafe_timeout").address
        self._learned_timeout(float(held), source=f"fail-safe timeout (register {address})")

    def _learned_timeout(self, timeout_s: float, *, source: str) -> None:
        self.device_timeout_s = timeout_s
        stated = self._stated_timeout_s if self.regmap.failsafe and self.regmap.failsafe.set_by == "device" \
            else self._written_timeout_s
        differs = stated is not None and abs(stated - timeout_s) > TIMEOUT_TOLERANCE_S
        if differs and self._timeout_mismatch_warned != timeout_s:
            self._timeout_mismatch_warned = timeout_s
            if self.regmap.failsafe and self.regmap.failsafe.set_by == "device":
                log.warning("%s: failsafe_timeout_s is %g s but the charger reports a %s of %g s; the configured"
                            " %g s is used: correct the config or the charger", self.name, stated, source,
                            timeout_s, stated)
            else:
                log.warning("%s: %g s was written but the charger holds a %s of %g s; that is used",
                            self.name, stated, source, timeout_s)
        if self._timeout_logged != timeout_s:
            self._timeout_logged = timeout_s
            log.info("%s: the charger's %s is %g s; keep-alive every %g s", self.name, source, timeout_s,
                     self.keepalive_interval_s or 0)

    def _failsafe_target_a(self) -> float:
        assert self.failsafe_current_a is not None
        return self.failsafe_current_a if self._session_enabled else 0.0

    async def _write_failsafe_current(self) -> None:
        """Where the gateway sets it: the share while a session is enabled, else 0; written when it changes.

        A device error is not raised (the setpoint write that follows says so): the write is
        retried by keepalive(). A register the firmware refuses is reported once and not retried.
        """
        failsafe = self.regmap.failsafe
        if failsafe is None or failsafe.set_by != "gateway" or self.failsafe_current_a is None:
            return
        target = self._failsafe_target_a()
        if self._failsafe_written == target and not self._failsafe_dirty:
            return
        self._failsafe_dirty = True
        try:
            for role in failsafe.current_roles:
                await self.io.write_value(role, target)
        except ModbusExceptionResponse as exc:
            self._failsafe_refused(exc)
            self._failsafe_dirty = False
            return
        except DeviceError as exc:
            log.warning("%s: cannot write the fail-safe current %g A yet: %s", self.name, target, exc)
            return
        self._failsafe_dirty = False
        self._failsafe_written = target
        self.failsafe_problem = None

    def _failsafe_refused(self, exc: Exception) -> None:
        if self.failsafe_problem is None:
            log.warning("%s: fail-safe not configured: %s", self.name, exc)
        self.failsafe_problem = str(exc)

    async def _write_keepalive(self) -> None:
        keepalive = self.regmap.keepalive
        assert keepalive is not None and keepalive.register is not None and keepalive.value is not None
        reg = self.io.reg(keepalive.register)
        device = self.io.station if reg.station else self.device
        await device.write_register(reg.address, keepalive.value)
        self._last_keepalive_write = time.monotonic()

    def _state(self, words: dict[str, list[int]]) -> str:
        reg = self.io.source("state")
        address = reg.address
        if reg.type == "ascii":
            key: int | str = str(self.io.text_or_value("state", words["state"]))
        else:
            raw = raw_value(reg, words["state"])
            if raw in reg.no_value:
                raise NoValue(f"state reads 0x{raw:X}, which means no value", device=self.name, register=address)
            key = field_value(reg, raw)
            if reg.type.startswith("int"):
                value = self.io.value("state", words["state"])
                key = int(value)
        letter = self.regmap.states.get(key)
        if letter is None:
            raise NoValue(f"state value {key!r} is not in the map", device=self.name, register=address)
        if isinstance(letter, ConditionalState):
            bits = raw_value(self.io.source(letter.role), words[letter.role])
            return letter.set if bits & letter.mask else letter.clear
        return letter

    def _check_session_register(self, session_wh: float, power_w: float | None) -> None:
        """Some Etrel firmware reads 0 in the session register (evcc #5346): say so once, loudly."""
        now = time.monotonic()
        if session_wh > 0 or not power_w or power_w < SESSION_STUCK_POWER_W:
            self._stuck_since = None
            return
        if self._stuck_since is None:
            self._stuck_since = now
        elif now - self._stuck_since >= SESSION_STUCK_AFTER_S and not self._stuck_reported:
            self._stuck_reported = True
            log.error(
                "%s: %s's session energy register stays 0 while it draws %.0f W: this charger's energy is not"
                " counted; configure a billing meter for it", self.name, self.model, power_w,
            )

    async def _measurement(self, words: dict[str, list[int]]) -> Measurement:
        if self._energy_role == "session_energy":
            if self._counter_error is not None:
                raise EnergyCounterError(str(self._counter_error), device=self.name)
            assert self.energy_counter is not None
            session = self.io.value("session_energy", words["session_energy"])
            self._check_session_register(float(session), self.io.optional("power", words))
            try:
                energy = self.energy_counter.update(float(session))
            except OSError as exc:
                # The reading itself is good; the counter retries the save on the next update.
                log.error("%s: cannot save the lifetime energy counter: %s", self.name, exc)
                energy = self.energy_counter.value_wh
            return self.io.measurement(words, energy_wh=energy)
        return self.io.measurement(words)


if TYPE_CHECKING:  # static checks: ModbusCharger has the core and every optional ability of drivers.api
    _charger: type[Charger] = ModbusCharger
    _meter: type[Meter] = ModbusCharger
    _identifier: type[Identifier] = ModbusCharger
    _keepalive: type[KeepAlive] = ModbusCharger
    _energy_counter: type[OwnEnergyCounter] = ModbusCharger
    _failsafe: type[FailsafeReporter] = ModbusCharger
    _errors: type[DeviceError] = NoValue
