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
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from drivers.api import ChargerReading, Tap
from drivers.errors import DeviceError
from drivers.modbus import BusRegistry, create_charger
from drivers.readers import create_reader

from . import __version__
from .authorization import Authorizer, Decision, OnlineAnswer
from .clock import clock_synced, parse_rfc3339, rfc3339, utc_now
from .cloud import (
    Inbound,
    MqttLink,
    OutboxSender,
    PayloadError,
    TlsFiles,
    Topics,
    check_ack,
    check_auth_response,
    check_command,
    parse_json_object,
)
from .cloud._payloads import check_request_id
from .config import SiteConfig
from .lists import apply_tariff_list, apply_user_delta, apply_user_list
from .pricing import MeterSample, parse_tariff, periods_from_samples, price_periods
from .sessions import (
    Action,
    ActiveSession,
    AuthorizationTimedOut,
    EndSession,
    EvseSessionMachine,
    Offer,
    RecordSample,
    StartSession,
)
from .store import SessionRecord, Store

log = logging.getLogger("edge_agent.site")

FAULT_AFTER_FAILED_POLLS = 3


@dataclass(slots=True)
class Evse:
    evse_id: str
    machine: EvseSessionMachine
    charger: Any  # drivers.modbus.ModbusCharger
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    record: SessionRecord | None = None
    failed_polls: int = 0
    needs_setup: bool = True
    batch: list[dict[str, Any]] = field(default_factory=list)
    batch_started: float = 0.0
    published_status: tuple[Any, ...] | None = None
    status_published_at: float = 0.0


