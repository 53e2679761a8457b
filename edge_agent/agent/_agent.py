"""The composition root: builds one site's parts from its config and owns every task it starts.

    async with Agent(config) as agent:     # store, link, chargers, readers: started
        await agent.wait(stop)               # until `stop` is set or a task fails (raised here)
                                              # leaving: tasks cancelled and awaited, all closed

`Agent.run()` does that with SIGTERM/SIGINT as the stop, as `edge-agent run` needs it.
Where a tap goes: readers -> TapRouter (_taps.py) -> Authorizer -> EvseController (_evse.py) ->
the charger. Where a session ends up on MQTT: EvseController -> SessionRecorder (_recorder.py) ->
Store (the append wakes the outbox) -> OutboxSender -> MqttLink.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from drivers.api import OwnEnergyCounter
from drivers.modbus import BusRegistry
from drivers.readers import ChargerReader, Reader, create_reader, identifier_of

from .. import __version__, watchdog
from ..authorization import Authorizer
from ..clock import ClockWatch, boot_id
from ..cloud import MqttLink, OutboxSender, Topics, link_credentials, lists_verify
from ..config import ConfigError, ConfigIssue, SiteConfig
from ..lists import UserListUpdater
from ..loadmanagement import LoadManagementLoop, site_plan
from ..runtime_status import publish_runtime_status
from ..sessions import EvseSessionMachine
from ..store import StorageFailed, StorageFull, Store
from ._chargers import create_evse_charger, create_site_meter
from ._commands import Commands
from ._evse import EvseController, EvseTimings
from ._inbound import InboundRouter, RejectedMessages
from ._journal import Journal
from ._online import OnlineQuestions
from ._recorder import SessionRecorder
from ._status import StatusPublisher
from ._taps import TapRouter

log = logging.getLogger("edge_agent.agent")


class Agent:
    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.store = Store(config.data_dir)
        self.topics = Topics(config.topic_root())
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
        self.journal = Journal(store=self.store, is_online=lambda: self.link.connected)
        self.rejected = RejectedMessages(self.store)
        self.user_lists = UserListUpdater(store=self.store, work_dir=self.store.path.parent / "lists",
                                          verify=lists_verify(cloud, source=source),
                                          on_rejected=self.rejected.note)
        self.outbox = OutboxSender(store=self.store, link=self.link, topic=self.topics.events,
                                   ack_timeout_s=cloud.ack_timeout_s)
        self.questions = OnlineQuestions(link=self.link, topics=self.topics,
                                         timeout_s=config.authorization.online_timeout_s)
        self.authorizer = Authorizer(store=self.store, offline_unknown=config.authorization.offline_unknown,
                                     ask_online=self.questions.ask, is_online=lambda: self.link.connected)
        self.clock = ClockWatch(synced_marker=config.clock.synced_marker,
                                jump_threshold_s=config.clock.jump_threshold_s)
        self.buses = BusRegistry()
        self._tasks: list[asyncio.Task[None]] = []  # the loops, for the agent's lifetime
        self._handlers: set[asyncio.Task[None]] = set()  # taps and commands being handled
        # With a site connection to share, each charger's own fail-safe current is planned so
        # that together they fit the fuse if the gateway dies.
        self._plan = site_plan(config) if config.site is not None else None
        self.evses = self._create_evses()
        self.taps = TapRouter(evses=self.evses, authorizer=self.authorizer, journal=self.journal,
                              connect_timeout_s=config.authorization.connect_timeout_s, spawn=self._spawn)
        self.readers: list[Reader] = [
            create_reader(driver=r.driver, port=r.port, device=r.device, evse_id=r.evse_id,
                          on_tap=self.taps.tap_from_thread, debounce_s=config.authorization.debounce_s)
            for r in config.readers if r.driver != "charger"]
        self._attach_builtin_readers()
        self.load = self._create_load_management()
        self.status = StatusPublisher(config=config, link=self.link, topics=self.topics, store=self.store,
                                      clock=self.clock, evses=self.evses, readers=self.readers,
                                      journal=self.journal, rejected=self.rejected, user_lists=self.user_lists,
                                      outbox=self.outbox, load=self.load)
        self.commands = Commands(evses=self.evses, authorizer=self.authorizer, store=self.store, link=self.link,
                                 topics=self.topics, load=self.load,
                                 connect_timeout_s=config.authorization.connect_timeout_s,
                                 reject=self.rejected.note, lists_forgotten=self.status.force_state)
        self.inbound = InboundRouter(topics=self.topics, store=self.store, outbox=self.outbox,
                                     user_lists=self.user_lists, questions=self.questions, commands=self.commands,
                                     rejected=self.rejected, spawn=self._spawn)
        self._resume_sessions()
        stored = self.store.meta("clock_offset")
        step = self.clock.since_boot_offset(tuple(json.loads(stored)) if stored else None)
        if step is not None:
            self._on_clock_step(step)
        self.store.set_meta("clock_offset", json.dumps([boot_id(), self.clock.offset]))
        if self.load is not None:  # the cloud's set_site_limit, saved until its `until`
            self.load.keep_site_limit(self.store)

    def _create_evses(self) -> dict[str, EvseController]:
        config = self.config
        timings = EvseTimings(poll_interval_s=config.sessions.poll_interval_s,
                              connect_timeout_s=config.authorization.connect_timeout_s)
        evses = {}
        for charger_cfg in config.chargers:
            evse_id = charger_cfg.evse_id
            charger = create_evse_charger(charger_cfg, registry=self.buses, plan=self._plan,
                                          energy_dir=config.data_dir / "energy")
            machine = EvseSessionMachine(
                evse_id=evse_id, max_current_a=float(charger.max_current_a),
                connect_timeout_s=config.authorization.connect_timeout_s,
                sample_interval_s=config.sessions.meter_values_interval_s,
                max_plausible_w=config.sessions.max_plausible_power_kw * 1000,
                available=self.store.evse_available(evse_id))
            recorder = SessionRecorder(evse_id, store=self.store, journal=self.journal, clock=self.clock,
                                       tz=config.timezone)
            evses[evse_id] = EvseController(evse_id, machine=machine, charger=charger, recorder=recorder,
                                            journal=self.journal, timings=timings)
        return evses

    def _attach_builtin_readers(self) -> None:
        for r in self.config.readers:
            if r.driver == "charger" and r.evse_id in self.evses:
                evse = self.evses[r.evse_id]
                identifier = identifier_of(evse.charger)
                if identifier is None:
                    raise ConfigError([ConfigIssue("readers", None, f"the {evse.charger.model} of EVSE "
                                                   f"{r.evse_id} has no card reader in its register map")])
                evse.builtin_reader = ChargerReader(identifier, evse_id=r.evse_id,
                                                    debounce_s=self.config.authorization.debounce_s,
                                                    on_tap=self.taps.tap)

    def _create_load_management(self) -> LoadManagementLoop | None:
        if self._plan is None:
            return None
        site_meter = self.config.site.meter if self.config.site is not None else None
        load = LoadManagementLoop(
            plan=self._plan, writers=self.evses,
            meter=create_site_meter(site_meter, self.buses) if site_meter is not None else None)
        for evse in self.evses.values():
            evse.load = load
        return load

    def _resume_sessions(self) -> None:
        for record in self.store.active_sessions():
            evse = self.evses.get(record.evse_id)
            if evse is None:
                log.error("session %s was running on EVSE %s, which is no longer configured; "
                          "it stays open in the database", record.id, record.evse_id)
                continue
            evse.session_resumed(record)
            log.info("session %s on EVSE %s was running when the agent stopped; "
                     "the charger's next reading decides whether it goes on", record.id, record.evse_id)

    # -- lifetime ---------------------------------------------------------------------------------

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Runs until SIGTERM/SIGINT (or `stop`); a task's failure is raised here."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        async with self:
            await self.wait(stop)

    async def __aenter__(self) -> Agent:
        loop = asyncio.get_running_loop()
        log.info("edge-agent %s starting: gateway %s, %d EVSE(s), %d reader(s), data in %s",
                 __version__, self.config.gateway_id, len(self.evses), len(self.readers), self.store.path)
        self.taps.start(loop)
        self.link.start(loop)
        for reader in self.readers:
            reader.start()
        self._tasks = [asyncio.create_task(self.outbox.run(), name="outbox"),
                       asyncio.create_task(self._tick_loop(), name="tick")]
        self._tasks += [asyncio.create_task(evse.poll_forever(), name=f"poll-{evse.evse_id}")
                        for evse in self.evses.values()]
        if self.load is not None:
            self._tasks.append(asyncio.create_task(self.load.run(), name="load-management"))
        self._tasks.append(asyncio.create_task(watchdog.watch(self), name="watchdog"))  # fed while healthy
        watchdog.sd_notify("READY=1")
        return self

    async def wait(self, stop: asyncio.Event) -> None:
        waiter = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        for task in done:
            if task is not waiter and (exc := task.exception()) is not None:
                raise exc

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        log.info("edge-agent stopping")
        owned = (*self._tasks, *self._handlers)
        for task in owned:
            task.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
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
            self.rejected.save()
        self.store.close()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Handles a tap or a command in its own task, kept until done; its error is logged, never lost."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._handlers.add(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s failed", task.get_name(), exc_info=exc)

    # -- the clock: timeouts, status and state publishing -----------------------------------------

    async def _tick_loop(self) -> None:
        interval_s = self.config.sessions.meter_values_interval_s
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if (step := self.clock.jump()) is not None:
                self._on_clock_step(step)
            if self.rejected.save_due(now):
                with contextlib.suppress(StorageFull, StorageFailed):  # best effort, as at the end
                    self.rejected.save()
            self.taps.tick(now)
            for evse in self.evses.values():
                await evse.retry_unrecorded_end()
            for evse in self.evses.values():
                await evse.expire_authorization(now)
                evse.recorder.flush_due(now, interval_s)
            self.status.tick(now)
            publish_runtime_status(self, now)  # tmpfs, once a second: `edge-agent status`

    def _on_clock_step(self, step: float) -> None:
        """The wall clock stepped (NTP's first sync, a technician): running sessions keep the
        durations the monotonic clock measured, their times move with the clock."""
        log.warning("the wall clock stepped by %+.1f s%s; running sessions' times follow it", step,
                    "" if self.clock.synced() else " (not synchronised yet)")
        for evse in self.evses.values():
            evse.recorder.shift(step)
        self.store.set_meta("clock_offset", json.dumps([boot_id(), self.clock.offset]))

    def runtime_status(self) -> dict[str, Any]:
        return self.status.runtime_status()

    # -- the cloud link's callbacks (on the event loop) -------------------------------------------

    def _on_connected(self, session_present: bool) -> None:
        self.status.connected()
        self.outbox.on_connected()

    def _on_disconnected(self, reason: str) -> None:
        self.outbox.on_disconnected()
        self.questions.link_lost()

    def _on_message(self, message: Any) -> None:
        self.inbound.on_message(message)
