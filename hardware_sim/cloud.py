"""The operator's backend for one gateway, as cloud-mqtt-v1 describes it (the cloud side).

SimCloud records what the gateway sends (events, state, EVSE status, command results, auth
requests), acknowledges events, answers auth requests from a table, and publishes user lists,
tariffs and commands. paho runs its callbacks in its own thread; everything recorded is guarded
by one lock and read through properties that return copies.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

AuthStatus = Literal["accepted", "blocked", "unknown"]
AuthAnswer = tuple[AuthStatus, dict[str, Any] | None]

SUBSCRIBED_SUBTOPICS = ("events", "state", "evse/+/status", "result", "auth/request")


def normalize_token(uid: str) -> str:
    """Token uids compare case-insensitively and without separators (`04:a2` == `04A2`)."""
    return "".join(ch for ch in uid if ch.isalnum()).upper()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SimCloud:
    """Cloud side of cloud-mqtt-v1 for one gateway, on a real broker.

    Set `auto_ack = False` to hold acknowledgements back; received ids are then kept in
    `held_ack_ids` until `ack()` is called or `auto_ack` is set to True again.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        gateway_id: str,
        prefix: str = "edge/v1",
        auto_ack: bool = True,
        auth_answers: Mapping[str, AuthAnswer] | None = None,
        auth_delay_s: float = 0.0,
        ack_batch_s: float = 0.05,
        ack_max_ids: int = 500,
        client_id: str | None = None,
        session_expiry_s: int = 3600,
        connect_timeout_s: float = 5.0,
        publish_timeout_s: float = 5.0,
    ) -> None:
        self.gateway_id = gateway_id
        self.root = f"{prefix}/{gateway_id}"
        self.auth_answers: dict[str, AuthAnswer] = dict(auth_answers or {})
        self.auth_delay_s = auth_delay_s
        self.ack_batch_s = ack_batch_s
        self.ack_max_ids = ack_max_ids
        self.publish_timeout_s = publish_timeout_s

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._events: list[dict[str, Any]] = []
        self._events_by_id: dict[str, dict[str, Any]] = {}
        self._duplicate_count = 0
        self._state: dict[str, Any] | None = None
        self._state_history: list[dict[str, Any]] = []
        self._evse_status: dict[str, dict[str, Any]] = {}
        self._evse_status_history: list[dict[str, Any]] = []
        self._results: list[dict[str, Any]] = []
        self._auth_requests: list[dict[str, Any]] = []
        self._auth_responses: list[dict[str, Any]] = []
        self._malformed: list[tuple[str, bytes]] = []
        self._acks_sent: list[list[str]] = []
        self._commands_sent: list[dict[str, Any]] = []
        self._published_users: dict[str, Any] | None = None
        self._published_tariffs: dict[str, Any] | None = None
        self._retained_topics: set[str] = set()
        self._auto_ack = auto_ack
        self._pending_ack_ids: list[str] = []
        self._held_ack_ids: list[str] = []
        self._connected = False
        self._connect_count = 0
        self._session_present_flags: list[bool] = []
        self._closing = False
        self._ready = threading.Event()
        self._generation = 0  # bumped on every change, so wait_for never misses one

        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sim-cloud-{gateway_id}",
            protocol=mqtt.MQTTv5,
        )
        self._client.max_inflight_messages_set(20)
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=2)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

        self._ack_thread = threading.Thread(target=self._ack_loop, name=f"sim-cloud-ack-{gateway_id}", daemon=True)
        self._ack_thread.start()

        connect_properties = Properties(PacketTypes.CONNECT)
        # A session that outlives the connection: the broker queues events while we are away.
        connect_properties.SessionExpiryInterval = session_expiry_s
        # clean_start must be False explicitly: paho's default wipes the session on first connect.
        self._client.connect_async(host, port, keepalive=30, clean_start=False, properties=connect_properties)
        self._client.loop_start()
        if not self.wait_connected(connect_timeout_s):
            self.close()
            raise ConnectionError(f"SimCloud could not connect and subscribe to {host}:{port} in {connect_timeout_s} s")

    def _notify(self) -> None:
        """Caller holds the lock."""
        self._generation += 1
        self._changed.notify_all()

    # ---- topics -------------------------------------------------------------------------------

    def topic(self, subtopic: str) -> str:
        return f"{self.root}/{subtopic}"

    # ---- recorded data (copies, taken under the lock) -----------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event as received, duplicates included, each with `received_at` (epoch s) added."""
        with self._lock:
            return list(self._events)

    @property
    def events_by_id(self) -> dict[str, dict[str, Any]]:
        """First arrival of each event id, in arrival order."""
        with self._lock:
            return dict(self._events_by_id)

    @property
    def unique_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events_by_id.values())

    @property
    def duplicate_count(self) -> int:
        with self._lock:
            return self._duplicate_count

    @property
    def state(self) -> dict[str, Any] | None:
        with self._lock:
            return self._state

    @property
    def state_history(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._state_history)

    @property
    def evse_status(self) -> dict[str, dict[str, Any]]:
        """Latest status per EVSE id (taken from the topic)."""
        with self._lock:
            return dict(self._evse_status)

    @property
    def evse_status_history(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._evse_status_history)

    @property
    def results(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._results)

    @property
    def auth_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._auth_requests)

    @property
    def auth_responses(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._auth_responses)

    @property
    def malformed(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of messages that were not a JSON object."""
        with self._lock:
            return list(self._malformed)

    @property
    def acks_sent(self) -> list[list[str]]:
        with self._lock:
            return [list(ids) for ids in self._acks_sent]

    @property
    def acked_ids(self) -> set[str]:
        with self._lock:
            return {event_id for ids in self._acks_sent for event_id in ids}

    @property
    def held_ack_ids(self) -> list[str]:
        with self._lock:
            return list(self._held_ack_ids)

    @property
    def commands_sent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._commands_sent)

    @property
    def published_users(self) -> dict[str, Any] | None:
        with self._lock:
            return self._published_users

    @property
    def published_tariffs(self) -> dict[str, Any] | None:
        with self._lock:
            return self._published_tariffs

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def connect_count(self) -> int:
        with self._lock:
            return self._connect_count

    @property
    def session_present_flags(self) -> list[bool]:
        with self._lock:
            return list(self._session_present_flags)

    def user_names(self) -> dict[str, str]:
        """user id -> name from the last published full user list (for display)."""
        users = (self.published_users or {}).get("users", [])
        return {user["id"]: user.get("name", user["id"]) for user in users if "id" in user}

    # ---- acknowledgements ----------------------------------------------------------------------

    @property
    def auto_ack(self) -> bool:
        with self._lock:
            return self._auto_ack

    @auto_ack.setter
    def auto_ack(self, enabled: bool) -> None:
        with self._lock:
            self._auto_ack = enabled
            if enabled and self._held_ack_ids:
                self._pending_ack_ids.extend(self._held_ack_ids)
                self._held_ack_ids.clear()
            self._notify()

    def ack(self, ids: Iterable[str] | None = None) -> list[str]:
        """Acknowledge now: the given ids, or every held id. Returns the ids sent."""
        with self._lock:
            if ids is None:
                to_ack = list(self._held_ack_ids)
                self._held_ack_ids.clear()
            else:
                to_ack = list(ids)
                acked = set(to_ack)
                self._held_ack_ids = [event_id for event_id in self._held_ack_ids if event_id not in acked]
        for start in range(0, len(to_ack), self.ack_max_ids):
            self._send_ack(to_ack[start : start + self.ack_max_ids])
        return to_ack

    def _send_ack(self, ids: list[str]) -> None:
        if not ids:
            return
        with self._lock:
            self._acks_sent.append(list(ids))
        self._publish(self.topic("ack"), {"ids": ids}, retain=False, wait=True)

    def _ack_loop(self) -> None:
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._pending_ack_ids or self._closing)
                if self._closing and not self._pending_ack_ids:
                    return
            # Collect ids for a short window so that a burst of events gets one ack.
            time.sleep(self.ack_batch_s)
            with self._lock:
                batch = self._pending_ack_ids[: self.ack_max_ids]
                del self._pending_ack_ids[: self.ack_max_ids]
            self._send_ack(batch)

    # ---- publishing ----------------------------------------------------------------------------

    def publish_users(self, version: int, users: list[dict[str, Any]]) -> None:
        payload = {"version": version, "users": users}
        with self._lock:
            self._published_users = payload
        self.publish_json("config/users", payload, retain=True)

    def publish_users_delta(
        self,
        version: int,
        base_version: int,
        *,
        upsert: Iterable[dict[str, Any]] = (),
        remove: Iterable[str] = (),
    ) -> None:
        payload = {"version": version, "base_version": base_version, "upsert": list(upsert), "remove": list(remove)}
        self.publish_json("config/users/delta", payload, retain=False)

    def publish_users_url(self, version: int, url: str, sha256: str) -> None:
        """A full user list by URL: `{"version", "url", "sha256"}`, retained like an inline one."""
        payload = {"version": version, "url": url, "sha256": sha256}
        with self._lock:
            self._published_users = payload
        self.publish_json("config/users", payload, retain=True)

    def publish_tariffs(
        self, version: int, groups: dict[str, str], default: str | None, tariffs: list[dict[str, Any]]
    ) -> None:
        payload = {"version": version, "groups": groups, "default": default, "tariffs": tariffs}
        with self._lock:
            self._published_tariffs = payload
        self.publish_json("config/tariffs", payload, retain=True)

    def send_command(
        self,
        name: str,
        /,
        *,
        request_id: str | None = None,
        expires_at: datetime | str | None = None,
        retain: bool = False,
        **fields: Any,
    ) -> str:
        """Publish `~/cmd/{name}`; returns the request_id. retain=True only to test that the
        gateway never carries out a retained command."""
        request_id = request_id or str(uuid.uuid4())
        payload: dict[str, Any] = {"request_id": request_id, **fields}
        if expires_at is not None:
            payload["expires_at"] = rfc3339(expires_at) if isinstance(expires_at, datetime) else expires_at
        with self._lock:
            self._commands_sent.append({"name": name, **payload})
        self.publish_json(f"cmd/{name}", payload, retain=retain)
        return request_id

    def publish_json(self, subtopic: str, payload: Any, *, retain: bool = False) -> None:
        self._publish(self.topic(subtopic), payload, retain=retain, wait=True)

    def publish_raw(self, subtopic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """Publish bytes as they are, e.g. invalid JSON to test the gateway's rejection."""
        self._publish(self.topic(subtopic), payload, retain=retain, wait=True)

    def clear_retained(self, *, gateway_topics: bool = False) -> None:
        """Delete every retained message this SimCloud published (config lists, retained
        commands); with gateway_topics, also the gateway's ~/state and known EVSE statuses."""
        with self._lock:
            topics = set(self._retained_topics)
            if gateway_topics:
                topics.add(self.topic("state"))
                topics.update(self.topic(f"evse/{evse_id}/status") for evse_id in self._evse_status)
        for topic in sorted(topics):
            self._publish(topic, b"", retain=True, wait=True)
        with self._lock:
            self._retained_topics.clear()

    def _publish(self, topic: str, payload: Any, *, retain: bool, wait: bool) -> None:
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload, separators=(",", ":"))
        if retain:
            with self._lock:
                self._retained_topics.add(topic)
        info = self._client.publish(topic, data, qos=1, retain=retain)
        # rc NO_CONN: paho keeps the message in memory and sends it after reconnecting.
        if wait and info.rc == mqtt.MQTT_ERR_SUCCESS:
            info.wait_for_publish(self.publish_timeout_s)
        elif info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    # ---- waiting -------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
        """True as soon as predicate() is truthy; False after timeout. Re-checked on every
        message and at least every 50 ms (the predicate may look at other things too).
        The predicate runs without the lock held, so it may take other locks."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                generation = self._generation
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(min(remaining, 0.05))

    def wait_connected(self, timeout: float = 5.0) -> bool:
        """Connected and subscribed."""
        return self._ready.wait(timeout)

    def find_event(self, type: str, /, **match: Any) -> dict[str, Any] | None:
        """First unique event of this type whose fields match; a field is looked up in `data`
        first, then in the envelope (so `evse_id="1"` and `offline=True` both work)."""
        with self._lock:
            for event in self._events_by_id.values():
                if event.get("type") == type and _matches(event, match):
                    return event
        return None

    def wait_event(self, type: str, /, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def matched() -> bool:
            event = self.find_event(type, **match)
            if event is not None:
                found.append(event)
            return event is not None

        if not self.wait_for(matched, timeout):
            seen = [event.get("type") for event in self.unique_events]
            raise TimeoutError(f"no {type} event matching {match} within {timeout} s; received: {seen}")
        return found[0]

    def wait_result(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def answered() -> bool:
            found[:] = [result for result in self.results if result.get("request_id") == request_id]
            return bool(found)

        if not self.wait_for(answered, timeout):
            raise TimeoutError(f"no result for request {request_id} within {timeout} s")
        return found[0]

    # ---- paho callbacks (paho's thread) --------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            return
        with self._lock:
            self._connected = True
            self._connect_count += 1
            self._session_present_flags.append(bool(flags.session_present))
            self._notify()
        # Subscribe also when the session is present: a broker without persistence forgets it.
        client.subscribe([(self.topic(sub), 1) for sub in SUBSCRIBED_SUBTOPICS])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self._ready.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._ready.clear()
        with self._lock:
            self._connected = False
            self._notify()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        if not message.payload:
            return  # a retained message being cleared
        try:
            payload = json.loads(message.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None
        if not isinstance(payload, dict):
            with self._lock:
                self._malformed.append((topic, bytes(message.payload)))
                self._notify()
            return
        record = {**payload, "received_at": time.time()}
        subtopic = topic[len(self.root) + 1 :]
        with self._lock:
            if subtopic == "events":
                self._record_event(record)
            elif subtopic == "state":
                self._state = record
                self._state_history.append(record)
            elif subtopic.startswith("evse/") and subtopic.endswith("/status"):
                self._evse_status[subtopic.split("/")[1]] = record
                self._evse_status_history.append(record)
            elif subtopic == "result":
                self._results.append(record)
            elif subtopic == "auth/request":
                self._auth_requests.append(record)
            self._notify()
        if subtopic == "auth/request":
            self._answer_auth_request(payload)

    def _record_event(self, record: dict[str, Any]) -> None:
        self._events.append(record)
        event_id = record.get("id")
        if not isinstance(event_id, str):
            return
        if event_id in self._events_by_id:
            self._duplicate_count += 1
        else:
            self._events_by_id[event_id] = record
        # Duplicates are acked again: the gateway re-sends because it did not get our ack.
        if self._auto_ack:
            self._pending_ack_ids.append(event_id)
        else:
            self._held_ack_ids.append(event_id)

    def _answer_auth_request(self, request: dict[str, Any]) -> None:
        token, request_id = request.get("token"), request.get("request_id")
        if not isinstance(token, str) or not isinstance(request_id, str):
            return
        wanted = normalize_token(token)
        # Keys are normalized at lookup, so tests may add tokens to auth_answers in any spelling.
        answer = next((a for key, a in list(self.auth_answers.items()) if normalize_token(key) == wanted), None)
        if answer is None:
            return  # no answer at all, so the gateway's timeout can be tested
        status, user = answer
        response = {"request_id": request_id, "status": status, "user": user}

        def respond() -> None:
            with self._lock:
                self._auth_responses.append(response)
            # Not waiting for PUBACK: this may run in paho's own thread.
            self._publish(self.topic("auth/response"), response, retain=False, wait=False)

        if self.auth_delay_s > 0:
            timer = threading.Timer(self.auth_delay_s, respond)
            timer.daemon = True
            timer.start()
        else:
            respond()

    # ---- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Send pending acks, then disconnect. The broker keeps the session (session expiry), so a
        new SimCloud with the same client id receives what arrived meanwhile."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._notify()
        self._ack_thread.join(timeout=2)
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> SimCloud:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _matches(event: dict[str, Any], match: dict[str, Any]) -> bool:
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    for key, expected in match.items():
        actual = data[key] if key in data else event.get(key, _MISSING)
        if actual != expected:
            return False
    return True


_MISSING = object()


# ---- user lists by URL: a small HTTPS file server ------------------------------------------------


class ListServerFault:
    """What the server does wrong for one file: answer `status`, cut the body after
    `truncate_at` bytes (announcing the full length), send `bytes_per_s` slowly, or serve other
    bytes than were put (`body`). `times`: how many requests get the fault (None: all)."""

    def __init__(self, *, status: int | None = None, truncate_at: int | None = None,
                 bytes_per_s: float | None = None, body: bytes | None = None,
                 times: int | None = None) -> None:
        self.status, self.truncate_at, self.bytes_per_s, self.body = status, truncate_at, bytes_per_s, body
        self.times = times


class ListServer:
    """HTTPS on 127.0.0.1 (a thread), serving files put with `put(name, body)` at `url(name)`.

    Tests make it fail on purpose with `fault(name, ListServerFault(...))`; `requests` lists the
    paths asked for and `sent` the bytes sent per request.
    """

    def __init__(self, *, cert_file: str | Any, key_file: str | Any, host: str = "127.0.0.1",
                 hostname: str = "localhost") -> None:
        import http.server
        import ssl

        self._files: dict[str, bytes] = {}
        self._faults: dict[str, ListServerFault] = {}
        self._lock = threading.Lock()
        self.requests: list[str] = []
        self.sent: list[int] = []
        self.hostname = hostname
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # http.server's name
                name = self.path.lstrip("/").split("?", 1)[0]
                with server._lock:
                    server.requests.append(self.path)
                    body = server._files.get(name)
                    fault = server._faults.get(name)
                    if fault is not None and fault.times is not None:
                        fault.times -= 1
                        if fault.times < 0:
                            fault = None
                if body is None:
                    self._reply(404, b"not found")
                    return
                if fault is not None and fault.status is not None:
                    self._reply(fault.status, b"fault")
                    return
                if fault is not None and fault.body is not None:
                    body = fault.body
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                limit = len(body)
                if fault is not None and fault.truncate_at is not None:
                    limit = min(limit, fault.truncate_at)
                sent = 0
                step = 65536
                try:
                    while sent < limit:
                        chunk = body[sent:min(limit, sent + step)]
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        if fault is not None and fault.bytes_per_s:
                            self.wfile.flush()
                            time.sleep(len(chunk) / fault.bytes_per_s)
                    self.wfile.flush()
                except OSError:
                    pass
                with server._lock:
                    server.sent.append(sent)
                if sent < len(body):
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass

            def _reply(self, status: int, text: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_file), str(key_file))
        self._httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="list-server", daemon=True)
        self._thread.start()

    def put(self, name: str, body: bytes) -> str:
        with self._lock:
            self._files[name] = body
        return self.url(name)

    def fault(self, name: str, fault: ListServerFault | None) -> None:
        with self._lock:
            if fault is None:
                self._faults.pop(name, None)
            else:
                self._faults[name] = fault

    def url(self, name: str) -> str:
        return f"https://{self.hostname}:{self.port}/{name}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ListServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def user_list_file(version: int, users: list[dict[str, Any]]) -> tuple[bytes, str]:
    """The bytes of a full user list file and their SHA-256 (hex)."""
    import hashlib

    body = json.dumps({"version": version, "users": users}, separators=(",", ":")).encode()
    return body, hashlib.sha256(body).hexdigest()
