"""Bus owners under load: three devices on one RS-485 bus (socat pty pair at 19200, parity N
because a pty refuses parity E), one of them dead; RTU over TCP to a serial server; the
registry's one owner per endpoint.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest

from drivers.errors import DeviceError, DeviceTimeout
from drivers.modbus import BusRegistry, ModbusCharger, ModbusMeter, create_charger, create_meter
from hardware_sim.chargers import SimCharger, SimChargerThread
from hardware_sim.meters import SimMeter
from hardware_sim.pty import SocatPair
from helpers import run

HEC = "heidelberg-energy-control"
INTERVAL = 1.0  # the agent's default poll interval
TIMEOUT = 1.0  # the agent's default Modbus timeout


run = partial(run, limit=120)  # the bus tests poll for long: more than helpers.run's 60 s


@dataclass
class Stats:
    ok: list[float] = field(default_factory=list)  # monotonic end of each good poll
    took: list[float] = field(default_factory=list)
    failed: int = 0

    def rate(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.ok) / (end - start)

    def worst(self, start: float, end: float) -> float:
        return max((d for t, d in zip(self.ok, self.took) if start <= t < end), default=0.0)


async def poll_loop(device: ModbusCharger | ModbusMeter, stats: Stats, stop: asyncio.Event) -> None:
    """What the agent's per-EVSE loop does: poll (and keep alive), then sleep the rest of the interval."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            if isinstance(device, ModbusCharger):
                await device.poll()
                await device.keepalive()
            else:
                await device.measure()
        except DeviceError:
            stats.failed += 1
        else:
            stats.ok.append(time.monotonic())
            stats.took.append(time.monotonic() - started)
        await asyncio.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))


def three_on_a_bus(pair: SocatPair, sims: SimChargerThread) -> tuple[SimCharger, SimMeter, SimCharger]:
    one = SimCharger(HEC, unit=1)
    meter = SimMeter("eastron-sdm630", unit=2)
    dead = SimCharger(HEC, unit=3)
    sims.serve_rtu([one, meter, dead], pair.b, 19200)
    return one, meter, dead


async def measure(pair: SocatPair, dead_sim: SimCharger, *, recheck_s: float, healthy_s: float, dead_s: float) -> dict[str, float]:
    async with BusRegistry() as registry:
        def charger(unit: int) -> ModbusCharger:
            # the map's 100 ms frame gap and the default 1 s timeout, as on a real Heidelberg bus
            return create_charger(model=HEC, name=f"cp{unit}", registry=registry, serial=pair.a, baudrate=19200,
                                  parity="N", unit=unit, timeout_s=TIMEOUT, recheck_s=recheck_s)

        cp1, cp3 = charger(1), charger(3)
        meter = create_meter(model="eastron-sdm630", name="meter", registry=registry, serial=pair.a, baudrate=19200,
                             parity="N", unit=2, timeout_s=TIMEOUT, recheck_s=recheck_s)
        for cp in (cp1, cp3):
            await cp.setup()
        stats = {"cp1": Stats(), "meter": Stats(), "cp3": Stats()}
        stop = asyncio.Event()
        tasks = [asyncio.create_task(poll_loop(d, stats[n], stop)) for n, d in (("cp1", cp1), ("meter", meter), ("cp3", cp3))]
        t0 = time.monotonic()
        await asyncio.sleep(healthy_s)
        t1 = time.monotonic()
        dead_sim.set_silent(True)
        await asyncio.sleep(dead_s)
        t2 = time.monotonic()
        stop.set()
        await asyncio.gather(*tasks)
        dead_sim.set_silent(False)
        return {
            "cp1_before": stats["cp1"].rate(t0, t1), "meter_before": stats["meter"].rate(t0, t1),
            "cp1_after": stats["cp1"].rate(t1 + 1, t2), "meter_after": stats["meter"].rate(t1 + 1, t2),
            "cp1_worst": stats["cp1"].worst(t1, t2), "meter_worst": stats["meter"].worst(t1, t2),
            "cp1_median": statistics.median(stats["cp1"].took), "dead_failed": float(stats["cp3"].failed),
        }


def test_a_dead_device_does_not_slow_the_other_two(pair: SocatPair, sims: SimChargerThread) -> None:
    _, _, dead = three_on_a_bus(pair, sims)
    numbers = run(measure(pair, dead, recheck_s=5.0, healthy_s=5.0, dead_s=11.0))
    print("\npoll rates (polls/s), 3 devices at 19200 on a pty bus, unit 3 silent from the middle on:")
    print({k: round(v, 3) for k, v in numbers.items()})
    # Every interval still has its poll. A request waits behind at most one timeout of the dead
    # unit: the meter's poll is one request, the Heidelberg's two (input block, setpoint).
    assert numbers["cp1_after"] >= 0.9 * numbers["cp1_before"], numbers
    assert numbers["meter_after"] >= 0.9 * numbers["meter_before"], numbers
    assert numbers["meter_worst"] < TIMEOUT + 0.5 and numbers["cp1_worst"] < 2 * TIMEOUT + 0.5, numbers
    assert numbers["dead_failed"] >= 9  # the dead unit was asked every interval and failed every time


