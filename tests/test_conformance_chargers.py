"""One conformance run per charger model: the generic driver against the model's simulator over a
real transport (Modbus TCP on loopback, RTU on a socat pty, RTU over TCP to a serial server).

The expectations (state table, the register and raw words a 16 A setpoint is written as, the
identity) are written down here from the vendor documentation in
/work/shared/facts/charger-registers.md, not read from the maps: a map that disagrees with the
documentation fails here even though its simulator follows it too.
"""
from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drivers.energy import SessionEnergyLifetime
from drivers.errors import UnsupportedByModel
from drivers.modbus import BusRegistry, MapError, ModbusCharger, available_models, create_charger, load_map
from hardware_sim.chargers import SimCharger, SimChargerThread, SimServer
from hardware_sim.pty import SocatPair
from helpers import run

TIMEOUT = 0.5


def f32(value: float) -> list[int]:
    packed = struct.pack(">f", value)
    return [int.from_bytes(packed[0:2], "big"), int.from_bytes(packed[2:4], "big")]


@dataclass(frozen=True)
class Doc:
    """What the vendor documentation says (charger-registers.md), per model."""

    transport: str  # how this conformance run reaches the simulator
    states: dict[Any, str]  # raw state value -> IEC 61851 letter; "plugged?" entries are conditional
    setpoint_16a: dict[int, int]  # holding register -> raw word written for 16 A
    identity: dict[str, Any]
    lifetime: str  # "register": a lifetime counter in the map; "session": built from the session register
    conditional: dict[Any, tuple[str, str]] = field(default_factory=dict)  # raw -> (letter plugged, letter unplugged)
    sim: dict[str, Any] = field(default_factory=dict)
    state_word: tuple[str, int, Any] = ("holding", 0, None)  # (table, address, raw -> first word on the wire)


def same(raw: int) -> int:
    return raw


def high_byte(raw: int) -> int:
    return raw << 8


def text_word(raw: str) -> int:
    return int.from_bytes(raw.encode().ljust(2, b"\0")[:2], "big")


LETTERS = {0x41 + i: letter for i, letter in enumerate("ABCDEF")}
DOCS: dict[str, Doc] = {
    "bender-cc613": Doc(
        "tcp", {1: "A", 2: "B", 3: "C", 4: "D", 5: "E"}, {1000: 16},
        {"firmware": "5.30", "protocol_version": "0.6", "model_name": "CC613-SIM"}, "register",
        state_word=("holding", 122, same),
    ),
    "heidelberg-energy-control": Doc(
        "rtu", {2: "A", 3: "A", 4: "B", 5: "B", 6: "B", 7: "C", 8: "C", 9: "E", 10: "F", 11: "F"}, {261: 160},
        {"layout_version": 0x0108, "firmware": 4242, "hardware_max_current": 16, "hardware_min_current": 6},
        "register", sim={"ev_max_current_a": 16}, state_word=("input", 5, same),
    ),
    "abb-terra-ac": Doc(
        "rtu-over-tcp", {0: "A", 1: "B", 2: "B", 3: "B", 4: "C"}, {0x4100: 0x0000, 0x4101: 16000},
        {"serial_number": 0x5422040049200025, "firmware": 0x01090500, "hardware_max_current": 32.0},
        "session", conditional={5: ("B", "A")}, state_word=("holding", 0x400D, high_byte),
    ),
    "alfen-ng9xx": Doc(
        "tcp", {"A": "A", "B1": "B", "B2": "B", "C1": "B", "C2": "C", "D1": "B", "D2": "D", "E": "A", "F": "F"},
        dict(zip((1210, 1211), f32(16.0))),
        {"name": "ALF_1000-SIM", "firmware": "6.4.0-4210", "platform": "NG910", "serial_number": "ACE0000001"},
        "register", state_word=("holding", 1201, text_word),
    ),
    "schneider-evlink-pro-ac": Doc(
        "tcp", {0: "A", 1: "A", 2: "A", 3: "B", 4: "B", 5: "B", 6: "A", 7: "B", 8: "C", 9: "D", 10: "F", 11: "F"},
        {4004: 16}, {"firmware_major": 3, "firmware_minor": 2, "firmware_build": 14}, "register",
        state_word=("holding", 1, same),
    ),
    "phoenix-charx": Doc(
        "tcp", LETTERS, {1301: 16}, {"device_name": "CHARX-SIM", "firmware": "1.5", "connector_count": 1}, "register",
        state_word=("holding", 1299, high_byte),
    ),
    "etrel-inch": Doc(
        "tcp", {0: "A", 1: "A", 2: "A", 3: "B", 4: "C", 5: "B", 6: "B", 7: "B", 8: "F", 9: "B", 10: "F"},
        dict(zip((8, 9), f32(16.0))),
        {"serial_number": "ETR0000001", "model_name": "INCH Home", "firmware": "5.2.1", "connector_count": 1},
        "session", state_word=("input", 0, same),
    ),
    "peblar": Doc(
        "tcp", LETTERS, {40000: 0x0000, 40001: 16000},
        {"serial_number": "PBL-SIM-0001", "product_number": "6004-2202-7010", "firmware": "1.8.0+1+WL-1"}, "register",
        state_word=("input", 30110, same),
    ),
}


