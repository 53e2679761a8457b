"""Schema and migrations. Each migration runs once, in order, inside one transaction.

The database's `PRAGMA user_version` is the number of migrations applied. A database
from a newer release (user_version above what this release knows) is refused, so a
downgrade can never silently misread billing data.
"""
from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: first release
    """
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE list_versions (name TEXT PRIMARY KEY, version INTEGER NOT NULL);
    CREATE TABLE users (
        id TEXT PRIMARY KEY, name TEXT, phone TEXT, "group" TEXT,
        blocked INTEGER NOT NULL DEFAULT 0, valid_until TEXT
    );
    CREATE TABLE tokens (uid TEXT PRIMARY KEY, user_id TEXT NOT NULL);
    CREATE INDEX tokens_user ON tokens(user_id);
    CREATE TABLE tariff_lists (version INTEGER PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY, evse_id TEXT NOT NULL, status TEXT NOT NULL,
        token TEXT, user_id TEXT, "group" TEXT, user_name TEXT, auth TEXT NOT NULL,
        started_at TEXT NOT NULL, meter_start_wh INTEGER NOT NULL,
        tariff_id TEXT, tariffs_version INTEGER, offline_start INTEGER NOT NULL,
        clock_synced INTEGER NOT NULL DEFAULT 1,
        ended_at TEXT, meter_stop_wh INTEGER, energy_wh INTEGER,
        charging_s INTEGER, parking_s INTEGER, reason TEXT, cost TEXT
    );
    CREATE INDEX sessions_status ON sessions(status);
    CREATE INDEX sessions_started ON sessions(started_at);
    CREATE TABLE samples (
        session_id TEXT NOT NULL, ts TEXT NOT NULL, energy_wh INTEGER NOT NULL,
        power_w INTEGER, current_a TEXT, charging INTEGER NOT NULL
    );
    CREATE INDEX samples_session ON samples(session_id);
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE command_results (request_id TEXT PRIMARY KEY, body TEXT NOT NULL, answered_at TEXT NOT NULL);
    CREATE TABLE evse_settings (evse_id TEXT PRIMARY KEY, available INTEGER NOT NULL DEFAULT 1);
    """,
    # 2: a session survives its charger's energy counter being reset (a reboot) or jumping,
    #    and the wall clock stepping (meta keeps the clock's offset for the next run of this boot)
    """
    ALTER TABLE sessions ADD COLUMN energy_offset_wh INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 3: a lasting implausible counter jump is not billed; the session keeps how much and why
    """
    ALTER TABLE sessions ADD COLUMN unbilled_wh INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN unbilled_reason TEXT;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    pass


def migrate(conn: sqlite3.Connection, path: str) -> int:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path}: database schema version {current} is newer than this release knows "
            f"({SCHEMA_VERSION}); refusing to run an older agent on newer data (downgrade)"
        )
    for number in range(current, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION
