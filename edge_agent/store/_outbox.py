"""The outbox half of Store: events wait here, in seq order, until the cloud acknowledges them;
and the transaction, which wakes the listeners (the sender) once the events appended in it are
committed."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from sqlite_utils import Database

from ._errors import storage_errors, typed_errors


class OutboundEvent(Protocol):
    """An event to append (edge_agent.cloud.Event builds them: the wire format is the cloud's)."""

    @property
    def type(self) -> str: ...
    def body(self, *, seq: int, event_id: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Envelope:
    """An event as it sits in the outbox: `body` is the exact JSON sent, every time."""

    seq: int
    id: str
    type: str
    body: str


@typed_errors
class Outbox:
    """A base of Store (which opens `db`): its transactions and its outbox."""

    db: Database

    def __init__(self) -> None:
        self._appended_listeners: list[Callable[[], None]] = []
        self._depth = 0  # transactions open (nested ones are savepoints)
        self._appended = False  # an event was appended in the open transaction

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write; events appended in it wake the listeners once it is committed."""
        self._depth += 1
        try:
            with storage_errors(), self.db.atomic():
                yield
        except BaseException:
            if self._depth == 1:
                self._appended = False
            raise
        finally:
            self._depth -= 1
        if self._depth == 0 and self._appended:
            self._appended = False
            for listener in self._appended_listeners:
                listener()

    def on_event_appended(self, listener: Callable[[], None]) -> None:
        """`listener()` after every commit that appended an event to the outbox (the sender's wake)."""
        self._appended_listeners.append(listener)

    def _next_counter(self, name: str) -> int:
        self.db.execute(
            "INSERT INTO counters(name, value) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1", [name])
        return int(self.db.execute("SELECT value FROM counters WHERE name = ?", [name]).fetchone()[0])

    # -- outbox ----------------------------------------------------------------------

    def _append_event(self, event: OutboundEvent) -> Envelope:
        seq = self._next_counter("seq")
        self._appended = True
        event_id = str(uuid.uuid4())
        body = event.body(seq=seq, event_id=event_id)
        self.db.execute("INSERT INTO outbox(seq, id, type, body) VALUES (?, ?, ?, ?)",
                        [seq, event_id, event.type, body])
        return Envelope(seq, event_id, event.type, body)

    def append_event(self, event: OutboundEvent) -> Envelope:
        with self.transaction():
            return self._append_event(event)

    def pending_events(self, *, after_seq: int = 0, limit: int = 100) -> list[Envelope]:
        rows = self.db.execute(
            "SELECT seq, id, type, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            [after_seq, limit]).fetchall()
        return [Envelope(*row) for row in rows]

    def acknowledge(self, event_ids: Iterable[str]) -> list[int]:
        """Removes acknowledged events; returns the seqs that were still pending."""
        ids = list(event_ids)
        if not ids:
            return []
        removed: list[int] = []
        # Not fsynced: losing an acknowledgement to a power cut only re-sends an event the cloud
        # drops by id. The next billing commit (FULL) makes it durable anyway.
        self.db.execute("PRAGMA synchronous = NORMAL")
        try:
            self._delete_acknowledged(ids, removed)
        finally:
            self.db.execute("PRAGMA synchronous = FULL")
        return removed

    def _delete_acknowledged(self, ids: list[str], removed: list[int]) -> None:
        with self.transaction():
            for chunk_start in range(0, len(ids), 500):
                chunk = ids[chunk_start:chunk_start + 500]
                marks = ",".join("?" * len(chunk))
                removed += [r[0] for r in self.db.execute(
                    f"SELECT seq FROM outbox WHERE id IN ({marks})", chunk).fetchall()]
                self.db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)

    def outbox_pending(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])
