from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic of cloud-mqtt-v1 under one gateway's root (`~`)."""

    root: str

    @property
    def state(self) -> str:
        return f"{self.root}/state"

    def evse_status(self, evse_id: str) -> str:
        return f"{self.root}/evse/{evse_id}/status"

    @property
    def events(self) -> str:
        return f"{self.root}/events"

    @property
    def result(self) -> str:
        return f"{self.root}/result"

    @property
    def auth_request(self) -> str:
        return f"{self.root}/auth/request"

    @property
    def ack(self) -> str:
        return f"{self.root}/ack"

    @property
    def users(self) -> str:
        return f"{self.root}/config/users"

    @property
    def users_delta(self) -> str:
        return f"{self.root}/config/users/delta"

    @property
    def tariffs(self) -> str:
        return f"{self.root}/config/tariffs"

    @property
    def commands(self) -> str:
        return f"{self.root}/cmd/+"

    @property
    def auth_response(self) -> str:
        return f"{self.root}/auth/response"

    def subscriptions(self) -> list[str]:
        return [self.ack, self.users, self.users_delta, self.tariffs, self.commands, self.auth_response]

    def command_name(self, topic: str) -> str | None:
        prefix = f"{self.root}/cmd/"
        if topic.startswith(prefix) and "/" not in topic[len(prefix):]:
            return topic[len(prefix):]
        return None
