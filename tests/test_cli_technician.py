"""The technician's commands through the real `edge-agent` entry point, against a simulated site
with the agent running as its own process (or stopped, where that is the point)."""
import json
import os
import pty
import signal
import sqlite3
import subprocess
import time

import pytest
import yaml

from edge_agent.store import SCHEMA_VERSION
from edge_agent.store._schema import MIGRATIONS
from hardware_sim.site import UNKNOWN_TOKEN, SimulatedSite
from helpers import CLI, cli

KARI, PER_BLOCKED = "04A2B3C4D5", "DEADBEEF01"


@pytest.fixture
def site(tmp_path):
    with SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2) as s:
        s.publish_lists()
        assert s.cloud.wait_for(lambda: (s.cloud.state or {}).get("users_version") == 1
                                and s.cloud.state.get("tariffs_version") == 1, 15), s.agent_log_tail()
        yield s


def status_json(site):
    result = cli("status", "--config", site.config_path, "--json")
    return result.returncode, json.loads(result.stdout)


def test_status_shows_the_live_site_then_the_agent_stopped(site):
    site.tap("1", KARI)
    time.sleep(0.3)
    site.plug_and_charge("1")
    site.cloud.wait_event("session_started", timeout=10)
    assert site.wait(lambda: (status_json(site)[1]["agent"]["evses"][0]["session"] or {}).get("energy_wh", 0) > 0,
                     10)
    code, body = status_json(site)
    assert code == 0 and body["running"] and body["healthy"]
    agent = body["agent"]
    assert agent["pid"] == site.agent.pid and agent["gateway_id"] == "gw-sim"
    assert agent["cloud"]["connected"] is True
    assert agent["lists"] == {"users_version": 1, "users": 4, "tariffs_version": 1}
    one, two = agent["evses"]
    assert one["status"] == "Charging" and one["session"]["user_name"] == "Kari Nordmann"
    assert one["offered_a"] == 16.0 and one["currents_a"] and one["power_w"] > 0
    assert one["register_wh"] == pytest.approx(site.chargers["1"].energy_wh, abs=site.chargers["1"].energy_wh * 0.01)
    assert two["status"] == "Available" and two["session"] is None
    assert [r["healthy"] for r in agent["readers"]] == [True, True]
    assert isinstance(agent["outbox"]["pending"], int) and agent["outbox"]["last_seq"] >= 1
    assert agent["health"]["ok"] is True

    text = cli("status", "--config", site.config_path)
    assert text.returncode == 0, text.stderr
    assert "cloud     online" in text.stdout and "users v1 (4 users)" in text.stdout
    lines = text.stdout.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("EVSE 1 ")))
    assert "Charging" in lines[at] and "offered 16.0 A" in lines[at]
    assert "session  Kari Nordmann (local_list)" in lines[at + 1] and "kWh" in lines[at + 1]

    watch = subprocess.Popen([*CLI, "status", "--watch", "--interval", "0.3", "--config", str(site.config_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.0)
    watch.send_signal(signal.SIGINT)
    frames, _ = watch.communicate(timeout=10)
    assert watch.returncode == 0 and frames.count(b"\x1b[H") >= 3 and b"Kari Nordmann" in frames

    site.broker.stop()
    assert site.wait(lambda: status_json(site)[1]["agent"]["cloud"]["connected"] is False, 15)
    assert site.wait(lambda: status_json(site)[1]["agent"]["cloud"]["last_error"], 15)
    assert "OFFLINE" in cli("status", "--config", site.config_path).stdout
    site.broker.start()

    site.stop_agent()
    stopped = cli("status", "--config", site.config_path)
    assert stopped.returncode == 1 and "NOT running" in stopped.stdout
    assert "1 still open" in stopped.stdout, stopped.stdout
    code, body = status_json(site)
    assert code == 1 and body["running"] is False
    assert body["database"]["active_sessions"] == 1 and body["database"]["users"] == 4


def test_status_file_lives_where_the_runtime_directory_says(tmp_path, monkeypatch):
    runtime = tmp_path / "run-tmpfs"
    monkeypatch.setenv("EDGE_AGENT_RUNTIME_DIR", str(runtime))
    with SimulatedSite(tmp_path / "site") as site:
        assert site.wait(lambda: (runtime / "status.json").exists(), 15), site.agent_log_tail()
        assert not (site.data_dir / "run").exists(), "nothing of the live view on the data disk"
        first = json.loads((runtime / "status.json").read_text())["written_at"]
        assert site.wait(lambda: json.loads((runtime / "status.json").read_text())["written_at"] > first, 5)
        code, body = status_json(site)
        assert code == 0 and body["status_file"] == str(runtime / "status.json")
        site.stop_agent()
        assert not (runtime / "status.json").exists(), "a clean stop removes it"
    assert cli("status", "--data-dir", site.data_dir).returncode == 1


def test_tap_test_with_the_agent_running_judges_tokens_and_leaves_the_reader_alone(site):
    busy = cli("tap-test", "--config", site.config_path, "--evse", "1", "--timeout", "2")
    assert busy.returncode == 4 and "--token" in busy.stderr and "is running" in busy.stderr

    kari = cli("tap-test", "--config", site.config_path, "--token", "04:a2:b3:c4:d5", "--json")
    assert kari.returncode == 0, kari.stderr
    judged = json.loads(kari.stdout)
    assert judged["token"] == KARI and judged["user"]["name"] == "Kari Nordmann"
    assert judged["local"] == {"accepted": True, "method": "local_list", "reason": None}
    assert judged["offline"]["accepted"] is True and judged["tariff"]["id"] == "T-RES"

    blocked = cli("tap-test", "--config", site.config_path, "--token", PER_BLOCKED)
    assert blocked.returncode == 1 and "MAY NOT CHARGE: blocked" in blocked.stdout

    unknown = cli("tap-test", "--config", site.config_path, "--token", UNKNOWN_TOKEN, "--json")
    assert unknown.returncode == 1
    judged = json.loads(unknown.stdout)
    assert judged["user"] is None and judged["local"] is None and judged["may_charge"] is None
    assert judged["offline"] == {"accepted": False, "method": None, "reason": "offline_unknown"}
    assert "asks the cloud" in judged["online"] and judged["tariff"]["id"] == "T-GUEST"

    bad = cli("tap-test", "--config", site.config_path, "--token", "not-hex")
    assert bad.returncode == 2 and "--token" in bad.stderr


def test_tap_test_reads_a_card_from_the_reader_when_the_agent_is_stopped(site):
    site.stop_agent()
    proc = subprocess.Popen([*CLI, "tap-test", "--config", str(site.config_path), "--evse", "1",
                             "--timeout", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        prompt = proc.stderr.readline()
        assert "hold the card" in prompt and "reader1-agent" in prompt
        time.sleep(0.5)  # the port is opened right after the prompt
        site.tap("1", KARI)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"card      {KARI}" in out and "Kari Nordmann" in out and "MAY CHARGE" in out
    assert site.chargers["1"].state == "A"
    conn = sqlite3.connect(site.data_dir / "edge-agent.db")
    assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0, "tap-test never starts a session"
    conn.close()

    nobody = cli("tap-test", "--config", site.config_path, "--evse", "2", "--timeout", "1")
    assert nobody.returncode == 6 and "no card read" in nobody.stderr


def test_users_find_by_name_id_phone_and_card(site):
    def find(text, *extra):
        return cli("users", "find", text, "--config", site.config_path, *extra)

    by_name = find("nordm")
    assert by_name.returncode == 0 and "Kari Nordmann" in by_name.stdout and "04A2B3C4D5" in by_name.stdout
    assert json.loads(find("u-1003", "--json").stdout)["users"][0]["name"] == "Ingrid Berg"
    assert [u["id"] for u in json.loads(find("912 34 567", "--json").stdout)["users"]] == ["u-1001"]
    assert [u["id"] for u in json.loads(find("0a:1b:2c", "--json").stdout)["users"]] == ["u-1002"]
    blocked = find("per")
    assert "BLOCKED" in blocked.stdout
    none = find("nobody-like-this")
    assert none.returncode == 1 and "nobody matches" in none.stdout
    assert json.loads(find("nobody-like-this", "--json").stdout)["users"] == []


def test_the_cli_does_not_get_in_the_way_of_charging(site):
    """While a session runs, a technician runs every read command over and over: the agent's loop
    stays healthy and the session's energy keeps being recorded."""
    site.tap("1", KARI)
    time.sleep(0.3)
    site.plug_and_charge("1")
    site.cloud.wait_event("session_started", timeout=10)
    deadline = time.monotonic() + 6
    runs = 0
    while time.monotonic() < deadline:
        for args in (("status", "--json"), ("sessions", "--json"), ("outbox", "--json"),
                     ("users", "find", "kari", "--json")):
            result = cli(*args, "--config", site.config_path)
            assert result.returncode == 0, (args, result.stderr)
            runs += 1
    code, body = status_json(site)
    assert code == 0 and body["agent"]["health"]["ok"], body["agent"]["health"]
    energy = body["agent"]["evses"][0]["session"]["energy_wh"]
    assert site.wait(lambda: status_json(site)[1]["agent"]["evses"][0]["session"]["energy_wh"] > energy, 5)
    site.unplug("1")
    ended = site.cloud.wait_event("session_ended", timeout=10)
    assert ended["data"]["energy_wh"] > 0 and runs >= 8
    assert "database is locked" not in site.agent_log.read_text()


# -- config init ----------------------------------------------------------------------------------------

ANSWERS = {
    "gateway_id": "gw-garage-7",
    "timezone": "Europe/Oslo",
    "cloud": {"host": "mqtt.example.net", "port": 8883, "username": "gw-garage-7",
              "password_file": "/etc/edge-agent/mqtt-password",
              "tls": {"cert_file": "/etc/edge-agent/gw.pem", "key_file": "/etc/edge-agent/gw.key"}},
    "offline_unknown": "accept",
    "chargers": [{"evse_id": "1", "model": "bender-cc613", "host": "192.168.10.21", "max_current_a": 16},
                 {"evse_id": "2", "model": "heidelberg-energy-control", "serial": "/dev/ttyUSB0",
                  "baudrate": 19200, "parity": "E", "unit": 1}],
    "readers": [{"driver": "rdm6300", "port": "/dev/ttyAMA0", "evse_id": "1"}],
}


def test_config_init_from_an_answers_file_writes_a_commented_valid_config(tmp_path):
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump(ANSWERS))
    out = tmp_path / "etc" / "site.yaml"
    done = cli("config", "init", "--answers", answers, "--out", out)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "# the EVSE's id in topics and events" in text and "# MQTT broker host name or address" in text
    assert 'evse_id: "1"' in text
    assert (out.stat().st_mode & 0o777) == 0o640
    # The file is valid; the secrets it names are not on this machine yet, and run would refuse that.
    check = cli("config", "check", out, "--json")
    assert check.returncode == 3, check.stderr
    found = json.loads(check.stdout)
    assert found["ok"] is False and {e["path"] for e in found["errors"]} == {"cloud.password_file", "cloud.tls.cert_file"}
    loaded = yaml.safe_load(text)
    assert loaded["cloud"]["tls"] == ANSWERS["cloud"]["tls"] and loaded["authorization"]["offline_unknown"] == "accept"
    assert loaded["chargers"][1]["parity"] == "E"

    again = cli("config", "init", "--answers", answers, "--out", out)
    assert again.returncode == 1 and "--force" in again.stderr


def test_config_init_from_flags_names_missing_and_bad_answers(tmp_path):
    out = tmp_path / "site.yaml"
    flags = ["--gateway-id", "gw-1", "--timezone", "Europe/Oslo", "--cloud-host", "localhost",
             "--charger", "evse_id=1,model=bender-cc613,host=10.0.0.5", "--reader",
             "driver=rdm6300,port=/dev/ttyAMA0,evse_id=1", "--out", out, "--non-interactive"]
    done = cli("config", "init", *flags)
    assert done.returncode == 0, done.stderr
    assert cli("config", "check", out).returncode == 0

    missing = cli("config", "init", "--gateway-id", "gw-1", "--out", tmp_path / "x.yaml", "--non-interactive")
    assert missing.returncode == 2
    assert "timezone" in missing.stderr and "chargers" in missing.stderr and "cloud.host" in missing.stderr
    bad = cli("config", "init", *flags[:-3], "--charger", "evse_id=2,model=no-such-charger,host=10.0.0.6",
              "--out", tmp_path / "bad.yaml", "--non-interactive", "--force")
    assert bad.returncode == 3 and "chargers[1].model" in bad.stderr and "no-such-charger" in bad.stderr
    assert not (tmp_path / "bad.yaml").exists()


def test_config_init_asks_on_a_terminal(tmp_path):
    out = tmp_path / "site.yaml"
    main, child = pty.openpty()
    proc = subprocess.Popen([*CLI, "config", "init", "--out", str(out)], stdin=child, stdout=child,
                            stderr=child, close_fds=True)
    os.close(child)
    typed = ["gw-pty", "", "broker.local", "no", "", "", "", "evse_id=1,model=bender-cc613,host=10.0.0.9", "",
             "driver=rdm6300,port=/dev/ttyAMA0,evse_id=1", ""]
    seen = b""
    try:
        for answer in typed:
            os.write(main, (answer + "\n").encode())
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                seen += os.read(main, 4096)
            except OSError:
                break
        proc.wait(timeout=10)
    finally:
        proc.kill()
        os.close(main)
    transcript = seen.decode(errors="replace")
    assert proc.returncode == 0, transcript
    assert "gateway id" in transcript and "MQTT broker host" in transcript
    loaded = yaml.safe_load(out.read_text())
    assert loaded["gateway_id"] == "gw-pty" and loaded["timezone"] == "Europe/Oslo"
    assert loaded["cloud"] == {"host": "broker.local", "port": 1883}
    assert loaded["chargers"][0]["host"] == "10.0.0.9" and loaded["readers"][0]["port"] == "/dev/ttyAMA0"


def test_config_init_takes_chargers_from_a_scan_of_the_serial_bus(tmp_path):
    """`--scan` runs `edge-agent scan` on the RS-485 bus; the Heidelberg simulated on Modbus RTU
    (a socat pty; the agent is not running, so the port is free) becomes a charger entry."""
    site = SimulatedSite(tmp_path / "site")
    site.start(agent=False)
    try:
        out = tmp_path / "scanned.yaml"
        done = cli("config", "init", "--non-interactive", "--gateway-id", "gw-scan", "--timezone", "Europe/Oslo",
                   "--cloud-host", "localhost", "--scan", site.rtu_bus.a, "--scan-units", "1-3",
                   "--scan-baudrates", "19200", "--out", out, timeout=120)
    finally:
        site.close()
    assert done.returncode == 0, done.stderr
    assert "1 charger(s) found" in done.stderr
    charger = yaml.safe_load(out.read_text())["chargers"][0]
    assert charger == {"evse_id": "1", "model": "heidelberg-energy-control", "serial": str(site.rtu_bus.a),
                       "baudrate": 19200, "parity": "N", "unit": 1}
    assert cli("config", "check", out).returncode == 0

    nothing = cli("config", "init", "--non-interactive", "--gateway-id", "gw-scan", "--timezone", "Europe/Oslo",
                  "--cloud-host", "localhost", "--scan", tmp_path / "no-such-port", "--out", tmp_path / "x.yaml")
    assert nothing.returncode == 2 and "failed" in nothing.stderr and "chargers" in nothing.stderr


# -- db-check and migrate -----------------------------------------------------------------------------------


def test_db_check_and_migrate_upgrade_and_refuse_a_downgrade(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    fresh = cli("db-check", "--data-dir", data, "--json")
    assert fresh.returncode == 0 and json.loads(fresh.stdout)["database"] is None
    conn = sqlite3.connect(data / "edge-agent.db")
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO outbox(seq, id, type, body) VALUES (1, 'e-1', 'session_started', '{}')")
    conn.commit()
    conn.close()
    older = cli("db-check", "--data-dir", data, "--json")
    expected = "none: up to date" if SCHEMA_VERSION == 1 else f"migrate 1 -> {SCHEMA_VERSION}"
    assert older.returncode == 0 and json.loads(older.stdout)["action"] == expected
    migrated = cli("migrate", "--data-dir", data, "--json")
    assert migrated.returncode == 0 and json.loads(migrated.stdout) == {
        "database": str(data / "edge-agent.db"), "from": 1, "to": SCHEMA_VERSION}
    conn = sqlite3.connect(data / "edge-agent.db")
    assert conn.execute("SELECT id FROM outbox").fetchall() == [("e-1",)]
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 3}")
    conn.close()
    newer = cli("db-check", "--data-dir", data)
    assert newer.returncode == 5 and "downgrade" in newer.stderr and str(SCHEMA_VERSION + 3) in newer.stderr
    refused = cli("migrate", "--data-dir", data)
    assert refused.returncode == 5 and "newer" in refused.stderr


def test_help_reads_well_and_names_the_exit_codes():
    top = cli("--help")
    for command in ("status", "tap-test", "users", "export", "import", "db-check", "migrate"):
        assert f"    {command}" in top.stdout, command
    status = cli("status", "--help")
    assert "exit codes: 0" in status.stdout and "--watch" in status.stdout
    assert "init" in cli("config", "--help").stdout
    assert cli("users", "--help").returncode == 0
    assert cli("status", "--config", "/nonexistent/site.yaml").returncode == 3