def test_every_packaged_charger_model_has_a_conformance_run() -> None:
    assert sorted(DOCS) == available_models()


class Rig:
    """A simulator served over the model's transport, and a way to make drivers for it."""

    def __init__(self, sims: SimChargerThread, sim: SimCharger, transport: str, pair: SocatPair | None) -> None:
        self.sim = sim
        self.transport = transport
        self.pair = pair
        self.server: SimServer
        if transport == "tcp":
            self.server = sims.serve_tcp([sim])
        elif transport == "rtu-over-tcp":
            self.server = sims.serve_rtu_over_tcp([sim])
        else:
            assert pair is not None
            self.server = sims.serve_rtu([sim], pair.b, 19200, parity="N")

    def charger(self, registry: BusRegistry, **options: Any) -> ModbusCharger:
        options.setdefault("timeout_s", TIMEOUT)
        options.setdefault("recheck_s", 0)
        if self.transport == "rtu":
            assert self.pair is not None
            # A pty refuses parity E (the real Heidelberg bus is 8E1); frame gap kept short to save time.
            return create_charger(model=self.sim.model, name="cp", registry=registry, serial=self.pair.a,
                                  parity="N", unit=self.sim.unit, frame_gap_s=0.02, **options)
        return create_charger(model=self.sim.model, name="cp", registry=registry, transport=self.transport,
                              host="127.0.0.1", port=self.server.port, unit=self.sim.unit, **options)


@pytest.fixture
def rig_for(sims: SimChargerThread) -> Iterator[Any]:
    pairs: list[SocatPair] = []

    def make(model: str, **sim_options: Any) -> Rig:
        doc = DOCS[model]
        sim = SimCharger(model, **{**doc.sim, **sim_options})
        pair = None
        if doc.transport == "rtu":
            pair = SocatPair().start()
            pairs.append(pair)
        return Rig(sims, sim, doc.transport, pair)

    yield make
    for pair in pairs:
        pair.close()


def _written(sim: SimCharger, addresses: list[int]) -> dict[int, int]:
    return {a: sim.writes_to(a)[-1] for a in addresses if sim.writes_to(a)}


