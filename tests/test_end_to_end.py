"""The whole path on real parts: mosquitto, pymodbus servers over TCP and RTU (socat pty),
RDM6300 readers on ptys, SQLite on disk, and the agent as its own process."""
import json
import time

import pytest

from hardware_sim.site import UNKNOWN_TOKEN, SimulatedSite
from helpers import edge_agent, lists_applied

KARI, OLA, PER_BLOCKED = "04A2B3C4D5", "0A1B2C3D4E", "DEADBEEF01"


@pytest.fixture
def site(tmp_path):
    with SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2, ack_timeout_s=5) as s:
        yield s


def unique(site: SimulatedSite, type_: str) -> list[dict]:
    return sorted((e for e in site.cloud.unique_events if e["type"] == type_), key=lambda e: e["seq"])


def register_wh(site: SimulatedSite, evse: str) -> int:
    return int(site.chargers[evse].energy_wh)


def charge_session(site: SimulatedSite, evse: str, token: str, *, seconds: float, stop: str) -> None:
    """Tap, plug, charge, and end by unplugging or by tapping the same card again."""
    site.tap(evse, token)
    time.sleep(0.3)
    site.plug_and_charge(evse)
    assert site.wait(lambda: site.chargers[evse].state == "C", 10), site.agent_log_tail()
    time.sleep(seconds)
    if stop == "unplug":
        site.unplug(evse)
    else:
        site.tap(evse, token)
        assert site.wait(lambda: site.chargers[evse].state != "C", 10), site.agent_log_tail()
        time.sleep(0.5)
        site.unplug(evse)


