"""The SQLite store on disk: migrations, atomic lists, outbox order, crash safety."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from edge_agent.authorization import Authorizer
from edge_agent.cloud import Event, events
from edge_agent.store import SCHEMA_VERSION, SchemaTooNew, SessionRecord, Store


def users(version: int, n: int) -> list[dict]:
    return [{"id": f"u{version}-{i}", "name": f"User {i}", "group": "residents",
             "tokens": [f"{version:02X}{i:08X}"], "blocked": False} for i in range(n)]


def test_schema_version_and_downgrade_refused(tmp_path):
    Store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "edge-agent.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew, match="downgrade"):
        Store(tmp_path)


def test_seq_survives_restart_and_ack_removes(tmp_path):
    with Store(tmp_path) as store:
        first = [store.append_event(Event("t", {"i": i}, "2026-01-01T00:00:00Z", False)) for i in range(3)]
        store.acknowledge([first[1].id])
    with Store(tmp_path) as store:
        nxt = store.append_event(Event("t", {"i": 3}, "2026-01-01T00:00:00Z", True))
        assert nxt.seq == 4
        assert [e.seq for e in store.pending_events()] == [1, 3, 4]
        assert json.loads(nxt.body)["offline"] is True


def test_session_ends_only_once(tmp_path):
    with Store(tmp_path) as store:
        record = SessionRecord(id="s1", evse_id="1", status="active", token="AB", user_id=None, group=None,
                               user_name=None, auth="local_list", started_at="2026-01-01T00:00:00Z",
                               meter_start_wh=10, tariff_id=None, tariffs_version=None,
                               offline_start=False, clock_synced=True)
        store.start_session(record, event=events.session_started(record, ts=record.started_at, offline=False))
        store.end_session("s1", ended={"meter_stop_wh": 20}, event=Event("session_ended", {}, "t", False))
        with pytest.raises(Exception, match="not active"):
            store.end_session("s1", ended={"meter_stop_wh": 30}, event=Event("session_ended", {}, "t", False))
        assert [e.type for e in store.pending_events()] == ["session_started", "session_ended"]


def test_local_list_blocked_expired_and_unknown(tmp_path):
    with Store(tmp_path) as store:
        store.replace_users(1, [
            {"id": "ok", "tokens": ["AA"], "group": "g"},
            {"id": "blk", "tokens": ["BB"], "blocked": True},
            {"id": "exp", "tokens": ["CC"], "valid_until": "2020-01-01T00:00:00Z"},
        ])
        auth = Authorizer(store=store, offline_unknown="reject", ask_online=None, is_online=lambda: False)
        assert auth.check_local("AA").accepted
        assert auth.check_local("BB").reason == "blocked"
        assert auth.check_local("CC").reason == "expired"
        assert auth.check_local("DD") is None


_APPLY = """
import sys
from edge_agent.store import Store
store = Store(sys.argv[1])
version = int(sys.argv[2])
users = [{"id": f"u{version}-{i}", "name": "x", "tokens": [f"{version:02X}{i:08X}"]} for i in range(60000)]
print("applying", flush=True)
while True:
    store.replace_users(version, users)
    version += 1
    users = [{"id": f"u{version}-{i}", "name": "x", "tokens": [f"{version:02X}{i:08X}"]} for i in range(60000)]
"""


def test_user_list_killed_half_way_is_old_or_new_never_a_mix(tmp_path):
    with Store(tmp_path) as store:
        store.replace_users(1, users(1, 60000))
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _APPLY, str(tmp_path), str(10 * (attempt + 1))],
                                stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"applying"
        time.sleep(0.3 + 0.37 * attempt)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with Store(tmp_path) as store:
            assert store.integrity_check() == "ok"
            version = store.list_version("users")
            prefixes = {r[0].split("-")[0] for r in store.db.execute("SELECT id FROM users")}
            assert prefixes == {f"u{version}"}, (version, prefixes)
            assert store.user_count() == 60000
