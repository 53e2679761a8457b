"""A simulated OCPP 1.6J charge point, on the `ocpp` library's ChargePoint over `websockets`.

    with SimOcppChargePoint("ws://127.0.0.1:8887", "ZAP049123", password="s3cret", speed=60) as cp:
        cp.plug()
        cp.tap("04A2B3C4")            # its own reader: Authorize, then StartTransaction
        ...
        cp.tap("04A2B3C4")            # the same tag again: StopTransaction
        cp.energy_wh, cp.offered_a, cp.log

It connects to URL/charge_point_id with subprotocol ocpp1.6 (and HTTP basic auth when given a
password), sends BootNotification and nothing else until the Accepted reply, then the status of
every connector, Heartbeat every HeartbeatInterval, StatusNotification on every change and, during a
transaction, MeterValues every MeterValueSampleInterval (0, the default of Zaptec and of this sim,
means none). It runs its own thread and event loop (start()/stop(), or a context manager); every
control is thread-safe.

The EV model: a plugged car in a transaction draws min(offered, ev_max_current_a) on `phases`
phases at `voltage_v` once at least 6 A are offered; the connector's energy register integrates
that power times `speed`. What is offered comes from the charging profiles it was given (a
TxProfile over a TxDefaultProfile, by stack level; ChargePointMaxProfile caps), else
`max_current_a`.

Offline (after disconnect(), or while the central system is down) it authorises from its local
list (LocalAuthorizeOffline; AllowOfflineTxForUnknownId for unknown tags) and queues Start/Stop/
MeterValues; after reconnecting and booting it delivers them in order. Its configuration, local
list, default profiles, queue and energy registers survive reboot(); transactions do not (they end
with PowerLoss, or SoftReset/HardReset after a Reset). Quirks of real chargers: SimQuirks.

What a test looks at: `log` (every message sent or received, SimMessage), sent(action) and
received(action), `authorizations`, `early_calls` (the central system's calls before the boot
reply), `connect_errors`, `errors` (exceptions inside the sim; a test may assert there are none).
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from hardware_sim._ocpp_answers import Answers
from hardware_sim._ocpp_link import SimLink, SimMessage
from hardware_sim._ocpp_model import InstalledProfile, SimClock, SimQuirks, factory_configuration, int_key
from hardware_sim._ocpp_station import Connector, Offline, Queued

__all__ = ["SimMessage", "SimOcppChargePoint", "SimQuirks"]

T = TypeVar("T")
_QUEUED_CALLS: dict[str, Any] = {
    "StartTransaction": call.StartTransaction, "StopTransaction": call.StopTransaction, "MeterValues": call.MeterValues,
}


class SimOcppChargePoint(Answers):
    """One simulated OCPP 1.6J charge point with `connectors` connectors (numbered from 1)."""

    def __init__(
        self,
        url: str,
        charge_point_id: str,
        *,
        password: str | None = None,
        connectors: int = 1,
        quirks: SimQuirks = SimQuirks(),  # noqa: B008 - frozen, so one shared default is safe
        ev_max_current_a: float = 32.0,
        phases: int = 3,
        speed: float = 1.0,
        energy_wh: float = 0.0,
        voltage_v: float = 230.0,
        max_current_a: float = 32.0,
        vendor: str = "SimVendor",
        model: str = "SimOCPP-16",
        reconnect_s: float = 0.5,
        response_timeout_s: float = 10.0,
        ssl: Any = None,
    ) -> None:
        self.url = f"{url.rstrip('/')}/{charge_point_id}"
        self.charge_point_id = charge_point_id
        self.password = password
        self.quirks = quirks
        self.speed = speed
        self.voltage_v = voltage_v
        self.max_current_a = max_current_a
        self.vendor, self.model = vendor, model
        self.reconnect_s = reconnect_s
        self.response_timeout_s = response_timeout_s
        self.ssl = ssl
        self.clock = SimClock(quirks.clock_before_2020)
        self.config = factory_configuration(quirks, connectors)
        self.connectors = [Connector(n, ev_max_current_a, phases, float(energy_wh)) for n in range(connectors + 1)]
        self.profiles: list[InstalledProfile] = []
        self.profile_writes = 0  # SetChargingProfile calls accepted (Easee counts flash writes)
        self.local_list: dict[str, dict[str, Any]] = {}
        self.local_list_version = 0
        self.log: list[SimMessage] = []
        self.actions: dict[str, str] = {}
        self.authorizations: list[tuple[str, str, str]] = []  # (idTag, status, "central" | "local list" | "offline")
        self.early_calls: list[str] = []
        self.connect_errors: list[str] = []
        self.errors: list[str] = []
        self.boots = 0  # BootNotifications accepted
        self.reboots = 0
        self._queue: deque[Queued] = deque()
        self._last_stop: dict[str, Any] | None = None  # the last StopTransaction delivered since the boot
        self._lowercase_sent = False
        self._link: SimLink | None = None
        self._booted = False
        self._next_heartbeat: float | None = None
        self._t = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._session_tasks: list[asyncio.Task[Any]] = []
        self._spawned: set[asyncio.Task[Any]] = set()
        self._online = asyncio.Event()
        self._wake = asyncio.Event()
        self._queued = asyncio.Event()

    # -- the outside world (thread-safe) --

    def plug(self, connector: int = 1, *, ev_max_current_a: float | None = None, phases: int | None = None) -> None:
        """A car is plugged in (it may say how much it takes, on how many phases)."""
        self._in_loop(self._plug, connector, ev_max_current_a, phases)

    def unplug(self, connector: int = 1) -> None:
        self._in_loop(self._unplug, connector)

    def set_ev_requesting(self, requesting: bool, connector: int = 1) -> None:
        """The car wants energy (False: full, SuspendedEV)."""
        self._in_loop(self._set_requesting, connector, requesting)

    def tap(self, id_tag: str, connector: int = 1) -> concurrent.futures.Future[str]:
        """A card at its own reader. Resolves to the AuthorizationStatus acted on, "Stopped" (the
        transaction's own tag again), "Cancelled" (again before the cable), "Occupied" or "Unavailable"."""
        outcome: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._in_loop(self._begin_tap, id_tag, connector, outcome)
        return outcome

    def reboot(self) -> None:
        """Power cycle: transactions end (PowerLoss, delivered after the boot), the connection drops."""
        self._in_loop(self._reboot, "PowerLoss")

    def disconnect(self, *, abrupt: bool = False) -> None:
        """Go offline until reconnect() (abrupt: the TCP connection just dies, no close frame)."""
        self._in_loop(self._disconnect, abrupt)

    def reconnect(self) -> None:
        self._in_loop(self._online.set)

    # -- what a test looks at --

    @property
    def energy_wh(self) -> float:
        """Connector 1's energy register (Wh)."""
        return self.meter_wh(1)

    @property
    def offered_a(self) -> float:
        """What connector 1 offers the car now (0 outside a transaction)."""
        return self.offered_current_a(1)

    @property
    def connected(self) -> bool:
        """Connected and booted (its BootNotification accepted)."""
        return self._in_loop(lambda: self._booted)

    @property
    def queue_length(self) -> int:
        """Transaction messages not delivered yet."""
        return self._in_loop(lambda: len(self._queue))

    def meter_wh(self, connector: int = 1) -> float:
        return self._in_loop(self._meter_wh, connector)

    def offered_current_a(self, connector: int = 1) -> float:
        return self._in_loop(lambda: self._offered_a(self.connectors[connector]))

    def drawn_current_a(self, connector: int = 1) -> float:
        return self._in_loop(lambda: self._drawn_a(self.connectors[connector]))

    def status(self, connector: int = 1) -> str:
        return self._in_loop(self._status_of, connector)

    def transaction_id(self, connector: int = 1) -> int | None:
        """The running transaction's id from the central system (None: none running, or not known yet)."""
        tx = self._in_loop(lambda: self.connectors[connector].tx)
        return None if tx is None else tx.transaction_id

    def in_transaction(self, connector: int = 1) -> bool:
        return self._in_loop(lambda: self.connectors[connector].tx is not None)

    def configuration(self) -> dict[str, str]:
        return self._in_loop(lambda: {key: entry.value for key, entry in self.config.items()})

    def sent(self, action: str) -> list[Any]:
        """The payloads of the calls it sent with this action, in order."""
        return [m.payload for m in list(self.log) if m.direction == "sent" and m.kind == "call" and m.action == action]

    def received(self, action: str) -> list[Any]:
        """The payloads of the central system's calls with this action, in order."""
        return [m.payload for m in list(self.log) if m.direction == "received" and m.kind == "call" and m.action == action]

    # -- thread and loop --

    def start(self) -> SimOcppChargePoint:
        if self._thread is not None:
            return self
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop, self._thread_id = loop, threading.get_ident()
            self._online.set()
            self._tasks = [loop.create_task(self._connection_loop()), loop.create_task(self._tick_loop())]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"sim-ocpp-{self.charge_point_id}", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop = self._thread = self._thread_id = None

    def __enter__(self) -> SimOcppChargePoint:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        tasks = [*self._tasks, *self._session_tasks, *self._spawned]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _in_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the sim's loop (all state lives there) and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("SimOcppChargePoint is not started")
        if threading.get_ident() == self._thread_id:
            return fn(*args)
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except Exception as error:  # noqa: BLE001 - raised again in the caller's thread
                done.set_exception(error)

        loop.call_soon_threadsafe(run)
        return done.result(10)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._spawned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(f"{type(task.exception()).__name__}: {task.exception()}")

    # -- connection, boot and delivery --

    async def _connection_loop(self) -> None:
        headers = None
        if self.password is not None:
            secret = base64.b64encode(f"{self.charge_point_id}:{self.password}".encode()).decode()
            headers = {"Authorization": f"Basic {secret}"}
        while True:
            await self._online.wait()
            ping = int_key(self.config, "WebSocketPingInterval") or None
            try:
                ws = await connect(self.url, subprotocols=[Subprotocol("ocpp1.6")], additional_headers=headers,
                                   ssl=self.ssl, open_timeout=5, ping_interval=ping, close_timeout=2)
            except (OSError, TimeoutError, WebSocketException) as error:
                self.connect_errors.append(f"{type(error).__name__}: {error}")
                await asyncio.sleep(self.reconnect_s)
                continue
            try:
                if ws.subprotocol != "ocpp1.6":
                    self.connect_errors.append(f"the central system chose subprotocol {ws.subprotocol!r}")
                else:
                    await self._session(ws)
            finally:
                await ws.close()
            await asyncio.sleep(self.reconnect_s)

    async def _session(self, ws: ClientConnection) -> None:
        link = SimLink(self, self.charge_point_id, ws, self.response_timeout_s)
        self._link = link
        receiving = asyncio.create_task(link.start())
        self._session_tasks.append(asyncio.create_task(self._boot(link)))
        try:
            await receiving
        except ConnectionClosed:
            pass
        except Exception as error:  # noqa: BLE001 - a sim bug shows in `errors`, the sim reconnects
            self.errors.append(f"{type(error).__name__}: {error}")
        finally:
            receiving.cancel()
            link.closed.set_result(None)
            self._link, self._booted = None, False
            for task in self._session_tasks:
                task.cancel()
            self._session_tasks.clear()
            for connector in self.connectors:
                connector.reported = None
            self._wake.set()

    async def _call(self, payload: Any, *, before_boot: bool = False, **options: Any) -> Any:
        """Send a call on the current connection and return the reply; a CallError raises OCPPError,
        no reply in time TimeoutError, no (booted) connection or a connection lost meanwhile Offline."""
        link = self._link
        if link is None or link.closed.done() or not (before_boot or self._booted):
            raise Offline
        sending = asyncio.ensure_future(link.call(payload, suppress=False, **options))
        try:
            await asyncio.wait({sending, link.closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sending.done():
                sending.cancel()
        if not sending.done() or sending.cancelled():
            raise Offline
        try:
            return sending.result()
        except ConnectionClosed as error:
            raise Offline from error

    async def _boot(self, link: SimLink) -> None:
        while True:
            link.boot_id, link.boot_answered = str(uuid.uuid4()), False
            boot = call.BootNotification(charge_point_model=self.model, charge_point_vendor=self.vendor,
                                         charge_point_serial_number=self.charge_point_id, firmware_version="sim-1.0")
            try:
                reply = await self._call(boot, before_boot=True, unique_id=link.boot_id)
            except (OCPPError, TimeoutError):
                await asyncio.sleep(self.reconnect_s)
                continue
            if reply.status == "Accepted":
                break
            await asyncio.sleep(max(reply.interval, 1))
        if reply.interval > 0:
            self.config["HeartbeatInterval"].value = str(reply.interval)
        self.boots += 1
        self._booted = True
        self._next_heartbeat = None
        for connector in self.connectors:
            self._report(connector.number)
        self._session_tasks.append(asyncio.create_task(self._deliver()))
        self._wake.set()

    def early_call(self, link: SimLink, action: str) -> bool:
        """The central system called before answering the boot: recorded; a Wallbox drops the connection."""
        self.early_calls.append(action)
        if self.quirks.calls_before_boot_reply:
            link.connection.transport.abort()
            return True
        return False

    def extra_boot_call(self) -> list[Any] | None:
        """The call a Wallbox sends right behind its BootNotification, without waiting for the reply."""
        if not self.quirks.calls_before_boot_reply:
            return None
        return ["StatusNotification", {"connectorId": 0, "errorCode": "NoError", "status": "Available",
                                       "timestamp": self.clock.stamp()}]

    async def _deliver(self) -> None:
        """Send the queued transaction messages one at a time, in order, each until answered."""
        while True:
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            item = self._queue[0]
            payload = dict(item.payload)
            if item.action != "StartTransaction" and item.tx is not None:
                payload["transaction_id"] = self._sent_tx_id(item.tx)
            try:
                reply = await self._call(_QUEUED_CALLS[item.action](**payload))
            except Offline:
                return
            except (OCPPError, TimeoutError):
                item.attempts += 1
                if item.attempts < max(1, int_key(self.config, "TransactionMessageAttempts")):
                    await asyncio.sleep(int_key(self.config, "TransactionMessageRetryInterval") * item.attempts)
                    continue
                reply = None  # given up on, like a real charger
            if item in self._queue:
                self._queue.remove(item)
            if reply is not None:
                self._delivered(item, payload, reply)

    # -- timers --

    async def _tick_loop(self) -> None:
        """Meter values, heartbeats, the cable timeout and status changes that come with time."""
        while True:
            self._wake.clear()
            now = time.monotonic()
            self._advance()
            waits: list[float] = []
            interval = int_key(self.config, "MeterValueSampleInterval")
            for connector in self.connectors[1:]:
                tx = connector.tx
                if tx is not None:
                    waits.append(1.0)  # profiles with schedules change what is offered
                    if interval <= 0:
                        tx.next_sample = None
                    elif tx.next_sample is None or tx.next_sample > now + interval:
                        tx.next_sample = now + interval
                    elif now >= tx.next_sample:
                        self._enqueue("MeterValues", {"connector_id": connector.number,
                                                      "meter_value": [self._sample(connector, "Sample.Periodic")]}, tx)
                        tx.next_sample = max(tx.next_sample + interval, now + interval / 2)
                    if tx.next_sample is not None:
                        waits.append(tx.next_sample - now)
                if connector.waiting is not None:
                    if now >= connector.waiting[1]:
                        connector.waiting = None
                    else:
                        waits.append(connector.waiting[1] - now)
                self._report(connector.number)
            heartbeat = int_key(self.config, "HeartbeatInterval")
            if self._booted and heartbeat > 0:
                if self._next_heartbeat is None or self._next_heartbeat > now + heartbeat:
                    self._next_heartbeat = now + heartbeat
                elif now >= self._next_heartbeat:
                    self._spawn(self._quietly(call.Heartbeat()))
                    self._next_heartbeat = now + heartbeat
                waits.append(self._next_heartbeat - now)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(waits)) if waits else None)
            except TimeoutError:
                pass

    def _reboot(self, reason: str) -> None:
        self._booted = False  # off: nothing more goes out on this connection
        self._power_cycle(reason)
        if self._link is not None:
            self._link.connection.transport.abort()

    def _disconnect(self, abrupt: bool) -> None:
        self._online.clear()
        self._booted = False
        link = self._link
        if link is None:
            return
        if abrupt:
            link.connection.transport.abort()
        else:
            self._spawn(link.connection.close())

    async def _quietly(self, payload: Any, **options: Any) -> None:
        """A call whose reply does not matter (lost when offline, like a real charger's)."""
        try:
            await self._call(payload, **options)
        except (Offline, OCPPError, TimeoutError):
            pass
