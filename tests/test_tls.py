"""Mutual TLS and passwords against a real mosquitto (TLS listener, require_certificate true),
with certificates made by openssl in the test."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge_agent.cloud import MqttLink, TlsFiles, link_credentials
from edge_agent.cloud._credentials import read_password, tls_context
from edge_agent.config import ConfigError, parse_config_text
from hardware_sim.broker import MosquittoBroker, PasswordListener, TlsListener
from hardware_sim.certs import CertificateAuthority
from hardware_sim.site import SimulatedSite

KARI = "04A2B3C4D5"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create(root / "ca", name="cloud-ca")
    rogue = CertificateAuthority.create(root / "rogue", name="rogue-ca")
    return {"ca": ca, "rogue": rogue, "broker": ca.issue_server("broker"),
            "rogue_broker": rogue.issue_server("rogue-broker"),
            "other_name": ca.issue_server("other-name", hosts=("mqtt.example.net",)),
            "gw": ca.issue_client("gw-tls"), "stranger": rogue.issue_client("gw-tls")}


def listener(pki: dict[str, Any], server: str = "broker", **kw: Any) -> TlsListener:
    pair = pki[server]
    return TlsListener(ca_file=pki["ca"].cert, cert_file=pair.cert, key_file=pair.key, **kw)


def run_link(*, port: int, tls: Any = None, username: str | None = None, password: str | None = None,
             seconds: float, until_connected: bool = False, after_connect: Any = None) -> dict[str, Any]:
    """Runs an MqttLink on its own loop for `seconds` (or until connected); returns what happened."""
    seen: dict[str, Any] = {"connected": 0, "messages": []}

    async def go() -> None:
        link = MqttLink(client_id="gw-tls", host="127.0.0.1", port=port, will_topic="edge/v1/gw-tls/state",
                        will_payload=b'{"online": false}', subscriptions=["edge/v1/gw-tls/cmd/+"],
                        reconnect_max_s=0.5, tls=tls, username=username, password=password,
                        on_connected=lambda present: seen.__setitem__("connected", seen["connected"] + 1),
                        on_message=lambda m: seen["messages"].append(m))
        link.start(asyncio.get_running_loop())
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                if until_connected and seen["connected"]:
                    if after_connect is not None:
                        await after_connect(link)
                    break
            seen["last_error"] = link.last_error
        finally:
            link.stop()

    asyncio.run(go())
    return seen


def link_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge_agent.cloud" and r.levelno >= logging.WARNING]


def attempts_in_broker_log(broker: MosquittoBroker) -> int:
    return broker.log_path.read_text(errors="replace").count("New connection from")


# -- the link against real brokers ----------------------------------------------------------------

def test_connects_with_its_certificate_and_gets_messages(tmp_path, pki):
    with MosquittoBroker(workdir=tmp_path / "b", tls=listener(pki)) as broker:
        async def send_command(link: MqttLink) -> None:
            sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cloud", protocol=mqtt.MQTTv5)
            sender.connect(broker.host, broker.port)  # the cloud, on the broker's plain listener
            sender.loop_start()
            await asyncio.sleep(0.3)
            sender.publish("edge/v1/gw-tls/cmd/stop", b'{"request_id": "r1"}', qos=1).wait_for_publish(5)
            for _ in range(40):
                await asyncio.sleep(0.05)
            sender.loop_stop()

        files = TlsFiles(str(pki["ca"].cert), str(pki["gw"].cert), str(pki["gw"].key))
        seen = run_link(port=broker.tls_port, tls=tls_context(files), seconds=10, until_connected=True,
                        after_connect=send_command)
    assert seen["connected"] == 1
    assert [(m.topic, m.payload) for m in seen["messages"]] == [("edge/v1/gw-tls/cmd/stop", b'{"request_id": "r1"}')]


@pytest.mark.parametrize("case, expected", [
    ("no client certificate", "probably refused this gateway's client certificate"),
    ("certificate of another CA", "probably refused this gateway's client certificate"),
    ("broker signed by another CA", "certificate at 127.0.0.1"),
    ("broker certificate for another name", "IP address mismatch"),
])
def test_refused_connections_are_retried_and_logged_once(tmp_path, pki, caplog, case, expected):
    server = {"broker signed by another CA": "rogue_broker",
              "broker certificate for another name": "other_name"}.get(case, "broker")
    client = {"no client certificate": (None, None),
              "certificate of another CA": (pki["stranger"].cert, pki["stranger"].key)}.get(
        case, (pki["gw"].cert, pki["gw"].key))
    files = TlsFiles(str(pki["ca"].cert), *(str(p) if p else None for p in client))
    caplog.set_level(logging.INFO, logger="edge_agent.cloud")
    with MosquittoBroker(workdir=tmp_path / "b", tls=listener(pki, server)) as broker:
        seen = run_link(port=broker.tls_port, tls=tls_context(files), seconds=6)
        tries = attempts_in_broker_log(broker)
    assert seen["connected"] == 0
    # The backoff is jittered (0.2 s up to 1 s, then 2 s, ...): two tries prove it retries.
    assert tries >= 2, "the link gave up instead of retrying"
    errors = link_errors(caplog)
    assert len(errors) == 1, errors
    assert expected in errors[0] and expected in seen["last_error"]


def test_tls_1_2_broker_refusing_the_missing_certificate_is_seen_too(tmp_path, pki, caplog):
    caplog.set_level(logging.INFO, logger="edge_agent.cloud")
    with MosquittoBroker(workdir=tmp_path / "b", tls=listener(pki, tls_version="tlsv1.2")) as broker:
        seen = run_link(port=broker.tls_port, tls=tls_context(TlsFiles(str(pki["ca"].cert))), seconds=3)
    assert seen["connected"] == 0
    assert len(link_errors(caplog)) == 1


def test_each_change_of_cause_is_logged_once(tmp_path, pki, caplog):
    caplog.set_level(logging.INFO, logger="edge_agent.cloud")
    files = TlsFiles(str(pki["ca"].cert), str(pki["gw"].cert), str(pki["gw"].key))
    broker = MosquittoBroker(workdir=tmp_path / "b", tls=listener(pki, "rogue_broker"))
    try:
        broker.start()

        async def go() -> list[str]:
            link = MqttLink(client_id="gw-tls", host="127.0.0.1", port=broker.tls_port, will_topic="w",
                            will_payload=b"{}", subscriptions=[], reconnect_max_s=0.3, tls=tls_context(files))
            link.start(asyncio.get_running_loop())
            steps = []
            try:
                await asyncio.sleep(2)  # a broker we must not trust
                steps.append(link.last_error or "")
                broker.stop()
                await asyncio.sleep(2)  # nobody listening
                steps.append(link.last_error or "")
                broker.tls = dataclasses.replace(listener(pki), port=broker.tls_port)
                broker.start()
                for _ in range(100):
                    await asyncio.sleep(0.05)
                    if link.connected:
                        break
                steps.append("connected" if link.connected else link.last_error or "")
            finally:
                link.stop()
            return steps

        steps = asyncio.run(go())
    finally:
        broker.close()
    assert "not accepted" in steps[0] and "cannot connect" in steps[1] and steps[2] == "connected"
    errors = link_errors(caplog)
    assert len([e for e in errors if "not accepted" in e]) == 1, errors
    assert len([e for e in errors if "cannot connect" in e]) == 1, errors


def test_user_name_and_password_from_a_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge_agent.cloud")
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret pass\n")
    secret.chmod(0o600)
    with MosquittoBroker(workdir=tmp_path / "b", password=PasswordListener((("gw-tls", "s3cret pass"),))) as broker:
        good = run_link(port=broker.password_port, username="gw-tls", password=read_password(secret),
                        seconds=5, until_connected=True)
        bad = run_link(port=broker.password_port, username="gw-tls", password="wrong", seconds=3)
    assert good["connected"] == 1
    assert bad["connected"] == 0 and "Not authorized" in bad["last_error"]
    assert len([e for e in link_errors(caplog) if "Not authorized" in e]) == 1


# -- local mistakes: the agent refuses to start ------------------------------------------------------

def cloud_config(tmp_path: Path, cloud_yaml: str) -> Any:
    text = f"""\
