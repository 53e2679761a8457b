"""Asking the cloud about a card (~/auth/request) and taking its answer (~/auth/response)."""
from __future__ import annotations

import asyncio
import json
import logging
import uuid

from ..authorization import OnlineAnswer
from ..cloud import MqttLink, Topics

log = logging.getLogger("edge_agent.agent")


class OnlineQuestions:
    def __init__(self, *, link: MqttLink, topics: Topics, timeout_s: float) -> None:
        self.link = link
        self.topics = topics
        self.timeout_s = timeout_s
        self._pending: dict[str, asyncio.Future[OnlineAnswer]] = {}

    async def ask(self, token: str, evse_id: str | None) -> OnlineAnswer | None:
        """The cloud's answer, or None: decide offline."""
        request_id = str(uuid.uuid4())
        future: asyncio.Future[OnlineAnswer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            payload = json.dumps({"request_id": request_id, "token": token, "evse_id": evse_id})
            if self.link.publish(self.topics.auth_request, payload) is None:
                return None
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            log.info("no answer to auth request for %s within %ss; deciding offline", token, self.timeout_s)
            return None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the agent is stopping
            log.info("cloud link lost while asking about %s; deciding offline", token)
            return None  # the link dropped: link_lost() cancelled the question
        finally:
            self._pending.pop(request_id, None)

    def answered(self, request_id: str, answer: OnlineAnswer) -> None:
        future = self._pending.get(request_id)
        if future is not None and not future.done():
            future.set_result(answer)

    def link_lost(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.cancel()
