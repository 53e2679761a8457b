"""The cloud's set_site_limit survives a restart until its `until`, on real parts: mosquitto, a
Bender on Modbus TCP and a Heidelberg on Modbus RTU (socat pty) sharing a 24 A site, and the agent
as its own process, SIGKILLed in the middle of the lowered limit."""
import math
import threading
import time
from datetime import UTC, datetime, timedelta

from edge_agent.loadmanagement._runner import SITE_LIMIT_META
from edge_agent.store import Store
from hardware_sim.site import SimulatedSite

KARI, OLA = "04A2B3C4D5", "0A1B2C3D4E"
LIMIT_S = 35  # from the command to its `until`: the restart happens well inside it


def limit_state(site: SimulatedSite) -> dict:
    return (site.cloud.state or {}).get("load_management") or {}


def saved_limit(site: SimulatedSite) -> str | None:
    with Store(site.data_dir, read_only=True) as store:
        return store.meta(SITE_LIMIT_META)


def test_a_lowered_site_limit_holds_across_a_sigkill_and_lifts_at_its_until(tmp_path):
    site = SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2)
    site.extra_config = "site:\n  max_current_a: 24\n  phases: 3\n"
    with site:
        site.publish_lists()
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("users_version") == 1
                                   and site.cloud.state.get("tariffs_version") == 1, 15), site.agent_log_tail()
        one, two = site.chargers["1"], site.chargers["2"]
        site.tap("1", KARI)
        time.sleep(0.3)
        site.plug_and_charge("1")
        site.plug_and_charge("2")
        time.sleep(0.3)
        site.tap("2", OLA)
        assert site.wait(lambda: one.setpoint_a == 12 and two.setpoint_a == 12, 20), site.agent_log_tail()

        until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=LIMIT_S)
        until_mono = time.monotonic() + LIMIT_S - 1
        request = site.cloud.send_command("set_site_limit", max_current_a=12,
                                          until=until.isoformat().replace("+00:00", "Z"))
        assert site.cloud.wait_result(request, 10)["status"] == "accepted"
        assert site.wait(lambda: one.setpoint_a == 6 and two.setpoint_a == 6, 15), site.agent_log_tail()

        site.kill_agent()
        worst = {"sum": 0.0, "1": math.inf, "2": math.inf}
        stop = threading.Event()

        def watch() -> None:  # what the fuse and the cars see from the restart on (the fail-safe aside)
            while not stop.is_set() and time.monotonic() < until_mono:
                if not (one.failsafe_active or two.failsafe_active):
                    offers = {"1": one.setpoint_a, "2": two.setpoint_a}
                    worst["sum"] = max(worst["sum"], sum(offers.values()))
                    for evse_id, amps in offers.items():
                        worst[evse_id] = min(worst[evse_id], amps)
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        site.start_agent()
        watcher.start()
        try:
            assert site.cloud.wait_for(lambda: limit_state(site).get("limit_source") == "cloud"
                                       and site.agent is not None and site.cloud.state.get("online"), 20), \
                site.agent_log_tail()
            assert limit_state(site)["max_current_a"] == 12
            assert limit_state(site)["limit_until"] == until.isoformat().replace("+00:00", "Z")
            # Both sessions resumed where they were: charging, 6 A each, neither paused as a new arrival.
            assert site.cloud.wait_for(lambda: limit_state(site).get("allocated_a") == {"1": 6, "2": 6}
                                       and limit_state(site).get("waiting") == [], 15), limit_state(site)
            assert site.wait(lambda: one.state == "C" and two.state == "C" and one.setpoint_a == 6
                             and two.setpoint_a == 6 and not (one.failsafe_active or two.failsafe_active), 15), \
                site.agent_log_tail()
            watcher.join(max(0.0, until_mono - time.monotonic()) + 1)
        finally:
            stop.set()
            watcher.join()
        assert worst["sum"] <= 12.0, f"after the restart the chargers were offered {worst['sum']} A together"
        assert worst["1"] >= 6 and worst["2"] >= 6, f"a resumed session was paused: {worst}"

        # At `until` the configured limit returns, and nothing is left on disk to restore.
        assert site.wait(lambda: one.setpoint_a == 12 and two.setpoint_a == 12, 20), site.agent_log_tail()
        assert site.cloud.wait_for(lambda: limit_state(site).get("limit_source") == "configured", 10)
        assert site.wait(lambda: saved_limit(site) == "null", 10), saved_limit(site)


def test_a_saved_limit_past_its_until_is_dropped_one_without_until_kept_and_garbage_ignored(tmp_path):
    import json

    from edge_agent.config import parse_config_text
    from edge_agent.loadmanagement import LoadManagementLoop, site_plan

    config = parse_config_text("""\
gateway_id: gw-limit
timezone: Europe/Oslo
cloud:
  host: 127.0.0.1
site:
  max_current_a: 24
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 127.0.0.1
""")
    plan = site_plan(config)

    def restored(saved: object) -> tuple[object, str | None]:
        store.set_meta(SITE_LIMIT_META, saved if isinstance(saved, str) else json.dumps(saved))
        loop = LoadManagementLoop(plan=plan, chargers={"1": object()})  # restoring writes no charger
        limit = loop.keep_site_limit(store)
        return (None if limit is None else (limit.max_current_a, limit.until is None)), store.meta(SITE_LIMIT_META)

    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    with Store(tmp_path / "data") as store:
        assert restored({"max_current_a": 10, "until": past}) == (None, "null")
        assert restored({"max_current_a": 10, "until": None}) == ((10.0, True), json.dumps(
            {"max_current_a": 10.0, "until": None}))
        assert restored({"max_current_a": 30, "until": None}) == (None, "null")  # above the configured 24 A
        assert restored("not json") == (None, "null")
        store.set_meta(SITE_LIMIT_META, json.dumps({"max_current_a": 10, "until": None}))
        loop = LoadManagementLoop(plan=plan, chargers={"1": object()})
        loop.keep_site_limit(store)
        loop.set_site_limit(24)  # the cloud restores the configured limit: nothing left to restore
        assert store.meta(SITE_LIMIT_META) == "null"