class Site:
    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.store = Store(config.data_dir)
        self.topics = Topics(config.topic_root())
        self.boot_id = str(uuid.uuid4())
        self.started_at = rfc3339(utc_now())
        self.rejected_messages = self.store.counter("rejected_messages")
        self._pending_auth: dict[str, asyncio.Future[OnlineAnswer]] = {}
        self._state_published: dict[str, Any] | None = None
        self._state_published_at = 0.0
        self._state_force = False
        self._loop: asyncio.AbstractEventLoop | None = None
        cloud = config.cloud
        self.link = MqttLink(
            client_id=config.gateway_id, host=cloud.host, port=cloud.port,
            keepalive_s=cloud.keepalive_s, will_topic=self.topics.state,
            will_payload=json.dumps({"online": False}).encode(),
            subscriptions=self.topics.subscriptions(), session_expiry_s=cloud.session_expiry_s,
            reconnect_max_s=cloud.reconnect_max_s,
            tls=_tls_files(cloud.tls),
            username=cloud.username, password=_read_secret(cloud.password_file),
            on_connected=self._on_connected, on_disconnected=self._on_disconnected,
            on_message=self._on_message)
        self.outbox = OutboxSender(store=self.store, link=self.link, topic=self.topics.events,
                                   ack_timeout_s=cloud.ack_timeout_s)
        self.authorizer = Authorizer(store=self.store, offline_unknown=config.authorization.offline_unknown,
                                     ask_online=self._ask_online, is_online=lambda: self.link.connected)
        self.buses = BusRegistry()
        self.evses: dict[str, Evse] = {}
        for charger_cfg in config.chargers:
            charger = create_charger(
                model=charger_cfg.model, name=f"evse {charger_cfg.evse_id}", registry=self.buses,
                host=charger_cfg.host, port=charger_cfg.port, serial=charger_cfg.serial,
                baudrate=charger_cfg.baudrate, parity=charger_cfg.parity, unit=charger_cfg.unit,
                timeout_s=charger_cfg.timeout_s, retries=charger_cfg.retries,
                max_current_a=charger_cfg.max_current_a, failsafe_current_a=charger_cfg.failsafe_current_a)
            machine = EvseSessionMachine(
                evse_id=charger_cfg.evse_id, max_current_a=float(charger.max_current_a),
                connect_timeout_s=config.authorization.connect_timeout_s,
                sample_interval_s=config.sessions.meter_values_interval_s,
                available=self.store.evse_available(charger_cfg.evse_id))
            self.evses[charger_cfg.evse_id] = Evse(charger_cfg.evse_id, machine, charger)
        self.readers = [
            create_reader(driver=r.driver, port=r.port, device=r.device, evse_id=r.evse_id,
                          on_tap=self._tap_from_thread, debounce_s=config.authorization.debounce_s)
            for r in config.readers]
        self._resume_sessions()

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
        _notify_systemd("READY=1")
        try:
            waiter = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiter and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            log.info("edge-agent stopping")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for reader in self.readers:
                reader.stop()
            if self.link.connected:
                self.link.publish(self.topics.state, json.dumps({"online": False}), retain=True)
                await asyncio.sleep(0.1)
            self.link.stop()
            await self.buses.aclose()
            self.store.close()

    def _resume_sessions(self) -> None:
        for record in self.store.active_sessions():
            evse = self.evses.get(record.evse_id)
            if evse is None:
                log.error("session %s was running on EVSE %s, which is no longer configured; "
                          "it stays open in the database", record.id, record.evse_id)
                continue
            evse.record = record
            evse.machine.session = ActiveSession(
                id=record.id, token=record.token, decision_method=record.auth,
                meter_start_wh=record.meter_start_wh, started_mono=time.monotonic(),
                last_sample_mono=time.monotonic(), recovering=True)
            log.info("session %s on EVSE %s was running when the agent stopped; "
                     "the charger's next reading decides whether it goes on", record.id, record.evse_id)

    # -- chargers --------------------------------------------------------------------------

    async def _poll_loop(self, evse: Evse) -> None:
        interval = self.config.sessions.poll_interval_s
        while True:
            started = time.monotonic()
            async with evse.lock:
                await self._poll_once(evse)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _poll_once(self, evse: Evse) -> None:
        try:
            if evse.needs_setup:
                await evse.charger.setup()
                if evse.machine.session is None:
                    await evse.charger.enable(False)  # nobody charges without authorization
                evse.needs_setup = False
            reading = await evse.charger.poll()
            await evse.charger.keepalive()
        except DeviceError as exc:
            evse.failed_polls += 1
            if evse.failed_polls == FAULT_AFTER_FAILED_POLLS:
                log.error("EVSE %s unavailable: %s", evse.evse_id, exc)
                evse.machine.on_fault(f"charger not responding: {exc}")
                self._record_event("evse_fault", {"evse_id": evse.evse_id,
                                                  "error": evse.machine.fault, "ts": rfc3339(utc_now())})
            return
        if evse.failed_polls >= FAULT_AFTER_FAILED_POLLS:
            log.warning("EVSE %s back after %d failed polls", evse.evse_id, evse.failed_polls)
            self._record_event("evse_fault", {"evse_id": evse.evse_id, "error": None,
                                              "ts": rfc3339(utc_now())})
        evse.failed_polls = 0
        actions = evse.machine.on_reading(reading, now=time.monotonic(), at=utc_now())
        await self._execute(evse, actions)

    async def _execute(self, evse: Evse, actions: list[Action]) -> None:
        """Carries out the machine's actions in order; called with evse.lock held."""
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, StartSession):
                queue[:0] = self._start_session(evse, action)
            elif isinstance(action, Offer):
                await self._offer(evse, action.amps)
            elif isinstance(action, RecordSample):
                self._record_sample(evse, action.reading, action.charging, action.at)
            elif isinstance(action, EndSession):
                await self._end_session(evse, action)
            elif isinstance(action, AuthorizationTimedOut):
                log.info("EVSE %s: no vehicle within %ss after %s; authorization dropped", evse.evse_id,
                         self.config.authorization.connect_timeout_s, action.decision.summary)

    async def _offer(self, evse: Evse, amps: float) -> None:
        try:
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
            clock_synced=clock_synced())
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
        reading = action.reading
        at = action.at
        if reading is None or reading.measurement.energy_wh is None:
            try:
                reading = await evse.charger.poll()
                at = utc_now()
            except DeviceError as exc:
                log.warning("EVSE %s: no fresh reading to end session %s (%s); using the last one",
                            evse.evse_id, record.id, exc)
                reading = evse.machine.reading
        samples = self.store.samples(record.id)
        stop_wh = reading.measurement.energy_wh if reading is not None else None
        if stop_wh is None:
            stop_wh = samples[-1]["energy_wh"] if samples else record.meter_start_wh
        stop_wh = max(stop_wh, record.meter_start_wh)
        ended_at = rfc3339(at)
        self._flush_meter_values(evse)
        meter_samples = [MeterSample(ts=parse_rfc3339(s["ts"]), energy_wh=s["energy_wh"],
                                     power_w=s["power_w"], charging=s["charging"]) for s in samples]
        meter_samples.append(MeterSample(ts=parse_rfc3339(ended_at), energy_wh=stop_wh,
                                         power_w=None, charging=False))
        cost, charging_s, parking_s = self._price(record, meter_samples)
        ended = {"ended_at": ended_at, "meter_stop_wh": stop_wh,
                 "energy_wh": stop_wh - record.meter_start_wh, "charging_s": charging_s,
                 "parking_s": parking_s, "reason": action.reason, "cost": json.dumps(cost)}
        data = {**record.started_event_data(), **ended, "cost": cost}
        self.store.end_session(record.id, ended=ended, event_data=data, ts=ended_at,
                               offline=not self.link.connected)
        self.outbox.wake()
        evse.machine.session_ended()
        evse.record = None
        log.info("EVSE %s: session %s ended (%s): %d Wh, %s %s", evse.evse_id, record.id, action.reason,
                 ended["energy_wh"], cost["incl_vat"], cost["currency"] or "(free)")

    def _price(self, record: SessionRecord, samples: list[MeterSample]) -> tuple[dict[str, Any], int, int]:
        periods = periods_from_samples(samples, tz=self.config.timezone)
        charging_s = int(sum((p.charging_h for p in periods), Decimal(0)) * 3600)
        parking_s = int(sum((p.parking_h for p in periods), Decimal(0)) * 3600)
        free = {"currency": None, "excl_vat": 0, "incl_vat": 0, "tariff_id": None}
        if record.tariff_id is None or record.tariffs_version is None:
            return free, charging_s, parking_s
        tariffs = self.store.tariff_list(record.tariffs_version) or {}
        tariff_obj = next((t for t in tariffs.get("tariffs", []) if t.get("id") == record.tariff_id), None)
        if tariff_obj is None:
            log.error("session %s: tariff %s of list version %s is gone; billed as free",
                      record.id, record.tariff_id, record.tariffs_version)
            return free, charging_s, parking_s
        tariff = parse_tariff(tariff_obj)
        cost = price_periods(tariff, periods_from_samples(samples, tz=self.config.timezone, tariff=tariff),
                             session_start=samples[0].ts, session_end=samples[-1].ts,
                             tz=self.config.timezone)
        return {**cost.to_json(), "tariff_id": record.tariff_id}, charging_s, parking_s

    def _record_event(self, type_: str, data: dict[str, Any]) -> None:
        self.store.append_event(type_, data, ts=rfc3339(utc_now()), offline=not self.link.connected)
        self.outbox.wake()

    # -- taps ------------------------------------------------------------------------------

    def _tap_from_thread(self, tap: Tap) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.on_tap(tap)))

    def _evse_for_tap(self, tap: Tap) -> Evse | None:
        if tap.evse_id is not None:
            return self.evses.get(tap.evse_id)
        for evse in self.evses.values():  # a site-wide reader: the card's own session first
            if evse.machine.session is not None and evse.machine.session.token == tap.token:
                return evse
        free = [e for e in self.evses.values() if e.machine.can_start() is None and e.machine.pending is None]
        plugged = [e for e in free if e.machine.plugged]
        return (plugged or free or [None])[0]

    async def on_tap(self, tap: Tap) -> None:
        evse = self._evse_for_tap(tap)
        if evse is None:
            log.warning("tap %s from reader %s: no EVSE can take it", tap.token, tap.reader)
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

    async def _ask_online(self, token: str, evse_id: str) -> OnlineAnswer | None:
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
        finally:
            self._pending_auth.pop(request_id, None)

    # -- the clock: timeouts, status and state publishing --------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for evse in self.evses.values():
                if evse.machine.pending is not None:
                    async with evse.lock:
                        await self._execute(evse, evse.machine.on_tick(now=now))
                if evse.batch and now - evse.batch_started >= self.config.sessions.meter_values_interval_s:
                    self._flush_meter_values(evse)
                self._publish_status(evse, now)
            self._publish_state(now)

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
        payload = {"evse_id": evse.evse_id, "status": key[0],
                   "iec61851": reading.iec61851 if reading else None, "session_id": key[1],
                   "offered_current_a": float(m.offered_a),
                   "power_w": measurement.power_w if measurement else None,
                   "energy_wh": measurement.energy_wh if measurement else None,
                   "error": m.fault, "ts": rfc3339(utc_now())}
        if self.link.publish(self.topics.evse_status(evse.evse_id), json.dumps(payload), retain=True) is not None:
            evse.published_status, evse.status_published_at = key, now

    def state(self) -> dict[str, Any]:
        return {"online": True, "version": __version__, "boot_id": self.boot_id,
                "started_at": self.started_at, "clock_synced": clock_synced(),
                "users_version": self.store.list_version("users"),
                "tariffs_version": self.store.list_version("tariffs"),
                "outbox_pending": self.store.outbox_pending(),
                "rejected_messages": self.rejected_messages, "evses": list(self.evses)}

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
        self.rejected_messages = self.store.counter("rejected_messages") + 1
        self.store.db.execute(
            "INSERT INTO counters(name, value) VALUES ('rejected_messages', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value", [self.rejected_messages])
        log.warning("rejected message on %s: %s", topic, error)

    def _on_message(self, message: Inbound) -> None:
        topic = message.topic
        try:
            if topic == self.topics.ack:
                self.outbox.on_acknowledged(check_ack(parse_json_object(message.payload)))
            elif topic == self.topics.users:
                apply_user_list(self.store, parse_json_object(message.payload))
            elif topic == self.topics.users_delta:
                apply_user_delta(self.store, parse_json_object(message.payload))
            elif topic == self.topics.tariffs:
                apply_tariff_list(self.store, parse_json_object(message.payload))
            elif topic == self.topics.auth_response:
                answer = check_auth_response(parse_json_object(message.payload))
                future = self._pending_auth.get(answer.request_id)
                if future is not None and not future.done():
                    future.set_result(OnlineAnswer(answer.status, answer.user))  # type: ignore[arg-type]
            elif (name := self.topics.command_name(topic)) is not None:
                asyncio.ensure_future(self._on_command(name, message))
        except PayloadError as exc:
            self._reject_message(topic, exc)

    # -- commands --------------------------------------------------------------------------

    def _answer(self, request_id: str | None, status: str, detail: str) -> None:
        body = json.dumps({"request_id": request_id, "status": status, "detail": detail})
        if request_id is not None:
            self.store.save_command_result(request_id, body, answered_at=rfc3339(utc_now()))
        self.link.publish(self.topics.result, body)
        log.info("command %s: %s (%s)", request_id, status, detail)

    async def _on_command(self, name: str, message: Inbound) -> None:
        if message.retain:
            log.warning("retained command on %s ignored: commands are events, not state", message.topic)
            return
        try:
            obj = parse_json_object(message.payload)
        except PayloadError as exc:
            self._reject_message(message.topic, exc)
            self._answer(None, "error", str(exc))
            return
        try:
            request_id = check_request_id(obj)
        except PayloadError as exc:
            self._reject_message(message.topic, exc)
            self._answer(None, "error", str(exc))
            return
        previous = self.store.command_result(request_id)
        if previous is not None:
            self.link.publish(self.topics.result, previous.body)
            return
        try:
            command = check_command(name, obj)
        except PayloadError as exc:
            self._reject_message(message.topic, exc)
            self._answer(request_id, "error", str(exc))
            return
        if command.expires_at is not None and command.expires_at <= utc_now():
            self._answer(request_id, "expired", f"expired at {rfc3339(command.expires_at)}")
            return
        status, detail = await self._carry_out(command.name, command.fields)
        self._answer(request_id, status, detail)

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
            return "rejected", "load management is not configured on this gateway"
        return "error", f"unknown command {name!r}"


def _tls_files(tls: Any) -> TlsFiles | None:
    if tls is None:
        return None
    as_text = lambda path: str(path) if path is not None else None  # noqa: E731
    return TlsFiles(as_text(tls.ca_file), as_text(tls.cert_file), as_text(tls.key_file))


def _read_secret(path: Any) -> str | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


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
