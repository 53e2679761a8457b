"""The simulated OCPP 1.6J charge point (hardware_sim/ocpp_chargepoint.py) against a minimal central
system written here on the ocpp library's server side, over loopback websockets.

The central system records every frame the moment it arrives or leaves (its own reader task), so
a test sees what the charge point sent while a handler of the central system was still busy.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from hardware_sim.ocpp_chargepoint import SimOcppChargePoint, SimQuirks
from helpers import wait_for

START_WH = 12_345


class Frame(NamedTuple):
    at: float  # time.monotonic()
    cp_id: str
    direction: str  # "in" (from the charge point) or "out"
    message: list[Any]


class _RecordedSocket:
    """The central system's end of one websocket: the library reads from `recv`, frames are recorded on arrival."""

    def __init__(self, cs: CentralSystem, cp_id: str, ws: ServerConnection) -> None:
        self.cs, self.cp_id, self.ws = cs, cp_id, ws
        self.inbox: asyncio.Queue[str] = asyncio.Queue()

    async def pump(self) -> None:
        try:
            async for raw in self.ws:
                self.cs.frames.append(Frame(time.monotonic(), self.cp_id, "in", json.loads(raw)))
                self.inbox.put_nowait(str(raw))
        except ConnectionClosed:
            pass

    async def recv(self) -> str:
        return await self.inbox.get()

    async def send(self, raw: str) -> None:
        self.cs.frames.append(Frame(time.monotonic(), self.cp_id, "out", json.loads(raw)))
        await self.ws.send(raw)


