"""Issue 12's hostile input, each case on its own, against the agent as its own process (real
mosquitto, simulated chargers; hardware_sim.site.SimulatedSite):

- a command whose request_id, user_id or evse_id holds a lone surrogate gets exactly one answer,
  with its request_id when that field is usable and a detail naming the broken field;
- tariff lists with VAT 1e308 %, a price of 1e308 or a step_size of 1e308 are rejected whole
  (counted, logged with topic and field) and the list in force stays; OCPI's own free tariff
  (FLAT with step_size 0) is applied;
- with an unpriceable tariff forced into the store (as a database written by an older version
  could hold it), a cloud stop is accepted, the session ends with its energy, and session_ended
  says it was not priced; `edge-agent sessions` says so too.

tests/test_fuzz_seam.py and tests/test_fuzz_broker.py fuzz the same rules at random.
"""
from __future__ import annotations

import asyncio
import copy
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import InvalidOperation, Overflow

import pytest

from edge_agent.agent import Agent
from edge_agent.agent._billing import price_ended_session
from edge_agent.config import parse_config_text
from edge_agent.lists import apply_tariff_list
from edge_agent.pricing import MeterSample
from edge_agent.store import SessionRecord, Store
from hardware_sim.site import RESIDENTS, TARIFFS, SimulatedSite
from helpers import edge_agent

KARI = "04A2B3C4D5"


def lists_in_force(site: SimulatedSite, users: int, tariffs: int) -> bool:
    return site.cloud.wait_for(lambda: (site.cloud.state or {}).get("users_version") == users
                               and site.cloud.state.get("tariffs_version") == tariffs, 20)


def rejected(site: SimulatedSite) -> int:
    return site.cloud.state["rejected_messages"]


class Counted:
    """The rejections this module's messages must have caused so far (~/state lags up to 2 s)."""

    def __init__(self, site: SimulatedSite) -> None:
        self.site, self.expected = site, rejected(site)

    def more(self, n: int = 1) -> bool:
        self.expected += n
        return self.site.cloud.wait_for(lambda: rejected(self.site) == self.expected, 15)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with SimulatedSite(tmp_path_factory.mktemp("hostile"), gateway_id="gw-hostile") as s:
        s.publish_lists()
        assert lists_in_force(s, 1, 1), s.agent_log_tail()
        s.counted = Counted(s)
        yield s


@pytest.mark.parametrize(("field", "fields"), [
    ("request_id", {"request_id": "\ud800", "evse_id": "1", "user_id": "u-1001"}),
    ("user_id", {"request_id": "r-user", "evse_id": "1", "user_id": "\ud800"}),
    ("evse_id", {"request_id": "r-evse", "evse_id": "caf\udfff", "user_id": "u-1001"}),
    ("request_id", {"request_id": "ok\udbff", "evse_id": "1", "user_id": "u-1001"}),
])
def test_a_command_with_a_lone_surrogate_gets_exactly_one_answer(site, field, fields):
    cloud = site.cloud
    before = len(cloud.results)
    cloud.publish_raw("cmd/start", json.dumps(fields).encode())  # "\ud800" escaped: valid JSON
    assert cloud.wait_for(lambda: len(cloud.results) > before, 15) and site.counted.more(), site.agent_log_tail()
    time.sleep(1.0)  # and no second answer
    answers = cloud.results[before:]
    assert len(answers) == 1, answers
    answer = answers[0]
    assert answer["status"] == "error"
    assert answer["request_id"] == (None if field == "request_id" else fields["request_id"])
    assert answer["detail"].startswith(f"{field}: holds a lone UTF-16 surrogate"), answer
    assert site.cloud.evse_status["1"]["session_id"] is None  # not carried out


def test_the_same_surrogate_command_again_is_answered_the_same_way(site):
    cloud = site.cloud
    payload = json.dumps({"request_id": "r-again", "evse_id": "\ud800"}).encode()
    before = len(cloud.results)
    cloud.publish_raw("cmd/stop", payload)
    cloud.publish_raw("cmd/stop", payload)
    assert cloud.wait_for(lambda: len(cloud.results) >= before + 2, 15) and site.counted.more(2)
    time.sleep(0.5)
    first, second = ({k: v for k, v in r.items() if k != "received_at"} for r in cloud.results[before:])
    assert first == second and first["request_id"] == "r-again" and len(cloud.results) == before + 2


def _tariffs_with(path: tuple, value) -> dict:
    body = copy.deepcopy(TARIFFS)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


