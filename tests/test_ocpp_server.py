"""The OCPP 1.6J central system on real loopback websockets (port 0), with charge points written here:
raw websockets where the test must see every frame, the `ocpp` library's client side elsewhere.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from ocpp.exceptions import InternalError
from ocpp.v16 import ChargePoint as ClientChargePoint
from ocpp.v16 import call
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.headers import build_authorization_basic
from websockets.typing import Subprotocol

from drivers.errors import CallError, CallTimeout, ChargerNotConnected
from drivers.ocpp import (
    AuthStatus,
    BootInfo,
    CentralSystem,
    ChargePointAuth,
    Configuration,
    IdTagStatus,
    MeterReport,
    StartAnswer,
    StatusReport,
    TransactionStart,
    TransactionStop,
    charge_point_id,
)
from helpers import run

CP = "ZAP049123"
PASSWORD = "0123456789abcdef"
EXPIRY = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
BOOT = [2, "boot-1", "BootNotification", {"chargePointVendor": "Zaptec", "chargePointModel": "Go"}]


class Recorder:
    """A CentralSystemHandler that records what reaches it; `fail` names methods that raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: set[str] = set()
        self.on_boot: Callable[[str], Awaitable[None]] | None = None
        self.on_status: Callable[[str], Awaitable[None]] | None = None

    def of(self, kind: str) -> list[Any]:
        return [arg for name, _, arg in self.calls if name == kind]

    def _record(self, kind: str, cp_id: str, arg: Any) -> None:
        self.calls.append((kind, cp_id, arg))
        if kind in self.fail:
            raise RuntimeError(f"{kind} is broken on purpose")

    async def boot(self, cp_id: str, info: BootInfo) -> None:
        self._record("boot", cp_id, info)
        if self.on_boot is not None:
            await self.on_boot(cp_id)

    async def authorize(self, cp_id: str, id_tag: str) -> IdTagStatus:
        self._record("authorize", cp_id, id_tag)
        return IdTagStatus(AuthStatus.ACCEPTED, expiry=EXPIRY, parent_id_tag="GROUP1")

    async def start_transaction(self, cp_id: str, start: TransactionStart) -> StartAnswer:
        self._record("start", cp_id, start)
        return StartAnswer(transaction_id=4711, id_tag=IdTagStatus(AuthStatus.ACCEPTED))

    async def stop_transaction(self, cp_id: str, stop: TransactionStop) -> IdTagStatus | None:
        self._record("stop", cp_id, stop)
        return IdTagStatus(AuthStatus.BLOCKED)

    async def meter_values(self, cp_id: str, report: MeterReport) -> None:
        self._record("meter", cp_id, report)

    async def status(self, cp_id: str, report: StatusReport) -> None:
        self._record("status", cp_id, report)
        if self.on_status is not None:
            await self.on_status(cp_id)

    async def disconnected(self, cp_id: str) -> None:
        self._record("disconnected", cp_id, None)


@contextlib.asynccontextmanager
async def central(handler: Recorder, **options: Any) -> AsyncIterator[CentralSystem]:
    options.setdefault("charge_points", {CP: ChargePointAuth(PASSWORD), "OPEN1": ChargePointAuth(None)})
    async with CentralSystem(host="127.0.0.1", port=0, handler=handler, heartbeat_s=120, **options) as cs:
        yield cs


def charger(cs: CentralSystem, cp_id: str = CP, password: str | None = PASSWORD,
            subprotocols: tuple[str, ...] = ("ocpp1.6",)) -> connect:
    headers = {} if password is None else {"Authorization": build_authorization_basic(cp_id, password)}
    return connect(f"ws://127.0.0.1:{cs.port}/ocpp/cp/{cp_id}", additional_headers=headers, open_timeout=5,
                   subprotocols=[Subprotocol(s) for s in subprotocols] or None)


