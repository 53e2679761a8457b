"""The per-EVSE session state machine: the heart of the product.

Pure logic, no I/O. It is fed what happened (a decision to authorize, a charger reading,
a stop request, a fault, the clock) and answers with actions for site.py to carry out
in order: record the session, offer current, record a sample, end the session.

    tap/app --Decision--> on_authorized --+--> StartSession, Offer(max)      (vehicle plugged)
                                          +--> pending until plug or timeout (vehicle not yet there)
    charger reading -----> on_reading ----+--> StartSession (plug after tap), EndSession (unplug),
                                               RecordSample (state change or interval)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from drivers.api import ChargerReading

from .authorization import Decision
from .clock import rfc3339, utc_now

PLUGGED = frozenset("BCD")
DRAWING = frozenset("CD")


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    decision: Decision
    deadline: float  # monotonic


@dataclass(slots=True)
class ActiveSession:
    id: str
    token: str | None
    decision_method: str
    meter_start_wh: int
    started_mono: float
    last_sample_mono: float = 0.0
    last_sample_charging: bool | None = None
    recovering: bool = False  # found running at start-up; the first reading decides
    # The charger's counter as the session sees it: raw register + energy_offset_wh, never falling.
    energy_offset_wh: int = 0
    last_energy_wh: int | None = None
    last_energy_mono: float | None = None
    suspect_raw_wh: int | None = None  # a reading below the last one, waiting for confirmation
    implausible_readings: int = 0
    implausible_since: datetime | None = None  # when the first reading of a held-back jump was taken
    # Counted by the charger, not billed (lasting implausible jumps): how much and why.
    unbilled_wh: int = 0
    unbilled_reason: str | None = None
    ending: bool = False  # its end is decided and being recorded (again, after a full disk)


# -- actions ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StartSession:
    decision: Decision
    reading: ChargerReading
    at: datetime


@dataclass(frozen=True, slots=True)
class EndSession:
    reason: str  # local, remote, ev_disconnected, deauthorized, power_loss, fault
    reading: ChargerReading | None  # the fallback when no fresh reading can be taken after stopping
    at: datetime
    final: bool = False  # reading and time are the session's last: retrying a record that failed


@dataclass(frozen=True, slots=True)
class Offer:
    amps: float  # 0 pauses the charger
    reassert: bool = False  # the charger lost what it was told (a reboot): set it up again first


@dataclass(frozen=True, slots=True)
class EnergyCounterRebased:
    """The charger's counter was reset or jumped; the session's offset changed (persist it).
    jump_wh > 0: that many Wh were counted and not billed; unbilled_wh/unbilled_reason are the
    session's totals after it."""

    offset_wh: int
    detail: str
    jump_wh: int = 0
    unbilled_wh: int = 0
    unbilled_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RecordSample:
    reading: ChargerReading
    charging: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class AuthorizationTimedOut:
    decision: Decision


Action = StartSession | EndSession | Offer | RecordSample | AuthorizationTimedOut | EnergyCounterRebased

REASSERT_EVERY_S = 5.0