UNPRICEABLE_LISTS = {
    "vat": ((("tariffs", 0, "elements", 0, "price_components", 0, "vat"), 1e308),
            "tariffs[0]: elements[0].price_components[0].vat: must be a percentage from 0 to 100"),
    "price": ((("tariffs", 1, "elements", 0, "price_components", 1, "price"), 1e308),
              "tariffs[1]: elements[0].price_components[1].price: must be a number from 0 to 1,000,000"),
    "step_size": ((("tariffs", 1, "elements", 0, "price_components", 2, "step_size"), 1e308),
                  "tariffs[1]: elements[0].price_components[2].step_size: must be an integer from 1 to 1,000,000"),
    "min_price": ((("tariffs", 0, "min_price"), {"excl_vat": 1e308}),
                  "tariffs[0]: min_price.excl_vat: must be a number from 0 to 1,000,000"),
}


@pytest.mark.parametrize("name", sorted(UNPRICEABLE_LISTS))
def test_an_unpriceable_tariff_list_is_rejected_whole_and_the_old_one_stays(site, name):
    (path, value), message = UNPRICEABLE_LISTS[name]
    site.publish_tariffs(2, _tariffs_with(path, value))
    assert site.counted.more(), site.agent_log_tail()
    assert site.cloud.state["tariffs_version"] == 1
    assert f"rejected message on edge/v1/gw-hostile/config/tariffs: {message}" in site.agent_log.read_text()


def test_ocpi_free_tariff_with_flat_step_size_0_is_applied(site):
    free = {"id": "T-FREE", "currency": "EUR", "country_code": "NL", "party_id": "ALL",
            "last_updated": "2026-01-01T00:00:00Z",
            "elements": [{"price_components": [{"type": "FLAT", "price": 0.00, "step_size": 0}]}]}
    site.publish_tariffs(3, {"groups": {"residents": "T-FREE"}, "default": "T-FREE", "tariffs": [free]})
    assert lists_in_force(site, 1, 3), site.agent_log_tail()
    assert rejected(site) == site.counted.expected


# -- a session whose tariff cannot price it -----------------------------------------------------

FORCED_VERSION = 5


def test_a_stop_ends_a_session_its_tariff_cannot_price(tmp_path):
    """The tariff is written to the store directly, past every check, as an older version of the
    agent could have stored it; the agent then starts on that database."""
    unpriceable = _tariffs_with(("tariffs", 0, "elements", 0, "price_components", 0, "price"), 1e308)
    site = SimulatedSite(tmp_path, gateway_id="gw-unpriced")
    with Store(site.data_dir) as store:
        store.replace_tariffs(FORCED_VERSION, {"version": FORCED_VERSION, **unpriceable})
    with site:
        cloud = site.cloud
        cloud.publish_users(1, RESIDENTS)
        assert lists_in_force(site, 1, FORCED_VERSION), site.agent_log_tail()

        site.tap("1", KARI)
        time.sleep(0.3)
        site.plug_and_charge("1")
        started = cloud.wait_event("session_started", timeout=15)["data"]
        assert (started["tariff_id"], started["tariffs_version"]) == ("T-RES", FORCED_VERSION)
        assert site.wait(lambda: site.chargers["1"].state == "C", 10)
        time.sleep(3)  # ~150 Wh at the simulation's speed
        status = cloud.evse_status["1"]
        assert status["session_id"] == started["session_id"] and status["cost_so_far"] is None

        request_id = cloud.send_command("stop", evse_id="1")
        answer = cloud.wait_result(request_id, timeout=15)
        assert answer["status"] == "accepted", (answer, site.agent_log_tail())
        ended = cloud.wait_event("session_ended", timeout=15, session_id=started["session_id"])["data"]
        assert site.wait(lambda: site.chargers["1"].state != "C", 10)
        assert ended["reason"] == "remote"
        assert ended["meter_stop_wh"] == int(site.chargers["1"].energy_wh)
        assert ended["energy_wh"] == ended["meter_stop_wh"] - started["meter_start_wh"] > 50
        cost = ended["cost"]
        assert (cost["currency"], cost["excl_vat"], cost["incl_vat"], cost["tariff_id"]) == ("NOK", 0, 0, "T-RES")
        assert cost["pricing_error"].startswith(f"tariff T-RES of list version {FORCED_VERSION} cannot price it: "
                                                "elements[0].price_components[0].price: must be a number")
        assert cost["energy"]["quantity"] == ended["energy_wh"] and cost["energy"]["incl_vat"] == 0
        assert ended["charging_s"] > 0
        assert cloud.wait_for(lambda: cloud.evse_status["1"]["session_id"] is None, 15)

        # The session row says the same, and the technician sees it.
        out = edge_agent("sessions", "--config", site.config_path)
        assert out.returncode == 0, out.stderr
        assert "unpriced" in out.stdout.splitlines()[-1], out.stdout
        assert "Traceback" not in site.agent_log.read_text()