@pytest.mark.parametrize("model", sorted(DOCS))
def test_conformance(model: str, rig_for: Any, tmp_path: Path) -> None:
    doc = DOCS[model]
    rig: Rig = rig_for(model, speed=3600, energy_wh=1_000_000)
    sim = rig.sim
    regmap = load_map(model)
    assert set(regmap.states) == set(doc.states) | set(doc.conditional), "the map's state table is the documented one"

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry, energy_counter_path=tmp_path / "energy.json")
            await cp.setup()
            # identity
            identity = await cp.identity()
            assert {k: identity[k] for k in doc.identity} == doc.identity

            # every documented state value
            table, address, word = doc.state_word
            for raw, letter in doc.states.items():
                sim.force_state(raw)
                assert await cp.status() == letter, (raw, letter)
                assert sim.register(address, table) == word(raw), f"state {raw!r} on the wire"
            for raw, (plugged, unplugged) in doc.conditional.items():
                sim.force_state(raw)
                assert await cp.status() == unplugged
                sim.plug()
                assert await cp.status() == plugged
                sim.unplug()
            sim.force_state(None)

            # enable and the current limit, as the documented registers and words
            assert (await cp.poll()).iec61851 == "A"
            sim.plug()
            sim.set_ev_requesting(True)
            await cp.enable(False)
            assert sim.setpoint_a == 0 and (await cp.poll()).iec61851 == "B"
            assert not await cp.enabled()
            await cp.set_max_current(16)  # remembered while disabled
            assert sim.setpoint_a == 0
            await cp.enable(True)
            assert _written(sim, list(doc.setpoint_16a)) == doc.setpoint_16a
            assert await cp.enabled()
            first = await cp.poll()
            assert first.iec61851 == "C" and sim.setpoint_a == 16
            if first.offered_current_a is not None:
                assert first.offered_current_a == 16
            assert first.measurement.power_w == pytest.approx(16 * 230 * 3, abs=2)
            assert first.measurement.currents_a == pytest.approx((16.0, 16.0, 16.0), abs=0.01)
            await cp.set_max_current(10.7)
            assert 10 <= sim.setpoint_a <= 10.7 + 1e-9  # never more than asked, at the register's resolution
            await cp.set_max_current(99)
            assert sim.setpoint_a == cp.max_current_a  # clamped

            # pause (below 6 A) and resume
            await cp.set_max_current(3)
            assert sim.setpoint_a == 0 and (await cp.poll()).iec61851 == "B"
            await cp.enable(True)
            assert sim.setpoint_a == 0  # a pause outlasts enable(True)
            await cp.set_max_current(8)
            assert sim.setpoint_a == 8 and (await cp.poll()).iec61851 == "C"

            # lifetime energy: grows while charging, never falls, survives a new session
            e1 = (await cp.poll()).measurement.energy_wh
            sim_e1 = sim.energy_wh
            await asyncio.sleep(0.3)
            e2 = (await cp.poll()).measurement.energy_wh
            assert e1 is not None and e2 is not None and e2 - e1 >= 300  # 5.5 kW x 3600 x 0.3 s = 1.6 kWh
            sim.unplug()
            e3 = (await cp.poll()).measurement.energy_wh
            assert e3 is not None and e3 >= e2
            sim.plug()  # a new session: a session register starts again at 0
            sim.set_ev_requesting(True)
            await asyncio.sleep(0.2)
            e4 = (await cp.poll()).measurement.energy_wh
            sim_e4 = sim.energy_wh
            assert e4 is not None and e4 > e3
            # what the charger delivered between the two readings, across the new session
            assert e4 - e1 == pytest.approx(sim_e4 - sim_e1, abs=600)
            if doc.lifetime == "register":
                assert e4 == pytest.approx(sim_e4, abs=600)
            else:
                assert isinstance(cp.energy_counter, SessionEnergyLifetime)
                assert cp.energy_counter.sessions_seen == 1
        async with BusRegistry() as registry:  # the agent restarts: the lifetime counter goes on
            again = rig.charger(registry, energy_counter_path=tmp_path / "energy.json")
            e5 = (await again.poll()).measurement.energy_wh
            assert e5 is not None and e5 >= e4

    run(scenario())
    if model == "abb-terra-ac":
        assert sim.writes_to(0x4105) == [] and sim.app_enabled  # never the stop register


# -- keep-alive and fail-safe, per model --


