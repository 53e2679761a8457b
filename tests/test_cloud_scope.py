"""Topic scope, retained commands, idempotent answers and the will: the agent process against a
real broker, watched by a second MQTT client that sees everything (`#`)."""
from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from edge_agent.cloud import Topics
from hardware_sim.site import SimulatedSite

KARI = "04A2B3C4D5"


class Watcher:
    """Subscribes to `pattern` and keeps (topic, payload, retain) of everything it gets."""

    def __init__(self, host: str, port: int, pattern: str) -> None:
        self.seen: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watcher-{id(self)}",
                                   protocol=mqtt.MQTTv5)
        self._client.on_connect = lambda c, *a: c.subscribe(pattern, qos=1)
        self._client.on_subscribe = lambda *a: self._ready.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        assert self._ready.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seen.append((message.topic, bytes(message.payload), bool(message.retain)))

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _, _ in self.seen]

    def publish(self, topic: str, payload: dict, *, retain: bool = False) -> None:
        self._client.publish(topic, json.dumps(payload), qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def site(tmp_path):
    with SimulatedSite(tmp_path / "site") as s:
        s.publish_lists()
        assert s.cloud.wait_for(lambda: (s.cloud.state or {}).get("users_version") == 1, 15), s.agent_log_tail()
        yield s


def test_every_subscription_is_under_the_gateways_own_root():
    topics = Topics("edge/v1/gw-0042")
    assert all(t.startswith("edge/v1/gw-0042/") for t in topics.subscriptions())
    assert topics.command_name("edge/v1/gw-0042/cmd/stop") == "stop"
    assert topics.command_name("edge/v1/gw-0042/cmd/stop/now") is None
    assert topics.command_name("edge/v1/gw-0043/cmd/stop") is None
    assert not topics.result.startswith(topics.root + "/cmd/")  # a ~/cmd/+ subscriber never sees answers


def test_commands_for_another_gateway_and_retained_commands_are_never_carried_out(site):
    watcher = Watcher(site.broker.host, site.broker.port, "#")
    try:
        other = "edge/v1/gw-other/cmd/set_availability"
        watcher.publish(other, {"request_id": "r-other", "evse_id": "1", "available": False})
        site.cloud.send_command("set_availability", evse_id="1", available=False, retain=True)
        time.sleep(1.5)
        # Restarted after a crash, the agent subscribes again and gets the retained command again.
        site.kill_agent()
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("online") is False, 10)
        site.start_agent()
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("online") is True, 15), site.agent_log_tail()
        time.sleep(1.5)
        assert not site.cloud.results
        assert site.cloud.evse_status["1"]["status"] == "Available"
        assert site.agent_log_tail(200).count("retained command on") >= 2
        # The agent published nothing under another gateway's root, and nothing into ~/cmd/.
        own = f"edge/v1/{site.gateway_id}/"
        agent_topics = [t for t in watcher.topics() if t != other and not t.startswith(own + "cmd/")
                        and not t.startswith(own + "config/")]
        assert agent_topics and all(t.startswith(own) for t in agent_topics)
        assert [t for t in watcher.topics() if t.startswith(own + "cmd/")] == [own + "cmd/set_availability"]
    finally:
        watcher.close()
        site.cloud.clear_retained()


def test_the_same_request_twice_at_once_is_carried_out_once_and_answered_twice_the_same(site):
    site.chargers["1"].plug()  # plugged in: a start command starts the session at once
    time.sleep(1.0)
    watcher = Watcher(site.broker.host, site.broker.port, f"edge/v1/{site.gateway_id}/result")
    try:
        command = {"request_id": "start-1", "evse_id": "1", "user_id": "u-1001"}
        for _ in range(3):  # a QoS 1 re-delivery, or an impatient backend
            watcher.publish(f"edge/v1/{site.gateway_id}/cmd/start", command)
        assert site.cloud.wait_for(lambda: len(site.cloud.results) == 3, 15), site.cloud.results
        time.sleep(1.0)
        answers = [json.loads(p) for _, p, _ in watcher.seen]
        assert len(answers) == 3 and all(a == answers[0] for a in answers), answers
        assert answers[0]["status"] == "accepted"
        started = [e for e in site.cloud.unique_events if e["type"] == "session_started"]
        assert len(started) == 1 and started[0]["data"]["auth"] == "remote"
    finally:
        watcher.close()
