"""Backup and move: a gateway with sessions the cloud has not acknowledged is exported while its
agent runs, dies (SIGKILL), and its state is imported on a "new" gateway (a fresh data directory);
the new agent sends every pending event to the cloud, with the sequence numbers unbroken."""
import io
import json
import sqlite3
import tarfile
import time
from pathlib import Path

import pytest

from edge_agent.store import SCHEMA_VERSION
from hardware_sim.site import SimulatedSite
from helpers import cli

KARI, OLA = "04A2B3C4D5", "0A1B2C3D4E"


def pending_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM outbox ORDER BY seq")]
    finally:
        conn.close()


def repack(archive: Path, out: Path, *, change) -> None:
    """A copy of the archive with one member changed by `change(name, data) -> data`."""
    with tarfile.open(archive, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for member in src.getmembers():
            data = change(member.name, src.extractfile(member).read())
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


def test_export_while_running_import_on_a_new_gateway_and_the_unsynced_events_arrive(tmp_path):
    with SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2, ack_timeout_s=5) as site:
        site.publish_lists()
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("tariffs_version") == 1, 15)
        site.broker.stop()  # the cloud is away: everything from now on waits in the outbox
        assert site.wait(lambda: "cloud link down" in site.agent_log_tail(200), 10)
        site.tap("1", KARI)
        time.sleep(0.3)
        site.plug_and_charge("1")
        assert site.wait(lambda: site.chargers["1"].state == "C", 10), site.agent_log_tail()
        site.plug_and_charge("2")
        time.sleep(0.5)
        site.tap("2", OLA)
        assert site.wait(lambda: site.chargers["2"].state == "C", 10), site.agent_log_tail()
        time.sleep(2)
        site.unplug("1")  # one session ends offline; the one on EVSE 2 is still running at export
        assert site.wait(lambda: site.chargers["1"].state == "A", 5)
        time.sleep(1.0)

        archive = tmp_path / "gw-sim.tar.gz"
        exported = cli("export", "--config", site.config_path, "--out", archive, "--json")
        assert exported.returncode == 0, exported.stderr
        manifest = json.loads(exported.stdout)["manifest"]
        assert manifest["counts"]["outbox_pending"] >= 3 and manifest["counts"]["active_sessions"] == 1
        assert manifest["schema_version"] == SCHEMA_VERSION and manifest["gateway_id"] == "gw-sim"
        assert (archive.stat().st_mode & 0o777) == 0o600
        with tarfile.open(archive) as tar:
            assert sorted(tar.getnames()) == ["edge-agent.db", "manifest.json", "site.yaml"]
            snapshot = tmp_path / "snapshot.db"
            snapshot.write_bytes(tar.extractfile("edge-agent.db").read())
        unsynced = pending_ids(snapshot)
        assert len(unsynced) == manifest["counts"]["outbox_pending"]

        site.kill_agent()  # the old gateway dies

        # The new gateway: a fresh data directory.
        new_data = tmp_path / "new-gateway" / "data"
        imported = cli("import", archive, "--data-dir", new_data)
        assert imported.returncode == 0, imported.stderr
        assert f"{len(unsynced)} event(s) still to send" in imported.stdout
        assert pending_ids(new_data / "edge-agent.db") == unsynced

        # Importing again onto data: refused unless forced; forced keeps the old database beside it.
        again = cli("import", archive, "--data-dir", new_data)
        assert again.returncode == 1 and "already holds" in again.stderr
        forced = cli("import", archive, "--data-dir", new_data, "--force")
        assert forced.returncode == 0, forced.stderr
        kept = list(new_data.glob("edge-agent.db.before-import-*"))
        assert len(kept) == 1 and pending_ids(kept[0]) == unsynced

        # A damaged archive and one from a newer release change nothing.
        tampered = tmp_path / "tampered.tar.gz"
        repack(archive, tampered, change=lambda n, d: d[:-10] + b"0123456789" if n == "edge-agent.db" else d)
        broken = cli("import", tampered, "--data-dir", tmp_path / "elsewhere")
        assert broken.returncode == 1 and "edge-agent.db is damaged (sha256" in broken.stderr
        assert not (tmp_path / "elsewhere" / "edge-agent.db").exists()
        newer = tmp_path / "newer.tar.gz"

        def bump(name, data):
            if name != "manifest.json":
                return data
            m = json.loads(data)
            m["schema_version"] = SCHEMA_VERSION + 1
            return json.dumps(m).encode()

        repack(archive, newer, change=bump)
        too_new = cli("import", newer, "--data-dir", tmp_path / "elsewhere")
        assert too_new.returncode == 5 and "newer than this release" in too_new.stderr

        # The new gateway's agent runs on the imported state; the cloud comes back.
        site.data_dir = new_data
        site.config_path.write_text(site.config_text())
        site.start_agent()
        assert site.wait(lambda: cli("status", "--data-dir", new_data).returncode == 0, 15), site.agent_log_tail()
        busy = cli("import", archive, "--data-dir", new_data, "--force")
        assert busy.returncode == 4 and "running" in busy.stderr
        site.broker.start()
        assert site.cloud.wait_connected(15)
        assert site.cloud.wait_for(lambda: {e["id"] for e in site.cloud.unique_events} >= set(unsynced), 30), \
            site.agent_log_tail()
        # The running session goes on on the new gateway and ends there, once.
        assert site.wait(lambda: site.chargers["2"].state == "C", 10)
        site.unplug("2")
        ended = site.cloud.wait_event("session_ended", timeout=15, evse_id="2")
        assert ended["data"]["energy_wh"] > 0
        events = sorted(site.cloud.unique_events, key=lambda e: e["seq"])
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "no gaps, no duplicates"
        assert len([e for e in events if e["type"] == "session_ended"]) == 2
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("outbox_pending") == 0, 15)


def test_export_with_secrets_and_import_restores_them(tmp_path):
    password = tmp_path / "etc" / "mqtt-password"
    password.parent.mkdir()
    password.write_text("hunter2\n")
    data = tmp_path / "data"
    config = tmp_path / "etc" / "site.yaml"
    config.write_text(f"""gateway_id: gw-s
timezone: Europe/Oslo
data_dir: {data}
cloud:
  host: localhost
  username: gw-s
  password_file: {password}
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 127.0.0.1
""")
    assert cli("migrate", "--config", config).returncode == 0
    archive = tmp_path / "b.tar.gz"
    done = cli("export", "--config", config, "--out", archive, "--with-secrets")
    assert done.returncode == 0 and "with secrets" in done.stdout, done.stderr
    password.unlink()
    config.unlink()
    restored = cli("import", archive, "--config-out", config, "--restore-secrets", "--force")
    assert restored.returncode == 0, restored.stderr
    assert password.read_text() == "hunter2\n" and (password.stat().st_mode & 0o777) == 0o600
    assert (config.stat().st_mode & 0o777) == 0o640 and "gw-s" in config.read_text()
    assert cli("config", "check", config).returncode == 0


@pytest.mark.parametrize("archive_text", [b"not a tar at all", b""])
def test_import_of_something_else_is_refused(tmp_path, archive_text):
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(archive_text)
    result = cli("import", bogus, "--data-dir", tmp_path / "d")
    assert result.returncode == 1 and "not a readable edge-agent backup" in result.stderr
    assert not (tmp_path / "d").exists()
