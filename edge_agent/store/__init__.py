"""The gateway's durable state: one SQLite file in data_dir (WAL, synchronous FULL).

Every billing record and every event is committed here before anything is published
or acknowledged; the outbox is the only way events reach the cloud. Every SQL statement on the
store's tables is in this package, and a failing disk surfaces as the typed errors below
(StorageFull: retryable, space may return).
"""
from __future__ import annotations

from ._errors import (
    StorageCorrupt,
    StorageError,
    StorageFailed,
    StorageFull,
    StoreError,
    TokenTaken,
)
from ._files import check_file, fold_wal, schema_version
from ._outbox import Envelope, OutboundEvent
from ._schema import SCHEMA_VERSION, SchemaTooNew
from ._staging import DuplicateToken, DuplicateUser, UserStaging
from ._store import (
    DB_FILE,
    CommandResult,
    SessionRecord,
    Store,
    UserRecord,
)

__all__ = [
    "DB_FILE",
    "SCHEMA_VERSION",
    "CommandResult",
    "DuplicateToken",
    "DuplicateUser",
    "Envelope",
    "OutboundEvent",
    "SchemaTooNew",
    "SessionRecord",
    "StorageCorrupt",
    "StorageError",
    "StorageFailed",
    "StorageFull",
    "Store",
    "StoreError",
    "TokenTaken",
    "UserRecord",
    "UserStaging",
    "check_file",
    "fold_wal",
    "schema_version",
]
