"""Database files that are not open as a Store: a backup's snapshot, a database being imported or
set aside, the schema version a technician's command reports."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from ._errors import storage_errors


def schema_version(db_path: str | Path, *, timeout_s: float = 5.0) -> int:
    """`PRAGMA user_version`, read-only."""
    with storage_errors():
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=timeout_s)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()


def check_file(db_path: str | Path) -> tuple[str, int]:
    """SQLite's integrity check ("ok" or what is wrong) and the schema version of a file."""
    with storage_errors():
        conn = sqlite3.connect(db_path)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
            return str(verdict), int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()


def fold_wal(db_path: str | Path) -> None:
    """Folds the WAL into the database file and leaves it self-contained (journal mode DELETE)."""
    with storage_errors():
        conn = sqlite3.connect(db_path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