class _CentralSystemLink(ChargePoint):
    def __init__(self, cp_id: str, socket: _RecordedSocket, cs: CentralSystem) -> None:
        super().__init__(cp_id, socket)
        self.cs = cs

    @on(Action.boot_notification)
    async def on_boot_notification(self, **_: Any) -> Any:
        await asyncio.sleep(self.cs.boot_delay_s)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return call_result.BootNotification(current_time=now, interval=300, status="Accepted")

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> Any:
        return call_result.Authorize(id_tag_info={"status": self.cs.tags.get(id_tag, "Invalid")})

    @on(Action.start_transaction)
    def on_start_transaction(self, id_tag: str, **_: Any) -> Any:
        self.cs.next_tx += 1
        return call_result.StartTransaction(transaction_id=self.cs.next_tx,
                                            id_tag_info={"status": self.cs.tags.get(id_tag, "Invalid")})

    @on(Action.stop_transaction)
    def on_stop_transaction(self, **_: Any) -> Any:
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on(Action.status_notification, skip_schema_validation=True)
    def on_status_notification(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on(Action.heartbeat)
    def on_heartbeat(self) -> Any:
        return call_result.Heartbeat(current_time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


class CentralSystem:
    """A minimal OCPP 1.6J central system in a thread of its own; `url` is where charge points connect."""

    def __init__(self, *, boot_delay_s: float = 0.0) -> None:
        self.tags = {"TAG1": "Accepted", "RESIDENT1": "Accepted"}
        self.boot_delay_s = boot_delay_s
        self.next_tx = 100
        self.frames: list[Frame] = []
        self.links: dict[str, _CentralSystemLink] = {}
        self.handshakes: dict[str, tuple[str | None, str | None]] = {}  # cp id -> (Authorization, subprotocol)
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> CentralSystem:
        self._thread.start()
        async def start() -> Server:
            return await serve(self._handle, "127.0.0.1", 0, subprotocols=[Subprotocol("ocpp1.6")])

        self._server = self._run(start())
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *_: Any) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        self._run(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _handle(self, ws: ServerConnection) -> None:
        cp_id = ws.request.path.rsplit("/", 1)[-1]
        self.handshakes[cp_id] = (ws.request.headers.get("Authorization"), ws.subprotocol)
        socket = _RecordedSocket(self, cp_id, ws)
        link = _CentralSystemLink(cp_id, socket, self)
        self.links[cp_id] = link
        serving = asyncio.create_task(link.start())
        try:
            await socket.pump()
        finally:
            serving.cancel()
            if self.links.get(cp_id) is link:
                del self.links[cp_id]

    def call(self, payload: Any, cp_id: str = "CP1") -> Any:
        """A call to the charge point; its reply."""
        return self._run(self.links[cp_id].call(payload))

    def calls(self, action: str, since: int = 0) -> list[dict[str, Any]]:
        """The payloads of the charge point's calls with this action, from frame `since` on."""
        return [f.message[3] for f in self.frames[since:] if f.direction == "in" and f.message[0] == 2
                and f.message[2] == action]

    def actions(self, since: int = 0) -> list[str]:
        return [f.message[2] for f in self.frames[since:] if f.direction == "in" and f.message[0] == 2]


@pytest.fixture
def cs() -> Iterator[CentralSystem]:
    with CentralSystem() as system:
        yield system


def charge_point(cs: CentralSystem, **options: Any) -> SimOcppChargePoint:
    return SimOcppChargePoint(cs.url, "CP1", password="pw", speed=3600, energy_wh=START_WH, **options)


def started(cs: CentralSystem, cp: SimOcppChargePoint, tag: str = "TAG1") -> None:
    """Connected, plugged, tapped: a transaction the central system gave id 101."""
    assert wait_for(lambda: cp.connected)
    cp.plug()
    assert cp.tap(tag).result(5) == "Accepted"
    assert wait_for(lambda: cp.transaction_id() == 101)


def profile(profile_id: int, purpose: str, limit: float, *, stack_level: int = 0, unit: str = "A",
            transaction_id: int | None = None) -> dict[str, Any]:
    built = {"charging_profile_id": profile_id, "stack_level": stack_level, "charging_profile_purpose": purpose,
             "charging_profile_kind": "Relative",
             "charging_schedule": {"charging_rate_unit": unit,
                                   "charging_schedule_period": [{"start_period": 0, "limit": limit}]}}
    if transaction_id is not None:
        built["transaction_id"] = transaction_id
    return built


@pytest.mark.parametrize("wallbox", [False, True])
def test_boot_first_and_nothing_else_before_the_reply(wallbox: bool) -> None:
    with CentralSystem(boot_delay_s=0.3) as cs, charge_point(cs, quirks=SimQuirks(calls_before_boot_reply=wallbox)) as cp:
        assert wait_for(lambda: cp.connected and len(cs.calls("StatusNotification")) >= (3 if wallbox else 2))
        first = cs.frames[0]
        assert first.direction == "in" and first.message[2] == "BootNotification"
        reply = next(i for i, f in enumerate(cs.frames) if f.direction == "out" and f.message[1] == first.message[1])
        before_reply = [f.message[2] for f in cs.frames[1:reply] if f.direction == "in"]
        assert before_reply == (["StatusNotification"] if wallbox else [])
        assert cs.handshakes["CP1"] == ("Basic " + base64.b64encode(b"CP1:pw").decode(), "ocpp1.6")
        statuses = cs.calls("StatusNotification", reply)
        assert [(s["connectorId"], s["status"]) for s in statuses] == [(0, "Available"), (1, "Available")]
        assert cp.errors == []


def test_tap_authorizes_then_starts_with_meter_start_and_tap_again_stops(cs: CentralSystem) -> None:
    with charge_point(cs) as cp:
        started(cs, cp)
        assert [a for a in cs.actions() if a in ("Authorize", "StartTransaction")] == ["Authorize", "StartTransaction"]
        assert cs.calls("Authorize") == [{"idTag": "TAG1"}]
        start = cs.calls("StartTransaction")[0]
        assert (start["connectorId"], start["idTag"], start["meterStart"]) == (1, "TAG1", START_WH)
        assert wait_for(lambda: cs.calls("StatusNotification")[-1]["status"] == "Charging")
        assert wait_for(lambda: cp.energy_wh > START_WH + 1000)  # 22 kW at speed 3600
        assert cp.tap("TAG1").result(5) == "Stopped"
        assert wait_for(lambda: cs.calls("StopTransaction"))
        stop = cs.calls("StopTransaction")[0]
        assert (stop["transactionId"], stop["reason"], stop["idTag"]) == (101, "Local", "TAG1")
        assert START_WH + 1000 < stop["meterStop"] <= round(cp.energy_wh)  # integer Wh, as sent
        assert cp.tap("NOBODY").result(5) == "Invalid"
        assert len(cs.calls("StartTransaction")) == 1 and not cp.in_transaction()
        assert cp.errors == []


@pytest.mark.parametrize("unit", ["Wh", "kWh"])
def test_meter_values_at_the_set_interval_in_the_quirk_unit(cs: CentralSystem, unit: str) -> None:
    with charge_point(cs, quirks=SimQuirks(energy_unit=unit)) as cp:
        started(cs, cp)
        time.sleep(1.2)
        assert cs.calls("MeterValues") == []  # MeterValueSampleInterval 0 (Zaptec's default): none
        assert cs.call(call.ChangeConfiguration(key="MeterValueSampleInterval", value="1")).status == "Accepted"
        assert wait_for(lambda: len(cs.calls("MeterValues")) >= 3, 6)
        times = [f.at for f in cs.frames if f.direction == "in" and f.message[2:3] == ["MeterValues"]][:3]
        assert all(0.7 < later - earlier < 1.5 for earlier, later in itertools.pairwise(times))
        values = cs.calls("MeterValues")
        assert {v["transactionId"] for v in values} == {101}
        sampled = values[0]["meterValue"][0]["sampledValue"][0]
        assert (sampled["measurand"], sampled["unit"], sampled["context"]) == (
            "Energy.Active.Import.Register", unit, "Sample.Periodic")
        wh = float(sampled["value"]) * (1000 if unit == "kWh" else 1)
        assert START_WH < wh < cp.energy_wh
        assert cp.errors == []


@pytest.mark.parametrize("no_tx_profile", [False, True])
def test_a_tx_profile_limits_the_offered_current(cs: CentralSystem, no_tx_profile: bool) -> None:
    with charge_point(cs, quirks=SimQuirks(no_tx_profile=no_tx_profile)) as cp:
        started(cs, cp)
        assert cp.offered_a == 32
        default = profile(1, "TxDefaultProfile", 11040, unit="W")  # 16 A on 3 phases at 230 V
        assert cs.call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=default)).status == "Accepted"
        assert cp.offered_a == pytest.approx(16)
        limited = profile(2, "TxProfile", 10, transaction_id=101)
        answer = cs.call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=limited)).status
        if no_tx_profile:
            assert (answer, cp.offered_a) == ("Rejected", pytest.approx(16))
            return
        assert (answer, cp.offered_a, cp.drawn_current_a()) == ("Accepted", 10, 10)
        higher = profile(3, "TxProfile", 8, stack_level=1)
        assert cs.call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=higher)).status == "Accepted"
        assert cp.offered_a == 8
        assert cs.call(call.ClearChargingProfile(id=3)).status == "Accepted"
        assert cp.offered_a == 10
        assert cs.call(call.ClearChargingProfile(charging_profile_purpose="TxProfile")).status == "Accepted"
        assert cp.offered_a == pytest.approx(16)
        assert cp.profile_writes == 3 and cp.errors == []


