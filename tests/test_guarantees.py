"""Guarantees that no other test protected (issue 12, "Behaviours no test protects"): each was
broken on purpose and the rest of the suite still passed. Real parts: the agent as its own
process, mosquitto, pymodbus chargers, RDM6300 readers on ptys, SQLite on disk."""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from edge_agent.cloud import Event
from edge_agent.cloud import events as cloud_events
from edge_agent.store import SessionRecord, Store
from hardware_sim.chargers import SimCharger
from hardware_sim.site import UNKNOWN_TOKEN, SimulatedSite
from helpers import lists_applied

KARI, PER_BLOCKED = "04A2B3C4D5", "DEADBEEF01"


def arrivals(site: SimulatedSite, event_id: str) -> list[dict]:
    return [e for e in site.cloud.events if e["id"] == event_id]


def agent_log(site: SimulatedSite) -> str:
    return site.agent_log.read_text(errors="replace") if site.agent_log.exists() else ""


def events_of(site: SimulatedSite, type_: str, session_id: str | None = None) -> list[dict]:
    found = [e for e in site.cloud.unique_events if e["type"] == type_
             and (session_id is None or e["data"].get("session_id") == session_id)]
    return sorted(found, key=lambda e: e["seq"])


# -- the outbox: a lost acknowledgement on a live connection ---------------------------------------

ACK_TIMEOUT_S = 3


def test_an_event_whose_ack_is_lost_is_published_again_on_the_same_connection(tmp_path):
    with SimulatedSite(tmp_path / "site", ack_timeout_s=ACK_TIMEOUT_S) as site:
        site.publish_lists()
        assert lists_applied(site), site.agent_log_tail()
        links_up, cloud_connects = agent_log(site).count("cloud link up"), site.cloud.connect_count
        site.cloud.auto_ack = False  # from now on the cloud's acks are lost
        site.tap("1", PER_BLOCKED)
        event = site.cloud.wait_event("auth_rejected", timeout=10, token=PER_BLOCKED)
        assert site.cloud.wait_for(lambda: len(arrivals(site, event["id"])) >= 2, ACK_TIMEOUT_S + 8), \
            f"not published again {ACK_TIMEOUT_S + 8} s after a lost ack\n" + site.agent_log_tail()
        first, again = arrivals(site, event["id"])[:2]
        assert again["received_at"] - first["received_at"] >= ACK_TIMEOUT_S - 0.3  # not before its time
        assert again["seq"] == first["seq"]
        # Nothing reconnected: the re-send came from the ack timeout, not from a new connection.
        assert agent_log(site).count("cloud link up") == links_up and "cloud link down" not in agent_log(site)
        assert site.cloud.connect_count == cloud_connects
        site.cloud.ack()  # the ack gets through this time: the event leaves the outbox, no more re-sends
        assert site.wait(lambda: Store(site.data_dir, read_only=True).outbox_pending() == 0, 10)
        sent = len(arrivals(site, event["id"]))
        time.sleep(ACK_TIMEOUT_S + 1.5)
        assert len(arrivals(site, event["id"])) == sent


# -- authorization --------------------------------------------------------------------------------

def test_an_online_answer_blocked_refuses_the_card(tmp_path):
    # offline_unknown accept: an answer that were ignored would let the card charge.
    with SimulatedSite(tmp_path / "site", offline_unknown="accept", online_timeout_s=5) as site:
        site.cloud.auth_answers = {UNKNOWN_TOKEN: ("blocked", {"id": "u-9", "name": "Visitor", "group": "guests"})}
        site.publish_lists()
        assert lists_applied(site), site.agent_log_tail()
        site.plug_and_charge("1")
        assert site.wait(lambda: site.chargers["1"].state == "B", 10)
        site.tap("1", UNKNOWN_TOKEN)
        rejected = site.cloud.wait_event("auth_rejected", timeout=10, token=UNKNOWN_TOKEN)
        assert rejected["data"]["reason"] == "blocked" and rejected["data"]["evse_id"] == "1"
        assert [r["token"] for r in site.cloud.auth_requests] == [UNKNOWN_TOKEN]
        time.sleep(1.5)
        assert site.chargers["1"].state == "B" and site.chargers["1"].setpoint_a == 0
        assert site.cloud.find_event("session_started") is None


