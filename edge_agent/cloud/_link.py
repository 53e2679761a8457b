"""The MQTT connection: one paho client driven by a thread of our own.

paho's own reconnect has no jitter and its queue lives in RAM, so this class owns the
connect/backoff loop and publishes nothing while disconnected: durability is the
outbox's job, not paho's.

A failure to connect (no network, an untrusted broker certificate, a refused client certificate,
a wrong password) is never fatal: the agent goes on charging offline while this thread retries
with capped, jittered backoff. Each cause is logged once, when it changes, not on every retry.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ._credentials import TlsFiles, tls_context

log = logging.getLogger("edge_agent.cloud")


def _NO_PUBLISHED_CALLBACK(mid: int) -> None:  # noqa: N802 - a sentinel
    return None

# The largest packet the broker may send us (MQTT 5 Maximum Packet Size): a 16 MB inline list
# plus room. The broker drops anything larger instead of filling the gateway's memory.
MAX_INBOUND_PACKET_BYTES = 20 * 1024 * 1024

_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    retain: bool


def describe_connect_error(exc: BaseException, *, host: str, port: int) -> str:
    """One stable sentence per cause (no line numbers or addresses that change between tries),
    so that 'log once per change of cause' works."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = _SSL_LOCATION.sub("", exc.verify_message or str(exc))
        return f"TLS: the broker's certificate at {host}:{port} is not accepted: {reason}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or _SSL_LOCATION.sub("", str(exc))
        return f"TLS handshake with {host}:{port} failed: {reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to {host}:{port}: {exc.strerror}"
    return f"cannot connect to {host}:{port}: {_SSL_LOCATION.sub('', str(exc)) or type(exc).__name__}"


