"""One EVSE's sessions on disk: start, samples, un-billed jumps, end (priced), resume after a
restart, clock steps. Every record is in the store (and its event in the outbox) before the
charger or the cloud hears of it; the store's append wakes the outbox."""
from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from drivers.api import ChargerReading

from ..clock import ClockWatch, parse_rfc3339, rfc3339, utc_now
from ..cloud import events
from ..pricing import MeterSample
from ..sessions import ActiveSession, EndSession, EnergyCounterRebased, StartSession
from ..store import SessionRecord, StorageError, Store
from ._billing import price_ended_session, tariff_for
from ._journal import Journal

log = logging.getLogger("edge_agent.agent")


class SessionRecorder:
    def __init__(self, evse_id: str, *, store: Store, journal: Journal, clock: ClockWatch, tz: str) -> None:
        self.evse_id = evse_id
        self.store = store
        self.journal = journal
        self.clock = clock
        self.tz = tz
        self.record: SessionRecord | None = None
        self.batch: list[dict[str, Any]] = []  # samples since the last meter_values event
        self.batch_started = 0.0
        self.unrecorded_end: EndSession | None = None  # decided, not yet on disk (a full disk): retried
        self.energy_anomaly: str | None = None  # an evse_fault for an un-billed jump, cleared at the session's end

    def resume(self, record: SessionRecord) -> ActiveSession:
        """A session found running at start-up, as the session machine takes it back."""
        self.record = record
        last = self.store.last_sample(record.id)
        if record.unbilled_wh:  # its evse_fault was raised with the jump and stands until the end
            self.energy_anomaly = f"EVSE {self.evse_id} energy counter: {record.unbilled_reason}"
        return ActiveSession(
            id=record.id, token=record.token, decision_method=record.auth,
            meter_start_wh=record.meter_start_wh, started_mono=time.monotonic(),
            last_sample_mono=time.monotonic(), recovering=True,
            energy_offset_wh=record.energy_offset_wh,
            unbilled_wh=record.unbilled_wh, unbilled_reason=record.unbilled_reason,
            last_energy_wh=last["energy_wh"] if last else record.meter_start_wh,
            # When that reading was taken, on this boot's monotonic clock (for plausibility).
            last_energy_mono=time.monotonic() - max(0.0, (utc_now() - parse_rfc3339(
                last["ts"] if last else record.started_at)).total_seconds()))

    def start(self, action: StartSession) -> ActiveSession:
        """Records a new session (raises StorageError: it may not charge)."""
        decision = action.decision
        user = decision.user
        group = user.group if user else None
        tariff_id, tariffs_version = tariff_for(self.store, group)
        energy = action.reading.measurement.energy_wh
        assert energy is not None
        offline = self.journal.offline
        record = SessionRecord(
            id=str(uuid.uuid4()), evse_id=self.evse_id, status="active", token=decision.token,
            user_id=user.id if user else None, group=group, user_name=user.name if user else None,
            auth=decision.method or "local_list", started_at=rfc3339(action.at), meter_start_wh=energy,
            tariff_id=tariff_id, tariffs_version=tariffs_version, offline_start=offline,
            clock_synced=self.clock.synced())
        self.store.start_session(record, event=events.session_started(record, ts=record.started_at, offline=offline))
        self.store.add_sample(record.id, ts=record.started_at, energy_wh=energy,
                              power_w=action.reading.measurement.power_w,
                              current_a=action.reading.measurement.currents_a, charging=False)
        self.record = record
        self.batch, self.batch_started = [], time.monotonic()
        log.info("EVSE %s: session %s started for %s (%s), meter %d Wh, tariff %s", self.evse_id,
                 record.id, record.user_name or record.user_id or record.token, record.auth, energy,
                 tariff_id)
        now = time.monotonic()
        return ActiveSession(id=record.id, token=record.token, decision_method=record.auth, meter_start_wh=energy,
                             started_mono=now, last_sample_mono=now, last_sample_charging=False)

    def sample(self, reading: ChargerReading, charging: bool, at: datetime) -> None:
        record = self.record
        m = reading.measurement
        if record is None or m.energy_wh is None:
            return
        ts = rfc3339(at)
        try:
            self.store.add_sample(record.id, ts=ts, energy_wh=m.energy_wh, power_w=m.power_w,
                                  current_a=m.currents_a, charging=charging)
        except StorageError as exc:
            if not self.journal.storage_failed(exc, "recording a meter sample"):
                raise
            return
        self.journal.storage_recovered()
        self.batch.append({"ts": ts, "energy_wh": m.energy_wh, "power_w": m.power_w,
                           "current_a": list(m.currents_a) if m.currents_a else None})

    def energy_rebased(self, action: EnergyCounterRebased) -> None:
        log.warning("EVSE %s: energy counter: %s", self.evse_id, action.detail)
        if self.record is None:
            return
        if not action.jump_wh:
            self.store.set_energy_offset(self.record.id, action.offset_wh)
            return
        # Not billed, and told: the cloud gets an evse_fault now and the amount in session_ended.
        anomaly, ts = f"EVSE {self.evse_id} energy counter: {action.detail}", rfc3339(utc_now())
        try:
            self.store.set_unbilled_energy(
                self.record.id, offset_wh=action.offset_wh, unbilled_wh=action.unbilled_wh,
                reason=action.unbilled_reason,
                fault=events.evse_fault(self.evse_id, anomaly, ts=ts, offline=self.journal.offline))
        except StorageError as exc:  # the session's end still records it (in memory)
            if not self.journal.storage_failed(exc, f"recording an un-billed jump on EVSE {self.evse_id}"):
                raise
            return
        self.energy_anomaly = anomaly

    def flush_due(self, now: float, interval_s: float) -> None:
        if self.batch and now - self.batch_started >= interval_s:
            self.flush_meter_values()

    def flush_meter_values(self) -> None:
        if self.record is None or not self.batch:
            return
        self.journal.record_event(events.meter_values(self.record.id, self.evse_id, self.batch,
                                                      ts=rfc3339(utc_now()), offline=self.journal.offline))
        self.batch, self.batch_started = [], time.monotonic()

    def end(self, action: EndSession, *, session: ActiveSession | None, fault: str | None) -> dict[str, Any]:
        """Records the end (`action` holds the stop reading); returns what ended. `session` is the
        machine's view (fresher than the record's); `fault` is what still stands once it ended.
        Raises StorageError; the end is kept in `unrecorded_end` and retried."""
        record = self.record
        assert record is not None
        reading, at = action.reading, action.at
        self.unrecorded_end = EndSession(action.reason, reading, at, final=True)
        samples = self.store.samples(record.id)
        stop_wh = reading.measurement.energy_wh if reading is not None else None
        if stop_wh is None:
            stop_wh = samples[-1]["energy_wh"] if samples else record.meter_start_wh
        stop_wh = max(stop_wh, record.meter_start_wh)
        # A clock that stepped backwards must not give a negative duration.
        ended_at = rfc3339(max(at, parse_rfc3339(samples[-1]["ts"]) if samples else at,
                               parse_rfc3339(record.started_at)))
        self.flush_meter_values()
        meter_samples = [MeterSample.from_json(s) for s in samples]
        meter_samples.append(MeterSample(ts=parse_rfc3339(ended_at), energy_wh=stop_wh,
                                         power_w=None, charging=False))
        priced = price_ended_session(self.store, record, meter_samples, tz=self.tz)
        cost = priced.cost_json
        ended = {"ended_at": ended_at, "meter_stop_wh": stop_wh,
                 "energy_wh": stop_wh - record.meter_start_wh, "charging_s": priced.charging_s,
                 "parking_s": priced.parking_s, "reason": action.reason, "cost": json.dumps(cost)}
        view = session if session is not None else record
        ended["unbilled_wh"], ended["unbilled_reason"] = view.unbilled_wh, view.unbilled_reason
        # The un-billed jump's fault clears with the session; a fault of the charger's own still stands.
        offline = self.journal.offline
        cleared = [events.evse_fault(self.evse_id, fault, ts=ended_at, offline=offline)] if self.energy_anomaly else []
        event = events.session_ended(record, ended, cost=cost, charging_periods=priced.periods_json,
                                     clock_synced=record.clock_synced and self.clock.synced(), ts=ended_at,
                                     offline=offline)
        self.store.end_session(record.id, ended=ended, event=event, then=cleared)
        self.unrecorded_end = None
        self.energy_anomaly = None
        self.record = None
        self.journal.storage_recovered()
        log.info("EVSE %s: session %s ended (%s): %d Wh, %s", self.evse_id, record.id, action.reason,
                 ended["energy_wh"], "unpriced" if priced.pricing_error else
                 f"{cost['incl_vat']} {cost['currency'] or '(free)'}")
        return ended

    def shift(self, step: float) -> None:
        """The wall clock stepped: the running session's times move with it."""
        if self.record is None:
            return
        self.store.shift_session_times(self.record.id, step)
        self.record = self.store.session(self.record.id)
        for sample in self.batch:
            sample["ts"] = rfc3339(parse_rfc3339(sample["ts"]) + timedelta(seconds=step))