def test_online_then_offline_sessions_all_reach_the_cloud(site):
    site.publish_lists()
    assert lists_applied(site), site.agent_log_tail()

    # Online: tap then plug on the Bender (Modbus TCP), unplug to end.
    charge_session(site, "1", KARI, seconds=2, stop="unplug")
    online_end = site.cloud.wait_event("session_ended", timeout=10)
    assert online_end["offline"] is False
    assert online_end["data"]["meter_stop_wh"] == register_wh(site, "1")

    # The cloud goes away.
    site.broker.stop()
    assert site.wait(lambda: "cloud link down" in site.agent_log_tail(200), 10)
    # Offline session on each charger: Heidelberg over RTU plug first then tap, end by tap.
    site.plug_and_charge("2")
    time.sleep(0.5)
    site.tap("2", OLA)
    assert site.wait(lambda: site.chargers["2"].state == "C", 10), site.agent_log_tail()
    time.sleep(2)
    site.tap("2", OLA)
    assert site.wait(lambda: site.chargers["2"].state != "C", 10), site.agent_log_tail()
    time.sleep(0.5)
    site.unplug("2")
    charge_session(site, "1", KARI, seconds=1.5, stop="unplug")
    time.sleep(1.0)  # let the agent see the unplug before the next card
    # A blocked card and an unknown card are refused offline.
    site.tap("1", PER_BLOCKED)
    time.sleep(2.5)  # a different card within the same reader's window is read anyway; keep them apart
    site.tap("1", UNKNOWN_TOKEN)
    time.sleep(1.0)
    assert site.chargers["1"].state == "A"

    site.broker.start()
    assert site.cloud.wait_connected(15)
    assert site.cloud.wait_for(lambda: len(unique(site, "session_ended")) == 3, 20), site.agent_log_tail()
    assert site.cloud.wait_for(lambda: len(unique(site, "auth_rejected")) == 2, 10)
    assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("outbox_pending") == 0, 15)

    events = sorted(site.cloud.unique_events, key=lambda e: e["seq"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq has gaps"
    ended = unique(site, "session_ended")
    started = unique(site, "session_started")
    assert [e["data"]["session_id"] for e in started] == [e["data"]["session_id"] for e in ended]
    offline_ended = ended[1:]
    assert all(e["offline"] for e in offline_ended) and all(e["offline"] for e in started[1:])
    by_evse = {e["data"]["evse_id"]: e for e in offline_ended}
    assert by_evse["1"]["data"]["meter_stop_wh"] == register_wh(site, "1")
    assert by_evse["2"]["data"]["meter_stop_wh"] == register_wh(site, "2")
    assert by_evse["2"]["data"]["reason"] == "local" and by_evse["1"]["data"]["reason"] == "ev_disconnected"
    for e in ended:
        d = e["data"]
        assert d["energy_wh"] == d["meter_stop_wh"] - d["meter_start_wh"] > 0
        # Residents pay 2.00 NOK/kWh + 25 % VAT, the exact energy, no rounding.
        assert d["cost"]["tariff_id"] == "T-RES" and d["cost"]["currency"] == "NOK"
        assert d["cost"]["excl_vat"] == pytest.approx(round(d["energy_wh"] * 2.0 / 1000, 4), abs=1e-9)
        assert d["cost"]["incl_vat"] == pytest.approx(round(d["energy_wh"] * 2.5 / 1000, 4), abs=1e-9)
    rejected = {e["data"]["token"]: e for e in unique(site, "auth_rejected")}
    assert rejected[PER_BLOCKED]["data"]["reason"] == "blocked"
    assert rejected[UNKNOWN_TOKEN]["data"]["reason"] == "offline_unknown"
    assert all(e["offline"] for e in rejected.values())

    out = edge_agent("outbox", "--data-dir", site.data_dir, "--json", check=True)
    assert json.loads(out.stdout)["pending"] == 0


def test_sigkill_mid_session_then_restart_ends_it_once_with_exact_energy(site):
    site.publish_lists()
    assert lists_applied(site), site.agent_log_tail()
    site.tap("1", KARI)
    time.sleep(0.3)
    site.plug_and_charge("1")
    started = site.cloud.wait_event("session_started", timeout=10)
    time.sleep(1.5)
    site.kill_agent()
    time.sleep(2)  # the car keeps charging while the gateway is dead (the charger's fail-safe current)
    site.start_agent()
    assert site.wait(lambda: "session" in site.agent_log_tail(10) and "running when the agent stopped"
                     in site.agent_log_tail(50), 15), site.agent_log_tail()
    time.sleep(1.5)
    assert site.chargers["1"].state == "C"
    site.unplug("1")
    ended = site.cloud.wait_event("session_ended", timeout=15)
    time.sleep(1.5)
    assert ended["data"]["session_id"] == started["data"]["session_id"]
    assert ended["data"]["reason"] == "ev_disconnected"
    assert ended["data"]["meter_stop_wh"] == register_wh(site, "1")
    assert ended["data"]["energy_wh"] == register_wh(site, "1") - started["data"]["meter_start_wh"]
    assert len(unique(site, "session_ended")) == 1 and len(unique(site, "session_started")) == 1
    seqs = sorted(e["seq"] for e in site.cloud.unique_events)
    assert seqs == list(range(1, len(seqs) + 1))


def test_session_unplugged_while_agent_dead_ends_with_power_loss_at_the_startup_reading(site):
    site.publish_lists()
    assert lists_applied(site), site.agent_log_tail()
    site.plug_and_charge("2")
    time.sleep(0.5)
    site.tap("2", OLA)
    started = site.cloud.wait_event("session_started", timeout=10)
    time.sleep(1.5)
    site.kill_agent()
    time.sleep(1)
    site.unplug("2")
    stop_register = register_wh(site, "2")
    site.start_agent()
    ended = site.cloud.wait_event("session_ended", timeout=15)
    assert ended["data"]["reason"] == "power_loss"
    assert ended["data"]["meter_stop_wh"] == stop_register
    assert ended["data"]["energy_wh"] == stop_register - started["data"]["meter_start_wh"] > 0


def test_online_authorization_and_remote_commands(site):
    site.cloud.auth_answers = {UNKNOWN_TOKEN: ("accepted", {"id": "u-9", "name": "Visitor", "group": "guests"})}
    site.publish_lists()
    assert lists_applied(site), site.agent_log_tail()
    site.chargers["1"].plug()
    site.tap("1", UNKNOWN_TOKEN)
    started = site.cloud.wait_event("session_started", timeout=10)
    assert started["data"]["auth"] == "online" and started["data"]["tariff_id"] == "T-GUEST"
    assert site.cloud.auth_requests and site.cloud.auth_requests[0]["token"] == UNKNOWN_TOKEN

    request = site.cloud.send_command("stop", evse_id="1")
    assert site.cloud.wait_result(request, 10)["status"] == "accepted"
    ended = site.cloud.wait_event("session_ended", timeout=10)
    assert ended["data"]["reason"] == "remote"
    # Guests pay a 10.00 NOK start fee, so even a short session costs at least that.
    assert ended["data"]["cost"]["excl_vat"] >= 10.0
    # The same request again: answered the same way, not carried out twice.
    again = site.cloud.send_command("stop", request_id=request, evse_id="1")
    assert site.cloud.wait_for(lambda: len([r for r in site.cloud.results if r["request_id"] == again]) == 2, 10)
    assert len(unique(site, "session_ended")) == 1

    # App start for a user; the vehicle plugs in afterwards.
    site.chargers["1"].unplug()
    time.sleep(0.5)
    request = site.cloud.send_command("start", evse_id="2", user_id="u-1001")
    assert site.cloud.wait_result(request, 10)["status"] == "accepted"
    site.plug_and_charge("2")
    started = site.cloud.wait_event("session_started", timeout=10, evse_id="2")
    assert started["data"]["auth"] == "remote" and started["data"]["user_id"] == "u-1001"

    expired = site.cloud.send_command("stop", evse_id="2", expires_at="2020-01-01T00:00:00Z")
    assert site.cloud.wait_result(expired, 10)["status"] == "expired"
    bad = site.cloud.send_command("stop")
    assert site.cloud.wait_result(bad, 10)["status"] == "error"
    unknown_evse = site.cloud.send_command("set_availability", evse_id="9", available=False)
    assert site.cloud.wait_result(unknown_evse, 10)["status"] == "rejected"
    retained = site.cloud.send_command("stop", evse_id="2", retain=True)
    time.sleep(1.0)
    assert not any(r["request_id"] == retained for r in site.cloud.results)
    assert site.chargers["2"].state == "C"
    assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("rejected_messages", 0) >= 1, 10)


def test_a_silent_charger_faults_alone_and_comes_back(site):
    site.publish_lists()
    assert lists_applied(site), site.agent_log_tail()
    site.tap("1", KARI)
    time.sleep(0.3)
    site.plug_and_charge("1")
    site.cloud.wait_event("session_started", timeout=10)
    site.chargers["2"].set_silent(True)
    fault = site.cloud.wait_event("evse_fault", timeout=15, evse_id="2")
    assert "not responding" in fault["data"]["error"]
    assert site.cloud.wait_for(lambda: site.cloud.evse_status.get("2", {}).get("status") == "Faulted", 10)
    # The other charger, on another bus, is untouched: still charging, still polled.
    energy_before = site.cloud.evse_status["1"]["energy_wh"]
    assert site.cloud.wait_for(lambda: site.cloud.evse_status["1"]["energy_wh"] > energy_before, 15)
    assert site.cloud.evse_status["1"]["status"] == "Charging"
    site.chargers["2"].set_silent(False)
    cleared = site.cloud.wait_event("evse_fault", timeout=15, evse_id="2", error=None)
    assert cleared["seq"] > fault["seq"]
    assert site.cloud.wait_for(lambda: site.cloud.evse_status["2"]["status"] == "Available", 10)
    log = site.agent_log.read_text()
    assert log.count("EVSE 2 unavailable") == 1 and log.count("EVSE 2 back") == 1


def test_a_site_wide_reader_gives_the_card_to_the_next_vehicle_plugged_in(tmp_path):
    site = SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2)
    site.site_wide_reader = True
    with site:
        assert 'evse_id: "1"' not in site.config_path.read_text().split("readers:")[1]
        site.publish_lists()
        assert lists_applied(site), site.agent_log_tail()
        site.tap("1", OLA)  # reader 1 hangs by the garage door
        time.sleep(1.0)
        site.plug_and_charge("2")
        started = site.cloud.wait_event("session_started", timeout=10)
        assert started["data"]["evse_id"] == "2" and started["data"]["user_id"] == "u-1002"
        time.sleep(2.5)
        site.tap("1", OLA)  # the same card at the same reader ends it
        ended = site.cloud.wait_event("session_ended", timeout=10)
        assert ended["data"]["reason"] == "local" and ended["data"]["evse_id"] == "2"