def test_edge_agent_price_on_an_unpriceable_tariff_is_a_clear_error(tmp_path):
    tariff = _tariffs_with(("tariffs", 0, "elements", 0, "price_components", 0, "price"), 1e308)["tariffs"][0]
    cdr = {"start_date_time": "2026-03-01T10:00:00Z", "end_date_time": "2026-03-01T11:00:00Z",
           "charging_periods": [{"start_date_time": "2026-03-01T10:00:00Z",
                                 "dimensions": [{"type": "ENERGY", "volume": 10}]}]}
    huge_cdr = json.loads(json.dumps(cdr).replace('"volume": 10', '"volume": 1e308'))
    far_cdr = {**cdr, "start_date_time": "9999-12-31T23:59:59-23:59"}
    cases = [(tariff, cdr, "elements[0].price_components[0].price: must be a number from 0 to 1,000,000"),
             (TARIFFS["tariffs"][0], huge_cdr, "charging_periods[0].dimensions[0].volume: must be a number"),
             (TARIFFS["tariffs"][0], far_cdr, "start_date_time: must be an RFC 3339 date-time")]
    for tariff_obj, cdr_obj, message in cases:
        (tmp_path / "tariff.json").write_text(json.dumps(tariff_obj), encoding="utf-8")
        (tmp_path / "cdr.json").write_text(json.dumps(cdr_obj), encoding="utf-8")
        out = edge_agent("price", "--tariff", tmp_path / "tariff.json", "--cdr", tmp_path / "cdr.json")
        assert (out.returncode, out.stdout) == (1, ""), out
        assert out.stderr.startswith(f"cannot price: {message}") and "Traceback" not in out.stderr
    (tmp_path / "tariff.json").write_bytes(b"\xff\xfe{")
    out = edge_agent("price", "--tariff", tmp_path / "tariff.json", "--cdr", tmp_path / "cdr.json")
    assert out.returncode == 2 and out.stderr.startswith(f"cannot read input: {tmp_path / 'tariff.json'}: not valid")


@pytest.mark.parametrize("failure", [InvalidOperation([InvalidOperation]), Overflow("too big"),
                                     OverflowError("date value out of range"), RuntimeError("a bug of ours")],
                         ids=["InvalidOperation", "Overflow", "OverflowError", "RuntimeError"])
def test_whatever_fails_in_pricing_the_session_ends_unpriced(tmp_path, monkeypatch, failure):
    """Pricing a session at its end never raises: any failure of the pricer (here forced, as no tariff that passes
    the checks makes the Decimal arithmetic fail any more) gives an unpriced session."""
    config = parse_config_text(f"""\
gateway_id: gw-price
timezone: Europe/Oslo
data_dir: {tmp_path / "data"}
cloud:
  host: 127.0.0.1
  port: 1
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 127.0.0.1
    port: 1
""")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    site = Agent(config)
    try:
        apply_tariff_list(site.store, {"version": 1, **TARIFFS})
        record = SessionRecord(id="s-1", evse_id="1", status="active", token=KARI, user_id="u-1001",
                               group="residents", user_name="Kari", auth="local_list",
                               started_at="2026-03-01T10:00:00Z", meter_start_wh=1000, tariff_id="T-RES",
                               tariffs_version=1, offline_start=False, clock_synced=True)
        start = datetime(2026, 3, 1, 10, tzinfo=UTC)
        samples = [MeterSample(ts=start, energy_wh=1000, power_w=0, charging=False),
                   MeterSample(ts=start + timedelta(minutes=1), energy_wh=1000, power_w=7000, charging=True),
                   MeterSample(ts=start + timedelta(hours=1, minutes=1), energy_wh=8000, power_w=None, charging=False)]

        def broken(*args, **kwargs):
            raise failure

        monkeypatch.setattr("edge_agent.agent._billing.price_session", broken)
        priced = price_ended_session(site.store, record, samples, tz=config.timezone)
        cost = priced.cost_json
        json.dumps(cost)
        assert (cost["currency"], cost["excl_vat"], cost["incl_vat"], cost["tariff_id"]) == ("NOK", 0, 0, "T-RES")
        assert cost["pricing_error"].startswith(
            f"tariff T-RES of list version 1 cannot price it: {type(failure).__name__}")
        assert cost["energy"]["quantity"] == 7000 and priced.charging_s == 3600
    finally:
        loop.run_until_complete(site.user_lists.aclose())
        site.store.close()
        loop.close()
        asyncio.set_event_loop(None)