def test_heidelberg_watchdog_and_standby(rig_for: Any) -> None:
    rig: Rig = rig_for("heidelberg-energy-control", standby_after_s=0.5)
    sim = rig.sim

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry, failsafe_current_a=6, failsafe_timeout_s=0.6)
            await cp.setup()  # standby off (258 = 4), fail-safe 0 A (no session yet), watchdog 600 ms
            assert sim.writes_to(258) == [4] and sim.writes_to(262) == [0] and sim.writes_to(257) == [600]
            await cp.set_max_current(16)
            await cp.enable(True)  # a session: the fail-safe current is its share
            assert sim.writes_to(262) == [0, 60]
            for _ in range(12):  # 1.2 s of polling: the box neither sleeps nor falls back
                await asyncio.sleep(0.1)
                await cp.poll()
                await cp.keepalive()
            assert not sim.asleep and not sim.failsafe_active and sim.setpoint_a == 16
            await asyncio.sleep(0.9)  # the gateway goes quiet
            assert sim.failsafe_active and sim.setpoint_a == 6

    run(scenario())
    # Without the setup write the box goes to standby and stops answering Modbus.
    other: Rig = rig_for("heidelberg-energy-control", standby_after_s=1.0, unit=2)

    async def no_setup() -> None:
        async with BusRegistry() as registry:
            cp = other.charger(registry, retries=0)
            assert (await cp.poll()).iec61851 == "A"
            await asyncio.sleep(1.3)
            with pytest.raises(Exception, match="no answer"):
                await cp.poll()

    run(no_setup())


def test_abb_fallback_limit_and_traffic_keepalive(rig_for: Any) -> None:
    rig: Rig = rig_for("abb-terra-ac")
    sim = rig.sim

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry, failsafe_current_a=8, failsafe_timeout_s=1)
            report = await cp.failsafe_status()
            assert report["configured"] is False and report["current_a"] is None  # factory 0xFF: not configured
            await cp.setup()
            assert sim.writes_to(0x4109) == [0] and sim.writes_to(0x4106) == [1]  # no session: 0 A
            report = await cp.failsafe_status()
            assert report == {"set_by": "gateway", "current_a": 0, "timeout_s": 1, "configured": True}
            sim.plug()
            sim.set_ev_requesting(True)
            await cp.set_max_current(16)
            await cp.enable(True)
            assert sim.writes_to(0x4109) == [0, 8]
            for _ in range(8):  # reads keep it healthy; nothing is written for it
                await asyncio.sleep(0.2)
                await cp.keepalive()
            assert not sim.failsafe_active and sim.state == "C"
            writes = len(sim.writes)
            await cp.enable(False)  # pauses through the current, never through 0x4105
            assert sim.writes_to(0x4105) == [] and sim.state == "B"
            assert [r for _, r, _ in sim.writes[writes:]] == [0x4109, 0x4100, 0x4101]  # 0 A fail-safe first
            with pytest.raises(UnsupportedByModel, match=r"0x4105|16645|app"):
                await cp.device.write_register(0x4105, 1)
            await cp.enable(True)
            await asyncio.sleep(1.3)
            assert sim.failsafe_active and sim.setpoint_a == 8  # the fallback limit, not an error stop

    run(scenario())


def test_alfen_setpoint_is_rewritten_before_it_expires(rig_for: Any) -> None:
    rig: Rig = rig_for("alfen-ng9xx", validity_s=1.0, safe_current_a=6)
    sim = rig.sim

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry, failsafe_timeout_s=1.0)  # the validity the installer set in ACE
            with pytest.raises(ValueError, match="configured on the charger"):
                rig.charger(registry, failsafe_current_a=8)
            await cp.setup()
            assert sim.writes == []  # nothing is written at setup: the safe current is ACE's
            report = await cp.failsafe_status()
            assert report["configured"] is True and report["current_a"] == 6 and report["set_by"] == "device"
            sim.plug()
            sim.set_ev_requesting(True)
            await cp.set_max_current(16)
            start = time.monotonic()
            while time.monotonic() - start < 2.5:  # 2.5 validity periods, polled every 0.2 s
                await asyncio.sleep(0.2)
                await cp.poll()
                await cp.keepalive()
            assert not sim.failsafe_active and sim.setpoint_a == 16
            assert len(sim.writes_to(1210)) >= 5  # re-written every 0.4 s
            assert (await cp.io.read_roles("setpoint_in_use"))["setpoint_in_use"] == [1]
            await asyncio.sleep(1.3)  # the agent stops re-writing
            assert sim.failsafe_active and sim.setpoint_a == 6
            await cp.keepalive()
            assert not sim.failsafe_active and sim.setpoint_a == 16

    run(scenario())