gateway_id: gw-tls
timezone: Europe/Oslo
data_dir: {tmp_path / 'data'}
cloud:
  host: 127.0.0.1
{cloud_yaml}
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 127.0.0.1
    port: 1
"""
    return text


def test_a_key_others_can_read_is_refused_naming_file_and_mode(tmp_path, pki):
    key = tmp_path / "gw.key"
    key.write_bytes(pki["gw"].key.read_bytes())
    key.chmod(0o644)
    config = parse_config_text(cloud_config(tmp_path, f"""\
  tls:
    ca_file: {pki['ca'].cert}
    cert_file: {pki['gw'].cert}
    key_file: {key}"""))
    with pytest.raises(ConfigError) as caught:
        link_credentials(config.cloud)
    assert str(caught.value).startswith(f"cloud.tls.key_file: {key} has mode 0644")
    assert "chmod 600" in str(caught.value)
    key.chmod(0o600)
    assert link_credentials(config.cloud).tls is not None


@pytest.mark.parametrize("mutate, key, words", [
    (lambda d: d["key"].unlink(), "cloud.tls.key_file", "No such file"),
    (lambda d: d["ca"].unlink(), "cloud.tls.ca_file", "no such file"),
    (lambda d: d["key"].write_bytes(d["other_key"].read_bytes()), "cloud.tls.cert_file", "cannot use"),
    (lambda d: d["ca"].write_text("not a certificate"), "cloud.tls.ca_file", "no usable CA"),
    (lambda d: d["password"].chmod(0o640), "cloud.password_file", "has mode 0640"),
    (lambda d: d["password"].write_text(""), "cloud.password_file", "is empty"),
])
def test_local_credential_mistakes_are_config_errors(tmp_path, pki, mutate, key, words):
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "gw.pem", "key": tmp_path / "gw.key",
             "password": tmp_path / "pw", "other_key": pki["stranger"].key}
    files["ca"].write_bytes(pki["ca"].cert.read_bytes())
    files["cert"].write_bytes(pki["gw"].cert.read_bytes())
    files["key"].write_bytes(pki["gw"].key.read_bytes())
    files["password"].write_text("pw\n")
    for name in ("key", "password"):
        files[name].chmod(0o600)
    config = parse_config_text(cloud_config(tmp_path, f"""\
  username: gw-tls
  password_file: {files['password']}
  tls:
    ca_file: {files['ca']}
    cert_file: {files['cert']}
    key_file: {files['key']}"""))
    assert link_credentials(config.cloud).password == "pw"
    mutate(files)
    with pytest.raises(ConfigError) as caught:
        link_credentials(config.cloud)
    assert caught.value.errors[0].path == key and words in str(caught.value), str(caught.value)


def test_the_agent_process_refuses_to_start_with_a_readable_key(tmp_path, pki):
    key = tmp_path / "gw.key"
    key.write_bytes(pki["gw"].key.read_bytes())
    key.chmod(0o640)
    (tmp_path / "site.yaml").write_text(cloud_config(tmp_path, f"""\
  tls:
    ca_file: {pki['ca'].cert}
    cert_file: {pki['gw'].cert}
    key_file: {key}"""))
    result = subprocess.run([sys.executable, "-m", "edge_agent", "run", "--config", str(tmp_path / "site.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"{key} has mode 0640" in result.stderr, result.stderr[-2000:]


# -- the agent process over mutual TLS -----------------------------------------------------------------

def test_agent_over_mutual_tls_keeps_charging_when_the_broker_is_not_trusted(tmp_path, pki):
    gw = {"ca_file": pki["ca"].cert, "cert_file": pki["gw"].cert, "key_file": pki["gw"].key}
    with SimulatedSite(tmp_path / "site", broker_tls=listener(pki), agent_tls=gw) as site:
        site.publish_lists()
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("users_version") == 1, 20), \
            site.agent_log_tail()
        # The broker now shows a certificate from another CA (an impostor, or a botched renewal).
        site.broker.tls = dataclasses.replace(listener(pki, "rogue_broker"), port=site.broker.tls_port)
        site.broker.restart()
        assert site.cloud.wait_connected(15)
        assert site.wait(lambda: "is not accepted" in site.agent_log_tail(100), 15), site.agent_log_tail()
        # Charging goes on offline from the cached list.
        site.tap("1", KARI)
        time.sleep(0.3)
        site.plug_and_charge("1")
        assert site.wait(lambda: site.chargers["1"].state == "C", 10), site.agent_log_tail()
        time.sleep(4)  # several reconnect attempts (reconnect_max_s is 2)
        site.unplug("1")
        time.sleep(1)
        assert site.agent is not None and site.agent.poll() is None
        log = site.agent_log.read_text()
        assert log.count("is not accepted") == 1, log[-3000:]
        assert site.broker.log_path.read_text(errors="replace").count("New connection from") >= 4
        # The real certificate again: everything that happened offline arrives.
        site.broker.tls = dataclasses.replace(listener(pki), port=site.broker.tls_port)
        site.broker.restart()
        ended = site.cloud.wait_event("session_ended", timeout=30)
        assert ended["offline"] is True and ended["data"]["reason"] == "ev_disconnected"
        assert site.cloud.find_event("session_started", session_id=ended["data"]["session_id"])["offline"]


# -- the ACL of docs/mqtt-api.md ---------------------------------------------------------------------

def documented_acl() -> str:
    text = (Path(__file__).resolve().parent.parent / "docs" / "mqtt-api.md").read_text()
    block = text.split("<!-- acl-begin -->", 1)[1].split("<!-- acl-end -->", 1)[0]
    return block.strip().removeprefix("```").removesuffix("```").strip() + "\n"


class CertClient:
    def __init__(self, port: int, pki: dict[str, Any], name: str, cert: Any) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.suback: list[list[int]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        self.client.tls_set_context(tls_context(TlsFiles(str(pki["ca"].cert), str(cert.cert), str(cert.key))))
        self.client.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.suback.append([int(rc.value) for rc in codes])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def subscribe(self, topic: str) -> list[int]:
        count = len(self.suback)
        self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while len(self.suback) == count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.suback[-1]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_the_documented_acl_confines_each_gateway(tmp_path, pki):
    acl = tmp_path / "acl"
    acl.write_text(documented_acl())
    certs = {name: pki["ca"].issue_client(name) for name in ("gw-a", "gw-b", "cloud-backend")}
    tls = listener(pki, use_identity_as_username=True)
    with MosquittoBroker(workdir=tmp_path / "b", tls=tls, extra_config=f"acl_file {acl}") as broker:
        clients = {name: CertClient(broker.tls_port, pki, name, cert) for name, cert in certs.items()}
        try:
            a, b, cloud = clients["gw-a"], clients["gw-b"], clients["cloud-backend"]
            time.sleep(0.5)
            assert cloud.subscribe("edge/v1/#") == [1]
            assert a.subscribe("edge/v1/gw-a/cmd/+") == [1]
            # mosquitto grants these subscriptions but delivers nothing the ACL does not let it read.
            a.subscribe("edge/v1/gw-b/cmd/+")
            a.subscribe("edge/v1/#")
            assert b.subscribe("edge/v1/gw-b/config/users") == [1]
            a.publish("edge/v1/gw-a/events", b"a-own")
            # mosquitto drops a client that publishes where it may not: one fresh connection per try,
            # each with a client id of its choice (the ACL goes by the certificate, %u, not by %c).
            for n, (topic, payload) in enumerate([
                    ("edge/v1/gw-b/events", b"a-as-b"),  # another gateway's topic
                    ("edge/v1/gw-b/config/users", b"a-poisons-b"),  # a topic only the cloud writes
                    ("edge/v1/gw-a/cmd/stop", b"a-to-itself")]):  # nor may it command itself
                intruder = CertClient(broker.tls_port, pki, f"gw-b-{n}", certs["gw-a"])
                time.sleep(0.3)
                with contextlib.suppress(RuntimeError):
                    intruder.publish(topic, payload)
                intruder.close()
            cloud.publish("edge/v1/gw-a/cmd/stop", b"cmd-for-a")
            cloud.publish("edge/v1/gw-b/cmd/stop", b"cmd-for-b")
            time.sleep(1.0)
            assert ("edge/v1/gw-a/events", b"a-own") in cloud.got
            assert all(payload not in (b"a-as-b", b"a-poisons-b", b"a-to-itself") for _, payload in cloud.got)
            assert b.got == []
            assert set(a.got) == {("edge/v1/gw-a/cmd/stop", b"cmd-for-a")}
        finally:
            for client in clients.values():
                client.close()
        # And the agent's own link, confined like this, connects and works (its will and state included).
        seen = run_link(port=broker.tls_port, seconds=8, until_connected=True, tls=tls_context(
            TlsFiles(str(pki["ca"].cert), str(pki["gw"].cert), str(pki["gw"].key))))
        assert seen["connected"] == 1


def test_agent_without_a_client_certificate_is_refused_and_keeps_running(tmp_path, pki):
    with SimulatedSite(tmp_path / "site", broker_tls=listener(pki), agent_tls={"ca_file": pki["ca"].cert}) as site:
        assert site.wait(lambda: "probably refused this gateway's client certificate" in site.agent_log_tail(100),
                         15), site.agent_log_tail()
        # Several more tries (reconnect_max_s is 2); on a loaded machine they come slower, so wait for them.
        assert site.wait(lambda: site.broker.log_path.read_text(errors="replace").count("New connection from") >= 4,
                         60), site.broker.log_path.read_text(errors="replace")[-2000:]
        assert site.agent is not None and site.agent.poll() is None
        assert site.cloud.state is None  # it never got in, so it never published
        assert site.agent_log.read_text().count("probably refused") == 1
