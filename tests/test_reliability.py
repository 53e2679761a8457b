"""Faults injected on real parts: SIGKILL of the agent, broker crashes and outages, charger
reboots. The guarantees they prove are listed in docs/reliability.md."""
import os
import random
import time

import pytest

from edge_agent.cloud import events
from edge_agent.store import Store
from hardware_sim.chaos import run_chaos
from hardware_sim.site import SimulatedSite

KARI = "04A2B3C4D5"


@pytest.mark.slow
def test_two_hundred_sigkills_lose_or_double_nothing(tmp_path):
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))
    report = run_chaos(tmp_path / "site", kills=200, seed=seed)
    assert report.kills == 200
    assert report.problems == [], f"seed {seed}: {report.summary()}\n" + "\n".join(report.problems)
    assert report.sessions > 10 and report.integrity_checks == 200, report.summary()


def fill_outbox(data_dir, n: int) -> None:
    with Store(data_dir) as store:
        for i in range(n):
            store.append_event(events.meter_values("s-old", "1", [
                {"ts": "2026-01-01T00:00:00Z", "energy_wh": 1000 + i, "power_w": 0, "current_a": None}],
                ts="2026-01-01T00:00:00Z", offline=True))


def first_arrivals(site) -> list[int]:
    seen, order = set(), []
    for event in site.cloud.events:
        if event["id"] not in seen:
            seen.add(event["id"])
            order.append(event["seq"])
    return order


def test_a_long_outage_with_thousands_of_events_is_delivered_in_order(tmp_path):
    site = SimulatedSite(tmp_path / "site", ack_timeout_s=10)
    site.start(agent=False)
    try:
        fill_outbox(site.data_dir, 5000)
        site.broker.stop()
        site.start_agent()
        time.sleep(2)  # the agent runs offline with its backlog
        site.broker.start()
        assert site.cloud.wait_connected(15)
        assert site.cloud.wait_for(lambda: len(site.cloud.events_by_id) == 5000, 60), site.agent_log_tail()
        assert first_arrivals(site) == list(range(1, 5001))
        assert site.wait(lambda: Store(site.data_dir, read_only=True).outbox_pending() == 0, 20)
    finally:
        site.close()


def test_broker_crashing_repeatedly_during_a_burst_loses_nothing(tmp_path):
    site = SimulatedSite(tmp_path / "site", ack_timeout_s=2)
    site.start(agent=False)
    try:
        fill_outbox(site.data_dir, 3000)
        site.start_agent()
        for _ in range(5):
            time.sleep(0.3)
            site.broker.kill()
            time.sleep(0.3)
            site.broker.start()
        assert site.cloud.wait_for(lambda: len(site.cloud.events_by_id) == 3000, 90), site.agent_log_tail()
        by_seq = {}
        for event in site.cloud.events:
            by_seq.setdefault(event["seq"], set()).add(event["id"])
        assert sorted(by_seq) == list(range(1, 3001))
        assert all(len(ids) == 1 for ids in by_seq.values()), "duplicates only by id"
        assert site.wait(lambda: Store(site.data_dir, read_only=True).outbox_pending() == 0, 30)
    finally:
        site.close()


def test_a_charger_rebooting_mid_session_with_its_counter_reset(tmp_path):
    with SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2) as site:
        site.publish_lists()
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("tariffs_version") == 1, 15)
        charger = site.chargers["1"]
        site.tap("1", KARI)
        time.sleep(0.3)
        site.plug_and_charge("1")
        started = site.cloud.wait_event("session_started", timeout=10)
        time.sleep(1.5)
        before_reboot = int(charger.energy_wh)
        writes_before = len(charger.writes)
        charger.reboot()
        with charger._lock:  # noqa: SLF001 - the fault: the counter restarts at zero
            charger._energy_wh = 0.0  # noqa: SLF001
        # The agent notices the lost setpoint, sets the charger up again, and charging goes on.
        assert site.wait(lambda: any(reg == 1000 and value == 16 for _, reg, value in charger.writes[writes_before:]), 10)
        assert site.wait(lambda: any(reg == 131 for _, reg, _v in charger.writes[writes_before:]), 10)
        assert charger.state == "C"
        time.sleep(1.5)
        site.unplug("1")
        ended = site.cloud.wait_event("session_ended", timeout=10)
        after_reboot = int(charger.energy_wh)
        energy = ended["data"]["energy_wh"]
        expected = (before_reboot - started["data"]["meter_start_wh"]) + after_reboot
        # At most one poll's worth of energy (between the last read and the reboot) is not seen.
        assert expected - 250 <= energy <= expected, (energy, expected)
        assert ended["data"]["meter_stop_wh"] >= ended["data"]["meter_start_wh"]
        assert "energy counter" in site.agent_log.read_text()