@dataclass(slots=True)
class EvseSessionMachine:
    evse_id: str
    max_current_a: float
    connect_timeout_s: float
    sample_interval_s: float
    max_plausible_w: float = 100_000.0  # a counter rising faster than this is not believed at once
    available: bool = True
    reading: ChargerReading | None = None
    fault: str | None = None
    pending: PendingAuthorization | None = None
    session: ActiveSession | None = None
    finishing: bool = False  # the session ended, the vehicle is still plugged in
    offered_a: float = 0.0
    _last_reassert: float = float("-inf")

    # -- what the outside asks ---------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self.reading is not None and self.reading.iec61851 in PLUGGED

    def can_start(self) -> str | None:
        """None when a new authorization can be taken here, else why not."""
        if not self.available:
            return "EVSE is unavailable"
        if self.fault:
            return f"EVSE is faulted: {self.fault}"
        if self.session is not None:
            return "a session is running on this EVSE"
        return None

    def status(self) -> str:
        """OCPP 1.6 ChargePointStatus."""
        if self.fault or (self.reading is not None and self.reading.iec61851 in "EF"):
            return "Faulted"
        if self.session is not None:
            if self.reading is not None and self.reading.iec61851 in DRAWING:
                return "Charging"
            return "SuspendedEV" if self.offered_a > 0 else "SuspendedEVSE"
        if not self.available:
            return "Unavailable"
        if self.finishing and self.plugged:
            return "Finishing"
        if self.pending is not None or self.plugged:
            return "Preparing"
        return "Available"

    # -- what happened -------------------------------------------------------------------

    def on_authorized(self, decision: Decision, *, now: float, at: datetime) -> list[Action]:
        if not decision.accepted or self.can_start() is not None:
            return []
        if self.plugged and self.reading is not None and self.reading.measurement.energy_wh is not None:
            self.pending = None
            return [StartSession(decision, self.reading, at)]
        self.pending = PendingAuthorization(decision, now + self.connect_timeout_s)
        return []

    def session_started(self, session: ActiveSession) -> list[Action]:
        if session.last_energy_wh is None:
            session.last_energy_wh, session.last_energy_mono = session.meter_start_wh, session.started_mono
        self.session = session
        self.pending = None
        self.finishing = False
        return [Offer(self.max_current_a)]

    def on_stop(self, reason: str, *, at: datetime) -> list[Action]:
        if self.session is None or self.session.ending:
            return []
        self.session.ending = True
        return [Offer(0.0), EndSession(reason, None, at)]

    def session_ended(self) -> None:
        self.session = None
        self.finishing = self.plugged

    def on_fault(self, error: str) -> None:
        self.fault = error

    def on_reading(self, reading: ChargerReading, *, now: float, at: datetime) -> list[Action]:
        self.fault = None
        actions: list[Action] = []
        session = self.session
        if session is not None:
            reading = self._session_energy(session, reading, now, at, actions)
        self.reading = reading
        if session is not None and session.recovering:
            session.recovering = False
            if reading.iec61851 in PLUGGED:
                actions.append(Offer(self.max_current_a))
            else:
                session.ending = True
                return [*actions, Offer(0.0), EndSession("power_loss", reading, at)]
        if reading.iec61851 == "A":
            self.finishing = False
            if session is not None and not session.ending:
                # Paused before the end is recorded: the next car never charges on this session's offer.
                session.ending = True
                return [*actions, Offer(0.0), EndSession("ev_disconnected", reading, at)]
        elif (reading.iec61851 in PLUGGED and session is None and self.pending is not None
              and reading.measurement.energy_wh is not None and self.can_start() is None):
            decision = self.pending.decision
            self.pending = None
            return [StartSession(decision, reading, at)]
        if session is not None and not session.ending and reading.measurement.energy_wh is not None:
            charging = reading.iec61851 in DRAWING
            due = now - session.last_sample_mono >= self.sample_interval_s
            if due or charging != session.last_sample_charging:
                session.last_sample_mono = now
                session.last_sample_charging = charging
                actions.append(RecordSample(reading, charging, at))
        if not any(isinstance(a, Offer) for a in actions):
            actions += self._reassert_offer(reading, now)
        return actions

    def corrected(self, reading: ChargerReading, *, now: float, at: datetime | None = None) -> ChargerReading:
        """A fresh reading taken outside the poll loop (to end a session), seen as the session sees it.
        A jump it confirms is in the session's unbilled_wh (the end records it)."""
        if self.session is None:
            return reading
        actions: list[Action] = []
        session = self.session
        corrected = self._session_energy(session, reading, now, at or utc_now(), actions)
        raw = reading.measurement.energy_wh
        held_back = (corrected.measurement.energy_wh is None and raw is not None and session.implausible_readings
                     and session.last_energy_wh is not None)
        jump = raw + session.energy_offset_wh - session.last_energy_wh if held_back else 0  # type: ignore[operator]
        if jump > 0:
            # The session ends while a jump is still held back: not billed either, but counted, so
            # that billed + unbilled is the register's difference.
            session.unbilled_wh += jump
            session.unbilled_reason = _joined(session.unbilled_reason, (
                f"counter jumped by {jump} Wh at {rfc3339(session.implausible_since or at or utc_now())}, faster "
                f"than {self.max_plausible_w / 1000:g} kW (sessions.max_plausible_power_kw), unconfirmed when "
                "the session ended; not billed"))
            session.implausible_readings = 0
        if corrected.measurement.energy_wh is None and session.last_energy_wh is not None:
            return replace(corrected, measurement=replace(corrected.measurement,
                                                          energy_wh=self.session.last_energy_wh))
        return corrected

    def _reassert_offer(self, reading: ChargerReading, now: float) -> list[Action]:
        """A charger that rebooted comes up offering its default; tell it again what it should offer."""
        if reading.offered_current_a is None:
            return []
        wanted = self.offered_a if self.session is not None else 0.0
        offered = reading.offered_current_a
        if (offered > 0) == (wanted > 0) and (wanted == 0 or abs(offered - wanted) < 0.6):
            return []
        if now - self._last_reassert < REASSERT_EVERY_S:
            return []
        self._last_reassert = now
        return [Offer(wanted, reassert=True)]

    def _session_energy(self, session: ActiveSession, reading: ChargerReading, now: float, at: datetime,
                        actions: list[Action]) -> ChargerReading:
        """The session's view of the counter: corrected for resets, implausible jumps held back."""
        raw = reading.measurement.energy_wh
        if raw is None:
            return reading
        corrected = raw + session.energy_offset_wh
        last = session.last_energy_wh
        usable: int | None = corrected
        if last is not None and corrected < last:
            if session.suspect_raw_wh is not None and raw >= session.suspect_raw_wh:
                # Two readings in a row below the last one and rising again: a different count.
                session.suspect_raw_wh = None
                hours = (max(now - session.last_energy_mono, 0.0) / 3600
                         if session.last_energy_mono is not None else 0.0)
                if raw <= self.max_plausible_w * hours + 50:
                    # Small enough to have been counted since a restart at zero: bill it.
                    session.energy_offset_wh = last
                    usable = raw + last
                    detail = f"counter restarted (read {raw} Wh, below the session's {last} Wh)"
                else:
                    # Too much for a fresh count (a swapped meter, another device): go on from
                    # where the session was and bill nothing for the gap.
                    session.energy_offset_wh = last - raw
                    usable = last
                    detail = f"counter changed to {raw} Wh, below the session's {last} Wh; gap not billed"
                actions.append(EnergyCounterRebased(session.energy_offset_wh,
                                                    f"{detail}; counting on from {last} Wh"))
            else:
                session.suspect_raw_wh = raw
                usable = None
        elif last is not None and session.last_energy_mono is not None:
            session.suspect_raw_wh = None
            hours = max(now - session.last_energy_mono, 0.0) / 3600
            if corrected - last > self.max_plausible_w * hours + 50:
                session.implausible_readings += 1
                if session.implausible_readings == 1:
                    session.implausible_since = at
                if session.implausible_readings < 3:
                    usable = None
                else:  # a lasting jump (a swapped meter): continue from where the session was, bill none of it
                    jump = corrected - last
                    session.energy_offset_wh -= jump
                    session.implausible_readings = 0
                    usable = last
                    reason = (f"counter jumped by {jump} Wh at {rfc3339(session.implausible_since or at)}, "
                              f"faster than {self.max_plausible_w / 1000:g} kW "
                              f"(sessions.max_plausible_power_kw); not billed")
                    session.unbilled_wh += jump
                    session.unbilled_reason = _joined(session.unbilled_reason, reason)
                    actions.append(EnergyCounterRebased(
                        session.energy_offset_wh, f"{reason}; counting on from {last} Wh", jump_wh=jump,
                        unbilled_wh=session.unbilled_wh, unbilled_reason=session.unbilled_reason))
            else:
                session.implausible_readings = 0
        if usable is None:
            return replace(reading, measurement=replace(reading.measurement, energy_wh=None))
        session.last_energy_wh, session.last_energy_mono = usable, now
        return replace(reading, measurement=replace(reading.measurement, energy_wh=usable))

    def on_tick(self, *, now: float) -> list[Action]:
        if self.pending is not None and now >= self.pending.deadline:
            expired = self.pending.decision
            self.pending = None
            return [AuthorizationTimedOut(expired)]
        return []


MAX_REASON_CHARS = 1000


def _joined(reasons: str | None, reason: str) -> str:
    """The session's reasons so far and one more; a session with very many jumps says so, not each."""
    if not reasons:
        return reason
    if len(reasons) + len(reason) + 2 > MAX_REASON_CHARS:
        return reasons if reasons.endswith("; and more") else f"{reasons}; and more"
    return f"{reasons}; {reason}"