def test_without_the_recheck_the_dead_device_eats_the_bus(pair: SocatPair, sims: SimChargerThread) -> None:
    """The same measurement with every request of the dead unit going on the bus (recheck_s=0):
    the others lose polls. This is what the test above would catch if the recheck broke."""
    _, _, dead = three_on_a_bus(pair, sims)
    numbers = run(measure(pair, dead, recheck_s=0.0, healthy_s=3.0, dead_s=7.0))
    print("\nwithout recheck:", {k: round(v, 3) for k, v in numbers.items()})
    assert numbers["cp1_after"] < 0.85 * numbers["cp1_before"], numbers


def test_recheck_keeps_a_dead_unit_off_the_bus_and_finds_it_again(pair: SocatPair, sims: SimChargerThread) -> None:
    one = SimCharger(HEC, unit=1)
    sims.serve_rtu([one], pair.b)

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = create_charger(model=HEC, name="cp1", registry=registry, serial=pair.a, parity="N",
                                timeout_s=0.3, retries=1, recheck_s=1.0, frame_gap_s=0.01)
            assert (await cp.poll()).iec61851 == "A"
            one.set_silent(True)
            started = time.monotonic()
            with pytest.raises(DeviceTimeout, match="2 attempts"):
                await cp.poll()
            assert time.monotonic() - started >= 0.6
            for _ in range(5):  # within recheck_s: failing at once, without a frame on the bus
                started = time.monotonic()
                with pytest.raises(DeviceTimeout, match="not tried on the bus") as info:
                    await cp.poll()
                assert time.monotonic() - started < 0.05
                assert info.value.register == 5 and info.value.retryable
            one.set_silent(False)
            await asyncio.sleep(1.0)
            assert (await cp.poll()).iec61851 == "A"  # found again after recheck_s
            assert cp.device.recoveries == 1

    run(scenario())


def test_rtu_over_tcp_to_a_serial_server(sims: SimChargerThread) -> None:
    """Two chargers and a meter on an RS-485 run behind a serial server (RTU frames over TCP)."""
    one = SimCharger(HEC, unit=1, speed=600, ev_max_current_a=16)
    abb = SimCharger("abb-terra-ac", unit=4)
    meter = SimMeter("eastron-sdm630", unit=2, follows=one)
    server = sims.serve_rtu_over_tcp([one, abb, meter])

    async def scenario() -> None:
        async with BusRegistry() as registry:
            common: dict[str, Any] = dict(registry=registry, transport="rtu-over-tcp", host="127.0.0.1",
                                          port=server.port, timeout_s=0.3, recheck_s=0)
            cp = create_charger(model=HEC, name="cp1", frame_gap_s=0.02, **common)
            terra = create_charger(model="abb-terra-ac", name="abb", unit=4, **common)
            grid = create_meter(model="eastron-sdm630", name="grid", unit=2, frame_gap_s=0.02, **common)
            assert cp.device.link is terra.device.link is grid.device.link
            assert cp.device.link.name == f"rtu-over-tcp 127.0.0.1:{server.port}"
            await cp.setup()
            await terra.setup()
            one.plug()
            one.set_ev_requesting(True)
            await cp.set_max_current(10)
            assert (await cp.poll()).iec61851 == "C"
            assert (await grid.measure()).currents_a == pytest.approx((10.0, 10.0, 10.0))
            assert (await terra.poll()).iec61851 == "A"
            abb.set_silent(True)  # a dead unit behind the serial server: the link is re-opened, the rest goes on
            with pytest.raises(DeviceTimeout):
                await terra.poll()
            assert (await cp.poll()).iec61851 == "C"
            assert (await grid.measure()).energy_wh is not None

    run(scenario())


def test_registry_gives_one_owner_per_endpoint() -> None:
    registry = BusRegistry()
    a = create_charger(model=HEC, name="a", registry=registry, serial="/dev/ttyX", parity="N", unit=1)
    b = create_meter(model="eastron-sdm630", name="b", registry=registry, serial="/dev/ttyX", baudrate=19200, unit=2)
    assert a.device.link is b.device.link
    c = create_charger(model="bender-cc613", name="c", registry=registry, host="10.0.0.5")
    d = create_meter(model="eastron-sdm630", name="d", registry=registry, host="10.0.0.5", unit=3)
    assert c.device.link is d.device.link
    with pytest.raises(ValueError, match="already used as Modbus TCP"):
        create_meter(model="eastron-sdm630", name="e", registry=registry, transport="rtu-over-tcp", host="10.0.0.5", port=502)
    with pytest.raises(ValueError, match="offers Modbus TCP only"):
        create_charger(model="alfen-ng9xx", name="f", registry=registry, serial="/dev/ttyY")
    with pytest.raises(ValueError, match="station unit"):
        create_charger(model="alfen-ng9xx", name="g", registry=registry, host="10.0.0.9", unit=200)
    with pytest.raises(ValueError, match="transport must be one of"):
        create_charger(model="abb-terra-ac", name="h", registry=registry, transport="udp", host="10.0.0.9")
    with pytest.raises(ValueError, match="no known factory baudrate"):
        create_charger(model="abb-terra-ac", name="i", registry=registry, serial="/dev/ttyZ")