@pytest.mark.parametrize("offline_tx_id", [False, True])
def test_offline_tap_from_the_local_list_queued_and_delivered_in_order(cs: CentralSystem, offline_tx_id: bool) -> None:
    with charge_point(cs, quirks=SimQuirks(offline_tx_id=offline_tx_id)) as cp:
        assert wait_for(lambda: cp.connected)
        entries = [{"id_tag": "RESIDENT1", "id_tag_info": {"status": "Accepted"}},
                   {"id_tag": "BLOCKED1", "id_tag_info": {"status": "Blocked"}}]
        sent = call.SendLocalList(list_version=1, update_type="Full", local_authorization_list=entries)
        assert cs.call(sent).status == "Accepted"
        assert cs.call(call.GetLocalListVersion()).list_version == 1
        assert cs.call(call.ChangeConfiguration(key="MeterValueSampleInterval", value="1")).status == "Accepted"
        cp.disconnect()
        assert wait_for(lambda: "CP1" not in cs.links and not cp.connected)
        offline = len(cs.frames)
        cp.plug()
        assert cp.tap("BLOCKED1").result(5) == "Blocked"
        assert cp.tap("STRANGER").result(5) == "Invalid"  # AllowOfflineTxForUnknownId is false
        assert cp.tap("RESIDENT1").result(5) == "Accepted"
        time.sleep(2.3)
        assert cp.tap("RESIDENT1").result(5) == "Stopped"
        assert cp.queue_length >= 4 and len(cs.frames) == offline  # nothing went out
        stopped_at = datetime.now(UTC)
        cp.reconnect()
        assert wait_for(lambda: cs.calls("StopTransaction", offline) and cp.queue_length == 0, 10)
        order = [a for a in cs.actions(offline) if a not in ("StatusNotification", "Heartbeat")]
        assert order[0] == "BootNotification" and order[1] == "StartTransaction" and order[-1] == "StopTransaction"
        assert set(order[2:-1]) == {"MeterValues"} and len(order) >= 5
        start, stop = cs.calls("StartTransaction")[0], cs.calls("StopTransaction")[0]
        assert (start["idTag"], start["meterStart"]) == ("RESIDENT1", START_WH)
        expected = -1 if offline_tx_id else 101
        assert {stop["transactionId"]} | {m["transactionId"] for m in cs.calls("MeterValues", offline)} == {expected}
        stamps = [datetime.fromisoformat(m["timestamp"]) for m in (start, stop)]
        assert stamps[0] < stamps[1] <= stopped_at  # the charger's own times, not the delivery's
        assert ("RESIDENT1", "Accepted", "local list") in cp.authorizations
        assert ("BLOCKED1", "Blocked", "local list") in cp.authorizations
        assert ("STRANGER", "Invalid", "offline") in cp.authorizations
        assert "Authorize" not in cs.actions(offline) and cp.errors == []


