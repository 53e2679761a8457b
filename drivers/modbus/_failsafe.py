"""ModbusCharger's fail-safe: what the charger does on its own when the gateway goes quiet.

Where the gateway sets it, the fail-safe current is written (0 without a session, the share with
one) and its timeout read back; where the device sets it (Alfen, in ACE) it is only read, and the
timeout is learned from the setpoint validity. The keep-alive period follows from that timeout.
"""
from __future__ import annotations

import logging

from drivers.errors import DeviceError, ModbusExceptionResponse, NoValue

from ._mapcodec import raw_value
from ._mapio import MapIO
from ._maptypes import MAX_KEEPALIVE_SHARE, RegisterMap

log = logging.getLogger("drivers.modbus")

FailsafeReport = dict[str, str | int | float | bool | None]
UNKNOWN_TIMEOUT_PERIOD_S = 3.0  # keep-alive period while the device has not told its timeout yet
TIMEOUT_TOLERANCE_S = 1.0  # a timeout read back this close to the one stated is the same one


def unbilled_fallback_warning(current_a: float | str, timeout_s: float | str | None) -> str:
    """What a charger whose safe current is set on the device itself (Alfen, in ACE) does without its gateway."""
    after = f"{timeout_s:g} s" if isinstance(timeout_s, (int, float)) else (timeout_s or "its setpoint validity")
    amps = f"{current_a:g} A" if isinstance(current_a, (int, float)) else current_a
    return (f"a plugged car will charge at {amps}, unbilled, whenever the gateway is down for more than {after}"
            " (the safe current is set on the charger, not by the gateway): set the safe current to 0 A in"
            " ACE Service Installer")


class ChargerFailsafe:
    """The fail-safe and timeout half of ModbusCharger, which sets every attribute declared here."""

    name: str
    regmap: RegisterMap
    io: MapIO
    failsafe_current_a: float | None
    device_timeout_s: float | None
    device_failsafe_current_a: float | None
    failsafe_problem: str | None
    _stated_timeout_s: float | None
    _default_timeout_s: float | None
    _session_enabled: bool
    _failsafe_written: float | None
    _failsafe_dirty: bool
    _learn_validity: bool
    _timeout_logged: float | None
    _timeout_mismatch_warned: float | None

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

    async def failsafe_status(self) -> FailsafeReport:
        """What the charger would do if the gateway went quiet, as read from it (reads only).

        ``configured`` is True when the charger has a timeout armed and a fallback current,
        False when it has not, None when the model has no such registers.
        """
        failsafe = self.regmap.failsafe
        if failsafe is None:
            return {"configured": None, "set_by": None, "current_a": None, "timeout_s": None,
                    "note": f"{self.regmap.model} has no fail-safe registers known: if the gateway dies the last current stays"}
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

    async def _read_optional(self, role: str) -> int | float | None:
        try:
            return self.io.value(role, await self.io.read_register(role))
        except (NoValue, ModbusExceptionResponse):
            return None

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
