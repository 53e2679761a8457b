"""One EVSE: polls its charger, carries out its session machine's actions, and is the only writer
of the charger's offer (load management asks it through write_share; it never writes itself)."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.api import Charger, KeepAlive
from drivers.errors import DeviceError
from drivers.readers import ChargerReader

from ..authorization import Decision
from ..clock import parse_rfc3339, rfc3339, utc_now
from ..cloud import events
from ..loadmanagement import LoadManagementLoop, put_share
from ..sessions import (
    Action,
    AuthorizationTimedOut,
    EndSession,
    EnergyCounterRebased,
    EvseSessionMachine,
    Offer,
    RecordSample,
    StartSession,
)
from ..store import SessionRecord, StorageError
from ._journal import Journal
from ._recorder import SessionRecorder

log = logging.getLogger("edge_agent.agent")

FAULT_AFTER_FAILED_POLLS = 3


@dataclass(frozen=True, slots=True)
class EvseTimings:
    poll_interval_s: float
    connect_timeout_s: float


class EvseController:
    def __init__(self, evse_id: str, *, machine: EvseSessionMachine, charger: Charger, recorder: SessionRecorder,
                 journal: Journal, timings: EvseTimings) -> None:
        self.evse_id = evse_id
        self.machine = machine
        self.charger = charger
        self.recorder = recorder
        self.journal = journal
        self.timings = timings
        self.load: LoadManagementLoop | None = None  # set by the agent when the site shares a fuse
        self.builtin_reader: ChargerReader | None = None  # the charger's own card reader, polled with it
        # Called after a poll in which a vehicle plugged in: a site-wide reader's decision for it, or None.
        self.on_plugged: Callable[[EvseController], Decision | None] | None = None
        self.failed_polls = 0
        self.charger_error: str | None = None  # the error state last reported in an evse_fault event
        self._lock = asyncio.Lock()  # one poll, action list or offer write at a time
        self._needs_setup = True
        self._sharing = False  # load management's share applies (a session holds it)
        self._enabled = False  # what was last written with enable()

    @property
    def record(self) -> SessionRecord | None:
        return self.recorder.record

    # -- what others ask --------------------------------------------------------------------------

    async def handle(self, actions: Callable[[], list[Action]]) -> None:
        """Runs the machine's answer to an input (a tap, a command, a tick) and its actions, in turn
        with polls and offers."""
        async with self._lock:
            await self._execute(actions())

    async def write_share(self, amps: float) -> bool:
        """Load management's share (see loadmanagement.ShareWriter)."""
        async with self._lock:
            enabled = await put_share(self.charger, amps, holds_share=self._sharing, enabled=self._enabled)
            if enabled is None:
                return False  # the session ended while this request waited
            self._enabled = enabled
            self.machine.offered_a = amps
            return True

    def session_resumed(self, record: SessionRecord) -> None:
        self.machine.session = self.recorder.resume(record)
        if self.load is not None:  # not a new arrival: it keeps its share and its place
            self._sharing = True
            self.load.session_resumed(self.evse_id, started_s_ago=(
                utc_now() - parse_rfc3339(record.started_at)).total_seconds())

    async def expire_authorization(self, now: float) -> None:
        """An authorization waiting for its vehicle ends at its deadline."""
        if self.machine.pending is not None:
            async with self._lock:
                await self._execute(self.machine.on_tick(now=now))

    async def retry_unrecorded_end(self) -> None:
        if self.recorder.unrecorded_end is not None and self.recorder.record is not None:
            async with self._lock:
                await self._execute([self.recorder.unrecorded_end])

    # -- the poll ---------------------------------------------------------------------------------

    async def poll_forever(self) -> None:
        while True:
            started = time.monotonic()
            async with self._lock:
                await self._poll_once()
            # Some models need a keep-alive more often than the poll (Schneider's life bit: 2 s); the
            # period may change once the driver learned the device's timeout (Alfen's validity).
            keepalive_s = self.charger.keepalive_interval_s if isinstance(self.charger, KeepAlive) else None
            interval = min(self.timings.poll_interval_s, keepalive_s or math.inf)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _poll_once(self) -> None:
        try:
            if self._needs_setup:
                if self.machine.session is None:
                    await self.charger.enable(False)  # nobody charges without authorization
                    self._enabled = False
                await self.charger.setup()
                self._needs_setup = False
            reading = await self.charger.poll()
            await self.charger.keepalive()
            if self.builtin_reader is not None:
                await self.builtin_reader.poll()  # logs and swallows its own device errors
        except DeviceError as exc:
            self.failed_polls += 1
            if self.load is not None:
                self.load.charger_unavailable(self.evse_id)
            if self.failed_polls == FAULT_AFTER_FAILED_POLLS:
                log.error("EVSE %s unavailable: %s", self.evse_id, exc)
                self.machine.on_fault(f"charger not responding: {exc}")
                self._fault_event(self.machine.fault)
            return
        if self.failed_polls >= FAULT_AFTER_FAILED_POLLS:
            log.warning("EVSE %s back after %d failed polls", self.evse_id, self.failed_polls)
            self._fault_event(self.charger_error or self.recorder.energy_anomaly)  # one state per EVSE
        self.failed_polls = 0
        # A charger reporting an error state faults too: one evse_fault when it starts, one when it clears.
        charger_error = (f"charger reports IEC 61851 state {reading.iec61851} (error)"
                         if reading.iec61851 in ("E", "F") else None)
        if charger_error != self.charger_error:
            if charger_error:
                log.error("EVSE %s faulted: %s", self.evse_id, charger_error)
            else:
                log.warning("EVSE %s: the charger's error state cleared", self.evse_id)
            self._fault_event(charger_error or self.recorder.energy_anomaly)
            self.charger_error = charger_error
        if self.load is not None:
            self.load.charger_reading(self.evse_id, reading)
        was_plugged = self.machine.plugged
        await self._execute(self.machine.on_reading(reading, now=time.monotonic(), at=utc_now()))
        if not was_plugged and self.machine.plugged and self.on_plugged is not None \
                and self.machine.can_start() is None and self.machine.pending is None \
                and (decision := self.on_plugged(self)) is not None:
            await self._execute(self.machine.on_authorized(decision, now=time.monotonic(), at=utc_now()))

    def _fault_event(self, error: str | None) -> None:
        self.journal.record_event(events.evse_fault(self.evse_id, error, ts=rfc3339(utc_now()),
                                                    offline=self.journal.offline))

    # -- the machine's actions --------------------------------------------------------------------

    async def _execute(self, actions: list[Action]) -> None:
        """Carries out the machine's actions in order; called with the lock held."""
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, StartSession):
                try:
                    queue[:0] = self.machine.session_started(self.recorder.start(action))
                except StorageError as exc:
                    if not self.journal.storage_failed(exc, f"starting a session on EVSE {self.evse_id}"):
                        raise
                    log.error("EVSE %s: %s may not charge: the session cannot be recorded", self.evse_id,
                              action.decision.summary)
            elif isinstance(action, Offer):
                if action.reassert and self.load is not None and not self.load.has_offered(self.evse_id):
                    continue  # after a restart: load management has told it nothing yet (its first write follows)
                if action.reassert:
                    log.warning("EVSE %s: the charger offers %s A, not the %s A it was told (a reboot?); "
                                "setting it up again", self.evse_id,
                                self.machine.reading.offered_current_a if self.machine.reading else "?",
                                action.amps)
                    self._needs_setup = True
                await self._offer(action.amps, reassert=action.reassert)
            elif isinstance(action, EnergyCounterRebased):
                self.recorder.energy_rebased(action)
            elif isinstance(action, RecordSample):
                self.recorder.sample(action.reading, action.charging, action.at)
            elif isinstance(action, EndSession):
                try:
                    await self._end_session(action)
                except StorageError as exc:
                    if not self.journal.storage_failed(exc, f"recording the end of session on EVSE {self.evse_id}"):
                        raise
            elif isinstance(action, AuthorizationTimedOut):
                log.info("EVSE %s: no vehicle within %ss after %s; authorization dropped", self.evse_id,
                         self.timings.connect_timeout_s, action.decision.summary)

    async def _offer(self, amps: float, *, reassert: bool = False) -> None:
        try:
            if self._needs_setup:
                await self.charger.setup()
                self._needs_setup = False
            if self.load is not None and not reassert:
                if amps > 0:  # the site's share decides the current; others are lowered first
                    self._sharing = True
                    self.load.session_started(self.evse_id, max_current_a=amps)
                    return
                await self.charger.enable(False)  # the authorization gate stays here
                self._enabled = False
                self._sharing = False
                self.load.session_ended(self.evse_id, stopped=True)
                self.machine.offered_a = 0.0
                return
            if amps > 0:
                await self.charger.set_max_current(amps)
                await self.charger.enable(True)
                self._enabled = True
            else:
                await self.charger.enable(False)
                self._enabled = False
            self.machine.offered_a = amps
        except DeviceError as exc:
            log.error("EVSE %s: could not offer %.1f A: %s", self.evse_id, amps, exc)

    async def _end_session(self, action: EndSession) -> None:
        record = self.recorder.record
        if record is None:
            return
        # The stop reading is taken after the charger was paused, so nothing is drawn after it
        # that no session pays for; the reading that triggered the end is the fallback.
        if not action.final:
            try:
                reading = self.machine.corrected(await self.charger.poll(), now=time.monotonic())
                action = EndSession(action.reason, reading, utc_now())
            except DeviceError as exc:
                log.warning("EVSE %s: no fresh reading to end session %s (%s); using the last one",
                            self.evse_id, record.id, exc)
                action = EndSession(action.reason, action.reading or self.machine.reading, action.at)
        self.recorder.end(action, session=self.machine.session,
                          fault=self.machine.fault or self.charger_error)
        self.machine.session_ended()
        if self.load is not None:
            self._sharing = False
            self.load.session_ended(self.evse_id)