def test_another_card_unknown_or_blocked_does_not_stop_a_running_session(tmp_path):
    with SimulatedSite(tmp_path / "site", online_timeout_s=5) as site:
        site.cloud.auth_answers = {UNKNOWN_TOKEN: ("unknown", None)}
        site.publish_lists()
        assert lists_applied(site), site.agent_log_tail()
        charger = site.chargers["1"]
        site.tap("1", KARI)
        time.sleep(0.3)
        site.plug_and_charge("1")
        started = site.cloud.wait_event("session_started", timeout=10)
        assert site.wait(lambda: charger.state == "C", 10)
        for token in (PER_BLOCKED, UNKNOWN_TOKEN):
            time.sleep(1.0)  # cards apart, as people tap them
            site.tap("1", token)
            time.sleep(2.0)
            assert charger.state == "C" and charger.setpoint_a == 16, f"{token} stopped the session"
            assert site.cloud.find_event("session_ended") is None, f"{token} ended the session"
            assert token in agent_log(site), f"the agent never read {token}"
        energy = charger.energy_wh
        time.sleep(0.5)
        assert charger.energy_wh > energy  # still charging
        time.sleep(1.0)
        site.tap("1", KARI)  # only the session's own card ends it
        ended = site.cloud.wait_event("session_ended", timeout=10)
        assert ended["data"]["session_id"] == started["data"]["session_id"]
        assert ended["data"]["reason"] == "local"


# -- the end of a session -------------------------------------------------------------------------

def test_the_last_meter_values_are_flushed_when_a_session_ends(tmp_path):
    interval = 5  # the smallest meter_values_interval_s the config accepts
    with SimulatedSite(tmp_path / "site", meter_values_interval_s=interval) as site:
        site.publish_lists()
        assert lists_applied(site), site.agent_log_tail()
        charger = site.chargers["1"]
        site.tap("1", KARI)
        time.sleep(0.3)
        site.plug_and_charge("1")
        started = site.cloud.wait_event("session_started", timeout=10)
        session_id = started["data"]["session_id"]
        assert site.cloud.wait_for(lambda: events_of(site, "meter_values", session_id), interval + 10), \
            "no meter_values at the interval"
        # Half-way to the next flush: the car stops drawing (a sample) and is unplugged.
        time.sleep(interval / 2)
        charger.set_ev_requesting(False)
        time.sleep(0.7)
        site.unplug("1")
        ended = site.cloud.wait_event("session_ended", timeout=15, session_id=session_id)
        batches = events_of(site, "meter_values", session_id)
        assert all(started["seq"] < b["seq"] < ended["seq"] for b in batches)
        sent = [(s["ts"], s["energy_wh"]) for b in batches for s in b["data"]["samples"]]
        with Store(site.data_dir, read_only=True) as store:
            recorded = [(s["ts"], s["energy_wh"]) for s in store.samples(session_id)]
        # The start reading is in session_started; every later sample goes out once, the last
        # ones (since the last interval's flush) in a final batch before session_ended.
        assert sent == recorded[1:], (sent, recorded)
        assert len(batches) >= 2
        last = batches[-1]["data"]["samples"][-1]
        assert last["power_w"] == 0 and last["energy_wh"] == ended["data"]["meter_stop_wh"]


def _session(session_id: str = "s1") -> SessionRecord:
    return SessionRecord(id=session_id, evse_id="1", status="active", token="04A2B3C4D5", user_id="u-1",
                         group="residents", user_name="Kari", auth="local_list",
                         started_at="2026-01-01T10:00:00Z", meter_start_wh=1000, tariff_id="T-RES",
                         tariffs_version=1, offline_start=False, clock_synced=True)


ENDED = {"ended_at": "2026-01-01T11:00:00Z", "meter_stop_wh": 12000, "energy_wh": 11000,
         "reason": "local"}


def session_and_events(data_dir) -> tuple[str, tuple[str, ...]]:
    with Store(data_dir) as store:
        status = store.db.execute("SELECT status FROM sessions WHERE id = 's1'").fetchone()[0]
        return status, tuple(e.type for e in store.pending_events())


