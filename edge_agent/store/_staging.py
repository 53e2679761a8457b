"""A full user list staged in a scratch SQLite file before it is swapped in whole
(Store.replace_users_from). Its keys find duplicate user ids and cards; it is written without a
journal or fsync (it is thrown away on any failure) and with a bounded page cache, so that a list
of any size never sits in memory."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ._errors import StoreError

# Store.replace_users_from reads these tables (seq keeps the list's order).
_SCHEMA = """
CREATE TABLE users (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT, phone TEXT,
                    grp TEXT, blocked INTEGER NOT NULL, valid_until TEXT);
CREATE TABLE tokens (uid TEXT PRIMARY KEY, user_id TEXT NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID;
"""


class DuplicateUser(StoreError):
    """The user id is staged already, as user number `first_seq` (None: not known)."""

    def __init__(self, user_id: str, first_seq: int | None) -> None:
        super().__init__(f"duplicate user id {user_id!r}")
        self.user_id, self.first_seq = user_id, first_seq


class DuplicateToken(StoreError):
    """Card number `index` of the user is staged already, for `owner` (user number `owner_seq`;
    None: not known)."""

    def __init__(self, index: int, uid: str, owner: str | None, owner_seq: int | None) -> None:
        super().__init__(f"duplicate token {uid}")
        self.index, self.uid, self.owner, self.owner_seq = index, uid, owner, owner_seq


class UserStaging:
    """Opened on a fresh file (an old one is removed), inside one transaction until commit().
    The caller closes it, and removes the file when it is not wanted."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.unlink(missing_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._conn.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; "
                                     "PRAGMA cache_size = -8192; PRAGMA locking_mode = EXCLUSIVE;")
            self._conn.executescript(_SCHEMA)
            self._conn.execute("BEGIN")
        except BaseException:
            self._conn.close()
            self.path.unlink(missing_ok=True)
            raise

    def add(self, seq: int, user: dict[str, Any]) -> None:
        """User number `seq` of the list (a checked user: id, name, phone, group, blocked,
        valid_until, tokens). Raises DuplicateUser or DuplicateToken."""
        conn = self._conn
        try:
            conn.execute("INSERT INTO users(seq, id, name, phone, grp, blocked, valid_until) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (seq, user["id"], user["name"], user["phone"], user["group"],
                          int(user["blocked"]), user["valid_until"]))
        except sqlite3.IntegrityError:
            first = conn.execute("SELECT seq FROM users WHERE id = ?", (user["id"],)).fetchone()
            raise DuplicateUser(user["id"], first[0] if first else None) from None
        for k, uid in enumerate(user["tokens"]):
            try:
                conn.execute("INSERT INTO tokens(uid, user_id, seq) VALUES (?, ?, ?)", (uid, user["id"], seq))
            except sqlite3.IntegrityError:
                owner = conn.execute("SELECT user_id, seq FROM tokens WHERE uid = ?", (uid,)).fetchone()
                raise DuplicateToken(k, uid, owner[0] if owner else None,
                                     owner[1] if owner else None) from None

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()
