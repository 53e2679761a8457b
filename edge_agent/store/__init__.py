"""The gateway's durable state: one SQLite file in data_dir (WAL, synchronous FULL).

Every billing record and every event is committed here before anything is published
or acknowledged; the outbox is the only way events reach the cloud.
"""
from __future__ import annotations

from ._store import (
    CommandResult,
    Envelope,
    SessionRecord,
    Store,
    StoreError,
    UserRecord,
)
from ._schema import SCHEMA_VERSION, SchemaTooNew

__all__ = [
    "SCHEMA_VERSION",
    "CommandResult",
    "Envelope",
    "SchemaTooNew",
    "SessionRecord",
    "Store",
    "StoreError",
    "UserRecord",
]
