"""What the agent shows: ~/state and ~/evse/{id}/status (retained, on change and as a heartbeat),
and the technician's live view (`edge-agent status`, from a tmpfs file, never the database)."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from drivers.api import FailsafeReporter
from drivers.readers import Reader

from .. import __version__
from ..clock import ClockWatch, rfc3339, utc_now
from ..cloud import MqttLink, OutboxSender, Topics
from ..config import ChargerConfig, SiteConfig
from ..lists import UserListUpdater
from ..loadmanagement import LoadManagementLoop
from ..store import Store
from ._billing import RunningCostMeter
from ._evse import EvseController
from ._inbound import RejectedMessages
from ._journal import Journal


class StatusPublisher:
    def __init__(self, *, config: SiteConfig, link: MqttLink, topics: Topics, store: Store, clock: ClockWatch,
                 evses: Mapping[str, EvseController], readers: Sequence[Reader], journal: Journal,
                 rejected: RejectedMessages, user_lists: UserListUpdater, outbox: OutboxSender,
                 load: LoadManagementLoop | None) -> None:
        self.config = config
        self.link = link
        self.topics = topics
        self.store = store
        self.clock = clock
        self.evses = evses
        self.readers = readers
        self.journal = journal
        self.rejected = rejected
        self.user_lists = user_lists
        self.outbox = outbox
        self.load = load
        self.boot_id = str(uuid.uuid4())
        self.started_at = rfc3339(utc_now())
        self._state_published: dict[str, Any] | None = None
        self._state_published_at = 0.0
        self._state_force = False
        self._evse_published: dict[str, tuple[tuple[Any, ...], float]] = {}
        self._running_costs: dict[str, RunningCostMeter] = {}
        self._charger_configs = {c.evse_id: c for c in config.chargers}

    def force_state(self) -> None:
        """~/state goes out at the next tick whatever changed (lists forgotten, a new connection)."""
        self._state_force = True

    def connected(self) -> None:
        self._state_force = True
        self.publish_state(time.monotonic())
        for evse in self.evses.values():
            self.publish_evse_status(evse, time.monotonic(), force=True)

    def tick(self, now: float) -> None:
        for evse in self.evses.values():
            self.publish_evse_status(evse, now)
        self.publish_state(now)

    # -- ~/state ----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"online": True, "version": __version__, "boot_id": self.boot_id,
                "started_at": self.started_at, "clock_synced": self.clock.synced(),
                "users_version": self.store.list_version("users"),
                "tariffs_version": self.store.list_version("tariffs"),
                "outbox_pending": self.store.outbox_pending(),
                "rejected_messages": self.rejected.count, "evses": list(self.evses),
                "users_list_error": self.user_lists.error, "storage_error": self.journal.storage_error,
                **({"load_management": self.load.state()} if self.load is not None else {})}

    def publish_state(self, now: float) -> None:
        if not self.link.connected:
            return
        state = self.state()
        changed = state != self._state_published
        if not (self._state_force or (changed and now - self._state_published_at >= 2.0)):
            return
        if self.link.publish(self.topics.state, json.dumps({**state, "ts": rfc3339(utc_now())}),
                             retain=True) is not None:
            self._state_published, self._state_published_at, self._state_force = state, now, False

    # -- ~/evse/{id}/status -----------------------------------------------------------------------

    def publish_evse_status(self, evse: EvseController, now: float, *, force: bool = False) -> None:
        if not self.link.connected:
            return
        m = evse.machine
        key = (m.status(), m.session.id if m.session else None, m.offered_a, m.fault)
        published, published_at = self._evse_published.get(evse.evse_id, (None, 0.0))
        heartbeat_due = now - published_at >= self.config.sessions.status_heartbeat_s
        if not force and key == published and not heartbeat_due:
            return
        reading = m.reading
        measurement = reading.measurement if reading else None
        payload = {"evse_id": evse.evse_id, "status": key[0],
                   "iec61851": reading.iec61851 if reading else None, "session_id": key[1],
                   "offered_current_a": float(m.offered_a),
                   "power_w": measurement.power_w if measurement else None,
                   "energy_wh": measurement.energy_wh if measurement else None,
                   "cost_so_far": self._cost_so_far(evse, measurement.energy_wh if measurement else None),
                   "error": m.fault or evse.charger_error, "ts": rfc3339(utc_now()),
                   **(self.load.evse_status(evse.evse_id) if self.load is not None else {})}
        if self.link.publish(self.topics.evse_status(evse.evse_id), json.dumps(payload), retain=True) is not None:
            self._evse_published[evse.evse_id] = (key, now)

    def _cost_so_far(self, evse: EvseController, energy_wh: int | None) -> float | None:
        """The price if the session ended now. The recorder appends to its batch right after storing
        a sample, so the store is read again only when (batch_started, len(batch)) moved."""
        record = evse.record
        if evse.machine.session is None or record is None:
            self._running_costs.pop(evse.evse_id, None)
            return None
        meter = self._running_costs.get(evse.evse_id)
        if meter is None or meter.session_id != record.id:
            meter = self._running_costs[evse.evse_id] = RunningCostMeter(self.store, record, tz=self.config.timezone)
        recorder = evse.recorder
        return meter.cost_so_far(energy_wh, mark=(recorder.batch_started, len(recorder.batch)))

    # -- the technician's live view ---------------------------------------------------------------

    def runtime_status(self) -> dict[str, Any]:
        """What `edge-agent status` shows; written once a second to tmpfs, never to the database."""
        return {"gateway_id": self.config.gateway_id, "version": __version__, "boot_id": self.boot_id,
                "started_at": self.started_at, "clock_synced": self.clock.synced(),
                "cloud": {"connected": self.link.connected, "host": self.config.cloud.host,
                          "port": self.config.cloud.port, "last_error": self.link.last_error},
                "outbox": {"pending": self.store.outbox_pending(), "last_seq": self.store.counter("seq"),
                           "published": self.outbox.published, "resent": self.outbox.resent},
                "lists": {"users_version": self.store.list_version("users"), "users": self.store.user_count(),
                          "tariffs_version": self.store.list_version("tariffs")},
                "rejected_messages": self.rejected.count,
                "evses": [self._evse_view(evse, time.monotonic()) for evse in self.evses.values()],
                "readers": [{"name": r.name, "port": getattr(r, "port", None), "evse_id": r.evse_id,
                             "healthy": r.healthy, "last_error": r.last_error,
                             "frames_ok": getattr(r, "frames_ok", None), "frames_bad": getattr(r, "frames_bad", None)}
                            for r in self.readers]}

    def _evse_view(self, evse: EvseController, now: float) -> dict[str, Any]:
        cfg = self._charger_configs.get(evse.evse_id)
        m = evse.machine
        measurement = m.reading.measurement if m.reading else None
        session = None
        if m.session is not None:
            record, last_wh = evse.record, m.session.last_energy_wh
            session = {"id": m.session.id, "token": m.session.token, "auth": m.session.decision_method,
                       "user_id": record.user_id if record else None,
                       "user_name": record.user_name if record else None,
                       "started_at": record.started_at if record else None,
                       "offline_start": record.offline_start if record else None,
                       "energy_wh": last_wh - m.session.meter_start_wh if last_wh is not None else None}
        pending = None
        if m.pending is not None:
            who = m.pending.decision.user
            pending = {"token": m.pending.decision.token, "user_name": who.name if who else None,
                       "expires_in_s": round(max(0.0, m.pending.deadline - now), 1)}
        return {
            "evse_id": evse.evse_id, "model": cfg.model if cfg else None,
            "endpoint": (f"{cfg.host}:{cfg.port}" if cfg.host else f"{cfg.serial} unit {cfg.unit}")
            if isinstance(cfg, ChargerConfig) else None,
            "status": m.status(), "iec61851": m.reading.iec61851 if m.reading else None,
            "available": m.available, "fault": m.fault, "failed_polls": evse.failed_polls,
            "offered_a": float(m.offered_a),
            "currents_a": list(measurement.currents_a) if measurement and measurement.currents_a else None,
            "power_w": measurement.power_w if measurement else None,
            "register_wh": measurement.energy_wh if measurement else None,
            "failsafe_warning": (evse.charger.failsafe_warning
                                 if isinstance(evse.charger, FailsafeReporter) else None),
            "pending": pending, "session": session}
