"""Load management on real parts: 20 simulated Bender chargers, each a pymodbus server on its own
Modbus TCP port, and an Eastron SDM630 site meter on Modbus TCP, on one 63 A three-phase connection.
The real driver (drivers.modbus) writes the chargers; LoadChecker samples the sims and reconstructs
every setpoint write (SimCharger.writes) to check limits, the 6 A minimum, fairness and reaction times.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.modbus import BusRegistry
from edge_agent.loadmanagement import LoadManagementLoop, Reaction, site_plan, total_load
from hardware_sim.loadsite import (
    FAILSAFE_CURRENT,
    LoadChecker,
    LoadSite,
    create_chargers,
    create_site_meter,
    default_chargers,
    harness_settings,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def site() -> Iterator[LoadSite]:
    with LoadSite(default_chargers(), max_current_a=63, safe_current_a=32, meter_timeout_s=5,
                  other_load_a=(8, 8, 8)) as s:
        yield s


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def setpoints(site: LoadSite, *ids: str) -> dict[str, float]:
    return {e: site.sims[e].setpoint_a for e in ids}


def first_on(checker: LoadChecker, evse_id: str, since: float) -> float | None:
    return next((t for t, e, a in checker.setpoint_writes(since) if e == evse_id and a > 0), None)


class Harness:
    """Load management driving the site over Modbus TCP from this process (the agent does not yet)."""

    def __init__(self, site: LoadSite) -> None:
        self.site = site
        self.config = site.config()
        self.plan = site_plan(self.config)
        self.reactions: list[Reaction] = []

    async def __aenter__(self) -> LoadManagementLoop:
        self.registry = BusRegistry()
        chargers = create_chargers(self.config, self.plan, self.registry, failsafe_timeout_s=30)
        self.loop = LoadManagementLoop(
            plan=self.plan, chargers=chargers, meter=create_site_meter(self.config, self.registry),
            settings=harness_settings(), on_reaction=self.reactions.append)
        self.task = asyncio.create_task(self.loop.run())
        sims = self.site.sims.values()
        await until(lambda: all(s.setpoint_a == 0 for s in sims) and all(s.writes_to(FAILSAFE_CURRENT) for s in sims)
                    and self.loop.controller.meter_fresh(time.monotonic()), 15, "every charger set up and off")
        return self.loop

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.registry.aclose()

    def arrive(self, evse_id: str, *, ev_max_current_a: float = 32) -> None:
        self.site.arrive(evse_id, ev_max_current_a=ev_max_current_a)
        self.loop.session_started(evse_id)

    def leave(self, evse_id: str) -> None:
        self.site.leave(evse_id)
        self.loop.session_ended(evse_id)


def test_twenty_chargers_share_63_a_fairly_and_never_exceed_a_limit(site: LoadSite) -> None:
    checker = LoadChecker(site).start()
    harness = Harness(site)
    notes: dict[str, object] = {}

    async def scenario() -> float:
        async with harness as loop:
            t0 = time.monotonic()
            # Four cars; car 4 takes at most 10 A and gives the rest back (10 A + 1 A margin).
            for evse_id in "123":
                harness.arrive(evse_id)
                await asyncio.sleep(0.3)
            harness.arrive("4", ev_max_current_a=10)
            await until(lambda: site.sims["4"].setpoint_a == 11, 10, "car 4 capped at 11 A")
            await asyncio.sleep(3.5)  # steady long enough for the checker's fairness samples
            notes["four"] = setpoints(site, "1", "2", "3", "4")
            # Ten more; 55 A per phase is left by the building: who does not fit at 6 A waits.
            for evse_id in ["17", "18", "5", "6", "7", "8", "9", "10", "11", "12"]:
                harness.arrive(evse_id)
                await asyncio.sleep(0.3)
            await asyncio.sleep(4)
            notes["full"] = setpoints(site, *site.sims)
            # Two leave: the first two of the queue (9, then 10) resume, in that order.
            harness.leave("2")
            await asyncio.sleep(2.5)
            harness.leave("3")
            await until(lambda: site.sims["10"].setpoint_a >= 6, 10, "EVSE 10 resuming")
            await asyncio.sleep(2)
            notes["after_leaving"] = setpoints(site, *site.sims)
            # The building takes 12 A more on L2: the two latest arrivals (10, 9) are paused.
            site.set_other_load((8, 20, 8))
            await asyncio.sleep(4)
            notes["l2_busy"] = setpoints(site, *site.sims)
            # Back to 8 A: 11 and 12 (queued since they arrived) go before 9 and 10 (paused later).
            site.set_other_load((8, 8, 8))
            await until(lambda: site.sims["12"].setpoint_a >= 6, 12, "EVSE 12 resuming")
            await asyncio.sleep(2)
            notes["l2_free"] = setpoints(site, *site.sims)
            # The cloud lowers the limit to 40 A for 6 s: priority 2 (EVSE 5) keeps charging.
            limit = loop.set_site_limit(40, until=datetime.now(UTC) + timedelta(seconds=6))
            site.note_limit(40, until=limit.until)
            await asyncio.sleep(4)
            notes["limited"] = setpoints(site, *site.sims)
            notes["status"] = loop.status()
            notes["state"] = loop.state()
            await asyncio.sleep(7)
            notes["restored"] = setpoints(site, *site.sims)
            await asyncio.sleep(1)
            return t0

    t0 = asyncio.run(asyncio.wait_for(scenario(), 120))
    checker.stop()
    report = checker.report(since=t0, hold_s=3.0)
    print(report.summary())
    print("in-process reactions:", [(r.cause, round(r.seconds, 3)) for r in harness.reactions])
    assert not report.violations, report.summary()

    four = notes["four"]
    assert four["4"] == 11 and sorted(four[e] for e in "123") == [14, 15, 15], four  # 55 - 11 shared by three
    full = notes["full"]
    running = {e for e, a in full.items() if a >= 6}
    assert running == {"1", "2", "3", "4", "5", "6", "7", "8", "17", "18"}, full
    assert all(full[e] == 0 for e in ("9", "10", "11", "12"))
    assert first_on(checker, "9", t0) < first_on(checker, "10", t0)  # resumed in queue order
    after = notes["after_leaving"]
    assert after["9"] >= 6 and after["10"] >= 6 and after["11"] == after["12"] == 0, after
    busy = notes["l2_busy"]
    assert busy["9"] == busy["10"] == 0 and all(busy[e] >= 6 for e in ("1", "4", "5", "6", "7", "8", "18")), busy
    free = notes["l2_free"]
    assert free["11"] >= 6 and free["12"] >= 6 and free["9"] == free["10"] == 0, free
    limited = notes["limited"]
    assert {e for e, a in limited.items() if a} == {"5", "1", "4", "17", "18", "6"}, limited
    assert max(total_load(harness.plan.tree, limited)) <= 40 - 8
    assert notes["status"]["limit_source"] == "cloud" and notes["status"]["max_current_a"] == 40
    state = notes["state"]  # what ~/state shows
    assert state["limit_source"] == "cloud" and state["limit_until"].endswith("Z")
    assert set(state["allocated_a"]) == {"5", "1", "4", "17", "18", "6"} and "7" in state["waiting"], state
    restored = notes["restored"]
    assert restored["7"] >= 6 and restored["8"] >= 6, restored
    causes = [r.cause for r in report.reactions]
    assert any(c.startswith("other load") for c in causes) and "cloud limit 40 A" in causes, causes
    assert all(r.seconds is not None and r.seconds < 5 for r in report.reactions)
    assert report.fairness_checks >= 10


def test_site_meter_silent_safe_current_within_the_configured_time(site: LoadSite) -> None:
    checker = LoadChecker(site).start()
    harness = Harness(site)

    async def scenario() -> tuple[float, float, dict]:
        async with harness as loop:
            t0 = time.monotonic()
            for evse_id in ("1", "2", "3", "4", "17"):
                harness.arrive(evse_id)
            await until(lambda: max(site.offered()) >= 50, 10, "the cars sharing 55 A")
            await asyncio.sleep(1)
            site.set_meter_silent(True)
            silent_at = time.monotonic()
            await until(lambda: max(site.offered()) <= 32, 8, "the safe current")
            status = loop.status()
            await asyncio.sleep(1.5)
            site.set_meter_silent(False)
            await until(lambda: max(site.offered()) >= 50, 10, "the full share again")
            await asyncio.sleep(1)
            return t0, silent_at, status

    t0, _silent_at, status = asyncio.run(asyncio.wait_for(scenario(), 60))
    checker.stop()
    report = checker.report(since=t0)
    print(report.summary())
    assert not report.violations, report.summary()
    (reaction,) = [r for r in report.reactions if r.cause == "site meter silent"]
    print(f"site meter silent -> safe current {site.safe_current_a:g} A on every phase after {reaction.seconds:.2f} s "
          f"(meter_timeout_s {site.meter_timeout_s:g})")
    assert reaction.seconds is not None and reaction.seconds <= site.meter_timeout_s
    assert "site meter silent: safe current 32 A" in status["headroom_source"]
    (logged,) = [r for r in harness.reactions if r.cause == "site meter silent"]
    print(f"in-process: safe current written {logged.seconds:.2f} s after the meter's last fresh reading")
    assert logged.seconds <= site.meter_timeout_s


def test_agent_sigkilled_chargers_fall_back_to_failsafe_currents_within_the_limit(
        site: LoadSite, tmp_path: Path) -> None:
    config_file = tmp_path / "site.yaml"
    config_file.write_text(site.config_text(data_dir=str(tmp_path)))
    plan = site_plan(site.config())
    checker = LoadChecker(site).start()
    log_file = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        [sys.executable, "-m", "hardware_sim.loadsite", "agent", "--config", str(config_file),
         "--failsafe-timeout", "4"], cwd=ROOT, stdout=subprocess.PIPE, stderr=log_file, text=True)
    try:
        assert agent.stdout is not None and agent.stdout.readline().strip() == "ready"
        arrived = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "17", "18", "19"]
        for evse_id in arrived:
            site.arrive(evse_id)
        # A session's charger falls back to its share; one without a session to 0 A (nothing unbilled).
        expected = {e: plan.failsafe_a[e] if e in arrived else 0.0 for e in site.sims}
        deadline = time.monotonic() + 30
        while True:
            if time.monotonic() > deadline:
                raise AssertionError("the agent never settled: " + (tmp_path / "agent.log").read_text()[-2000:])
            time.sleep(0.2)
            charging = sum(1 for s in site.sims.values() if s.state == "C")
            recent = [t for t in LoadChecker._changes(checker.setpoint_writes(0), 0) if t > time.monotonic() - 2.5]  # noqa: SLF001
            if charging >= 8 and not recent and all(
                    s.writes_to(FAILSAFE_CURRENT) and s.register(FAILSAFE_CURRENT) == expected[e]
                    for e, s in site.sims.items()):
                break
        steady = time.monotonic()
        failsafe = {e: float(s.register(FAILSAFE_CURRENT)) for e, s in site.sims.items()}
        assert failsafe == expected
        assert max(total_load(plan.tree, failsafe)) <= site.safe_current_a <= site.max_current_a
        os.kill(agent.pid, signal.SIGKILL)
        killed = time.monotonic()
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        log_file.close()
    fell_back: dict[str, float] = {}
    while len(fell_back) < len(site.sims) and time.monotonic() < killed + 12:
        for evse_id, sim in site.sims.items():
            if evse_id not in fell_back and sim.failsafe_active:
                fell_back[evse_id] = time.monotonic() - killed
        time.sleep(0.05)
    time.sleep(0.5)
    checker.stop()
    assert set(fell_back) == set(site.sims), f"never fell back: {set(site.sims) - set(fell_back)}"
    after = {e: s.setpoint_a for e, s in site.sims.items()}
    assert after == expected
    per_phase = site.offered(after)
    measured = max(max(s.measured) for s in checker.samples if s.t >= killed)
    print(f"SIGKILL: all 20 chargers on their fail-safe currents {min(fell_back.values()):.2f}..{max(fell_back.values()):.2f}"
          f" s after the kill (timeout 4 s); fail-safe sum per phase {per_phase}, peak meter after the kill "
          f"{measured:.1f} A; {sum(1 for a in after.values() if a)} chargers keep 6+ A")
    assert max(fell_back.values()) <= 4 + 1.0
    assert max(per_phase) <= site.safe_current_a
    report = checker.report(since=steady)
    print(report.summary())
    assert not report.violations, report.summary()
    assert measured <= site.max_current_a