async def until(check: Callable[[], Any], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def frame(ws: ClientConnection, timeout: float = 5.0) -> list[Any]:
    return list(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


@contextlib.asynccontextmanager
async def library_charger(cs: CentralSystem) -> AsyncIterator[ClientChargePoint]:
    """A charge point on the ocpp library's client side, booted."""
    async with charger(cs) as ws:
        cp = ClientChargePoint(CP, ws)
        reading = asyncio.create_task(cp.start())
        try:
            boot = await cp.call(call.BootNotification(charge_point_model="Go", charge_point_vendor="Zaptec"))
            assert boot.status == "Accepted"
            yield cp
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reading


def test_the_charge_point_id_is_the_last_segment_of_the_path() -> None:
    assert charge_point_id("/ocpp/ZAP049123") == "ZAP049123"
    assert charge_point_id("/devices/ZAP%20049/?x=1") == "ZAP 049"
    assert charge_point_id("/") == ""


def test_boot_is_accepted_and_nothing_is_sent_to_the_charger_before_the_reply() -> None:
    handler = Recorder()
    systems: list[CentralSystem] = []
    answers: list[Configuration] = []

    async def configure(cp_id: str) -> None:  # what the agent does on every boot: read the configuration
        link = systems[0].link(cp_id)
        assert link is not None
        answers.append(await link.call_get_configuration(["HeartbeatInterval"]))

    handler.on_boot = configure

    async def scenario() -> None:
        async with central(handler) as cs, charger(cs) as ws:
            systems.append(cs)
            await until(lambda: cs.link(CP) is not None)
            link = cs.link(CP)
            assert link is not None and not link.ready
            with pytest.raises(ChargerNotConnected, match="BootNotification is not answered"):
                await link.call_trigger_message("StatusNotification")
            with pytest.raises(TimeoutError):
                await frame(ws, timeout=0.3)  # not a single frame before the boot
            await ws.send(json.dumps(BOOT))
            reply = await frame(ws)
            assert reply[:2] == [3, "boot-1"]
            assert reply[2]["status"] == "Accepted" and reply[2]["interval"] == 120
            sent = datetime.fromisoformat(reply[2]["currentTime"])
            assert abs((sent - datetime.now(UTC)).total_seconds()) < 5
            configuration = await frame(ws)  # the boot handler's call comes only after the reply
            assert configuration[0] == 2 and configuration[2:] == ["GetConfiguration", {"key": ["HeartbeatInterval"]}]
            await ws.send(json.dumps([3, configuration[1], {"configurationKey": [
                {"key": "HeartbeatInterval", "readonly": False, "value": "120"}]}]))
            await until(lambda: answers)
            assert await cs.wait_booted(CP, timeout=1) is link
            assert handler.of("boot") == [BootInfo(vendor="Zaptec", model="Go")]
            entry = answers[0].get("heartbeatinterval")
            assert entry is not None and entry.value == "120" and entry.readonly is False

    run(scenario())


def test_a_heartbeat_without_a_boot_shows_a_charger_registered_before() -> None:
    async def scenario() -> None:
        async with central(Recorder()) as cs, charger(cs) as ws:
            with pytest.raises(ChargerNotConnected):
                await cs.wait_booted(CP, timeout=0.2)
            await ws.send(json.dumps([2, "hb", "Heartbeat", {}]))
            assert (await frame(ws))[:2] == [3, "hb"]
            link = await cs.wait_booted(CP, timeout=2)
            assert link.boot_info is None

    run(scenario())


def test_unknown_ids_and_wrong_passwords_are_refused_at_the_handshake_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="drivers.ocpp")

    async def refused(cs: CentralSystem, **options: Any) -> int:
        with pytest.raises(InvalidStatus) as refusal:
            async with charger(cs, **options):
                pass
        return refusal.value.response.status_code

    def warnings(about: str) -> int:
        return sum(r.levelno == logging.WARNING and about in r.getMessage() for r in caplog.records)

    async def scenario() -> None:
        async with central(Recorder()) as cs:
            for _ in range(3):
                assert await refused(cs, cp_id="STRANGER") == 404
                assert await refused(cs, password="guessed") == 401
                assert await refused(cs, password=None) == 401
            assert warnings("'STRANGER'") == 1
            assert warnings("wrong password") == 1 and warnings("no credentials") == 1
            async with charger(cs, cp_id="OPEN1", password=None):  # a charger without a password
                await until(lambda: cs.link("OPEN1") is not None)
            async with charger(cs):  # it succeeds: the next refusal is news again
                await until(lambda: cs.link(CP) is not None)
            assert await refused(cs, password="guessed") == 401
            assert warnings("wrong password") == 2

    run(scenario())


def test_a_client_without_the_ocpp16_subprotocol_is_refused() -> None:
    async def scenario() -> None:
        async with central(Recorder()) as cs:
            for offered in ((), ("ocpp2.0.1",)):
                with pytest.raises(InvalidStatus) as refusal:
                    async with charger(cs, subprotocols=offered):
                        pass
                assert refusal.value.response.status_code == 400
            assert cs.link(CP) is None

    run(scenario())


def test_the_chargers_messages_reach_the_handler_parsed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="drivers.ocpp")
    handler = Recorder()
    at = "2026-03-01T10:00:00Z"
    sampled = [
        {"value": "12.345", "unit": "kWh", "context": "Sample.Periodic"},  # measurand left out: the register
        {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "15.5", "measurand": "Current.Import", "phase": "L2"},  # unit left out: A
        {"value": "abc", "measurand": "Voltage", "unit": "V"},
        {"value": "50", "measurand": "Frequency", "unit": "Hz"},
    ]

    async def scenario() -> None:
        async with central(handler) as cs, library_charger(cs) as cp:
            auth = await cp.call(call.Authorize(id_tag="04A1B2C3"))
            assert auth.id_tag_info == {"status": "Accepted", "expiry_date": "2031-01-02T03:04:05.000Z",
                                        "parent_id_tag": "GROUP1"}  # the client library's snake_case
            start = await cp.call(call.StartTransaction(connector_id=1, id_tag="04A1B2C3", meter_start=1000,
                                                        timestamp=at))
            assert start.transaction_id == 4711
            await cp.call(call.MeterValues(connector_id=1, transaction_id=4711,
                                           meter_value=[{"timestamp": at, "sampledValue": sampled}]),
                          skip_schema_validation=True)
            await cp.call(call.StatusNotification(connector_id=1, error_code="Error", status="Charging",
                                                  timestamp=at), skip_schema_validation=True)
            stop = await cp.call(call.StopTransaction(
                meter_stop=13345, timestamp="2026-03-01T11:00:00Z", transaction_id=4711, reason="EVDisconnected",
                transaction_data=[{"timestamp": "2026-03-01T11:00:00Z", "sampledValue": [
                    {"value": "13.345", "unit": "kWh", "context": "Transaction.End"}]}]))
            assert stop.id_tag_info == {"status": "Blocked"}

        assert handler.of("authorize") == ["04A1B2C3"]
        moment = datetime(2026, 3, 1, 10, tzinfo=UTC)
        assert handler.of("start") == [TransactionStart(connector_id=1, id_tag="04A1B2C3", meter_start_wh=1000,
                                                        timestamp=moment)]
        [report] = handler.of("meter")
        assert (report.connector_id, report.transaction_id) == (1, 4711)
        assert [(s.measurand, s.value, s.unit, s.phase) for s in report.samples] == [
            ("Energy.Active.Import.Register", 12345.0, "Wh", None),
            ("Power.Active.Import", 7200.0, "W", None),
            ("Current.Import", 15.5, "A", "L2"),
        ]
        assert all(s.timestamp == moment and s.context == "Sample.Periodic" for s in report.samples)
        [status] = handler.of("status")
        assert (status.status, status.error_code, status.timestamp) == ("Charging", "Error", moment)
        [stopped] = handler.of("stop")
        assert (stopped.transaction_id, stopped.meter_stop_wh, stopped.reason) == (4711, 13345, "EVDisconnected")
        assert [(s.value, s.unit, s.context) for s in stopped.transaction_data] == [(13345.0, "Wh", "Transaction.End")]
        logged = [r.getMessage() for r in caplog.records]
        assert any("MeterValues" in m and "sampledValue[3].value 'abc'" in m for m in logged)
        assert any("MeterValues" in m and "sampledValue[4].unit 'Hz'" in m for m in logged)
        assert any("StatusNotification" in m and "errorCode 'Error'" in m for m in logged)

    run(scenario())


