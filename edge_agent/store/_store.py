from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from ..clock import parse_rfc3339, rfc3339
from ._errors import StoreError, TokenTaken, typed_errors
from ._outbox import Envelope, OutboundEvent, Outbox
from ._schema import migrate

DB_FILE = "edge-agent.db"


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    name: str | None
    phone: str | None
    group: str | None
    blocked: bool
    valid_until: str | None


@dataclass(frozen=True, slots=True)
class CommandResult:
    request_id: str
    body: str


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    evse_id: str
    status: str
    token: str | None
    user_id: str | None
    group: str | None
    user_name: str | None
    auth: str
    started_at: str
    meter_start_wh: int
    tariff_id: str | None
    tariffs_version: int | None
    offline_start: bool
    clock_synced: bool
    ended_at: str | None = None
    meter_stop_wh: int | None = None
    energy_wh: int | None = None
    charging_s: int | None = None
    parking_s: int | None = None
    reason: str | None = None
    cost: str | None = None
    energy_offset_wh: int = 0  # added to the charger's register after a counter reset
    unbilled_wh: int = 0  # counted by the charger, not billed: lasting implausible jumps
    unbilled_reason: str | None = None


_SESSION_COLUMNS = [f for f in SessionRecord.__dataclass_fields__]


@typed_errors
class Store(Outbox):
    """Synchronous; used from the agent's event loop thread only (one writer).

    Every statement on the store's tables is a method here (the outbox's: of its base, `._outbox`).
    A public method raises the typed errors of `._errors` (StorageFull, StorageCorrupt,
    StorageFailed) when the storage fails."""

    def __init__(self, data_dir: str | Path, *, read_only: bool = False, busy_timeout_ms: int = 5000,
                 query_only: bool = False) -> None:
        """`query_only` (with read_only): refuse writes, and read once now, so that a file that
        cannot be read fails here (a sqlite3.Error), not at the first query."""
        self.path = Path(data_dir) / DB_FILE
        super().__init__()
        if read_only:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self.db = Database(conn)
        if query_only:
            conn.execute("PRAGMA query_only = 1")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if not read_only:
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed session survives a power cut (an SD card loses the WAL tail otherwise).
            conn.execute("PRAGMA synchronous = FULL")
            migrate(conn, str(self.path))

    @classmethod
    def open_read_only(cls, data_dir: str | Path, *, busy_timeout_ms: int = 500) -> Store:
        """Beside the running agent (the technician's commands): reads only, waits briefly, never blocks its writes."""
        return cls(data_dir, read_only=True, busy_timeout_ms=busy_timeout_ms, query_only=True)

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counters and list versions ------------------------------------------------

    def counter(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM counters WHERE name = ?", [name]).fetchone()
        return int(row[0]) if row else 0

    def save_counter(self, name: str, value: int) -> None:
        self.db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value", [name, value])

    def list_version(self, name: str) -> int:
        row = self.db.execute("SELECT version FROM list_versions WHERE name = ?", [name]).fetchone()
        return int(row[0]) if row else 0

    def set_list_version(self, name: str, version: int) -> None:
        self.db.execute(
            "INSERT INTO list_versions(name, version) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET version = excluded.version", [name, version])

    def forget_list_version(self, name: str) -> None:
        """`resync`: the next full list is applied whatever its version."""
        self.set_list_version(name, 0)

    # -- users -----------------------------------------------------------------------

    def replace_users(self, version: int, users: Sequence[dict[str, Any]]) -> None:
        """Atomic: a crash half-way leaves the old list, never a mix."""
        with self.transaction():
            self.db.execute("DELETE FROM tokens")
            self.db.execute("DELETE FROM users")
            self.db.conn.executemany(
                'INSERT INTO users(id, name, phone, "group", blocked, valid_until) VALUES (?,?,?,?,?,?)',
                ((u["id"], u.get("name"), u.get("phone"), u.get("group"), int(bool(u.get("blocked"))),
                  u.get("valid_until")) for u in users))
            self.db.conn.executemany(
                "INSERT INTO tokens(uid, user_id) VALUES (?, ?)",
                ((uid, u["id"]) for u in users for uid in u["tokens"]))
            self.set_list_version("users", version)

    def replace_users_from(self, staging: str | Path, version: int) -> int:
        """Replaces the users with those of a staging file (see `._staging`), in one transaction,
        if `version` is above the local version (checked inside it). Returns the local version it
        found: the list went in only if `version` is above it."""
        conn = self.db.conn
        conn.execute("ATTACH DATABASE ? AS staging", (str(staging),))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                local = self.list_version("users")
                if version <= local:
                    conn.execute("ROLLBACK")
                    return local
                conn.execute("DELETE FROM main.tokens")
                conn.execute("DELETE FROM main.users")
                conn.execute('INSERT INTO main.users(id, name, phone, "group", blocked, valid_until) '
                             "SELECT id, name, phone, grp, blocked, valid_until FROM staging.users ORDER BY seq")
                conn.execute("INSERT INTO main.tokens(uid, user_id) SELECT uid, user_id FROM staging.tokens")
                self.set_list_version("users", version)
                conn.execute("COMMIT")
                return local
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("DETACH DATABASE staging")

    def update_users(self, version: int, *, remove: Sequence[str], upsert: Sequence[dict[str, Any]]) -> None:
        """A delta, in one transaction: the users of `remove` and of `upsert` go, those of `upsert`
        come (again). Raises TokenTaken (and changes nothing) when a card of `upsert` belongs to a
        user that stays."""
        with self.transaction():
            for user_id in [*remove, *(u["id"] for u in upsert)]:
                self.db.execute("DELETE FROM tokens WHERE user_id = ?", [user_id])
                self.db.execute("DELETE FROM users WHERE id = ?", [user_id])
            for i, u in enumerate(upsert):
                for k, uid in enumerate(u["tokens"]):
                    owner = self.db.execute("SELECT user_id FROM tokens WHERE uid = ?", [uid]).fetchone()
                    if owner is not None:  # raising inside the transaction rolls the whole delta back
                        raise TokenTaken(i, k, uid, owner[0])
                self.db.execute('INSERT INTO users(id, name, phone, "group", blocked, valid_until) '
                                "VALUES (?,?,?,?,?,?)",
                                [u["id"], u["name"], u["phone"], u["group"], int(u["blocked"]), u["valid_until"]])
                self.db.conn.executemany("INSERT INTO tokens(uid, user_id) VALUES (?, ?)",
                                         [(uid, u["id"]) for uid in u["tokens"]])
            self.set_list_version("users", version)

    def search_users(self, text: str, *, phone_digits: str | None = None, token_part: str | None = None,
                     limit: int = 200) -> list[tuple[UserRecord, list[str]]]:
        """Users whose id is `text` (any case), whose name holds it, whose phone (without spaces,
        dashes, dots) holds `phone_digits`, or one of whose cards holds `token_part`; with their
        cards, by name."""
        where = ['u.id = ? COLLATE NOCASE', "u.name LIKE ?"]
        params: list[Any] = [text.strip(), f"%{text.strip()}%"]
        if phone_digits:
            where.append("replace(replace(replace(u.phone, ' ', ''), '-', ''), '.', '') LIKE ?")
            params.append(f"%{phone_digits}%")
        if token_part is not None:
            where.append("t.uid LIKE ?")
            params.append(f"%{token_part}%")
        rows = self.db.execute(
            'SELECT DISTINCT u.id, u.name, u.phone, u."group", u.blocked, u.valid_until FROM users u '
            f"LEFT JOIN tokens t ON t.user_id = u.id WHERE {' OR '.join(where)} ORDER BY u.name, u.id "
            f"LIMIT {int(limit)}", params).fetchall()
        return [(_user(row), [r[0] for r in self.db.execute("SELECT uid FROM tokens WHERE user_id = ? "
                                                            "ORDER BY uid", [row[0]])]) for row in rows]

    def find_token(self, uid: str) -> UserRecord | None:
        row = self.db.execute(
            'SELECT u.id, u.name, u.phone, u."group", u.blocked, u.valid_until FROM tokens t '
            "JOIN users u ON u.id = t.user_id WHERE t.uid = ?", [uid]).fetchone()
        return _user(row) if row else None

    def find_user(self, user_id: str) -> UserRecord | None:
        row = self.db.execute(
            'SELECT id, name, phone, "group", blocked, valid_until FROM users WHERE id = ?',
            [user_id]).fetchone()
        return _user(row) if row else None

    def user_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM users").fetchone()[0])

    # -- tariffs ---------------------------------------------------------------------

    def replace_tariffs(self, version: int, body: dict[str, Any]) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO tariff_lists(version, body) VALUES (?, ?)",
                            [version, json.dumps(body, separators=(",", ":"))])
            self.set_list_version("tariffs", version)
            # Keep the lists that still price a running session; drop the others.
            self.db.execute(
                "DELETE FROM tariff_lists WHERE version <> ? AND version NOT IN "
                "(SELECT tariffs_version FROM sessions WHERE status = 'active' AND tariffs_version IS NOT NULL)",
                [version])

    def tariff_list(self, version: int | None = None) -> dict[str, Any] | None:
        if version is None:
            version = self.list_version("tariffs")
        row = self.db.execute("SELECT body FROM tariff_lists WHERE version = ?", [version]).fetchone()
        return json.loads(row[0]) if row else None

    # -- sessions --------------------------------------------------------------------

    def start_session(self, record: SessionRecord, *, event: OutboundEvent) -> Envelope:
        """The session row and its session_started event land in one transaction."""
        with self.transaction():
            row = {name: getattr(record, name) for name in _SESSION_COLUMNS}
            row["offline_start"] = int(record.offline_start)
            row["clock_synced"] = int(record.clock_synced)
            self.db.table("sessions").insert(row)
            return self._append_event(event)

    def add_sample(self, session_id: str, *, ts: str, energy_wh: int, power_w: int | None,
                   current_a: Sequence[float] | None, charging: bool) -> None:
        self.db.execute(
            "INSERT INTO samples(session_id, ts, energy_wh, power_w, current_a, charging) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [session_id, ts, energy_wh, power_w, json.dumps(list(current_a)) if current_a else None,
             int(charging)])

    def samples(self, session_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT ts, energy_wh, power_w, current_a, charging FROM samples WHERE session_id = ? "
            "ORDER BY rowid", [session_id]).fetchall()
        return [{"ts": r[0], "energy_wh": r[1], "power_w": r[2],
                 "current_a": json.loads(r[3]) if r[3] else None, "charging": bool(r[4])} for r in rows]

    def end_session(self, session_id: str, *, ended: dict[str, Any], event: OutboundEvent,
                    then: Sequence[OutboundEvent] = ()) -> Envelope:
        """Closes the session and queues its session_ended `event` in one transaction; ends it only
        once. `then`: events queued after it in the same transaction."""
        with self.transaction():
            status = self.db.execute("SELECT status FROM sessions WHERE id = ?", [session_id]).fetchone()
            if status is None or status[0] != "active":
                raise StoreError(f"session {session_id} is not active")
            columns = ", ".join(f'"{k}" = ?' for k in ended)
            self.db.execute(f"UPDATE sessions SET status = 'ended', {columns} WHERE id = ?",
                            [*ended.values(), session_id])
            envelope = self._append_event(event)
            for later in then:
                self._append_event(later)
            return envelope

    def set_energy_offset(self, session_id: str, offset_wh: int) -> None:
        self.db.execute("UPDATE sessions SET energy_offset_wh = ? WHERE id = ?", [offset_wh, session_id])

    def set_unbilled_energy(self, session_id: str, *, offset_wh: int, unbilled_wh: int, reason: str | None,
                            fault: OutboundEvent) -> Envelope:
        """A jump not billed: the session's new offset, its un-billed total and the evse_fault that
        names it, in one transaction (billed + un-billed stays the register difference after a crash)."""
        with self.transaction():
            self.db.execute("UPDATE sessions SET energy_offset_wh = ?, unbilled_wh = ?, unbilled_reason = ? "
                            "WHERE id = ?", [offset_wh, unbilled_wh, reason, session_id])
            return self._append_event(fault)

    def last_sample(self, session_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT ts, energy_wh FROM samples WHERE session_id = ? ORDER BY rowid DESC "
                              "LIMIT 1", [session_id]).fetchone()
        return {"ts": row[0], "energy_wh": row[1]} if row else None

    def shift_session_times(self, session_id: str, seconds: float) -> None:
        """The wall clock stepped: move a running session's start and samples with it, so its
        durations stay what the monotonic clock measured."""
        def shifted(ts: str) -> str:
            return rfc3339(parse_rfc3339(ts) + timedelta(seconds=seconds))

        with self.transaction():
            row = self.db.execute("SELECT started_at FROM sessions WHERE id = ?", [session_id]).fetchone()
            if row is None:
                return
            self.db.execute("UPDATE sessions SET started_at = ?, clock_synced = 0 WHERE id = ?",
                            [shifted(row[0]), session_id])
            rows = self.db.execute("SELECT rowid, ts FROM samples WHERE session_id = ?", [session_id]).fetchall()
            self.db.conn.executemany("UPDATE samples SET ts = ? WHERE rowid = ?",
                                     [(shifted(ts), rowid) for rowid, ts in rows])

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                        "value = excluded.value", [key, value])

    def session_count(self, *, active: bool = False) -> int:
        sql = "SELECT count(*) FROM sessions" + (" WHERE status = 'active'" if active else "")
        return int(self.db.execute(sql).fetchone()[0])

    def holds_data(self) -> bool:
        """Anything a newly set up gateway does not have: sessions, events, users, tariffs (also
        in a database of any older schema)."""
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return any(table in tables and self.db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                   for table in ("sessions", "outbox", "users", "tariff_lists"))

    def active_sessions(self) -> list[SessionRecord]:
        return self.sessions(where="status = 'active'")

    def session(self, session_id: str) -> SessionRecord | None:
        found = self.sessions(where="id = ?", params=[session_id])
        return found[0] if found else None

    def sessions(self, *, where: str = "1", params: Sequence[Any] = (), limit: int | None = None,
                 evse_id: str | None = None, user_or_token: str | None = None, status: str | None = None,
                 since: datetime | None = None, until: datetime | None = None) -> list[SessionRecord]:
        """By start, filtered by `where` and each filter given; since <= started_at < until, as RFC 3339 text."""
        filters = {"evse_id = ?": evse_id, "(user_id = ? OR token = ?)": user_or_token, "status = ?": status,
                   "started_at >= ?": since and rfc3339(since), "started_at < ?": until and rfc3339(until)}
        given = {clause: value for clause, value in filters.items() if value is not None}
        bound = [*params, *(value for clause, value in given.items() for _ in range(clause.count("?")))]
        # A read-only look at a database of an older schema (not migrated): its missing columns
        # take their defaults.
        present = {r[1] for r in self.db.execute("PRAGMA table_info(sessions)").fetchall()}
        names = [c for c in _SESSION_COLUMNS if c in present]
        cols = ", ".join(f'"{c}"' for c in names)
        sql = f"SELECT {cols} FROM sessions WHERE {' AND '.join([f'({where})', *given])} ORDER BY started_at"
        if limit:
            sql += f" LIMIT {int(limit)}"
        out = []
        for row in self.db.execute(sql, bound).fetchall():
            values = dict(zip(names, row))
            values["offline_start"] = bool(values["offline_start"])
            values["clock_synced"] = bool(values["clock_synced"])
            out.append(SessionRecord(**values))
        return out

    # -- commands and settings -------------------------------------------------------

    def command_result(self, request_id: str) -> CommandResult | None:
        row = self.db.execute("SELECT request_id, body FROM command_results WHERE request_id = ?",
                              [request_id]).fetchone()
        return CommandResult(*row) if row else None

    def save_command_result(self, request_id: str, body: str, *, answered_at: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO command_results(request_id, body, answered_at) "
                        "VALUES (?, ?, ?)", [request_id, body, answered_at])

    def evse_available(self, evse_id: str) -> bool:
        row = self.db.execute("SELECT available FROM evse_settings WHERE evse_id = ?", [evse_id]).fetchone()
        return bool(row[0]) if row else True

    def set_evse_available(self, evse_id: str, available: bool) -> None:
        self.db.execute(
            "INSERT INTO evse_settings(evse_id, available) VALUES (?, ?) "
            "ON CONFLICT(evse_id) DO UPDATE SET available = excluded.available",
            [evse_id, int(available)])

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    def backup_to(self, path: str | Path) -> int:
        """A consistent copy of the whole database as of one instant, through SQLite's online
        backup (the agent goes on writing meanwhile; a read-only Store works too). The copy is one
        self-contained file (no WAL). Returns its schema version."""
        target = sqlite3.connect(str(path), isolation_level=None)
        try:
            self.db.conn.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
            return int(target.execute("PRAGMA user_version").fetchone()[0])
        finally:
            target.close()


def _user(row: Sequence[Any]) -> UserRecord:
    return UserRecord(id=row[0], name=row[1], phone=row[2], group=row[3], blocked=bool(row[4]),
                      valid_until=row[5])
