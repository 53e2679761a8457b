"""meter_values batched at the configured interval, and evse_fault when a charger faults and when
it recovers: the agent process on the simulated site (real broker, Modbus TCP and RTU)."""
from __future__ import annotations

import itertools
import time

import pytest

from edge_agent.clock import parse_rfc3339
from hardware_sim.site import SimulatedSite

KARI = "04A2B3C4D5"
INTERVAL_S = 5  # the smallest meter_values_interval_s the config accepts


@pytest.fixture
def site(tmp_path):
    with SimulatedSite(tmp_path / "site", speed=60, meter_values_interval_s=INTERVAL_S) as s:
        s.publish_lists()
        assert s.cloud.wait_for(lambda: (s.cloud.state or {}).get("users_version") == 1, 15), s.agent_log_tail()
        yield s


def events(site: SimulatedSite, type_: str, session_id: str | None = None) -> list[dict]:
    found = [e for e in site.cloud.unique_events if e["type"] == type_
             and (session_id is None or e["data"].get("session_id") == session_id)]
    return sorted(found, key=lambda e: e["seq"])


def test_meter_values_are_batched_at_the_interval_and_come_before_the_end(site):
    site.tap("1", KARI)
    time.sleep(0.3)
    site.plug_and_charge("1")
    started = site.cloud.wait_event("session_started", timeout=10)
    session_id = started["data"]["session_id"]
    time.sleep(3 * INTERVAL_S + 1)
    site.unplug("1")
    ended = site.cloud.wait_event("session_ended", timeout=15, session_id=session_id)
    batches = events(site, "meter_values", session_id)
    assert len(batches) >= 3, [b["data"] for b in batches]
    assert all(started["seq"] < b["seq"] < ended["seq"] for b in batches)
    # One event per interval, not one per sample: the events (but the last, flushed at the end)
    # are at least an interval apart.
    stamps = [parse_rfc3339(b["ts"]) for b in batches]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps[:-1])]
    assert all(gap >= INTERVAL_S - 0.5 for gap in gaps), gaps
    samples = [s for b in batches for s in b["data"]["samples"]]
    assert all(b["data"]["evse_id"] == "1" and b["data"]["samples"] for b in batches)
    assert [s["ts"] for s in samples] == sorted(s["ts"] for s in samples)
    energies = [s["energy_wh"] for s in samples]
    assert energies == sorted(energies) and all(isinstance(e, int) for e in energies)
    assert started["data"]["meter_start_wh"] <= energies[0] and energies[-1] <= ended["data"]["meter_stop_wh"]
    assert energies[-1] > energies[0]  # it charged in between
    charging = [s for s in samples if s["power_w"]]
    assert charging and all(len(s["current_a"]) == 3 for s in charging)
    assert all(s["ts"].endswith("Z") for s in samples)


def test_evse_fault_when_a_charger_reports_an_error_and_when_it_clears(site):
    charger = site.chargers["2"]
    charger.force_state(charger._state_raw("F"))  # noqa: SLF001
    fault = site.cloud.wait_event("evse_fault", timeout=15, evse_id="2")
    assert fault["data"]["error"] and fault["data"]["ts"].endswith("Z")
    assert site.cloud.wait_for(lambda: site.cloud.evse_status.get("2", {}).get("status") == "Faulted", 10)
    charger.force_state(None)
    cleared = site.cloud.wait_event("evse_fault", timeout=15, evse_id="2", error=None)
    assert cleared["seq"] > fault["seq"]
    assert site.cloud.wait_for(lambda: site.cloud.evse_status["2"]["status"] == "Available", 10)
    time.sleep(2)
    assert len(events(site, "evse_fault")) == 2  # once each way, not on every poll


def test_evse_fault_when_a_charger_goes_silent_and_comes_back(site):
    site.chargers["1"].set_silent(True)
    fault = site.cloud.wait_event("evse_fault", timeout=15, evse_id="1")
    assert "not responding" in fault["data"]["error"]
    site.chargers["1"].set_silent(False)
    cleared = site.cloud.wait_event("evse_fault", timeout=15, evse_id="1", error=None)
    assert cleared["seq"] > fault["seq"]
    time.sleep(2)
    assert len(events(site, "evse_fault")) == 2