def test_a_handler_that_raises_gets_an_internal_error_and_the_connection_lives_on(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="drivers.ocpp")
    handler = Recorder()
    handler.fail.add("authorize")

    async def scenario() -> None:
        async with central(handler) as cs, library_charger(cs) as cp:
            with pytest.raises(InternalError):
                await cp.call(call.Authorize(id_tag="04A1B2C3"), suppress=False)
            assert (await cp.call(call.Heartbeat())).current_time
            assert cs.link(CP) is not None and cs.link(CP).ready

    run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Authorize" in errors[0].getMessage()
    assert errors[0].exc_info is not None


def test_a_call_from_inside_the_chargers_own_handler_is_refused_not_deadlocked() -> None:
    handler = Recorder()

    async def scenario() -> None:
        async with central(handler, call_timeout_s=2) as cs, library_charger(cs) as cp:
            async def call_back(cp_id: str) -> None:
                link = cs.link(cp_id)
                assert link is not None
                await link.call_trigger_message("MeterValues")

            handler.on_status = call_back
            with pytest.raises(InternalError):
                await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"),
                              suppress=False)

    run(scenario(), limit=10)


def test_a_call_the_charger_does_not_answer_times_out_and_a_refusal_is_a_call_error() -> None:
    async def scenario() -> None:
        async with central(Recorder(), call_timeout_s=0.3) as cs, charger(cs) as ws:
            await ws.send(json.dumps(BOOT))
            await frame(ws)
            link = await cs.wait_booted(CP, timeout=2)
            with pytest.raises(CallTimeout, match="GetConfiguration"):
                await link.call_get_configuration()
            assert (await frame(ws))[2] == "GetConfiguration"  # it went out; no answer came
            refusing = asyncio.create_task(link.call_change_configuration("MeterValueSampleInterval", "30"))
            request = await frame(ws)
            await ws.send(json.dumps([4, request[1], "NotSupported", "not here", {}]))
            with pytest.raises(CallError) as refusal:
                await refusing
            assert refusal.value.code == "NotSupported"

    run(scenario())


def test_a_second_connection_with_the_same_id_replaces_the_first() -> None:
    handler = Recorder()

    def disconnected() -> list[str]:
        return [cp_id for kind, cp_id, _ in handler.calls if kind == "disconnected"]

    async def scenario() -> None:
        async with central(handler) as cs, charger(cs) as first:
            await first.send(json.dumps(BOOT))
            await frame(first)
            old = await cs.wait_booted(CP, timeout=2)
            async with charger(cs) as second:
                await until(lambda: cs.link(CP) is not old)
                with pytest.raises(ConnectionClosed):
                    await frame(first)
                assert old.closed and cs.link(CP) is not None and not cs.link(CP).closed
                await second.send(json.dumps(BOOT))
                await frame(second)
                assert (await cs.wait_booted(CP, timeout=2)) is not old
                assert disconnected() == []  # the replaced connection is no news
            await until(lambda: cs.link(CP) is None)
            assert disconnected() == [CP]

    run(scenario())