RUNNING = ("active", ("session_started",))
ENDED_AND_REPORTED = ("ended", ("session_started", "session_ended"))


def test_a_full_disk_while_ending_a_session_leaves_it_running_not_ended_unreported(tmp_path):
    with Store(tmp_path) as store:
        store.start_session(_session(), event=cloud_events.session_started(_session(), ts="2026-01-01T10:00:00Z", offline=False))
        # The database may not grow any more: the session row fits where it is, its event does not.
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages}")
        event_data = {"session_id": "s1", "charging_periods": ["x" * 1000] * 100}
        with pytest.raises(sqlite3.OperationalError, match="full"):
            store.end_session("s1", ended=ENDED, event=Event("session_ended", event_data, ENDED["ended_at"], False))
    assert session_and_events(tmp_path) == RUNNING
    # Space again: the retry ends it, once, with its event.
    with Store(tmp_path) as store:
        store.end_session("s1", ended=ENDED, event=Event("session_ended", event_data, ENDED["ended_at"], False))
    assert session_and_events(tmp_path) == ENDED_AND_REPORTED


_END_AND_DIE = """
import json, os, signal, sys
from edge_agent.cloud import Event, events
from edge_agent.store import SessionRecord, Store
store = Store(sys.argv[1])
record = SessionRecord(**json.loads(sys.argv[3]))
store.start_session(record, event=events.session_started(record, ts="2026-01-01T10:00:00Z", offline=False))
kill_at, statements = int(sys.argv[2]), []
def before_each_statement(sql):
    statements.append(sql)
    if len(statements) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # a power cut just before this statement runs
store.db.conn.set_trace_callback(before_each_statement)
ended = json.loads(sys.argv[4])
store.end_session("s1", ended=ended, event=Event("session_ended", {"session_id": "s1"}, ended["ended_at"], False))
store.db.conn.set_trace_callback(None)
print(len(statements), flush=True)
"""


def test_a_crash_at_any_point_of_a_session_end_leaves_it_running_or_ended_and_reported(tmp_path):
    record = json.dumps(dataclasses.asdict(_session()))

    def end_and_die(kill_at: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", _END_AND_DIE, str(tmp_path / f"kill-{kill_at}"),
                               str(kill_at), record, json.dumps(ENDED)], capture_output=True, text=True,
                              timeout=60)

    whole = end_and_die(0)
    assert whole.returncode == 0, whole.stderr
    statements = int(whole.stdout)
    assert session_and_events(tmp_path / "kill-0") == ENDED_AND_REPORTED
    outcomes = []
    for kill_at in range(1, statements + 1):
        died = end_and_die(kill_at)
        assert died.returncode == -9, died.stderr
        outcome = session_and_events(tmp_path / f"kill-{kill_at}")
        assert outcome in (RUNNING, ENDED_AND_REPORTED), f"SIGKILL before statement {kill_at} of {statements} left {outcome}"
        outcomes.append(outcome[0])
    assert "active" in outcomes  # the kills did land inside the end


# -- the durability setting -----------------------------------------------------------------------

def synchronous(store: Store) -> int:
    return int(store.db.execute("PRAGMA synchronous").fetchone()[0])


