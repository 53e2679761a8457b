"""Wiring and lifetimes: the chargers, readers, store, authorizer and cloud link of one site.

Where a tag becomes a session: Site._on_tap -> Authorizer.authorize -> EvseSessionMachine ->
Site._start_session (store first, then the charger). Where a session becomes an MQTT message:
Store.start_session/end_session put an event in the outbox; OutboxSender publishes it.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from drivers.api import Charger, ChargerReading, FailsafeReporter, KeepAlive, OwnEnergyCounter, Tap
from drivers.errors import DeviceError
from drivers.modbus import BusRegistry, create_charger, create_meter
from drivers.readers import ChargerReader, create_reader, identifier_of

from . import __version__, watchdog
from .authorization import Authorizer, Decision, OnlineAnswer
from .clock import ClockWatch, boot_id, parse_rfc3339, rfc3339, utc_now
from .cloud import (
    Inbound,
    MqttLink,
    OutboxSender,
    PayloadError,
    Topics,
    check_ack,
    check_auth_response,
    check_command,
    link_credentials,
    lists_verify,
    parse_json_object,
)
from .cloud._payloads import MAX_PAYLOAD_BYTES, check_request_id, check_text, printable
from .cloud._rejections import RejectionLog
from .config import ConfigError, ConfigIssue, SiteConfig
from .lists import UserListUpdater, apply_tariff_list
from .loadmanagement import LoadManagementLoop, site_plan
from .pricing import (
    MeterSample,
    RunningCost,
    SessionPrice,
    TariffError,
    price_session,
    tariff_in_list,
    unpriced_session,
)
from .runtime_status import publish_runtime_status
from .sessions import (
    Action,
    ActiveSession,
    AuthorizationTimedOut,
    EndSession,
    EnergyCounterRebased,
    EvseSessionMachine,
    Offer,
    RecordSample,
    StartSession,
)
from .store import SessionRecord, StorageError, StorageFailed, StorageFull, Store

log = logging.getLogger("edge_agent.site")

FAULT_AFTER_FAILED_POLLS = 3


@dataclass(slots=True)
class Evse:
    evse_id: str
    machine: EvseSessionMachine
    charger: Charger  # drivers.modbus.ModbusCharger; optional abilities: isinstance against drivers.api
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    record: SessionRecord | None = None
    failed_polls: int = 0
    needs_setup: bool = True
    batch: list[dict[str, Any]] = field(default_factory=list)
    batch_started: float = 0.0
    published_status: tuple[Any, ...] | None = None
    status_published_at: float = 0.0
    unrecorded_end: EndSession | None = None  # decided, not yet on disk (a full disk): retried
    builtin_reader: ChargerReader | None = None  # the charger's own card reader, polled with it
    charger_error: str | None = None  # the error state last reported in an evse_fault event
    energy_anomaly: str | None = None  # an evse_fault standing for an un-billed jump, cleared at the session's end


class Site:
    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.store = Store(config.data_dir)
        self.topics = Topics(config.topic_root())
        self.boot_id = str(uuid.uuid4())
        self.started_at = rfc3339(utc_now())
        self.rejected_messages = self.store.counter("rejected_messages")
        self._rejected_saved = self.rejected_messages
        self._rejected_saved_at = time.monotonic()
        self.storage_error: str | None = None
        self._site_wide: tuple[Decision, float] | None = None  # a site-wide reader's card, no EVSE yet
        self._running_costs: dict[str, list[Any]] = {}  # per session: its RunningCost and what it saw
        self._pending_auth: dict[str, asyncio.Future[OnlineAnswer]] = {}
        self._state_published: dict[str, Any] | None = None
        self._state_published_at = 0.0
        self._state_force = False
        self._loop: asyncio.AbstractEventLoop | None = None
        cloud = config.cloud
        source = str(config.path) if config.path is not None else "<config>"
        # ConfigError (the agent refuses to start): a key file others may read, a missing CA...
        credentials = link_credentials(cloud, source=source)
        self.link = MqttLink(
            client_id=config.gateway_id, host=cloud.host, port=cloud.port,
            keepalive_s=cloud.keepalive_s, will_topic=self.topics.state,
            will_payload=json.dumps({"online": False}).encode(),
            subscriptions=self.topics.subscriptions(), session_expiry_s=cloud.session_expiry_s,
            reconnect_max_s=cloud.reconnect_max_s,
            tls=credentials.tls, username=credentials.username, password=credentials.password,
            on_connected=self._on_connected, on_disconnected=self._on_disconnected,
            on_message=self._on_message)
        self.user_lists = UserListUpdater(store=self.store, work_dir=self.store.path.parent / "lists",
                                          verify=lists_verify(cloud, source=source),
                                          on_rejected=self._reject_message)
        self.rejections = RejectionLog(logger=log)
        self._commands_running: dict[str, asyncio.Future[None]] = {}
        self._handlers: set[asyncio.Task[None]] = set()  # taps and commands being handled: owned here
        self.outbox = OutboxSender(store=self.store, link=self.link, topic=self.topics.events,
                                   ack_timeout_s=cloud.ack_timeout_s)
        self.authorizer = Authorizer(store=self.store, offline_unknown=config.authorization.offline_unknown,
                                     ask_online=self._ask_online, is_online=lambda: self.link.connected)
        self.buses = BusRegistry()
        self.evses: dict[str, Evse] = {}
        # With a site connection to share, each charger's own fail-safe current is planned so
        # that together they fit the fuse if the gateway dies.
        plan = site_plan(config) if config.site is not None else None
        for charger_cfg in config.chargers:
            charger = create_evse_charger(charger_cfg, registry=self.buses, plan=plan,
                                          energy_dir=config.data_dir / "energy")
            machine = EvseSessionMachine(
                evse_id=charger_cfg.evse_id, max_current_a=float(charger.max_current_a),
                connect_timeout_s=config.authorization.connect_timeout_s,
                sample_interval_s=config.sessions.meter_values_interval_s,
                max_plausible_w=config.sessions.max_plausible_power_kw * 1000,
                available=self.store.evse_available(charger_cfg.evse_id))
            self.evses[charger_cfg.evse_id] = Evse(charger_cfg.evse_id, machine, charger)
        self.readers = [
            create_reader(driver=r.driver, port=r.port, device=r.device, evse_id=r.evse_id,
                          on_tap=self._tap_from_thread, debounce_s=config.authorization.debounce_s)
            for r in config.readers if r.driver != "charger"]
        for r in config.readers:
            if r.driver == "charger" and r.evse_id in self.evses:
                evse = self.evses[r.evse_id]
                identifier = identifier_of(evse.charger)
                if identifier is None:
                    raise ConfigError([ConfigIssue("readers", None, f"the {evse.charger.model} of EVSE "
                                                   f"{r.evse_id} has no card reader in its register map")])
                evse.builtin_reader = ChargerReader(
                    identifier, evse_id=r.evse_id, debounce_s=config.authorization.debounce_s,
                    on_tap=lambda tap: self._spawn(self.on_tap(tap), name=f"tap {tap.token}"))
        self.load: LoadManagementLoop | None = None
        if plan is not None:
            site_meter = config.site.meter if config.site is not None else None
            self.load = LoadManagementLoop(
                plan=plan, chargers={e: v.charger for e, v in self.evses.items()},
                meter=_create_site_meter(site_meter, self.buses) if site_meter is not None else None,
                locks={e: v.lock for e, v in self.evses.items()},
                on_offer=lambda evse_id, amps: setattr(self.evses[evse_id].machine, "offered_a", amps))
        self.clock = ClockWatch(synced_marker=config.clock.synced_marker,
                                jump_threshold_s=config.clock.jump_threshold_s)
        self._resume_sessions()
        stored = self.store.meta("clock_offset")
        step = self.clock.since_boot_offset(tuple(json.loads(stored)) if stored else None)
        if step is not None:
            self._on_clock_step(step)
        self.store.set_meta("clock_offset", json.dumps([boot_id(), self.clock.offset]))
        if self.load is not None:  # the cloud's set_site_limit, saved until its `until`
            self.load.keep_site_limit(self.store)

    # -- lifetime --------------------------------------------------------------------------

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(signum, stop.set)
        log.info("edge-agent %s starting: gateway %s, %d EVSE(s), %d reader(s), data in %s",
                 __version__, self.config.gateway_id, len(self.evses), len(self.readers),
                 self.store.path)
        self.link.start(self._loop)
        for reader in self.readers:
            reader.start()
        tasks = [asyncio.create_task(self.outbox.run(), name="outbox"),
                 asyncio.create_task(self._tick_loop(), name="tick")]
        tasks += [asyncio.create_task(self._poll_loop(evse), name=f"poll-{evse.evse_id}")
                  for evse in self.evses.values()]
        if self.load is not None:
            tasks.append(asyncio.create_task(self.load.run(), name="load-management"))
        tasks.append(asyncio.create_task(watchdog.watch(self), name="watchdog"))  # fed while healthy
        _notify_systemd("READY=1")
        try:
            waiter = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiter and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            log.info("edge-agent stopping")
            for task in (*tasks, *self._handlers):
                task.cancel()
            await asyncio.gather(*tasks, *self._handlers, return_exceptions=True)
            for reader in self.readers:
                reader.stop()
            if self.link.connected:
                self.link.publish(self.topics.state, json.dumps({"online": False}), retain=True)
                await asyncio.sleep(0.1)
            self.link.stop()
            for evse in self.evses.values():
                if isinstance(evse.charger, OwnEnergyCounter) and evse.charger.energy_counter is not None:
                    evse.charger.energy_counter.flush()
            await self.buses.aclose()
            await self.user_lists.aclose()
            with contextlib.suppress(StorageFull, StorageFailed):  # best effort; a damaged database is not hidden
                self._save_rejected_count()
            self.store.close()

    def _spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        """Handles a tap or a command in its own task, kept until done; its error is logged, never lost."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._handlers.add(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s failed", task.get_name(), exc_info=exc)

    def _resume_sessions(self) -> None:
        for record in self.store.active_sessions():
            evse = self.evses.get(record.evse_id)
            if evse is None:
                log.error("session %s was running on EVSE %s, which is no longer configured; "
                          "it stays open in the database", record.id, record.evse_id)
                continue
            evse.record = record
            last = self.store.last_sample(record.id)
            evse.machine.session = ActiveSession(
                id=record.id, token=record.token, decision_method=record.auth,
                meter_start_wh=record.meter_start_wh, started_mono=time.monotonic(),
                last_sample_mono=time.monotonic(), recovering=True,
                energy_offset_wh=record.energy_offset_wh,
                unbilled_wh=record.unbilled_wh, unbilled_reason=record.unbilled_reason,
                last_energy_wh=last["energy_wh"] if last else record.meter_start_wh,
                # When that reading was taken, on this boot's monotonic clock (for plausibility).
                last_energy_mono=time.monotonic() - max(0.0, (utc_now() - parse_rfc3339(
                    last["ts"] if last else record.started_at)).total_seconds()))
            if record.unbilled_wh:  # its evse_fault was raised with the jump and stands until the end
                evse.energy_anomaly = f"EVSE {evse.evse_id} energy counter: {record.unbilled_reason}"
            if self.load is not None:  # not a new arrival: it keeps its share and its place
                self.load.session_resumed(record.evse_id, started_s_ago=(
                    utc_now() - parse_rfc3339(record.started_at)).total_seconds())
            log.info("session %s on EVSE %s was running when the agent stopped; "
                     "the charger's next reading decides whether it goes on", record.id, record.evse_id)

    # -- chargers --------------------------------------------------------------------------

    async def _poll_loop(self, evse: Evse) -> None:
        while True:
            started = time.monotonic()
            async with evse.lock:
                await self._poll_once(evse)
            # Some models need a keep-alive more often than the poll (Schneider's life bit: 2 s); the
            # period may change once the driver learned the device's timeout (Alfen's validity).
            keepalive_s = evse.charger.keepalive_interval_s if isinstance(evse.charger, KeepAlive) else None
            interval = min(self.config.sessions.poll_interval_s, keepalive_s or math.inf)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _poll_once(self, evse: Evse) -> None:
        try:
            if evse.needs_setup:
                if evse.machine.session is None:
                    await evse.charger.enable(False)  # nobody charges without authorization
                await evse.charger.setup()
                evse.needs_setup = False
            reading = await evse.charger.poll()
            await evse.charger.keepalive()
            if evse.builtin_reader is not None:
                await evse.builtin_reader.poll()  # logs and swallows its own device errors
        except DeviceError as exc:
            evse.failed_polls += 1
            if self.load is not None:
                self.load.charger_unavailable(evse.evse_id)
            if evse.failed_polls == FAULT_AFTER_FAILED_POLLS:
                log.error("EVSE %s unavailable: %s", evse.evse_id, exc)
                evse.machine.on_fault(f"charger not responding: {exc}")
                self._record_event("evse_fault", {"evse_id": evse.evse_id,
                                                  "error": evse.machine.fault, "ts": rfc3339(utc_now())})
            return
        if evse.failed_polls >= FAULT_AFTER_FAILED_POLLS:
            log.warning("EVSE %s back after %d failed polls", evse.evse_id, evse.failed_polls)
            # Cleared to what still stands (one evse_fault state per EVSE).
            self._record_event("evse_fault", {"evse_id": evse.evse_id,
                                              "error": evse.charger_error or evse.energy_anomaly,
                                              "ts": rfc3339(utc_now())})
        evse.failed_polls = 0
        # A charger reporting an error state faults too: one evse_fault when it starts, one when it clears.
        charger_error = (f"charger reports IEC 61851 state {reading.iec61851} (error)"
                         if reading.iec61851 in ("E", "F") else None)
        if charger_error != evse.charger_error:
            if charger_error:
                log.error("EVSE %s faulted: %s", evse.evse_id, charger_error)
            else:
                log.warning("EVSE %s: the charger's error state cleared", evse.evse_id)
            self._record_event("evse_fault", {"evse_id": evse.evse_id,
                                              "error": charger_error or evse.energy_anomaly,
                                              "ts": rfc3339(utc_now())})
            evse.charger_error = charger_error
        if self.load is not None:
            self.load.charger_reading(evse.evse_id, reading)
        was_plugged = evse.machine.plugged
        actions = evse.machine.on_reading(reading, now=time.monotonic(), at=utc_now())
        await self._execute(evse, actions)
        if self._site_wide is not None and not was_plugged and evse.machine.plugged \
                and evse.machine.can_start() is None and evse.machine.pending is None:
            decision, self._site_wide = self._site_wide[0], None
            log.info("EVSE %s: the vehicle plugged in takes the site-wide reader's %s", evse.evse_id,
                     decision.summary)
            await self._execute(evse, evse.machine.on_authorized(decision, now=time.monotonic(), at=utc_now()))

    async def _execute(self, evse: Evse, actions: list[Action]) -> None:
        """Carries out the machine's actions in order; called with evse.lock held."""
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, StartSession):
                try:
                    queue[:0] = self._start_session(evse, action)
                except StorageError as exc:
                    if not self._storage_failed(exc, f"starting a session on EVSE {evse.evse_id}"):
                        raise
                    log.error("EVSE %s: %s may not charge: the session cannot be recorded", evse.evse_id,
                              action.decision.summary)
            elif isinstance(action, Offer):
                if action.reassert and self.load is not None and not self.load.has_offered(evse.evse_id):
                    continue  # after a restart: load management has told it nothing yet (its first write follows)
                if action.reassert:
                    log.warning("EVSE %s: the charger offers %s A, not the %s A it was told (a reboot?); "
                                "setting it up again", evse.evse_id,
                                evse.machine.reading.offered_current_a if evse.machine.reading else "?",
                                action.amps)
                    evse.needs_setup = True
                await self._offer(evse, action.amps, reassert=action.reassert)
            elif isinstance(action, EnergyCounterRebased):
                log.warning("EVSE %s: energy counter: %s", evse.evse_id, action.detail)
                if evse.record is None:
                    continue
                if not action.jump_wh:
                    self.store.set_energy_offset(evse.record.id, action.offset_wh)
                    continue
                # Not billed, and told: the cloud gets an evse_fault now and the amount in session_ended.
                anomaly, ts = f"EVSE {evse.evse_id} energy counter: {action.detail}", rfc3339(utc_now())
                try:
                    self.store.set_unbilled_energy(
                        evse.record.id, offset_wh=action.offset_wh, unbilled_wh=action.unbilled_wh,
                        reason=action.unbilled_reason, ts=ts, offline=not self.link.connected,
                        fault={"evse_id": evse.evse_id, "error": anomaly, "ts": ts})
                except StorageError as exc:  # the session's end still records it (in memory)
                    if not self._storage_failed(exc, f"recording an un-billed jump on EVSE {evse.evse_id}"):
                        raise
                    continue
                evse.energy_anomaly = anomaly
                self.outbox.wake()
            elif isinstance(action, RecordSample):
                try:
                    self._record_sample(evse, action.reading, action.charging, action.at)
                except StorageError as exc:
                    if not self._storage_failed(exc, "recording a meter sample"):
                        raise
            elif isinstance(action, EndSession):
                try:
                    await self._end_session(evse, action)
                except StorageError as exc:
                    if not self._storage_failed(exc, f"recording the end of session on EVSE {evse.evse_id}"):
                        raise
            elif isinstance(action, AuthorizationTimedOut):
                log.info("EVSE %s: no vehicle within %ss after %s; authorization dropped", evse.evse_id,
                         self.config.authorization.connect_timeout_s, action.decision.summary)

    async def _offer(self, evse: Evse, amps: float, *, reassert: bool = False) -> None:
        try:
            if evse.needs_setup:
                await evse.charger.setup()
                evse.needs_setup = False
            if self.load is not None and not reassert:
                if amps > 0:  # the site's share decides the current; others are lowered first
                    self.load.session_started(evse.evse_id, max_current_a=amps)
                    return
                await evse.charger.enable(False)  # the authorization gate stays here
                self.load.session_ended(evse.evse_id, stopped=True)
                evse.machine.offered_a = 0.0
                return
            if amps > 0:
                await evse.charger.set_max_current(amps)
                await evse.charger.enable(True)
            else:
                await evse.charger.enable(False)
            evse.machine.offered_a = amps
        except DeviceError as exc:
            log.error("EVSE %s: could not offer %.1f A: %s", evse.evse_id, amps, exc)

    # -- sessions --------------------------------------------------------------------------

    def _tariff_for(self, group: str | None) -> tuple[str | None, int | None]:
        tariffs = self.store.tariff_list()
        if tariffs is None:
            return None, None
        tariff_id = (tariffs.get("groups") or {}).get(group) if group else None
        return tariff_id or tariffs.get("default"), tariffs["version"]

    def _start_session(self, evse: Evse, action: StartSession) -> list[Action]:
        decision = action.decision
        user = decision.user
        group = user.group if user else None
        tariff_id, tariffs_version = self._tariff_for(group)
        energy = action.reading.measurement.energy_wh
        assert energy is not None
        record = SessionRecord(
            id=str(uuid.uuid4()), evse_id=evse.evse_id, status="active", token=decision.token,
            user_id=user.id if user else None, group=group, user_name=user.name if user else None,
            auth=decision.method or "local_list", started_at=rfc3339(action.at), meter_start_wh=energy,
            tariff_id=tariff_id, tariffs_version=tariffs_version, offline_start=not self.link.connected,
            clock_synced=self.clock.synced())
        self.store.start_session(record, ts=record.started_at, offline=not self.link.connected)
        self.store.add_sample(record.id, ts=record.started_at, energy_wh=energy,
                              power_w=action.reading.measurement.power_w,
                              current_a=action.reading.measurement.currents_a, charging=False)
        self.outbox.wake()
        evse.record = record
        evse.batch, evse.batch_started = [], time.monotonic()
        log.info("EVSE %s: session %s started for %s (%s), meter %d Wh, tariff %s", evse.evse_id,
                 record.id, record.user_name or record.user_id or record.token, record.auth, energy,
                 tariff_id)
        now = time.monotonic()
        return evse.machine.session_started(ActiveSession(
            id=record.id, token=record.token, decision_method=record.auth, meter_start_wh=energy,
            started_mono=now, last_sample_mono=now, last_sample_charging=False))

    def _record_sample(self, evse: Evse, reading: ChargerReading, charging: bool, at: datetime) -> None:
        record = evse.record
        m = reading.measurement
        if record is None or m.energy_wh is None:
            return
        ts = rfc3339(at)
        self.store.add_sample(record.id, ts=ts, energy_wh=m.energy_wh, power_w=m.power_w,
                              current_a=m.currents_a, charging=charging)
        self._storage_recovered()
        evse.batch.append({"ts": ts, "energy_wh": m.energy_wh, "power_w": m.power_w,
                           "current_a": list(m.currents_a) if m.currents_a else None})

    def _flush_meter_values(self, evse: Evse) -> None:
        if evse.record is None or not evse.batch:
            return
        self._record_event("meter_values", {"session_id": evse.record.id, "evse_id": evse.evse_id,
                                            "samples": evse.batch})
        evse.batch, evse.batch_started = [], time.monotonic()

    async def _end_session(self, evse: Evse, action: EndSession) -> None:
        record = evse.record
        if record is None:
            return
        # The stop reading is taken after the charger was paused, so nothing is drawn after it
        # that no session pays for; the reading that triggered the end is the fallback.
        reading, at = action.reading, action.at
        if not action.final:
            try:
                reading = evse.machine.corrected(await evse.charger.poll(), now=time.monotonic())
                at = utc_now()
            except DeviceError as exc:
                log.warning("EVSE %s: no fresh reading to end session %s (%s); using the last one",
                            evse.evse_id, record.id, exc)
                reading = reading or evse.machine.reading
        evse.unrecorded_end = EndSession(action.reason, reading, at, final=True)
        samples = self.store.samples(record.id)
        stop_wh = reading.measurement.energy_wh if reading is not None else None
        if stop_wh is None:
            stop_wh = samples[-1]["energy_wh"] if samples else record.meter_start_wh
        stop_wh = max(stop_wh, record.meter_start_wh)
        # A clock that stepped backwards must not give a negative duration.
        ended_at = rfc3339(max(at, parse_rfc3339(samples[-1]["ts"]) if samples else at,
                               parse_rfc3339(record.started_at)))
        self._flush_meter_values(evse)
        meter_samples = [MeterSample.from_json(s) for s in samples]
        meter_samples.append(MeterSample(ts=parse_rfc3339(ended_at), energy_wh=stop_wh,
                                         power_w=None, charging=False))
        priced = self._price(record, meter_samples)
        cost = priced.cost_json
        ended = {"ended_at": ended_at, "meter_stop_wh": stop_wh,
                 "energy_wh": stop_wh - record.meter_start_wh, "charging_s": priced.charging_s,
                 "parking_s": priced.parking_s, "reason": action.reason, "cost": json.dumps(cost)}
        # The machine's view is fresher than the record's (a jump since the start, or in the stop reading).
        session = evse.machine.session if evse.machine.session is not None else record
        ended["unbilled_wh"], ended["unbilled_reason"] = session.unbilled_wh, session.unbilled_reason
        # The un-billed jump's fault clears with the session; a fault of the charger's own still stands.
        cleared = [("evse_fault", {"evse_id": evse.evse_id, "error": evse.machine.fault or evse.charger_error,
                                   "ts": ended_at})] if evse.energy_anomaly else []
        data = {**record.started_event_data(), **ended, "cost": cost, "charging_periods": priced.periods_json,
                "clock_synced": record.clock_synced and self.clock.synced()}
        self.store.end_session(record.id, ended=ended, event_data=data, ts=ended_at,
                               offline=not self.link.connected, then=cleared)
        evse.unrecorded_end = None
        evse.energy_anomaly = None
        self._storage_recovered()
        self.outbox.wake()
        evse.machine.session_ended()
        if self.load is not None:
            self.load.session_ended(evse.evse_id)
        evse.record = None
        log.info("EVSE %s: session %s ended (%s): %d Wh, %s", evse.evse_id, record.id, action.reason,
                 ended["energy_wh"], "unpriced" if priced.pricing_error else
                 f"{cost['incl_vat']} {cost['currency'] or '(free)'}")

    def _price(self, record: SessionRecord, samples: list[MeterSample]) -> SessionPrice:
        """Prices with the tariff list version in force when the session started (the store keeps
        it while the session runs), whatever list arrived since. Never raises: ending a session
        never depends on pricing it. A session its tariff cannot price (gone, unreadable, amounts
        out of range) ends unpriced: cost amounts 0 and pricing_error saying why."""
        tariff_obj: Any = None
        try:
            if record.tariff_id is not None and record.tariffs_version is not None:
                tariff_obj = tariff_in_list(self.store.tariff_list(record.tariffs_version), record.tariff_id)
                if tariff_obj is None:
                    raise LookupError("it is not on the gateway")
            priced = price_session(tariff_obj, record.tariff_id, samples, tz=self.config.timezone)
            priced.cost_json  # noqa: B018 - amounts the JSON cannot carry fail here, not in the caller
            return priced
        except Exception as exc:  # noqa: BLE001 - whatever fails, the session still ends
            why = str(exc) if isinstance(exc, TariffError | LookupError) else f"{type(exc).__name__}: {exc}"
            error = f"tariff {record.tariff_id} of list version {record.tariffs_version} cannot price it: {why}"
        log.error("session %s: %s; it ends unpriced", record.id, error)
        currency = tariff_obj.get("currency") if isinstance(tariff_obj, dict) else None
        currency = currency if isinstance(currency, str) and len(currency) == 3 and currency.isascii() else None
        try:
            return unpriced_session(samples, record.tariff_id, tz=self.config.timezone, error=error,
                                    currency=currency)
        except Exception:
            log.exception("session %s: no charging periods either", record.id)
            return SessionPrice(record.tariff_id, None, (), 0, 0, pricing_error=error, currency=currency)

    def _record_event(self, type_: str, data: dict[str, Any]) -> None:
        try:
            self.store.append_event(type_, data, ts=rfc3339(utc_now()), offline=not self.link.connected)
        except StorageError as exc:
            if not self._storage_failed(exc, f"recording a {type_} event"):
                raise
            return
        self.outbox.wake()

    def _storage_failed(self, exc: StorageError, what: str) -> bool:
        """True for a full disk (logged once, reported in ~/state); other errors are not ours to hide."""
        if not isinstance(exc, StorageFull):
            return False
        if self.storage_error is None:
            log.error("storage: %s failed: %s. Charging goes on; what is decided is kept in memory and "
                      "written when space returns; no new session starts until then", what, exc)
        self.storage_error = f"{what}: {exc}"
        return True

    def _storage_recovered(self) -> None:
        if self.storage_error is not None:
            log.warning("storage writable again")
            self.storage_error = None

    # -- taps ------------------------------------------------------------------------------

    def _tap_from_thread(self, tap: Tap) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self._spawn(self.on_tap(tap), name=f"tap {tap.token}"))

    def _evse_for_tap(self, tap: Tap) -> Evse | None:
        if tap.evse_id is not None:
            return self.evses.get(tap.evse_id)
        for evse in self.evses.values():  # a site-wide reader: the card's own session first
            if evse.machine.session is not None and evse.machine.session.token == tap.token:
                return evse
        waiting = [e for e in self.evses.values()
                   if e.machine.plugged and e.machine.can_start() is None and e.machine.pending is None]
        return waiting[0] if waiting else None

    async def _site_wide_tap(self, tap: Tap) -> None:
        """No vehicle waits yet: the card's authorization goes to the next EVSE plugged in."""
        if self._site_wide is not None and self._site_wide[0].token == tap.token:
            self._site_wide = None
            log.info("site-wide reader: %s tapped again; authorization cancelled", tap.token)
            return
        decision = await self.authorizer.authorize(tap.token, evse_id=None)
        log.info("site-wide reader: %s", decision.summary)
        if not decision.accepted:
            self._record_event("auth_rejected", {"token": tap.token, "evse_id": None,
                                                 "reason": decision.reason, "ts": rfc3339(utc_now())})
            return
        timeout = self.config.authorization.connect_timeout_s
        self._site_wide = (decision, time.monotonic() + timeout)
        log.info("site-wide reader: the next vehicle plugged in within %g s charges for %s", timeout,
                 decision.token)

    async def on_tap(self, tap: Tap) -> None:
        evse = self._evse_for_tap(tap)
        if evse is None:
            if tap.evse_id is None:
                await self._site_wide_tap(tap)
            else:
                log.warning("tap %s from reader %s: unknown EVSE %s", tap.token, tap.reader, tap.evse_id)
            return
        machine = evse.machine
        if machine.session is not None:
            if machine.session.token == tap.token:
                async with evse.lock:
                    await self._execute(evse, machine.on_stop("local", at=utc_now()))
            else:
                log.info("EVSE %s busy: tap %s ignored (another card's session runs)", evse.evse_id, tap.token)
            return
        if machine.pending is not None and machine.pending.decision.token == tap.token:
            machine.pending = None
            log.info("EVSE %s: %s tapped again before plugging in; authorization cancelled",
                     evse.evse_id, tap.token)
            return
        if (why_not := machine.can_start()) is not None:
            log.info("EVSE %s: tap %s ignored: %s", evse.evse_id, tap.token, why_not)
            return
        decision = await self.authorizer.authorize(tap.token, evse_id=evse.evse_id)
        log.info("EVSE %s: %s", evse.evse_id, decision.summary)
        if not decision.accepted:
            self._record_event("auth_rejected", {"token": tap.token, "evse_id": evse.evse_id,
                                                 "reason": decision.reason, "ts": rfc3339(utc_now())})
            return
        async with evse.lock:
            await self._execute(evse, machine.on_authorized(decision, now=time.monotonic(), at=utc_now()))

    async def _ask_online(self, token: str, evse_id: str | None) -> OnlineAnswer | None:
        request_id = str(uuid.uuid4())
        future: asyncio.Future[OnlineAnswer] = asyncio.get_running_loop().create_future()
        self._pending_auth[request_id] = future
        try:
            payload = json.dumps({"request_id": request_id, "token": token, "evse_id": evse_id})
            if self.link.publish(self.topics.auth_request, payload) is None:
                return None
            return await asyncio.wait_for(future, self.config.authorization.online_timeout_s)
        except TimeoutError:
            log.info("no answer to auth request for %s within %ss; deciding offline", token,
                     self.config.authorization.online_timeout_s)
            return None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the agent is stopping
            log.info("cloud link lost while asking about %s; deciding offline", token)
            return None  # the link dropped: _on_disconnected cancelled the question
        finally:
            self._pending_auth.pop(request_id, None)

    # -- the clock: timeouts, status and state publishing --------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if (step := self.clock.jump()) is not None:
                self._on_clock_step(step)
            if now - self._rejected_saved_at >= 60:
                self._rejected_saved_at = now
                with contextlib.suppress(StorageFull, StorageFailed):  # best effort, as at the end
                    self._save_rejected_count()
            if self._site_wide is not None and now >= self._site_wide[1]:
                log.info("site-wide reader: no vehicle plugged in for %s; authorization dropped",
                         self._site_wide[0].summary)
                self._site_wide = None
            for evse in self.evses.values():
                if evse.unrecorded_end is not None and evse.record is not None:
                    async with evse.lock:
                        await self._execute(evse, [evse.unrecorded_end])
            for evse in self.evses.values():
                if evse.machine.pending is not None:
                    async with evse.lock:
                        await self._execute(evse, evse.machine.on_tick(now=now))
                if evse.batch and now - evse.batch_started >= self.config.sessions.meter_values_interval_s:
                    self._flush_meter_values(evse)
                self._publish_status(evse, now)
            self._publish_state(now)
            publish_runtime_status(self, now)  # tmpfs, once a second: `edge-agent status`

    def _on_clock_step(self, step: float) -> None:
        """The wall clock stepped (NTP's first sync, a technician): running sessions keep the
        durations the monotonic clock measured, their times move with the clock."""
        log.warning("the wall clock stepped by %+.1f s%s; running sessions' times follow it", step,
                    "" if self.clock.synced() else " (not synchronised yet)")
        for evse in self.evses.values():
            if evse.record is None:
                continue
            self.store.shift_session_times(evse.record.id, step)
            evse.record = self.store.sessions(where="id = ?", params=[evse.record.id])[0]
            for sample in evse.batch:
                sample["ts"] = rfc3339(parse_rfc3339(sample["ts"]) + timedelta(seconds=step))
        self.store.set_meta("clock_offset", json.dumps([boot_id(), self.clock.offset]))

    def _publish_status(self, evse: Evse, now: float, *, force: bool = False) -> None:
        if not self.link.connected:
            return
        m = evse.machine
        key = (m.status(), m.session.id if m.session else None, m.offered_a, m.fault)
        heartbeat_due = now - evse.status_published_at >= self.config.sessions.status_heartbeat_s
        if not force and key == evse.published_status and not heartbeat_due:
            return
        reading = m.reading
        measurement = reading.measurement if reading else None
        # cost_so_far: the price if the session ended now (incl. VAT, the tariff's currency), from a
        # RunningCost per session fed the stored samples. _record_sample appends to evse.batch right
        # after storing a sample, so the store is read again only when (batch_started, len) moved.
        cost_so_far: float | None = None
        running = self._running_costs
        record = evse.record
        if m.session is None or record is None:
            running.pop(evse.evse_id, None)
        else:
            entry = running.get(evse.evse_id)
            if entry is None or entry[0] != record.id:
                entry = running[evse.evse_id] = [record.id, None, None]
                try:
                    tariff_obj = (tariff_in_list(self.store.tariff_list(record.tariffs_version), record.tariff_id)
                                  if record.tariffs_version is not None else None)
                    if tariff_obj is None and record.tariff_id is not None:
                        raise LookupError(f"tariff {record.tariff_id} is not on the gateway")  # not free: unknown
                    entry[1] = RunningCost(tariff_obj, record.tariff_id, tz=self.config.timezone)
                except Exception as exc:  # noqa: BLE001 - the session ends unpriced; cost_so_far is null
                    log.error("session %s: no running cost (%s)", record.id, exc)
            meter: RunningCost | None = entry[1]
            try:
                mark = (evse.batch_started, len(evse.batch))
                if meter is not None and mark != entry[2]:
                    for row in self.store.samples(record.id)[meter.sample_count:]:
                        meter.add(MeterSample.from_json(row))
                    entry[2] = mark
                if meter is not None:
                    energy = measurement.energy_wh if measurement else None
                    if energy is None:
                        energy = meter.last_sample.energy_wh if meter.last_sample else record.meter_start_wh
                    cost_so_far = meter.cost_so_far(MeterSample(
                        ts=utc_now(), energy_wh=max(energy, record.meter_start_wh), power_w=None, charging=False))
            except Exception:  # a display value must never stop the agent; say it once per session
                log.exception("session %s: running cost failed; cost_so_far stays null", record.id)
                entry[1] = None
        payload = {"evse_id": evse.evse_id, "status": key[0],
                   "iec61851": reading.iec61851 if reading else None, "session_id": key[1],
                   "offered_current_a": float(m.offered_a),
                   "power_w": measurement.power_w if measurement else None,
                   "energy_wh": measurement.energy_wh if measurement else None,
                   "cost_so_far": cost_so_far,
                   "error": m.fault or evse.charger_error, "ts": rfc3339(utc_now()),
                   **(self.load.evse_status(evse.evse_id) if self.load is not None else {})}
        if self.link.publish(self.topics.evse_status(evse.evse_id), json.dumps(payload), retain=True) is not None:
            evse.published_status, evse.status_published_at = key, now

    def state(self) -> dict[str, Any]:
        return {"online": True, "version": __version__, "boot_id": self.boot_id,
                "started_at": self.started_at, "clock_synced": self.clock.synced(),
                "users_version": self.store.list_version("users"),
                "tariffs_version": self.store.list_version("tariffs"),
                "outbox_pending": self.store.outbox_pending(),
                "rejected_messages": self.rejected_messages, "evses": list(self.evses),
                "users_list_error": self.user_lists.error, "storage_error": self.storage_error,
                **({"load_management": self.load.state()} if self.load is not None else {})}

    def _publish_state(self, now: float) -> None:
        if not self.link.connected:
            return
        state = self.state()
        changed = state != self._state_published
        if not (self._state_force or (changed and now - self._state_published_at >= 2.0)):
            return
        if self.link.publish(self.topics.state, json.dumps({**state, "ts": rfc3339(utc_now())}),
                             retain=True) is not None:
            self._state_published, self._state_published_at, self._state_force = state, now, False

    # -- the cloud -------------------------------------------------------------------------

    def _on_connected(self, session_present: bool) -> None:
        self._state_force = True
        self._publish_state(time.monotonic())
        for evse in self.evses.values():
            self._publish_status(evse, time.monotonic(), force=True)
        self.outbox.on_connected()

    def _on_disconnected(self, reason: str) -> None:
        self.outbox.on_disconnected()
        for future in self._pending_auth.values():
            if not future.done():
                future.cancel()

    def _reject_message(self, topic: str, error: Exception) -> None:
        # Counted in memory and saved at most once a minute: a flood of bad messages must not
        # become a flood of SD-card writes.
        self.rejected_messages += 1
        self.rejections.note(topic, error)

    def _save_rejected_count(self) -> None:
        if self.rejected_messages != self._rejected_saved:
            self.store.save_counter("rejected_messages", self.rejected_messages)
            self._rejected_saved = self.rejected_messages

    def _on_message(self, message: Inbound) -> None:
        topic = message.topic
        if not topic.startswith(self.topics.root + "/"):
            # Every subscription is under ~/; whatever else a broker delivers is not ours to act on.
            log.debug("message on %s ignored: not under %s/", topic, self.topics.root)
            return
        try:
            if topic == self.topics.ack:
                self.outbox.on_acknowledged(check_ack(parse_json_object(message.payload)))
            elif topic == self.topics.users:
                self.user_lists.offer_full(topic, message.payload)
            elif topic == self.topics.users_delta:
                self.user_lists.offer_delta(topic, message.payload)
            elif topic == self.topics.tariffs:
                apply_tariff_list(self.store, parse_json_object(message.payload))
            elif topic == self.topics.auth_response:
                answer = check_auth_response(parse_json_object(message.payload))
                future = self._pending_auth.get(answer.request_id)
                if future is not None and not future.done():
                    future.set_result(OnlineAnswer(answer.status, answer.user))  # type: ignore[arg-type]
            elif (name := self.topics.command_name(topic)) is not None:
                self._spawn(self._on_command(name, message), name=f"command {name}")
        except PayloadError as exc:
            self._reject_message(topic, exc)
        except Exception as exc:  # no message may take the agent down
            log.exception("unexpected failure handling a message on %s", topic)
            self._reject_message(topic, exc)

    # -- commands --------------------------------------------------------------------------

    def _answer(self, request_id: str | None, status: str, detail: str) -> None:
        detail = printable(detail)
        body = json.dumps({"request_id": request_id, "status": status, "detail": detail})
        if request_id is not None:
            try:
                self.store.save_command_result(request_id, body, answered_at=rfc3339(utc_now()))
            except Exception as exc:  # noqa: BLE001 - a disk that refuses the write must not eat the answer
                log.error("command %s: answer not stored (%s); a repeat of it would be carried out again",
                          request_id, exc)
        self.link.publish(self.topics.result, body)
        log.info("command %s: %s (%s)", request_id, status, detail)

    async def _answered_before(self, request_id: str) -> bool:
        """Answers a request_id seen before again the same way (True), also when the first copy
        is still being carried out (a QoS 1 re-delivery): never carried out twice."""
        running = self._commands_running.get(request_id)
        if running is not None:
            await asyncio.shield(running)
        try:
            previous = self.store.command_result(request_id)
        except Exception as exc:  # noqa: BLE001 - unknown whether it ran before: do not run it
            self._answer(request_id, "error", f"the gateway cannot read its stored answers: {exc}")
            return True
        if previous is None:
            return False
        self.link.publish(self.topics.result, previous.body)
        return True

    async def _on_command(self, name: str, message: Inbound) -> None:
        """Every command gets exactly one answer on ~/result (a retained one none). One rejected
        whole keeps its request_id in the answer when that field itself is usable."""
        if message.retain:
            log.warning("retained command on %s ignored: commands are events, not state", message.topic)
            return
        try:
            obj = parse_json_object(message.payload)
        except PayloadError as exc:
            self._reject_message(message.topic, exc)
            salvaged = _salvaged_request_id(message.payload)
            if salvaged is None or not await self._answered_before(salvaged):
                self._answer(salvaged, "error", str(exc))
            return
        try:
            request_id = check_request_id(obj)
        except PayloadError as exc:
            self._reject_message(message.topic, exc)
            self._answer(None, "error", str(exc))
            return
        if await self._answered_before(request_id):
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commands_running[request_id] = done
        try:
            try:
                command = check_command(name, obj)
            except PayloadError as exc:
                self._reject_message(message.topic, exc)
                status, detail = "error", str(exc)
            else:
                if command.expires_at is not None and command.expires_at <= utc_now():
                    status, detail = "expired", f"expired at {rfc3339(command.expires_at)}"
                else:
                    status, detail = await self._carry_out(command.name, command.fields)
        except Exception as exc:  # every command gets exactly one answer
            log.exception("command %s (%s) failed", request_id, name)
            status, detail = "error", f"the gateway failed to carry it out: {type(exc).__name__}: {exc}"
        try:
            self._answer(request_id, status, detail)
        finally:
            del self._commands_running[request_id]
            done.set_result(None)

    async def _carry_out(self, name: str, fields: dict[str, Any]) -> tuple[str, str]:
        if name == "start":
            evse = self.evses.get(fields["evse_id"])
            if evse is None:
                return "rejected", f"unknown EVSE {fields['evse_id']!r}"
            if (why_not := evse.machine.can_start()) is not None:
                return "rejected", why_not
            decision = self.authorizer.authorize_user(fields["user_id"])
            if not decision.accepted:
                return "rejected", f"user {fields['user_id']!r} may not charge: {decision.reason}"
            async with evse.lock:
                await self._execute(evse, evse.machine.on_authorized(decision, now=time.monotonic(), at=utc_now()))
            if evse.machine.session is not None:
                return "accepted", f"session {evse.machine.session.id} started"
            return "accepted", f"waiting up to {self.config.authorization.connect_timeout_s:g} s for the vehicle"
        if name == "stop":
            evse = None
            if fields.get("session_id"):
                evse = next((e for e in self.evses.values() if e.machine.session is not None
                             and e.machine.session.id == fields["session_id"]), None)
            elif fields.get("evse_id") is not None:
                evse = self.evses.get(fields["evse_id"])
                if evse is None:
                    return "rejected", f"unknown EVSE {fields['evse_id']!r}"
            if evse is None or evse.machine.session is None:
                return "rejected", "no session to stop"
            session_id = evse.machine.session.id
            async with evse.lock:
                await self._execute(evse, evse.machine.on_stop("remote", at=utc_now()))
            return "accepted", f"session {session_id} stopped"
        if name == "set_availability":
            evse = self.evses.get(fields["evse_id"])
            if evse is None:
                return "rejected", f"unknown EVSE {fields['evse_id']!r}"
            evse.machine.available = fields["available"]
            if not fields["available"]:
                evse.machine.pending = None
            self.store.set_evse_available(evse.evse_id, fields["available"])
            running = " after the running session" if evse.machine.session and not fields["available"] else ""
            return "accepted", f"EVSE {evse.evse_id} {'available' if fields['available'] else 'unavailable'}{running}"
        if name == "resync":
            for what in (("users", "tariffs") if fields["what"] == "all" else (fields["what"],)):
                self.store.forget_list_version(what)
            self._state_force = True
            return "accepted", f"local {fields['what']} version forgotten; the next full list is applied"
        if name == "set_site_limit":
            if self.load is None:
                return "rejected", "load management is not configured on this gateway (no site: section)"
            try:
                limit = self.load.set_site_limit(fields["max_current_a"], until=fields["until"])
            except ValueError as exc:
                return "rejected", str(exc)
            if limit.source != "cloud":
                return "accepted", f"the configured site limit of {limit.max_current_a:g} A applies"
            until = self.load.state()["limit_until"]
            return "accepted", (f"site limit {limit.max_current_a:g} A per phase "
                                f"{f'until {until}' if until else 'until changed'}, kept across restarts")
        return "error", f"unknown command {name!r}"

    # -- the technician's live view -----------------------------------------------------------

    def runtime_status(self) -> dict[str, Any]:
        """What `edge-agent status` shows; written once a second to tmpfs, never to the database."""
        now = time.monotonic()
        chargers = {c.evse_id: c for c in self.config.chargers}
        evses = []
        for evse in self.evses.values():
            m, cfg = evse.machine, chargers.get(evse.evse_id)
            measurement = m.reading.measurement if m.reading else None
            session = None
            if m.session is not None:
                record, last_wh = evse.record, getattr(m.session, "last_energy_wh", None)
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
            evses.append({
                "evse_id": evse.evse_id, "model": cfg.model if cfg else None,
                "endpoint": (f"{cfg.host}:{cfg.port}" if cfg.host else f"{cfg.serial} unit {cfg.unit}") if cfg else None,
                "status": m.status(), "iec61851": m.reading.iec61851 if m.reading else None,
                "available": m.available, "fault": m.fault, "failed_polls": evse.failed_polls,
                "offered_a": float(m.offered_a),
                "currents_a": list(measurement.currents_a) if measurement and measurement.currents_a else None,
                "power_w": measurement.power_w if measurement else None,
                "register_wh": measurement.energy_wh if measurement else None,
                "failsafe_warning": (evse.charger.failsafe_warning
                                     if isinstance(evse.charger, FailsafeReporter) else None),
                "pending": pending, "session": session})
        readers = [{"name": r.name, "port": getattr(r, "port", None), "evse_id": r.evse_id,
                    "healthy": r.healthy, "last_error": r.last_error,
                    "frames_ok": getattr(r, "frames_ok", None), "frames_bad": getattr(r, "frames_bad", None)}
                   for r in self.readers]
        return {"gateway_id": self.config.gateway_id, "version": __version__, "boot_id": self.boot_id,
                "started_at": self.started_at, "clock_synced": self.clock.synced(),
                "cloud": {"connected": self.link.connected, "host": self.config.cloud.host,
                          "port": self.config.cloud.port, "last_error": self.link.last_error},
                "outbox": {"pending": self.store.outbox_pending(), "last_seq": self.store.counter("seq"),
                           "published": self.outbox.published, "resent": self.outbox.resent},
                "lists": {"users_version": self.store.list_version("users"), "users": self.store.user_count(),
                          "tariffs_version": self.store.list_version("tariffs")},
                "rejected_messages": self.rejected_messages, "evses": evses, "readers": readers}


