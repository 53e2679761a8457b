"""Sends the store's outbox to the cloud: in seq order, again after every reconnect, and
again every ack_timeout_s until the cloud acknowledges; only an ack removes an event."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from ..store import Store
from ._link import MqttLink

log = logging.getLogger("edge_agent.outbox")


class OutboxSender:
    def __init__(self, *, store: Store, link: MqttLink, topic: str, ack_timeout_s: float,
                 window: int = 200) -> None:
        self._store = store
        self._link = link
        self._topic = topic
        self._ack_timeout_s = ack_timeout_s
        self._window = window  # events published and not yet acknowledged, at most
        self._sent: dict[int, float] = {}  # seq -> monotonic time of the last sending
        self._last_sent_seq = 0
        self._wake = asyncio.Event()
        store.on_event_appended(self.wake)  # an event on disk goes out without anyone's nudge
        self.published = 0
        self.resent = 0

    def wake(self) -> None:
        self._wake.set()

    def on_connected(self) -> None:
        # Everything not acknowledged goes again, from the oldest.
        self._sent.clear()
        self._last_sent_seq = 0
        self.wake()

    def on_disconnected(self) -> None:
        self._sent.clear()
        self._last_sent_seq = 0

    def on_acknowledged(self, event_ids: Iterable[str]) -> int:
        removed = self._store.acknowledge(event_ids)
        for seq in removed:
            self._sent.pop(seq, None)
        if removed:
            self.wake()
        return len(removed)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._link.connected:
                self._send_due()

    def _send_due(self) -> None:
        now = time.monotonic()
        overdue = sorted(seq for seq, sent_at in self._sent.items() if now - sent_at >= self._ack_timeout_s)
        if overdue:
            wanted = set(overdue)
            still_pending = set()
            for envelope in self._store.pending_events(after_seq=overdue[0] - 1,
                                                       limit=self._last_sent_seq - overdue[0] + 1):
                if envelope.seq in wanted:
                    still_pending.add(envelope.seq)
                    if self._link.publish(self._topic, envelope.body, qos=1) is None:
                        return
                    self._sent[envelope.seq] = now
                    self.resent += 1
            for seq in wanted - still_pending:
                self._sent.pop(seq, None)  # acknowledged meanwhile
        room = self._window - len(self._sent)
        while room > 0:
            batch = self._store.pending_events(after_seq=self._last_sent_seq, limit=min(room, 100))
            if not batch:
                return
            for envelope in batch:
                if self._link.publish(self._topic, envelope.body, qos=1) is None:
                    return
                self._sent[envelope.seq] = now
                self._last_sent_seq = envelope.seq
                self.published += 1
                room -= 1
