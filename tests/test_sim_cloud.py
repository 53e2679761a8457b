"""SimCloud and MosquittoBroker against a real mosquitto, with a plain paho client as the gateway."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hardware_sim import broker as broker_module
from hardware_sim.broker import MosquittoBroker, MosquittoError
from hardware_sim.cloud import SimCloud
from hardware_sim.cloud_view import format_event, format_evse_status, format_state
from helpers import wait_for

GATEWAY_ID = "gw-test-1"
ROOT = f"edge/v1/{GATEWAY_ID}"


class PlainGateway:
    """The gateway side written with nothing but paho, so SimCloud is tested against the contract."""

    def __init__(self, broker: MosquittoBroker, *, client_id: str = GATEWAY_ID, subscribe: str | None = "#") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._subscription = subscribe
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, 30, clean_start=False, properties=properties)
        self.client.loop_start()
        assert self._subscribed.wait(5) if subscribe else True

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if self._subscription:
            client.subscribe(f"{ROOT}/{self._subscription}", qos=1)
        else:
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def publish(self, subtopic: str, payload: Any, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        info = self.client.publish(f"{ROOT}/{subtopic}", data, qos=1, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        return info

    def received(self, subtopic: str) -> list[tuple[dict[str, Any], bool]]:
        """(payload, retain flag) of messages on one subtopic; `cmd/+` style wildcards allowed."""
        with self._changed:
            messages = list(self.messages)
        return [
            (json.loads(message.payload), bool(message.retain))
            for message in messages
            if mqtt.topic_matches_sub(f"{ROOT}/{subtopic}", message.topic) and message.payload
        ]

    def wait_received(self, subtopic: str, count: int = 1, timeout: float = 5.0) -> list[tuple[dict[str, Any], bool]]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := self.received(subtopic)) < count and time.monotonic() < deadline:
                self._changed.wait(0.05)
        assert len(found) >= count, f"expected {count} on {subtopic}, got {found}"
        return found

    def acked_ids(self) -> set[str]:
        return {event_id for payload, _ in self.received("ack") for event_id in payload["ids"]}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def make_event(seq: int, kind: str = "meter_values", **data: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "seq": seq,
        "type": kind,
        "ts": "2026-03-01T17:04:05Z",
        "offline": False,
        "data": {"evse_id": "1", **data},
    }


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker() as running_broker:
        yield running_broker


@pytest.fixture
def cloud(broker: MosquittoBroker) -> Iterator[SimCloud]:
    with SimCloud(broker.host, broker.port, gateway_id=GATEWAY_ID) as sim_cloud:
        yield sim_cloud


@pytest.fixture
def gateway(broker: MosquittoBroker) -> Iterator[PlainGateway]:
    plain_gateway = PlainGateway(broker)
    yield plain_gateway
    plain_gateway.close()


def connect_subscriber(broker: MosquittoBroker, client_id: str, topic: str) -> tuple[mqtt.Client, list[Any], dict[str, bool]]:
    received: list[Any] = []
    session: dict[str, bool] = {}
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        session["present"] = flags.session_present
        c.subscribe(topic, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = lambda c, userdata, message: received.append((message.payload, message.retain))
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect(broker.host, broker.port, 30, clean_start=False, properties=properties)
    client.loop_start()
    assert subscribed.wait(5)
    return client, received, session


# ---- broker ---------------------------------------------------------------------------------


def test_broker_restart_keeps_port_retained_messages_and_offline_queue(broker: MosquittoBroker) -> None:
    port, first_pid = broker.port, broker.pid
    subscriber, _, _ = connect_subscriber(broker, "persistent-sub", "restart/queued")
    subscriber.disconnect()
    subscriber.loop_stop()

    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    publisher.publish("restart/retained", b"kept", qos=1, retain=True).wait_for_publish(5)
    publisher.publish("restart/queued", b"waiting", qos=1).wait_for_publish(5)
    publisher.disconnect()
    publisher.loop_stop()

    broker.restart()
    assert broker.running and broker.port == port and broker.pid != first_pid

    late, retained, _ = connect_subscriber(broker, "late-sub", "restart/retained")
    assert wait_for(lambda: retained == [(b"kept", True)])
    late.disconnect()
    late.loop_stop()

    back, queued, session = connect_subscriber(broker, "persistent-sub", "restart/queued")
    assert wait_for(lambda: queued == [(b"waiting", False)])
    assert session["present"] is True
    back.disconnect()
    back.loop_stop()

    broker.kill()
    assert not broker.running
    assert "running" in broker.log_tail()


def test_broker_start_failure_reports_the_log() -> None:
    with (MosquittoBroker() as first, pytest.raises(MosquittoError, match="Address already in use"),
          MosquittoBroker(port=first.port)):
        pass


def test_missing_mosquitto_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(broker_module, "FALLBACK_MOSQUITTO_PATH", "/nonexistent/mosquitto")
    with pytest.raises(MosquittoError, match="apt-get install mosquitto"):
        MosquittoBroker()


# ---- events and acks ------------------------------------------------------------------------


def test_events_are_recorded_and_acked_in_batches(cloud: SimCloud, gateway: PlainGateway) -> None:
    events = [make_event(seq) for seq in range(1, 11)]
    for info in [gateway.publish("events", event) for event in events]:
        info.wait_for_publish(5)

    assert cloud.wait_for(lambda: len(cloud.events) == 10)
    assert [event["seq"] for event in cloud.events] == list(range(1, 11))
    assert all(isinstance(event["received_at"], float) for event in cloud.events)

    all_ids = {event["id"] for event in events}
    assert wait_for(lambda: gateway.acked_ids() == all_ids)
    ack_messages = gateway.received("ack")
    assert len(ack_messages) < 10, "acks for a burst are batched"
    assert cloud.acked_ids == all_ids


def test_duplicates_are_counted_by_id_and_acked_again(cloud: SimCloud, gateway: PlainGateway) -> None:
    event = make_event(1, "session_started", session_id="s-1")
    gateway.publish("events", event).wait_for_publish(5)
    gateway.wait_received("ack", 1)
    gateway.publish("events", event).wait_for_publish(5)
    gateway.wait_received("ack", 2)

    assert len(cloud.events) == 2
    assert list(cloud.events_by_id) == [event["id"]]
    assert cloud.duplicate_count == 1
    assert [payload["ids"] for payload, _ in gateway.received("ack")] == [[event["id"]], [event["id"]]]
    assert cloud.wait_event("session_started", session_id="s-1")["id"] == event["id"]


def test_acks_can_be_held_back_and_released(cloud: SimCloud, gateway: PlainGateway) -> None:
    cloud.auto_ack = False
    first, second = make_event(1), make_event(2)
    gateway.publish("events", first).wait_for_publish(5)
    gateway.publish("events", second).wait_for_publish(5)
    assert cloud.wait_for(lambda: len(cloud.held_ack_ids) == 2)
    time.sleep(0.2)
    assert gateway.received("ack") == []

    assert cloud.ack([first["id"]]) == [first["id"]]
    assert gateway.wait_received("ack")[0][0] == {"ids": [first["id"]]}
    assert cloud.held_ack_ids == [second["id"]]

    cloud.auto_ack = True
    assert wait_for(lambda: gateway.acked_ids() == {first["id"], second["id"]})
    assert cloud.held_ack_ids == []


def test_wait_event_matches_data_and_envelope_and_times_out(cloud: SimCloud, gateway: PlainGateway) -> None:
    gateway.publish("events", {**make_event(1, "evse_fault", error="overcurrent"), "offline": True})
    fault = cloud.wait_event("evse_fault", evse_id="1", offline=True)
    assert fault["data"]["error"] == "overcurrent"
    with pytest.raises(TimeoutError, match="evse_fault"):
        cloud.wait_event("evse_fault", timeout=0.2, evse_id="2")


def test_malformed_payloads_are_recorded_not_fatal(cloud: SimCloud, gateway: PlainGateway) -> None:
    gateway.publish("events", b"{not json").wait_for_publish(5)
    gateway.publish("events", make_event(1)).wait_for_publish(5)
    assert cloud.wait_for(lambda: len(cloud.events) == 1)
    assert cloud.malformed == [(f"{ROOT}/events", b"{not json")]


# ---- state, status, config, commands, auth ---------------------------------------------------


def test_retained_state_and_evse_status_are_kept(broker: MosquittoBroker, gateway: PlainGateway) -> None:
    gateway.publish("state", {"online": True, "users_version": 3}, retain=True).wait_for_publish(5)
    gateway.publish("evse/1/status", {"evse_id": "1", "status": "Available"}, retain=True).wait_for_publish(5)

    with SimCloud(broker.host, broker.port, gateway_id=GATEWAY_ID) as cloud:
        assert cloud.wait_for(lambda: cloud.state is not None and "1" in cloud.evse_status)
        assert cloud.state is not None and cloud.state["users_version"] == 3
        gateway.publish("evse/1/status", {"evse_id": "1", "status": "Charging"}, retain=True)
        assert cloud.wait_for(lambda: cloud.evse_status["1"]["status"] == "Charging")
        assert [status["status"] for status in cloud.evse_status_history] == ["Available", "Charging"]

        cloud.clear_retained(gateway_topics=True)
    late, received, _ = connect_subscriber(broker, "late-state", f"{ROOT}/#")
    time.sleep(0.2)
    assert received == []
    late.disconnect()
    late.loop_stop()


def test_retained_users_and_tariffs_reach_a_late_subscriber(broker: MosquittoBroker, cloud: SimCloud) -> None:
    users = [{"id": "u-1001", "name": "Kari Nordmann", "group": "residents", "tokens": ["04A2B3C4D5E6F7"],
              "blocked": False, "valid_until": None}]
    cloud.publish_users(17, users)
    cloud.publish_tariffs(4, {"residents": "T-RES"}, "T-GUEST", [{"id": "T-RES", "currency": "EUR", "elements": []}])

    late_gateway = PlainGateway(broker, client_id="late-gateway", subscribe="config/#")
    try:
        (users_payload, users_retained), = late_gateway.wait_received("config/users")
        assert users_retained and users_payload == {"version": 17, "users": users}
        (tariffs_payload, _), = late_gateway.wait_received("config/tariffs")
        assert tariffs_payload["version"] == 4 and tariffs_payload["default"] == "T-GUEST"
    finally:
        late_gateway.close()
    assert cloud.user_names() == {"u-1001": "Kari Nordmann"}

    cloud.clear_retained()
    cleared, received, _ = connect_subscriber(broker, "after-clear", f"{ROOT}/config/#")
    time.sleep(0.2)
    assert received == []
    cleared.disconnect()
    cleared.loop_stop()


def test_command_arrives_and_its_result_is_recorded(cloud: SimCloud, gateway: PlainGateway) -> None:
    expires = datetime(2026, 3, 1, 18, 0, tzinfo=timezone(timedelta(hours=1)))
    request_id = cloud.send_command("stop", evse_id="1", expires_at=expires)
    (command, retained), = gateway.wait_received("cmd/+")
    assert command == {"request_id": request_id, "evse_id": "1", "expires_at": "2026-03-01T17:00:00Z"}
    assert not retained

    gateway.publish("result", {"request_id": request_id, "status": "accepted", "detail": "stopped"})
    assert cloud.wait_result(request_id)["status"] == "accepted"
    with pytest.raises(TimeoutError):
        cloud.wait_result("never-sent", timeout=0.1)


def test_retained_command_is_flagged_retained(broker: MosquittoBroker, cloud: SimCloud) -> None:
    request_id = cloud.send_command("resync", what="all", retain=True)
    late_gateway = PlainGateway(broker, client_id="late-cmd", subscribe="cmd/+")
    try:
        (command, retained), = late_gateway.wait_received("cmd/resync")
        assert retained and command["request_id"] == request_id
    finally:
        late_gateway.close()
        cloud.clear_retained()


def test_auth_requests_are_answered_from_the_table_and_unknown_tokens_get_silence(
    broker: MosquittoBroker, gateway: PlainGateway
) -> None:
    user = {"id": "u-7", "name": "Ola", "group": "guests", "tokens": ["04A1B2"]}
    answers = {"04:a1:b2": ("accepted", user), "DEAD": ("blocked", None)}
    with SimCloud(broker.host, broker.port, gateway_id=GATEWAY_ID, auth_answers=answers) as cloud:  # type: ignore[arg-type]
        gateway.publish("auth/request", {"request_id": "r1", "token": "04A1B2", "evse_id": "1"})
        gateway.publish("auth/request", {"request_id": "r2", "token": "dead", "evse_id": "2"})
        gateway.publish("auth/request", {"request_id": "r3", "token": "0000", "evse_id": "1"})
        responses = gateway.wait_received("auth/response", 2)
        assert sorted((payload for payload, _ in responses), key=lambda p: p["request_id"]) == [
            {"request_id": "r1", "status": "accepted", "user": user},
            {"request_id": "r2", "status": "blocked", "user": None},
        ]
        assert cloud.wait_for(lambda: len(cloud.auth_requests) == 3)
        time.sleep(0.3)
        assert len(gateway.received("auth/response")) == 2, "an unknown token gets no answer"


def test_auth_answer_can_be_delayed(broker: MosquittoBroker, gateway: PlainGateway) -> None:
    with SimCloud(
        broker.host, broker.port, gateway_id=GATEWAY_ID, auth_answers={"AA": ("unknown", None)}, auth_delay_s=0.3
    ) as cloud:
        asked_at = time.monotonic()
        gateway.publish("auth/request", {"request_id": "slow", "token": "aa", "evse_id": "1"})
        (response, _), = gateway.wait_received("auth/response")
        assert time.monotonic() - asked_at >= 0.3
        assert response["status"] == "unknown" and cloud.auth_responses == [response]


# ---- reconnects and offline queues ------------------------------------------------------------


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "crash"])
def test_cloud_reconnects_after_broker_restart_and_receives_again(
    broker: MosquittoBroker, cloud: SimCloud, gateway: PlainGateway, crash: bool
) -> None:
    before = make_event(1)
    gateway.publish("events", before).wait_for_publish(5)
    assert cloud.wait_for(lambda: len(cloud.events) == 1)

    broker.restart(crash=crash)
    assert cloud.wait_for(lambda: cloud.connect_count == 2 and cloud.connected, timeout=5)
    assert cloud.wait_connected(5)
    assert wait_for(lambda: gateway.client.is_connected())
    # A crashed broker saved nothing, so SimCloud must subscribe again by itself.
    assert cloud.session_present_flags == [False, not crash]

    after = make_event(2)
    gateway.publish("events", after)
    assert cloud.wait_event("meter_values", seq=2)["id"] == after["id"]
    assert wait_for(lambda: after["id"] in gateway.acked_ids())


@pytest.mark.parametrize("max_queued_messages", [0, 1000])
def test_offline_cloud_gets_every_queued_event_only_with_max_queued_messages_0(max_queued_messages: int) -> None:
    total = 3000
    with MosquittoBroker(max_queued_messages=max_queued_messages) as broker:
        SimCloud(broker.host, broker.port, gateway_id=GATEWAY_ID).close()  # leaves a persistent session

        gateway = PlainGateway(broker, subscribe=None)
        infos = [gateway.publish("events", make_event(seq)) for seq in range(1, total + 1)]
        for info in infos:
            info.wait_for_publish(10)
        gateway.close()

        with SimCloud(broker.host, broker.port, gateway_id=GATEWAY_ID) as cloud:
            assert cloud.session_present_flags == [True]
            if max_queued_messages == 0:
                assert cloud.wait_for(lambda: len(cloud.events_by_id) == total, timeout=15)
                assert [event["seq"] for event in cloud.events] == list(range(1, total + 1))
            else:
                assert cloud.wait_for(lambda: len(cloud.events) >= 1000, timeout=15)
                time.sleep(0.5)
                # mosquitto's default silently drops what does not fit the offline queue.
                assert len(cloud.events_by_id) < total
                assert [event["seq"] for event in cloud.events] == list(range(1, 1001)), "the oldest 1000 are kept"


# ---- terminal view ------------------------------------------------------------------------------


def test_view_formats_one_line_per_record() -> None:
    ended = {
        "id": "e", "seq": 17, "type": "session_ended", "ts": "2026-03-01T12:04:05Z", "offline": True,
        "data": {"evse_id": "1", "user_id": "u-1001", "energy_wh": 7420,
                 "cost": {"currency": "EUR", "excl_vat": 2.08, "incl_vat": 2.6}, "reason": "local"},
    }
    line = format_event(ended, user_names={"u-1001": "Kari Nordmann"}, tz=UTC)
    assert line == "12:04:05 #17 session_ended evse 1 Kari Nordmann 7.42 kWh 2.60 EUR reason local offline"
    assert format_state({"online": False}) == "gateway: OFFLINE"
    assert "Charging" in format_evse_status({"evse_id": "1", "status": "Charging", "energy_wh": 1834217})
