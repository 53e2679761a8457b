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

from dataclasses import dataclass, field
from datetime import datetime

from drivers.api import ChargerReading

from .authorization import Decision

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


# -- actions ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StartSession:
    decision: Decision
    reading: ChargerReading
    at: datetime


@dataclass(frozen=True, slots=True)
class EndSession:
    reason: str  # local, remote, ev_disconnected, deauthorized, power_loss, fault
    reading: ChargerReading | None  # None: take a fresh reading after stopping
    at: datetime


@dataclass(frozen=True, slots=True)
class Offer:
    amps: float  # 0 pauses the charger


@dataclass(frozen=True, slots=True)
class RecordSample:
    reading: ChargerReading
    charging: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class AuthorizationTimedOut:
    decision: Decision


Action = StartSession | EndSession | Offer | RecordSample | AuthorizationTimedOut


@dataclass(slots=True)
class EvseSessionMachine:
    evse_id: str
    max_current_a: float
    connect_timeout_s: float
    sample_interval_s: float
    available: bool = True
    reading: ChargerReading | None = None
    fault: str | None = None
    pending: PendingAuthorization | None = None
    session: ActiveSession | None = None
    finishing: bool = False  # the session ended, the vehicle is still plugged in
    offered_a: float = 0.0
    _history: list[str] = field(default_factory=list)

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
        self.session = session
        self.pending = None
        self.finishing = False
        return [Offer(self.max_current_a)]

    def on_stop(self, reason: str, *, at: datetime) -> list[Action]:
        if self.session is None:
            return []
        return [Offer(0.0), EndSession(reason, None, at)]

    def session_ended(self) -> None:
        self.session = None
        self.finishing = self.plugged

    def on_fault(self, error: str) -> None:
        self.fault = error

    def on_reading(self, reading: ChargerReading, *, now: float, at: datetime) -> list[Action]:
        self.reading = reading
        self.fault = None
        actions: list[Action] = []
        session = self.session
        if session is not None and session.recovering:
            session.recovering = False
            if reading.iec61851 in PLUGGED:
                actions.append(Offer(self.max_current_a))
            else:
                return [EndSession("power_loss", reading, at)]
        if reading.iec61851 == "A":
            self.finishing = False
            if session is not None:
                return [*actions, EndSession("ev_disconnected", reading, at)]
        elif reading.iec61851 in PLUGGED:
            if session is None and self.pending is not None:
                if reading.measurement.energy_wh is not None and self.can_start() is None:
                    decision = self.pending.decision
                    self.pending = None
                    return [StartSession(decision, reading, at)]
        if session is not None and reading.measurement.energy_wh is not None:
            charging = reading.iec61851 in DRAWING
            due = now - session.last_sample_mono >= self.sample_interval_s
            if due or charging != session.last_sample_charging:
                session.last_sample_mono = now
                session.last_sample_charging = charging
                actions.append(RecordSample(reading, charging, at))
        return actions

    def on_tick(self, *, now: float) -> list[Action]:
        if self.pending is not None and now >= self.pending.deadline:
            expired = self.pending.decision
            self.pending = None
            return [AuthorizationTimedOut(expired)]
        return []