def test_alfen_station_registers_come_from_unit_200(rig_for: Any) -> None:
    rig: Rig = rig_for("alfen-ng9xx", unit=2)

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry)
            assert cp.io.station.unit == 200 and cp.device.unit == 2
            assert (await cp.identity())["platform"] == "NG910"
            # the socket unit does not answer the station's registers
            with pytest.raises(Exception, match="rejected"):
                await cp.device.read_holding(140, 17)

    run(scenario())


def test_schneider_life_bit_and_word_swapped_floats(rig_for: Any) -> None:
    rig: Rig = rig_for("schneider-evlink-pro-ac", life_bit_timeout_s=3.0)
    sim = rig.sim

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry, failsafe_current_a=10)
            assert cp.keepalive_interval_s == 2
            await cp.setup()
            assert sim.writes_to(4006) == [0] and sim.writes_to(4005) == [0] and sim.writes_to(4000) == [1]
            sim.plug()
            sim.set_ev_requesting(True)
            await cp.set_max_current(16)
            await cp.enable(True)
            assert sim.writes_to(4006) == [0, 10] and sim.writes_to(4005) == [0, 10]
            # 16.0 A word-swapped: the low word (0x0000) first, as the vendor's table says
            assert [sim.register(2999), sim.register(3000)] == [0x0000, 0x4180]
            start = time.monotonic()
            while time.monotonic() - start < 4.5:
                await asyncio.sleep(0.5)
                reading = await cp.poll()
                await cp.keepalive()
            assert reading.measurement.currents_a == (16.0, 16.0, 16.0)
            assert len(sim.writes_to(4000)) >= 3 and not sim.failsafe_active  # every 2 s
            await asyncio.sleep(3.5)
            assert sim.failsafe_active and sim.setpoint_a == 10  # the degraded setpoint
            sim.unplug()
            reading = await cp.poll()
            assert reading.offered_current_a is None  # 4004 reads 99 while not charging: no setpoint

    run(scenario())
    off: Rig = rig_for("schneider-evlink-pro-ac", life_bit_enabled=False, unit=3)

    async def deactivated() -> None:
        async with BusRegistry() as registry:
            cp = off.charger(registry)
            await cp.setup()
            await cp.keepalive()
            assert off.sim.writes_to(4000) == []  # reads 2: switched off on the station
            assert (await cp.failsafe_status())["configured"] is False

    run(deactivated())


def test_bender_rewrite_and_no_value(rig_for: Any) -> None:
    rig: Rig = rig_for("bender-cc613")
    sim = rig.sim

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry, failsafe_current_a=6, failsafe_timeout_s=1)
            await cp.setup()
            assert (await cp.failsafe_status())["configured"] is True
            await cp.set_max_current(12)
            await cp.enable(True)
            for _ in range(5):
                await asyncio.sleep(0.3)
                await cp.keepalive()
            assert not sim.failsafe_active and sim.writes_to(1000).count(12) >= 3
            sim.set_no_value(True)
            with pytest.raises(Exception, match="0xFFFFFFFF"):
                await cp.poll()
            sim.set_no_value(False)
            assert (await cp.poll()).measurement.energy_wh == 1_000_000
            await asyncio.sleep(1.3)
            assert sim.failsafe_active and sim.setpoint_a == 6

    run(scenario())


@pytest.mark.parametrize("model", ["phoenix-charx", "etrel-inch", "peblar"])
def test_models_without_a_watchdog_say_so(model: str, rig_for: Any) -> None:
    rig: Rig = rig_for(model)

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry)
            assert cp.keepalive_interval_s is None
            report = await cp.failsafe_status()
            assert report["configured"] is None and "last current stays" in str(report["note"])
            with pytest.raises(ValueError, match="no fail-safe"):
                rig.charger(registry, failsafe_current_a=6)
            await cp.setup()
            await cp.set_max_current(16)
            await asyncio.sleep(0.3)
            assert rig.sim.setpoint_a == 16  # quiet gateway, nothing changes: the documented hazard

    run(scenario())