def test_a_clock_that_steps_years_forward_mid_session_leaves_sane_times(tmp_path, monkeypatch):
    """A Pi boots without network and believes it is 2020; NTP then steps the clock to today."""
    import asyncio
    import threading
    from datetime import datetime

    from edge_agent import clock
    from edge_agent.agent import Agent
    from edge_agent.config import load_config

    behind = {"s": -6 * 365 * 86400.0}
    real_wall = clock._wall  # noqa: SLF001
    monkeypatch.setattr(clock, "_wall", lambda: real_wall() + behind["s"])
    site = SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2)
    site.start(agent=False)
    running: dict = {}
    loop_ready = threading.Event()

    def run_agent() -> None:
        async def main() -> None:
            running["loop"], running["stop"] = asyncio.get_running_loop(), asyncio.Event()
            loop_ready.set()
            await Agent(load_config(site.config_path)).run(stop=running["stop"])

        asyncio.run(main())

    agent = threading.Thread(target=run_agent, daemon=True)
    agent.start()
    try:
        loop_ready.wait(5)
        site.publish_lists()
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("tariffs_version") == 1, 15)
        assert site.cloud.state["clock_synced"] is False
        site.tap("1", KARI)
        time.sleep(0.3)
        site.plug_and_charge("1")
        started = site.cloud.wait_event("session_started", timeout=10)
        assert started["data"]["started_at"].startswith("2020") and started["data"]["clock_synced"] is False
        time.sleep(1.5)
        behind["s"] = 0.0  # NTP steps the clock
        site.clock_marker.touch()
        time.sleep(1.5)
        site.unplug("1")
        ended = site.cloud.wait_event("session_ended", timeout=10)["data"]
        start = datetime.fromisoformat(ended["started_at"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(ended["ended_at"].replace("Z", "+00:00"))
        assert start.year == end.year == datetime.now().year
        assert 2.0 <= (end - start).total_seconds() <= 8.0
        assert 0 < ended["charging_s"] + ended["parking_s"] <= 8
        assert ended["clock_synced"] is False  # it started on an unsynchronised clock
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("clock_synced") is True, 10)
    finally:
        if "loop" in running:
            running["loop"].call_soon_threadsafe(running["stop"].set)
            agent.join(10)
        site.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB file system of its own for the agent's data (tmpfs), to fill up."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path, *, chunk: int = 64 * 1024) -> None:
    try:
        with open(path, "wb") as handle:
            while True:
                handle.write(b"\0" * chunk)
                handle.flush()
    except OSError:
        pass


def test_a_full_disk_keeps_charging_and_loses_no_session(tmp_path, small_disk):
    with SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2, meter_values_interval_s=5,
                       data_dir=small_disk / "data") as site:
        site.publish_lists()
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("tariffs_version") == 1, 15)
        site.tap("1", KARI)
        time.sleep(0.3)
        site.plug_and_charge("1")
        started = site.cloud.wait_event("session_started", timeout=10)
        fill(small_disk / "filler")
        fill(small_disk / "filler-2", chunk=512)
        # Samples can no longer be written: the agent says so and the car keeps charging.
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("storage_error"), 20), site.agent_log_tail()
        assert site.chargers["1"].state == "C"
        site.unplug("1")
        time.sleep(2)
        assert site.cloud.find_event("session_ended") is None  # it cannot be recorded yet
        assert site.agent.poll() is None, "the agent must keep running"
        for filler in small_disk.glob("filler*"):
            filler.unlink()
        ended = site.cloud.wait_event("session_ended", timeout=20)
        assert ended["data"]["session_id"] == started["data"]["session_id"]
        assert ended["data"]["meter_stop_wh"] == int(site.chargers["1"].energy_wh)
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("storage_error") is None, 10)
        log = site.agent_log.read_text()
        assert log.count("Charging goes on") == 1 and "storage writable again" in log


def test_the_link_dropping_mid_publish_and_going_silent_loses_nothing(tmp_path):
    from hardware_sim.netfault import FaultyLink

    site = SimulatedSite(tmp_path / "site", ack_timeout_s=3, cloud_extra="  keepalive_s: 5\n")
    site.start(agent=False)
    link = FaultyLink(site.broker.host, site.broker.port).start()
    try:
        site.agent_broker_port = link.port
        site.config_path.write_text(site.config_text(), encoding="utf-8")
        fill_outbox(site.data_dir, 3000)
        site.start_agent()
        for _ in range(5):  # resets in the middle of the stream of publishes
            time.sleep(0.25)
            link.cut()
        link.blackhole = True  # then the path dies silently; only keep-alives can tell
        time.sleep(4)
        link.blackhole = False
        link.cut()
        assert site.cloud.wait_for(lambda: len(site.cloud.events_by_id) == 3000, 90), site.agent_log_tail()
        by_seq = {}
        for event in site.cloud.events:
            by_seq.setdefault(event["seq"], set()).add(event["id"])
        assert sorted(by_seq) == list(range(1, 3001)) and all(len(ids) == 1 for ids in by_seq.values())
        assert site.wait(lambda: Store(site.data_dir, read_only=True).outbox_pending() == 0, 30)
        assert link.cuts == 6
    finally:
        link.close()
        site.close()
