"""Who may charge: local list first, then the cloud when it is reachable, then the offline policy.

A tag becomes a decision here; the decision becomes a session in sessions.py.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .clock import parse_rfc3339, utc_now
from .store import Store, UserRecord

AuthMethod = Literal["local_list", "online", "remote", "offline_unknown"]
RejectReason = Literal["unknown", "blocked", "expired", "offline_unknown"]


@dataclass(frozen=True, slots=True)
class Decision:
    accepted: bool
    token: str | None
    user: UserRecord | None = None
    method: AuthMethod | None = None  # how an accepted token was authorized
    reason: RejectReason | None = None  # why a token was rejected

    @property
    def summary(self) -> str:
        who = self.user.name or self.user.id if self.user else "unknown user"
        if self.accepted:
            return f"{self.token} accepted ({self.method}, {who})"
        return f"{self.token} rejected ({self.reason}, {who})"


@dataclass(frozen=True, slots=True)
class OnlineAnswer:
    status: Literal["accepted", "blocked", "unknown"]
    user: dict[str, Any] | None


# Asks the cloud; returns None when there is no answer in time or no connection.
OnlineAsk = Callable[[str, str | None], Awaitable[OnlineAnswer | None]]


class Authorizer:
    def __init__(self, *, store: Store, offline_unknown: Literal["reject", "accept"],
                 ask_online: OnlineAsk, is_online: Callable[[], bool]) -> None:
        self._store = store
        self._offline_unknown = offline_unknown
        self._ask_online = ask_online
        self._is_online = is_online

    def check_local(self, token: str, *, now: datetime | None = None) -> Decision | None:
        """The local list's verdict, or None when the list does not know the token."""
        user = self._store.find_token(token)
        if user is None:
            return None
        return _judge(token, user, "local_list", now or utc_now())

    async def authorize(self, token: str, *, evse_id: str | None) -> Decision:
        local = self.check_local(token)
        if local is not None:
            return local
        if self._is_online():
            answer = await self._ask_online(token, evse_id)
            if answer is not None:
                return _from_online(token, answer)
        if self._offline_unknown == "accept":
            return Decision(True, token, None, method="offline_unknown")
        return Decision(False, token, None, reason="offline_unknown")

    def authorize_user(self, user_id: str) -> Decision:
        """Remote start from the app: the user must be on the list and allowed."""
        user = self._store.find_user(user_id)
        if user is None:
            return Decision(False, None, None, reason="unknown")
        return _judge(None, user, "remote", utc_now())


def _judge(token: str | None, user: UserRecord, method: AuthMethod, now: datetime) -> Decision:
    if user.blocked:
        return Decision(False, token, user, reason="blocked")
    if user.valid_until:
        try:
            expired = parse_rfc3339(user.valid_until) <= now
        except ValueError:
            expired = True  # an unreadable expiry must not grant charging
        if expired:
            return Decision(False, token, user, reason="expired")
    return Decision(True, token, user, method=method)


def _from_online(token: str, answer: OnlineAnswer) -> Decision:
    user = None
    if answer.user:
        u = answer.user
        user = UserRecord(id=str(u.get("id")), name=u.get("name"), phone=u.get("phone"),
                          group=u.get("group"), blocked=bool(u.get("blocked")),
                          valid_until=u.get("valid_until"))
    if answer.status == "accepted":
        if user is not None:
            return _judge(token, user, "online", utc_now())
        return Decision(True, token, None, method="online")
    return Decision(False, token, user, reason="blocked" if answer.status == "blocked" else "unknown")
