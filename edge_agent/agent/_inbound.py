"""Everything the cloud sends, by topic: acks to the outbox, lists to the store, answers to the
questions asked, commands to their handler. A bad message is counted and logged, never fatal."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..authorization import OnlineAnswer
from ..cloud import (
    Inbound,
    OutboxSender,
    PayloadError,
    RejectionLog,
    Topics,
    check_ack,
    check_auth_response,
    parse_json_object,
)
from ..lists import UserListUpdater, apply_tariff_list
from ..store import Store
from ._commands import Commands
from ._online import OnlineQuestions

log = logging.getLogger("edge_agent.agent")


class RejectedMessages:
    """Counted in memory and saved at most once a minute: a flood of bad messages must not
    become a flood of SD-card writes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.count = store.counter("rejected_messages")
        self.log = RejectionLog(logger=log)
        self._saved = self.count
        self._saved_at = time.monotonic()

    def note(self, topic: str, error: Exception) -> None:
        self.count += 1
        self.log.note(topic, error)

    def save(self) -> None:
        if self.count != self._saved:
            self.store.save_counter("rejected_messages", self.count)
            self._saved = self.count

    def save_due(self, now: float) -> bool:
        if now - self._saved_at < 60:
            return False
        self._saved_at = now
        return True


class InboundRouter:
    def __init__(self, *, topics: Topics, store: Store, outbox: OutboxSender, user_lists: UserListUpdater,
                 questions: OnlineQuestions, commands: Commands, rejected: RejectedMessages,
                 spawn: Callable[[Coroutine[Any, Any, None], str], None]) -> None:
        self.topics = topics
        self.store = store
        self.outbox = outbox
        self.user_lists = user_lists
        self.questions = questions
        self.commands = commands
        self.rejected = rejected
        self._spawn = spawn

    def on_message(self, message: Inbound) -> None:
        topic = message.topic
        if not topic.startswith(self.topics.root + "/"):
            # Every subscription is under ~/; whatever else a broker delivers is not ours to act on.
            log.debug("message on %s ignored: not under %s/", topic, self.topics.root)
            return
        try:
            if topic == self.topics.ack:
                self.outbox.on_acknowledged(check_ack(parse_json_object(message.payload)))
            elif topic == self.topics.users:
                self.user_lists.offer_full(topic, message.payload)
            elif topic == self.topics.users_delta:
                self.user_lists.offer_delta(topic, message.payload)
            elif topic == self.topics.tariffs:
                apply_tariff_list(self.store, parse_json_object(message.payload))
            elif topic == self.topics.auth_response:
                answer = check_auth_response(parse_json_object(message.payload))
                self.questions.answered(answer.request_id, OnlineAnswer(answer.status, answer.user))  # type: ignore[arg-type]
            elif (name := self.topics.command_name(topic)) is not None:
                self._spawn(self.commands.on_command(name, message), f"command {name}")
        except PayloadError as exc:
            self.rejected.note(topic, exc)
        except Exception as exc:  # no message may take the agent down
            log.exception("unexpected failure handling a message on %s", topic)
            self.rejected.note(topic, exc)
