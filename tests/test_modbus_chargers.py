"""The generic Modbus driver against simulated chargers on real pymodbus servers.

Bender over Modbus TCP on a loopback port; two Heidelbergs on one Modbus RTU bus over a
socat pty pair (parity N: a pty cannot do the E of the real bus).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

import pytest

from drivers.api import Charger, Meter
from drivers.errors import (
    DeviceTimeout,
    DeviceUnreachable,
    ModbusExceptionResponse,
    NoValue,
    PortSettingRefused,
)
from drivers.modbus import BusRegistry, ModbusCharger, create_charger
from hardware_sim.chargers import SimCharger, SimChargerThread
from hardware_sim.pty import SocatPair
from helpers import run

T = TypeVar("T")
HEC = "heidelberg-energy-control"
BENDER = "bender-cc613"
TIMEOUT = 0.3
GAP = 0.02  # frame gap where a test is not about pacing; the map's 100 ms is tested on its own


run = partial(run, limit=30)  # short tests: a hang fails sooner than helpers.run's 60 s


async def timed(coro: Coroutine[Any, Any, T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = await coro
    return result, time.perf_counter() - start


def bender(registry: BusRegistry, port: int, **options: Any) -> ModbusCharger:
    options.setdefault("recheck_s", 0)  # these tests look at every attempt; test_modbus_bus covers recheck_s
    return create_charger(
        model=BENDER, name="cp-bender", registry=registry, host="127.0.0.1", port=port, timeout_s=TIMEOUT, **options
    )


def heidelberg(registry: BusRegistry, path: str, unit: int, **options: Any) -> ModbusCharger:
    options.setdefault("parity", "N")
    options.setdefault("recheck_s", 0)
    return create_charger(
        model=HEC, name=f"cp{unit}", registry=registry, serial=path, unit=unit, timeout_s=TIMEOUT, **options
    )


# -- Bender CC613 over Modbus TCP --


def test_bender_tcp_setup_control_and_charging(sims: SimChargerThread) -> None:
    sim = SimCharger(BENDER, speed=600, energy_wh=1_000_000)
    server = sims.serve_tcp([sim])

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = bender(registry, server.port, failsafe_current_a=10, failsafe_timeout_s=30)
            assert isinstance(cp, Charger) and isinstance(cp, Meter)
            await cp.setup()
            # No session yet: a timeout would give a plugged car 0 A; the timeout is read back.
            assert sim.writes_to(131) == [0] and sim.writes_to(132) == [30]
            assert cp.failsafe_timeout_s == 30 and cp.keepalive_interval_s == 12

            assert await cp.status() == "A"
            sim.plug()
            assert (await cp.poll()).iec61851 == "B"

            await cp.set_max_current(16)
            assert sim.writes_to(1000) == [16]
            assert await cp.enabled()
            sim.set_ev_requesting(True)
            first = await cp.poll()
            assert first.iec61851 == "C"
            assert first.offered_current_a == 16
            assert first.measurement.power_w == 16 * 230 * 3
            assert first.measurement.currents_a == (16.0, 16.0, 16.0)
            await asyncio.sleep(0.2)
            second = await cp.poll()
            assert first.measurement.energy_wh is not None and second.measurement.energy_wh is not None
            assert second.measurement.energy_wh - first.measurement.energy_wh >= 300  # 11 kW x 600 x 0.2 s = 368 Wh
            assert (await cp.measure()).energy_wh >= second.measurement.energy_wh

            await cp.enable(False)
            assert sim.writes_to(1000)[-1] == 0
            assert not await cp.enabled()
            assert await cp.status() == "B"
            await cp.set_max_current(20)  # remembered, not written while disabled
            assert sim.writes_to(1000)[-1] == 0
            await cp.enable(True)
            assert sim.writes_to(1000)[-1] == 20
            # The session's share goes to the fail-safe register right after the setpoint (a gateway
            # dying in between leaves the 0 A of no session, never free current).
            order = [r for _, r, _ in sim.writes if r in (131, 1000)]
            assert sim.writes_to(131) == [0, 10] and order[-2:] == [1000, 131]
            assert await cp.status() == "C"

            await cp.set_max_current(40)
            assert sim.writes_to(1000)[-1] == 32  # clamped to the model maximum
            await cp.set_max_current(10.7)
            assert sim.writes_to(1000)[-1] == 10  # never more than asked
            await cp.set_max_current(3)
            assert sim.writes_to(1000)[-1] == 0  # below 6 A pauses
            assert (await cp.poll()).iec61851 == "B"
            await cp.enable(True)
            assert sim.writes_to(1000)[-1] == 0  # a load-management pause outlasts enable(True)
            await cp.set_max_current(10)
            assert sim.writes_to(1000)[-1] == 10

            sim.unplug()
            reading = await cp.poll()
            assert reading.iec61851 == "A"
            assert reading.measurement.energy_wh == pytest.approx(sim.energy_wh, abs=1)  # lifetime counter stays

            assert await cp.identity() == {
                "model": BENDER, "firmware": "5.30", "protocol_version": "0.6", "model_name": "CC613-SIM",
            }

    run(scenario())


def test_bender_no_value_sentinel_raises_novalue_then_recovers(sims: SimChargerThread) -> None:
    sim = SimCharger(BENDER)
    server = sims.serve_tcp([sim])

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = bender(registry, server.port)
            assert (await cp.poll()).measurement.energy_wh == 1_000_000
            sim.set_no_value(True)
            with pytest.raises(NoValue) as info:
                await cp.poll()
            assert info.value.register == 218 and info.value.retryable
            assert "0xFFFFFFFF" in str(info.value)
            with pytest.raises(NoValue):
                await cp.measure()
            sim.set_no_value(False)
            assert (await cp.poll()).measurement.energy_wh == 1_000_000

    run(scenario())


def test_modbus_exception_names_register_and_code(sims: SimChargerThread) -> None:
    server = sims.serve_tcp([SimCharger(BENDER)])

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = bender(registry, server.port)
            with pytest.raises(ModbusExceptionResponse) as info:
                await cp.device.read_holding(5000, 2)
            assert (info.value.register, info.value.code, info.value.retryable) == (5000, 2, False)
            assert "cp-bender register 5000" in str(info.value)
            with pytest.raises(ModbusExceptionResponse) as info:
                await cp.device.write_register(218, 1)  # read-only meter register
            assert info.value.register == 218
            assert cp.device.available  # it answered, so it is there
            assert (await cp.poll()).iec61851 == "A"

    run(scenario())


def test_bender_keepalive_rewrites_setpoint_before_the_timeout(sims: SimChargerThread) -> None:
    sim = SimCharger(BENDER)
    server = sims.serve_tcp([sim])

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = bender(registry, server.port, failsafe_current_a=6, failsafe_timeout_s=1)
            await cp.setup()
            await cp.keepalive()
            assert sim.writes_to(1000) == []  # nothing commanded yet, nothing to keep alive
            await cp.set_max_current(12)
            await cp.enable(True)  # a session: its fail-safe current is the share (6 A)
            await cp.keepalive()
            assert sim.writes_to(1000) == [12, 12]  # not due yet
            for _ in range(4):
                await asyncio.sleep(0.3)
                await cp.poll()
                await cp.keepalive()
            assert sim.writes_to(1000).count(12) >= 4  # rewritten every 0.4 of the timeout
            assert not sim.failsafe_active
            await asyncio.sleep(1.2)  # the gateway goes quiet for longer than the timeout
            assert sim.failsafe_active and sim.setpoint_a == 6
            await cp.keepalive()
            assert not sim.failsafe_active and sim.setpoint_a == 12

    run(scenario())


def test_tcp_charger_that_goes_silent_or_away_comes_back(sims: SimChargerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="drivers.modbus")
    sim = SimCharger(BENDER)
    server = sims.serve_tcp([sim])
    port = server.port

    async def scenario() -> None:
        nonlocal server
        async with BusRegistry() as registry:
            cp = bender(registry, port, retries=1)
            await cp.setup()
            await cp.set_max_current(16)
            await cp.enable(True)
            assert (await cp.poll()).iec61851 == "A"

            sim.set_silent(True)
            with pytest.raises(DeviceTimeout) as info:
                _, took = await timed(cp.poll())
            assert info.value.register == 122 and "2 attempts" in str(info.value)
            _, took = await timed(_expect(DeviceTimeout, cp.poll()))
            assert took < 2 * TIMEOUT  # known dead: one attempt, not retries+1
            sim.set_silent(False)
            assert (await cp.poll()).iec61851 == "A"

            sim.reboot()  # it forgot the fail-safe and the setpoint ...
            sims.close_server(server)
            await _expect(DeviceUnreachable, cp.poll())
            await _expect(DeviceUnreachable, cp.poll())
            server = sims.serve_tcp([sim], port=port)
            assert (await cp.poll()).iec61851 == "A"
            await cp.keepalive()  # ... and gets them back
            assert sim.writes_to(131)[-1] == 6 and sim.writes_to(1000)[-1] == 16

    run(scenario())
    messages = [r.getMessage() for r in caplog.records if r.name == "drivers.modbus"]
    assert sum("unavailable" in m for m in messages) == 2, messages  # once per outage
    assert sum("answers again" in m for m in messages) == 2, messages


async def _expect(error: type[Exception], coro: Coroutine[Any, Any, Any]) -> None:
    with pytest.raises(error):
        await coro


# -- Heidelberg Energy Control, two units on one Modbus RTU bus --


def test_two_heidelbergs_on_one_rtu_bus(pair: SocatPair, sims: SimChargerThread) -> None:
    one = SimCharger(HEC, unit=1, speed=600, ev_max_current_a=16)
    two = SimCharger(HEC, unit=2, speed=600, ev_max_current_a=16, energy_wh=5_000)
    sims.serve_rtu([one, two], pair.b, 19200)

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp1 = heidelberg(registry, pair.a, 1, failsafe_current_a=8, failsafe_timeout_s=20)
            cp2 = heidelberg(registry, pair.a, 2)
            assert cp1.device.link is cp2.device.link  # one owner for the port

            await cp1.setup()
            await cp2.setup()
            # No session: fail-safe 0 A until one is enabled.
            assert [(r, v) for _, r, v in one.writes] == [(258, 4), (262, 0), (257, 20000)]
            assert [(r, v) for _, r, v in two.writes] == [(258, 4), (262, 0), (257, 15000)]
            assert (cp1.failsafe_timeout_s, cp2.failsafe_timeout_s) == (20, 15)  # read back from 257
            stamps = sorted(t for t, _, _ in one.writes + two.writes)
            assert min(b - a for a, b in itertools.pairwise(stamps)) >= 0.095  # >= 100 ms between frames

            reading, took = await timed(cp1.poll())
            print(f"RTU poll (2 requests, 100 ms pacing): {took * 1000:.0f} ms")
            assert reading.iec61851 == "A" and reading.measurement.energy_wh == 1_000_000
            assert (await cp2.poll()).measurement.energy_wh == 5_000

            one.plug()
            two.plug()
            await cp1.set_max_current(10)
            assert one.writes_to(261)[-1] == 100 and two.writes_to(261) == []
            await cp1.enable(False)
            assert one.writes_to(261)[-1] == 0
            await cp1.enable(True)
            assert one.writes_to(261)[-1] == 100
            assert [(r, v) for _, r, v in one.writes][-2:] == [(261, 100), (262, 80)]  # the share right after
            one.set_ev_requesting(True)

            first = await cp1.poll()
            assert first.iec61851 == "C" and first.offered_current_a == 10
            assert first.measurement.currents_a == (10.0, 10.0, 10.0)
            assert first.measurement.power_w == 10 * 230 * 3
            assert (await cp2.poll()).iec61851 == "B"  # plugged, but nobody enabled it for charging
            await asyncio.sleep(0.2)
            second = await cp1.poll()
            assert second.measurement.energy_wh - first.measurement.energy_wh >= 200  # VAh, apparent energy

            await cp2.set_max_current(6)
            two.set_ev_requesting(True)
            assert await cp2.status() == "C"
            assert two.writes_to(261)[-1] == 60
            assert await cp2.identity() == {
                "model": HEC, "layout_version": 0x0108, "firmware": 4242,
                "hardware_max_current": 16, "hardware_min_current": 6,
            }

    run(scenario())


def test_silent_rtu_device_does_not_starve_the_other(pair: SocatPair, sims: SimChargerThread) -> None:
    one = SimCharger(HEC, unit=1)
    two = SimCharger(HEC, unit=2)
    sims.serve_rtu([one, two], pair.b)

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp1 = heidelberg(registry, pair.a, 1, retries=1, frame_gap_s=GAP)
            cp2 = heidelberg(registry, pair.a, 2, retries=1, frame_gap_s=GAP)
            await cp2.setup()
            await cp1.poll()
            _, normal = await timed(cp1.poll())

            two.set_silent(True)
            with pytest.raises(DeviceTimeout) as info:
                await cp2.poll()
            assert info.value.device == "cp2" and info.value.register == 5
            _, took = await timed(cp1.poll())
            assert took < normal + 0.05, (took, normal)  # the dead unit left nothing behind

            async def cp1_alone() -> float:
                return (await timed(cp1.poll()))[1]

            took1, failure = await asyncio.gather(cp1_alone(), cp2.poll(), return_exceptions=True)
            assert isinstance(failure, DeviceTimeout)
            # At most one timeout (plus its frame gap) of the dead unit lies between cp1's requests, never its retries.
            assert isinstance(took1, float) and took1 < normal + TIMEOUT + GAP + 0.05, (took1, normal)
            print(f"RTU poll normal {normal * 1000:.0f} ms, next to a dead unit {took1 * 1000:.0f} ms")

            two.reboot()
            two.set_silent(False)
            assert (await cp2.poll()).iec61851 == "A"
            before = len(two.writes)
            await cp2.keepalive()  # it was gone: setup goes out again
            assert [(r, v) for _, r, v in two.writes[before:]] == [(258, 4), (262, 0), (257, 15000)]

    run(scenario())


def test_heidelberg_keepalive_traffic_holds_the_watchdog(pair: SocatPair, sims: SimChargerThread) -> None:
    one = SimCharger(HEC, unit=1)
    sims.serve_rtu([one], pair.b)

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = heidelberg(registry, pair.a, 1, failsafe_current_a=6, failsafe_timeout_s=0.5, frame_gap_s=GAP)
            await cp.setup()
            await cp.set_max_current(16)
            await cp.enable(True)
            writes = len(one.writes)
            for _ in range(8):
                await asyncio.sleep(0.1)
                await cp.keepalive()
            assert not one.failsafe_active and one.setpoint_a == 16
            assert len(one.writes) == writes  # reads are enough for this watchdog
            await asyncio.sleep(0.7)
            assert one.failsafe_active and one.setpoint_a == 6

    run(scenario())


def test_parity_e_on_a_pty_is_refused_by_name(pair: SocatPair, sims: SimChargerThread) -> None:
    sims.serve_rtu([SimCharger(HEC, unit=1)], pair.b)

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = create_charger(model=HEC, name="cp-e", registry=registry, serial=pair.a, timeout_s=TIMEOUT)
            with pytest.raises(PortSettingRefused) as info:
                await cp.poll()
            message = str(info.value)
            assert pair.a in message and "parity=E" in message, message
            assert not info.value.retryable
        async with BusRegistry() as registry:  # the refused open left no lock behind
            assert (await heidelberg(registry, pair.a, 1).poll()).iec61851 == "A"

    run(scenario())


def test_rtu_bus_survives_the_adapter_being_unplugged(pair: SocatPair, sims: SimChargerThread) -> None:
    one = SimCharger(HEC, unit=1)
    server = sims.serve_rtu([one], pair.b)

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = heidelberg(registry, pair.a, 1, frame_gap_s=GAP)
            assert (await cp.poll()).iec61851 == "A"
            sims.close_server(server)
            pair.stop()
            with pytest.raises(DeviceUnreachable) as info:
                await cp.poll()
            assert pair.a in str(info.value)
            pair.start()
            sims.serve_rtu([one], pair.b)
            one.plug()
            assert (await cp.poll()).iec61851 == "B"

    run(scenario())


def test_create_charger_rejects_inconsistent_options() -> None:
    registry = BusRegistry()
    with pytest.raises(ValueError, match="exactly one"):
        create_charger(model=BENDER, name="x", registry=registry)
    with pytest.raises(ValueError, match="max_current_a"):
        create_charger(model=HEC, name="x", registry=registry, serial="/dev/null", max_current_a=32)
    with pytest.raises(ValueError, match="failsafe_current_a"):
        create_charger(model=HEC, name="x", registry=registry, serial="/dev/null", failsafe_current_a=3)
    with pytest.raises(ValueError, match="failsafe_timeout"):
        create_charger(model=HEC, name="x", registry=registry, serial="/dev/null", failsafe_timeout_s=100)  # > 65535 ms
    create_charger(model=HEC, name="a", registry=registry, serial="/dev/ttyX", parity="N")
    with pytest.raises(ValueError, match="already in use"):
        create_charger(model=HEC, name="b", registry=registry, serial="/dev/ttyX")  # E on an N bus