def test_two_sessions_share_the_site_fuse_and_the_cloud_can_lower_it(tmp_path):
    site = SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2)
    site.extra_config = "site:\n  max_current_a: 24\n  phases: 3\n"
    with site:
        site.publish_lists()
        assert lists_applied(site), site.agent_log_tail()
        one, two = site.chargers["1"], site.chargers["2"]
        worst = {"sum": 0.0}
        import threading

        stop = threading.Event()

        def watch() -> None:  # the fuse's view: what both chargers offer at every moment
            while not stop.is_set():
                worst["sum"] = max(worst["sum"], one.setpoint_a + two.setpoint_a)
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            site.tap("1", KARI)
            time.sleep(0.3)
            site.plug_and_charge("1")
            assert site.wait(lambda: one.setpoint_a == 16 and one.state == "C", 10), site.agent_log_tail()
            site.plug_and_charge("2")
            time.sleep(0.3)
            site.tap("2", OLA)
            assert site.wait(lambda: one.setpoint_a == 12 and two.setpoint_a == 12, 15), site.agent_log_tail()
            request = site.cloud.send_command("set_site_limit", max_current_a=12)
            assert site.cloud.wait_result(request, 10)["status"] == "accepted"
            assert site.wait(lambda: one.setpoint_a == 6 and two.setpoint_a == 6, 15), site.agent_log_tail()
            assert site.cloud.wait_for(lambda: "load_management" in (site.cloud.state or {}), 10)
        finally:
            stop.set()
            watcher.join()
        assert worst["sum"] <= 24.0, f"the fuse saw {worst['sum']} A offered"


def test_a_card_read_by_the_chargers_own_reader_starts_and_ends_a_session(tmp_path):
    site = SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2)
    site.builtin_reader = True
    with site:
        site.publish_lists()
        assert lists_applied(site), site.agent_log_tail()
        bender = site.chargers["1"]
        bender.plug()
        bender.set_ev_requesting(True)
        bender.present_card("04:a2:b3:c4:d5")  # the Bender's reader, in its own format
        started = site.cloud.wait_event("session_started", timeout=10)
        assert started["data"]["token"] == KARI and started["data"]["evse_id"] == "1"
        bender.present_card(None)
        time.sleep(2.5)
        bender.present_card("04A2B3C4D5")
        ended = site.cloud.wait_event("session_ended", timeout=10)
        assert ended["data"]["reason"] == "local"