class MqttLink:
    """Callbacks (`on_connected`, `on_disconnected`, `on_message`, `on_published`) run on
    the asyncio loop given to start(), never on paho's thread."""

    def __init__(self, *, client_id: str, host: str, port: int, keepalive_s: int = 30,
                 will_topic: str, will_payload: bytes, subscriptions: list[str],
                 session_expiry_s: int = 86400, reconnect_max_s: float = 60.0,
                 tls: ssl.SSLContext | TlsFiles | None = None, username: str | None = None,
                 password: str | None = None,
                 on_connected: Callable[[bool], None] = lambda session_present: None,
                 on_disconnected: Callable[[str], None] = lambda reason: None,
                 on_message: Callable[[Inbound], None] = lambda message: None,
                 on_published: Callable[[int], None] = _NO_PUBLISHED_CALLBACK) -> None:
        self._host, self._port, self._keepalive = host, port, keepalive_s
        self._subscriptions = subscriptions
        self._session_expiry_s = session_expiry_s
        self._reconnect_max_s = reconnect_max_s
        self._callbacks: tuple[Callable[..., None], ...] = (on_connected, on_disconnected, on_message, on_published)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False
        self.last_error: str | None = None  # the cause last logged; None once connected
        self._uses_tls = tls is not None
        self._connack: bool | None = None  # this attempt: None no CONNACK yet, True accepted, False refused
        self._paho_error: str | None = None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(20)  # the broker's ReceiveMaximum; faster than more
        will_props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        client.will_set(will_topic, will_payload, qos=1, retain=True, properties=will_props)
        if isinstance(tls, TlsFiles):
            tls = tls_context(tls)
        if tls is not None:
            # The context checks the broker's certificate against the CA and its host name.
            client.tls_set_context(tls)
        if username is not None:
            client.username_pw_set(username, password)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        if on_published is not _NO_PUBLISHED_CALLBACK:  # else every PUBACK would wake the event loop
            client.on_publish = self._paho_publish
        self._client = client

    # -- lifetime ---------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.connected:
            try:
                self._client.disconnect()
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self._connack, self._paho_error = None, None
            # paho's error log says why a connection died before CONNACK; off once connected
            # (it would format a line for every packet).
            self._client.on_log = self._paho_log
            try:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = self._session_expiry_s
                props.MaximumPacketSize = MAX_INBOUND_PACKET_BYTES
                # clean_start must be False explicitly: paho's default wipes the session on the first connect.
                self._client.connect(self._host, self._port, self._keepalive, clean_start=False,
                                     properties=props)
                while not self._stop.is_set():
                    rc = self._client.loop(timeout=0.2)
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        if self.connected:
                            self._set_disconnected(mqtt.error_string(rc))
                        elif self._connack is None:
                            # With TLS 1.3 a refused client certificate shows only here, after connect().
                            self._report_error(self._closed_before_connack())
                        break
                    if self.connected:
                        attempt = 0
            except (OSError, ssl.SSLError, mqtt.WebsocketConnectionError) as exc:
                self._report_error(describe_connect_error(exc, host=self._host, port=self._port))
            except Exception as exc:  # noqa: BLE001 - this thread must outlive any surprise
                self._report_error(f"cannot connect to {self._host}:{self._port}: "
                                   f"{type(exc).__name__}: {exc}")
            if self.connected:
                self._set_disconnected("connection lost")
            try:
                self._client.disconnect()
            except Exception:  # noqa: BLE001
                pass
            if self._stop.is_set():
                break
            attempt += 1
            # Capped exponential backoff with full jitter, so a site's gateways don't reconnect in lockstep.
            delay = random.uniform(0.2, min(self._reconnect_max_s, 0.5 * 2 ** min(attempt, 10)))
            self._stop.wait(delay)

    def _closed_before_connack(self) -> str:
        if self._paho_error:
            log.debug("cloud link: %s", self._paho_error)
        if self._uses_tls:
            return (f"the broker at {self._host}:{self._port} closed the TLS connection before accepting "
                    f"the MQTT connection; it probably refused this gateway's client certificate")
        return f"the broker at {self._host}:{self._port} closed the connection before accepting it"

    def _report_error(self, message: str) -> None:
        """Logs a cause once; retries with the same cause stay quiet until it changes."""
        if message != self.last_error:
            tls_or_auth = message.startswith("TLS") or "TLS" in message or "refused the connection" in message
            log.log(logging.ERROR if tls_or_auth else logging.WARNING, "cloud link: %s", message)
            self.last_error = message

    # -- publishing -------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False) -> int | None:
        """Returns the message id, or None when not connected (nothing is queued in RAM)."""
        if not self.connected:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        return info.mid

    # -- paho callbacks (paho's thread) ----------------------------------------------

    def _call(self, index: int, *args: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._callbacks[index], *args)

    def _paho_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                      reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            self._connack = False
            self._report_error(f"the broker at {self._host}:{self._port} refused the connection: {reason_code}")
            return
        self._connack = True
        client.on_log = None
        self.connected = True
        self.last_error = None
        log.info("cloud link up (%s:%s, session present: %s)", self._host, self._port,
                 flags.session_present)
        # retainAsPublished: a command published retained must be recognisable as such, also live.
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        if self._subscriptions:
            client.subscribe([(topic, options) for topic in self._subscriptions])
        self._call(0, bool(flags.session_present))

    def _paho_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                         reason_code: ReasonCode, properties: Properties | None) -> None:
        if self.connected:
            self._set_disconnected(str(reason_code))

    def _set_disconnected(self, reason: str) -> None:
        self.connected = False
        log.warning("cloud link down: %s", reason)
        self._call(1, reason)

    def _paho_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        # paho types the payload bytes | bytearray; received, it is bytes, which bytes() returns as is.
        self._call(2, Inbound(message.topic, bytes(message.payload), bool(message.retain)))

    def _paho_log(self, client: mqtt.Client, userdata: object, level: int, message: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._paho_error = _SSL_LOCATION.sub("", message)

    def _paho_publish(self, client: mqtt.Client, userdata: object, mid: int,
                      reason_code: ReasonCode, properties: Properties | None) -> None:
        self._call(3, mid)
