"""One websocket connection of the simulated charge point: the `ocpp` library's ChargePoint (client
side) with every message recorded, and the central system's calls handed to the simulator.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from ocpp.routing import on
from ocpp.v16 import ChargePoint
from ocpp.v16.enums import Action

# The central system's calls the simulator answers; anything else gets the library's NotImplemented.
ANSWERED = (
    Action.change_availability, Action.change_configuration, Action.clear_cache, Action.clear_charging_profile,
    Action.data_transfer, Action.get_configuration, Action.get_local_list_version, Action.remote_start_transaction,
    Action.remote_stop_transaction, Action.reset, Action.send_local_list, Action.set_charging_profile,
    Action.trigger_message, Action.unlock_connector,
)
_KINDS = {2: "call", 3: "result", 4: "error"}


class SimMessage(NamedTuple):
    """One OCPP message on the wire, as the charge point sent or received it."""

    direction: str  # "sent" or "received"
    kind: str  # "call", "result" or "error"
    action: str  # a result's or error's is that of its call
    payload: Any  # camelCase, as on the wire (an error's: [code, description, details])
    unique_id: str
    at: float  # time.monotonic()


class Owner(Protocol):
    """What the link needs of the simulator."""

    log: list[SimMessage]
    errors: list[str]
    actions: dict[str, str]  # unique id -> action, for every call either side made

    def answer(self, action: str, payload: dict[str, Any]) -> tuple[Any, Callable[[], object] | None]: ...

    def early_call(self, link: SimLink, action: str) -> bool: ...

    def extra_boot_call(self) -> list[Any] | None: ...


class SimLink(ChargePoint):
    """The library's charge point for one connection. ``closed`` is done once the connection ended."""

    def __init__(self, owner: Owner, charge_point_id: str, connection: Any, response_timeout_s: float) -> None:
        super().__init__(charge_point_id, connection, response_timeout=response_timeout_s,
                         logger=logging.getLogger("hardware_sim.ocpp"))
        self.owner = owner
        self.connection = connection
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.boot_id: str | None = None  # the unique id of the BootNotification in flight
        self.boot_answered = False
        self._followups: dict[str, Callable[[], object]] = {}

    def _record(self, direction: str, raw: str) -> list[Any] | None:
        try:
            message = json.loads(raw)
            kind, unique_id = _KINDS[message[0]], str(message[1])
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        if kind == "call":
            action, payload = str(message[2]), message[3]
            self.owner.actions[unique_id] = action
        else:
            action = self.owner.actions.get(unique_id, "")
            payload = message[2] if kind == "result" else message[2:]
        self.owner.log.append(SimMessage(direction, kind, action, payload, unique_id, time.monotonic()))
        return list(message)

    async def route_message(self, raw_msg: str) -> None:
        message = self._record("received", raw_msg)
        if message is not None:
            if message[0] != 2 and message[1] == self.boot_id:
                self.boot_answered = True
            elif message[0] == 2 and not self.boot_answered and self.owner.early_call(self, str(message[2])):
                return  # dropped with the connection
        await super().route_message(raw_msg)

    async def _send(self, message: str) -> None:
        await super()._send(message)
        sent = self._record("sent", message)
        if sent is None:
            return
        if sent[0] == 2 and sent[1] == self.boot_id:
            extra = self.owner.extra_boot_call()
            if extra is not None:
                await self._send(json.dumps([2, str(uuid.uuid4()), *extra]))
        followup = self._followups.pop(str(sent[1]), None) if sent[0] == 3 else None
        if followup is not None:
            asyncio.get_running_loop().call_soon(self._follow_up, followup)

    def _follow_up(self, followup: Callable[[], object]) -> None:
        try:
            followup()
        except Exception as error:  # noqa: BLE001 - a sim bug shows in `errors`, the connection lives on
            self.owner.errors.append(f"{type(error).__name__}: {error}")

    def _answer(self, action: str, unique_id: str, payload: dict[str, Any]) -> Any:
        result, followup = self.owner.answer(action, payload)
        if followup is not None:
            self._followups[unique_id] = followup  # runs once the reply is on the wire
        return result


def _handler(action: Action) -> Any:
    def handle(self: SimLink, call_unique_id: str, **payload: Any) -> Any:
        return self._answer(str(action), call_unique_id, payload)

    # The library routes by method name (ocpp.routing.create_route_map), so name it before @on.
    handle.__name__ = handle.__qualname__ = f"on_sim_{action.name}"
    return on(action)(handle)


for _action in ANSWERED:
    setattr(SimLink, f"on_sim_{_action.name}", _handler(_action))