def test_etrel_takes_fc16_only_and_pauses_with_its_trigger(rig_for: Any) -> None:
    rig: Rig = rig_for("etrel-inch")
    sim = rig.sim

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry)
            sim.plug()
            sim.set_ev_requesting(True)
            await cp.set_max_current(16)
            assert await cp.status() == "C"
            await cp.enable(False)
            assert sim.writes_to(2) == [1] and await cp.status() == "B" and sim.writes_to(1) == []
            await cp.enable(True)
            assert await cp.status() == "C"
            cp.device.write_multiple = False  # what a driver that forgot the map's write_multiple would do
            with pytest.raises(Exception, match="exception 1"):
                await cp.device.write_register(2, 1)

    run(scenario())


@pytest.mark.parametrize(("model", "stride"), [("phoenix-charx", 1000), ("etrel-inch", 100)])
def test_second_charge_point_behind_one_unit(model: str, stride: int, sims: SimChargerThread) -> None:
    one = SimCharger(model, connector=1, connector_count=2, speed=600)
    two = SimCharger(model, connector=2, connector_count=2, speed=600, energy_wh=5_000)
    server = sims.serve_tcp([one, two])

    async def scenario() -> None:
        async with BusRegistry() as registry:
            def make(connector: int) -> ModbusCharger:
                return create_charger(model=model, name=f"cp{connector}", registry=registry, host="127.0.0.1",
                                      port=server.port, connector=connector, timeout_s=TIMEOUT)

            cp1, cp2 = make(1), make(2)
            assert cp1.device.link is cp2.device.link
            await cp1.setup()
            await cp2.setup()
            two.plug()
            two.set_ev_requesting(True)
            await cp2.set_max_current(10)
            setpoint = load_map(model).registers["setpoint"].address
            assert two.writes_to(setpoint + stride) and not one.writes_to(setpoint)
            assert (await cp2.poll()).iec61851 == "C" and (await cp1.poll()).iec61851 == "A"
            if model == "phoenix-charx":
                with pytest.raises(UnsupportedByModel, match="connector 3 does not exist"):
                    await make(3).setup()  # the station reports 2 charge points
            else:
                with pytest.raises(MapError, match=r"connector 3 is outside 1..2"):
                    make(3)

    run(scenario())


def test_a_connector_the_station_does_not_have_is_refused(sims: SimChargerThread) -> None:
    sim = SimCharger("phoenix-charx", connector=2, connector_count=1)  # misconfigured: a one-point station
    server = sims.serve_tcp([sim])

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = create_charger(model="phoenix-charx", name="cp", registry=registry, host="127.0.0.1",
                                port=server.port, connector=2, timeout_s=TIMEOUT)
            with pytest.raises(UnsupportedByModel, match="reports 1 charge point"):
                await cp.setup()

    run(scenario())


@pytest.mark.parametrize("model", ["bender-cc613", "phoenix-charx"])
def test_built_in_reader_gives_normalised_uids(model: str, rig_for: Any) -> None:
    rig: Rig = rig_for(model)

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry)
            assert cp.has_identifier
            assert await cp.identify() is None
            for shown, token in [("04a2b3c4", "04A2B3C4"), ("04:A2:B3:C4:D5:E6:F7", "04A2B3C4D5E6F7"),
                                 ("0102030405060708090A", "0102030405060708090A")]:
                rig.sim.present_card(shown)
                assert await cp.identify() == token
            rig.sim.present_card(None)
            assert await cp.identify() is None

    run(scenario())


def test_models_without_a_reader_have_no_identifier(rig_for: Any) -> None:
    rig: Rig = rig_for("peblar")

    async def scenario() -> None:
        async with BusRegistry() as registry:
            cp = rig.charger(registry)
            assert not cp.has_identifier
            with pytest.raises(UnsupportedByModel):
                await cp.identify()

    run(scenario())