def _salvaged_request_id(payload: bytes) -> str | None:
    """The request_id of a command rejected whole (JSON but for NaN/Infinity, or a lone surrogate
    in another field) when that field itself is usable, so the cloud can tell which command its
    error answer is for."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        obj = json.loads(payload.decode("utf-8"))
        if not isinstance(obj, dict):
            return None
        request_id = check_request_id(obj)
        check_text(request_id, "request_id")
        return request_id
    except (ValueError, UnicodeError, PayloadError, RecursionError):
        return None


def create_evse_charger(charger_cfg: Any, *, registry: BusRegistry, plan: Any, energy_dir: Any) -> Any:
    """The driver of one `chargers:` entry (nothing opened yet), as run makes it and config check
    tries it. Raises MapError or ValueError for options the model cannot take."""
    meter = charger_cfg.meter
    return create_charger(
        model=charger_cfg.model, name=f"evse {charger_cfg.evse_id}", registry=registry,
        transport=charger_cfg.transport, host=charger_cfg.host, port=charger_cfg.port,
        serial=charger_cfg.serial, baudrate=charger_cfg.baudrate, parity=charger_cfg.parity,
        stopbits=charger_cfg.stopbits, unit=charger_cfg.unit, connector=charger_cfg.connector,
        timeout_s=charger_cfg.timeout_s, retries=charger_cfg.retries,
        meter=None if meter is None else dict(
            model=meter.model, transport=meter.transport, host=meter.host, port=meter.port,
            serial=meter.serial, baudrate=meter.baudrate, parity=meter.parity,
            stopbits=meter.stopbits, unit=meter.unit),
        # Chargers without a lifetime register: the agent's own counter, kept on disk.
        energy_counter_path=None if energy_dir is None else energy_dir / f"evse-{charger_cfg.evse_id}.json",
        max_current_a=charger_cfg.max_current_a,
        failsafe_current_a=plan.failsafe_a[charger_cfg.evse_id] if plan else charger_cfg.failsafe_current_a,
        failsafe_timeout_s=charger_cfg.failsafe_timeout_s)


def _create_site_meter(meter: Any, registry: BusRegistry) -> Any:
    return create_meter(model=meter.model, name="site meter", registry=registry, transport=meter.transport,
                        host=meter.host, port=meter.port, serial=meter.serial, baudrate=meter.baudrate,
                        parity=meter.parity, stopbits=meter.stopbits, unit=meter.unit)


def _notify_systemd(message: str) -> None:
    import os
    import socket

    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)