@pytest.mark.parametrize("resend", [False, True])
def test_stop_sent_again_after_a_reboot_with_that_quirk(cs: CentralSystem, resend: bool) -> None:
    with charge_point(cs, quirks=SimQuirks(resend_stop_after_reboot=resend)) as cp:
        started(cs, cp)
        assert cp.tap("TAG1").result(5) == "Stopped"
        assert wait_for(lambda: cs.calls("StopTransaction") and cp.queue_length == 0)
        before = len(cs.frames)
        cp.reboot()
        assert wait_for(lambda: cs.calls("BootNotification", before) and cp.connected and cp.queue_length == 0)
        assert wait_for(lambda: len(cs.calls("StatusNotification", before)) >= 2)
        time.sleep(0.3)
        stops = cs.calls("StopTransaction")
        if resend:
            assert len(stops) == 2 and stops[1] == stops[0]
            after = cs.actions(before)
            assert after.index("BootNotification") < after.index("StopTransaction")
        else:
            assert len(stops) == 1
        assert cp.reboots == 1 and cp.errors == []


def test_read_only_keys_and_remote_start_stop(cs: CentralSystem) -> None:
    quirks = SimQuirks(read_only_keys=frozenset({"MeterValueSampleInterval"}))
    with charge_point(cs, quirks=quirks) as cp:
        assert wait_for(lambda: cp.connected)
        assert cs.call(call.ChangeConfiguration(key="MeterValueSampleInterval", value="30")).status == "Rejected"
        assert cs.call(call.ChangeConfiguration(key="HeartbeatInterval", value="60")).status == "Accepted"
        assert cs.call(call.ChangeConfiguration(key="NoSuchKey", value="1")).status == "NotSupported"
        answer = cs.call(call.GetConfiguration(key=["MeterValueSampleInterval", "HeartbeatInterval", "NoSuchKey"]))
        assert answer.configuration_key == [{"key": "MeterValueSampleInterval", "readonly": True, "value": "0"},
                                            {"key": "HeartbeatInterval", "readonly": False, "value": "60"}]
        assert answer.unknown_key == ["NoSuchKey"]
        cp.plug()
        assert cs.call(call.RemoteStartTransaction(id_tag="TAG1", connector_id=1)).status == "Accepted"
        assert wait_for(lambda: cp.transaction_id() == 101)
        assert "Authorize" not in cs.actions()  # AuthorizeRemoteTxRequests is false
        assert cs.call(call.RemoteStopTransaction(transaction_id=999)).status == "Rejected"
        assert cs.call(call.RemoteStopTransaction(transaction_id=101)).status == "Accepted"
        assert wait_for(lambda: cs.calls("StopTransaction"))
        assert cs.calls("StopTransaction")[0]["reason"] == "Remote" and cp.errors == []


def test_invalid_status_enum_once_and_a_clock_before_2020(cs: CentralSystem) -> None:
    with charge_point(cs, quirks=SimQuirks(invalid_status_enum=True, clock_before_2020=True)) as cp:
        started(cs, cp)
        assert wait_for(lambda: cs.calls("StatusNotification")[-1]["status"] == "charging")
        cp.set_ev_requesting(False)
        cp.set_ev_requesting(True)
        assert wait_for(lambda: [s["status"] for s in cs.calls("StatusNotification")][-2:] == ["SuspendedEV", "Charging"])
        assert [s["status"] for s in cs.calls("StatusNotification")].count("charging") == 1
        stamps = [m["timestamp"] for m in cs.calls("StatusNotification") + cs.calls("StartTransaction")]
        assert stamps and all(datetime.fromisoformat(s).year < 2020 for s in stamps)
        assert cp.errors == []
