"""What the agent writes that is not a session's own row: events for the cloud, and what a full
disk means (charging goes on, nothing new starts, the error stands in ~/state until space returns)."""
from __future__ import annotations

import logging
from collections.abc import Callable

from ..cloud import Event
from ..store import StorageError, StorageFull, Store

log = logging.getLogger("edge_agent.agent")


class Journal:
    def __init__(self, *, store: Store, is_online: Callable[[], bool]) -> None:
        self.store = store
        self.is_online = is_online
        self.storage_error: str | None = None  # shown in ~/state

    @property
    def offline(self) -> bool:
        return not self.is_online()

    def record_event(self, event: Event) -> None:
        """Appends an event for the cloud (the store's append wakes the outbox)."""
        try:
            self.store.append_event(event)
        except StorageError as exc:
            if not self.storage_failed(exc, f"recording a {event.type} event"):
                raise

    def storage_failed(self, exc: StorageError, what: str) -> bool:
        """True for a full disk (logged once, reported in ~/state); other errors are not ours to hide."""
        if not isinstance(exc, StorageFull):
            return False
        if self.storage_error is None:
            log.error("storage: %s failed: %s. Charging goes on; what is decided is kept in memory and "
                      "written when space returns; no new session starts until then", what, exc)
        self.storage_error = f"{what}: {exc}"
        return True

    def storage_recovered(self) -> None:
        if self.storage_error is not None:
            log.warning("storage writable again")
            self.storage_error = None
