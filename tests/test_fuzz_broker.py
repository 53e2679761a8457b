"""Hostile input over a real broker to the agent process (SimulatedSite): the same kinds of
messages as the seam fuzz, fewer of them, end to end, lone surrogates in every string of every
inbound topic and unpriceable tariffs among them. A session started before the fuzz keeps
charging throughout. Afterwards the agent still runs, counted every rejection in ~/state,
answered every command once, kept its lists, stops that session on a cloud `stop`, and charges
the next car.

The first test publishes one hypothesis example per message; the second checks the outcome
(pytest runs them in file order and they share the module's site).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware_sim.site import SimulatedSite
from test_fuzz_seam import (  # the strategies of the seam fuzz (tests/ is on sys.path under pytest)
    COMMANDS,
    TARIFFS,
    expected_request_id,
    fresh_request_id,
    garbage,
    invalid_commands,
    invalid_full_lists,
    invalid_tariff_lists,
    is_object,
    is_text,
    json_values,
    surrogate_messages,
    valid_full_lists,
)

MESSAGES = 250
KARI = "04A2B3C4D5"
TOPICS = ["ack", "config/users", "config/users/delta", "config/tariffs", "auth/response", "cmd/stop", "cmd/start"]


@dataclass
class Ledger:
    site: SimulatedSite
    base: int
    session_id: str
    sent: int = 0
    rejects: int = 0
    commands: list[str | None] = field(default_factory=list)  # request ids expected on ~/result
    retained: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    with SimulatedSite(tmp_path_factory.mktemp("fuzz-site"), gateway_id="gw-fuzz") as site:
        site.publish_lists()
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("users_version") == 1
                                   and site.cloud.state.get("tariffs_version") == 1, 20), site.agent_log_tail()
        # A session that must go on charging through all of it.
        site.tap("1", KARI)
        time.sleep(0.3)
        site.plug_and_charge("1")
        started = site.cloud.wait_event("session_started", timeout=15, evse_id="1")
        assert site.wait(lambda: site.chargers["1"].state == "C", 10)
        yield Ledger(site, site.cloud.state["rejected_messages"], session_id=started["data"]["session_id"])


@settings(max_examples=MESSAGES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_publish_hostile_messages(ledger, data):
    cloud = ledger.site.cloud
    kind = data.draw(st.sampled_from(["garbage", "users", "tariffs", "command", "retained", "stale", "surrogate",
                                      "surrogate"]))
    if kind == "garbage":
        topic = data.draw(st.sampled_from(TOPICS))
        payload = data.draw(garbage())
        if is_object(payload):
            return
        cloud.publish_raw(topic, payload)
        ledger.rejects += 1
        if topic.startswith("cmd/"):
            ledger.commands.append(None)
    elif kind == "users":
        cloud.publish_raw("config/users", json.dumps(data.draw(invalid_full_lists(1))).encode())
        ledger.rejects += 1
    elif kind == "tariffs":
        cloud.publish_raw("config/tariffs", json.dumps(data.draw(invalid_tariff_lists(1))).encode())
        ledger.rejects += 1
    elif kind == "command":
        name, doc = data.draw(invalid_commands())
        cloud.publish_raw(f"cmd/{name}", json.dumps(doc).encode())
        ledger.rejects += 1
        request_id = doc.get("request_id")
        readable = isinstance(request_id, str) and 0 < len(request_id) <= 200 and is_text(request_id)
        ledger.commands.append(request_id if readable else None)
    elif kind == "retained":  # valid, and it would take EVSE 1 out of service: never carried out
        name = data.draw(st.sampled_from(sorted(COMMANDS)))
        fields = {**COMMANDS[name], **({"available": False} if name == "set_availability" else {}),
                  **({"user_id": "u-1001"} if name == "start" else {})}
        request_id = fresh_request_id()
        noise = data.draw(st.dictionaries(st.sampled_from(["note", "x", "π"]), json_values, max_size=2))
        cloud.send_command(name, request_id=request_id, retain=True, **noise, **fields)
        ledger.retained.append(request_id)
    elif kind == "surrogate":  # the lists in force are version 1 and stay so
        topic, doc = data.draw(surrogate_messages(1, 1))
        cloud.publish_raw(topic, json.dumps(doc).encode())
        ledger.rejects += 1
        if topic.startswith("cmd/"):
            ledger.commands.append(expected_request_id(doc))
    else:  # a valid list going backwards: ignored, not rejected
        cloud.publish_raw("config/users", json.dumps(data.draw(valid_full_lists(1))).encode())
    ledger.sent += 1


def test_publish_the_messages_of_issue_12(ledger):
    """Whatever hypothesis drew: the tariff values and surrogate commands the issue names."""
    cloud = ledger.site.cloud
    for path, value in [(("elements", 0, "price_components", 0, "vat"), 1e308),
                        (("elements", 0, "price_components", 0, "price"), 1e308),
                        (("elements", 0, "price_components", 0, "step_size"), 1e308)]:
        tariffs = copy.deepcopy(TARIFFS)
        target = tariffs["tariffs"][0]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        cloud.publish_raw("config/tariffs", json.dumps({"version": 2, **tariffs}).encode())
        ledger.rejects += 1
        ledger.sent += 1
    for field_name in ("request_id", "user_id", "evse_id"):
        doc = {"request_id": fresh_request_id(), "evse_id": "2", "user_id": "u-1001", field_name: "\ud800"}
        cloud.publish_raw("cmd/start", json.dumps(doc).encode())
        ledger.rejects += 1
        ledger.sent += 1
        ledger.commands.append(expected_request_id(doc))


def test_the_agent_counted_answered_and_kept_everything(ledger):
    site, cloud = ledger.site, ledger.site.cloud
    print(f"\nbroker fuzz: {ledger.sent} messages published to the agent, {ledger.rejects} invalid, "
          f"{len(ledger.retained)} retained commands")
    assert ledger.sent >= MESSAGES * 0.8 and ledger.retained and ledger.rejects < ledger.sent
    expected = ledger.base + ledger.rejects
    assert cloud.wait_for(lambda: (cloud.state or {}).get("rejected_messages") == expected, 60), \
        (cloud.state, expected, site.agent_log_tail())
    assert cloud.wait_for(lambda: len(cloud.results) >= len(ledger.commands), 30)
    time.sleep(1.0)
    results = cloud.results
    assert len(results) == len(ledger.commands)  # one answer each, none for a retained command
    assert all(r["status"] == "error" for r in results)
    assert sorted(r["request_id"] or "" for r in results) == sorted(c or "" for c in ledger.commands)
    assert any(c is not None for c in ledger.commands) and None in ledger.commands
    assert not set(ledger.retained) & {r["request_id"] for r in results}
    for r in results:  # text a strict JSON parser takes: no lone surrogate, even escaped
        r["detail"].encode("utf-8")
    assert cloud.state["users_version"] == 1 and cloud.state["tariffs_version"] == 1
    assert site.agent is not None and site.agent.poll() is None
    cloud.clear_retained()
    # The session started before the fuzz is still charging, and a cloud stop ends it.
    assert site.chargers["1"].state == "C"
    assert cloud.evse_status["1"]["session_id"] == ledger.session_id
    request_id = cloud.send_command("stop", evse_id="1")
    assert cloud.wait_result(request_id, timeout=15)["status"] == "accepted", site.agent_log_tail()
    ended = cloud.wait_event("session_ended", timeout=15, session_id=ledger.session_id)["data"]
    assert ended["reason"] == "remote" and ended["energy_wh"] > 0 and ended["cost"]["incl_vat"] > 0
    assert "pricing_error" not in ended["cost"]
    # And it still does its job: the next car on the other charger.
    site.tap("2", KARI)
    time.sleep(0.3)
    site.plug_and_charge("2")
    started = cloud.wait_event("session_started", timeout=15, evse_id="2")
    assert started["data"]["user_id"] == "u-1001" and started["data"]["tariff_id"] == "T-RES"
    assert site.wait(lambda: site.chargers["2"].state == "C", 10)
    assert "Traceback" not in site.agent_log.read_text()
