"""The events the gateway sends on ~/events (cloud-mqtt-v1 "Events"): the envelope and each type's
data. The outbox stores an event's body exactly as built here, once, and sends that every time."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class StartedSession(Protocol):  # edge_agent.store.SessionRecord
    @property
    def id(self) -> str: ...
    @property
    def evse_id(self) -> str: ...
    @property
    def token(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def group(self) -> str | None: ...
    @property
    def auth(self) -> str: ...
    @property
    def started_at(self) -> str: ...
    @property
    def meter_start_wh(self) -> int: ...
    @property
    def tariff_id(self) -> str | None: ...
    @property
    def tariffs_version(self) -> int | None: ...
    @property
    def clock_synced(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Event:
    """One event, all but what the outbox gives it when it is appended: its seq and its id."""

    type: str
    data: dict[str, Any]
    ts: str
    offline: bool

    def body(self, *, seq: int, event_id: str) -> str:
        return json.dumps({"id": event_id, "seq": seq, "type": self.type, "ts": self.ts, "offline": self.offline,
                           "data": self.data}, separators=(",", ":"))


def session_started_data(record: StartedSession) -> dict[str, Any]:
    return {
        "session_id": record.id,
        "evse_id": record.evse_id,
        "token": record.token,
        "user_id": record.user_id,
        "group": record.group,
        "auth": record.auth,
        "started_at": record.started_at,
        "meter_start_wh": record.meter_start_wh,
        "tariff_id": record.tariff_id,
        "tariffs_version": record.tariffs_version,
        "clock_synced": record.clock_synced,
    }


def session_started(record: StartedSession, *, ts: str, offline: bool) -> Event:
    return Event("session_started", session_started_data(record), ts, offline)


def session_ended(record: StartedSession, ended: dict[str, Any], *, cost: dict[str, Any],
                  charging_periods: Sequence[dict[str, Any]], clock_synced: bool, ts: str, offline: bool) -> Event:
    """`ended`: the session's end columns as stored (its cost as a JSON string there); the event
    carries the cost and the charging periods as objects."""
    data = {**session_started_data(record), **ended, "cost": cost, "charging_periods": list(charging_periods),
            "clock_synced": clock_synced}
    return Event("session_ended", data, ts, offline)


def evse_fault(evse_id: str, error: str | None, *, ts: str, offline: bool) -> Event:
    """`error` None: the EVSE's fault has cleared."""
    return Event("evse_fault", {"evse_id": evse_id, "error": error, "ts": ts}, ts, offline)


def meter_values(session_id: str, evse_id: str, samples: list[dict[str, Any]], *, ts: str, offline: bool) -> Event:
    return Event("meter_values", {"session_id": session_id, "evse_id": evse_id, "samples": samples}, ts, offline)


def auth_rejected(token: str, evse_id: str | None, reason: str | None, *, ts: str, offline: bool) -> Event:
    return Event("auth_rejected", {"token": token, "evse_id": evse_id, "reason": reason, "ts": ts}, ts, offline)