def test_an_acknowledgement_restores_full_durability_for_what_follows(tmp_path):
    FULL = 2  # noqa: N806 - PRAGMA synchronous=FULL, by SQLite's name
    with Store(tmp_path) as store:
        assert synchronous(store) == FULL
        events = [store.append_event(Event("t", {"i": i}, "2026-01-01T00:00:00Z", False)) for i in range(3)]
        assert store.acknowledge([events[0].id]) == [events[0].seq]
        assert synchronous(store) == FULL
        assert store.acknowledge(["no-such-id"]) == []
        assert synchronous(store) == FULL
        # Also when the acknowledgement itself fails.
        store.db.execute("CREATE TEMP TRIGGER refuse_ack BEFORE DELETE ON outbox "
                         "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        with pytest.raises(sqlite3.DatabaseError, match="refused"):
            store.acknowledge([events[1].id])
        assert synchronous(store) == FULL
        store.db.execute("DROP TRIGGER refuse_ack")
        # The session that follows is committed with FULL.
        store.start_session(_session(), event=cloud_events.session_started(_session(), ts="2026-01-01T10:00:00Z", offline=False))
        assert synchronous(store) == FULL


# -- start-up with a car already plugged in -------------------------------------------------------

class SchneiderSite(SimulatedSite):
    """EVSE 1 is a Schneider EVlink Pro AC (setpoint 4004 reads 99 while not charging)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A long life-bit timeout: the charger must not fall back to its safe current (0 A at
        # power-up) before the agent is up, which would hide what the agent does.
        self.chargers["1"] = SimCharger("schneider-evlink-pro-ac", speed=self.speed, energy_wh=1_000_000,
                                        life_bit_timeout_s=600)
        self.initial_energy_wh["1"] = 1_000_000

    def config_text(self) -> str:
        return super().config_text().replace("model: bender-cc613", "model: schneider-evlink-pro-ac")


def stop_written(charger: SimCharger) -> bool:
    control = charger.regmap.control
    return control.stop_value in charger.writes_to(charger.regmap.registers[control.register].address)


def first_stop(charger: SimCharger) -> float:
    """When the agent's stop value reached the charger; nothing written before it may offer
    current (a fail-safe current of 0 may go first: no timeout can then give current either)."""
    control = charger.regmap.control
    setpoint = charger.regmap.registers[control.register].address
    safe = {charger.regmap.registers[role].address for role in charger.regmap.failsafe.current_roles}
    writes = list(charger.writes)
    stop = next((i for i, (_, reg, value) in enumerate(writes) if (reg, value) == (setpoint, control.stop_value)), None)
    assert stop is not None, f"{charger.model}: the stop value was never written: {writes}"
    assert all(reg in safe and value == 0 for _, reg, value in writes[:stop]), \
        f"{charger.model}: written before the stop value: {writes[:stop]}"
    return writes[stop][0]


def test_a_car_plugged_in_before_the_agent_starts_gets_nothing_until_a_tap(tmp_path):
    site = SchneiderSite(tmp_path / "site")
    site.start(agent=False)
    try:
        schneider, heidelberg = site.chargers["1"], site.chargers["2"]
        site.publish_lists()
        schneider.plug()  # plugged, not drawing yet: the Schneider reads 99, no setpoint to see
        site.plug_and_charge("2")  # plugged and drawing what the charger offers at power-up
        assert schneider.setpoint_a == 32 and heidelberg.setpoint_a == 16 and heidelberg.state == "C"
        seen: list[tuple[float, str, str, float]] = []
        watching = threading.Event()

        def watch() -> None:  # what the cars see, every 10 ms
            while not watching.is_set():
                for evse, charger in (("1", schneider), ("2", heidelberg)):
                    seen.append((time.monotonic(), evse, charger.state, charger.setpoint_a))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            site.start_agent()
            assert site.wait(lambda: stop_written(schneider) and stop_written(heidelberg), 20), \
                f"no stop value written: {schneider.writes[:5]} {heidelberg.writes[:5]}\n" + site.agent_log_tail()
            assert lists_applied(site), site.agent_log_tail()
            stopped_at = {evse: first_stop(charger) for evse, charger in (("1", schneider), ("2", heidelberg))}
            time.sleep(1.0)
            energy = {"1": schneider.energy_wh, "2": heidelberg.energy_wh}
            schneider.set_ev_requesting(True)  # the car now wants current too
            time.sleep(3.0)
            assert schneider.energy_wh == energy["1"] and heidelberg.energy_wh == energy["2"]
            tapped_at = time.monotonic()
            site.tap("1", KARI)
            assert site.wait(lambda: schneider.state == "C", 10), site.agent_log_tail()
            started = site.cloud.wait_event("session_started", timeout=10)
            assert started["data"]["evse_id"] == "1"
        finally:
            watching.set()
            watcher.join()
        offered = [(t, evse, state, amps) for t, evse, state, amps in seen
                   if t > stopped_at[evse] and not (evse == "1" and t >= tapped_at)]
        assert offered and all(state != "C" and amps == 0 for _, _, state, amps in offered), \
            [s for s in offered if s[2] == "C" or s[3]][:5]
        assert heidelberg.state == "B" and heidelberg.setpoint_a == 0
    finally:
        site.close()
