"""Commands from the cloud (~/cmd/{name}): every one gets exactly one answer on ~/result, none is
carried out twice (answers are stored by request_id), a retained or expired one is not carried out."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..authorization import Authorizer
from ..clock import rfc3339, utc_now
from ..cloud import (
    Inbound,
    MqttLink,
    PayloadError,
    Topics,
    check_command,
    check_request_id,
    parse_json_object,
    printable,
    salvaged_request_id,
)
from ..loadmanagement import LoadManagementLoop
from ..store import Store
from ._evse import EvseController

log = logging.getLogger("edge_agent.agent")


class Commands:
    def __init__(self, *, evses: Mapping[str, EvseController], authorizer: Authorizer, store: Store,
                 link: MqttLink, topics: Topics, load: LoadManagementLoop | None, connect_timeout_s: float,
                 reject: Callable[[str, Exception], None], lists_forgotten: Callable[[], None]) -> None:
        self.evses = evses
        self.authorizer = authorizer
        self.store = store
        self.link = link
        self.topics = topics
        self.load = load
        self.connect_timeout_s = connect_timeout_s
        self._reject = reject
        self._lists_forgotten = lists_forgotten
        self._running: dict[str, asyncio.Future[None]] = {}

    async def on_command(self, name: str, message: Inbound) -> None:
        """Every command gets exactly one answer on ~/result (a retained one none). One rejected
        whole keeps its request_id in the answer when that field itself is usable."""
        if message.retain:
            log.warning("retained command on %s ignored: commands are events, not state", message.topic)
            return
        try:
            obj = parse_json_object(message.payload)
        except PayloadError as exc:
            self._reject(message.topic, exc)
            salvaged = salvaged_request_id(message.payload)
            if salvaged is None or not await self._answered_before(salvaged):
                self._answer(salvaged, "error", str(exc))
            return
        try:
            request_id = check_request_id(obj)
        except PayloadError as exc:
            self._reject(message.topic, exc)
            self._answer(None, "error", str(exc))
            return
        if await self._answered_before(request_id):
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running[request_id] = done
        try:
            try:
                command = check_command(name, obj)
            except PayloadError as exc:
                self._reject(message.topic, exc)
                status, detail = "error", str(exc)
            else:
                if command.expires_at is not None and command.expires_at <= utc_now():
                    status, detail = "expired", f"expired at {rfc3339(command.expires_at)}"
                else:
                    status, detail = await self._carry_out(command.name, command.fields)
        except Exception as exc:  # every command gets exactly one answer
            log.exception("command %s (%s) failed", request_id, name)
            status, detail = "error", f"the gateway failed to carry it out: {type(exc).__name__}: {exc}"
        try:
            self._answer(request_id, status, detail)
        finally:
            del self._running[request_id]
            done.set_result(None)

    def _answer(self, request_id: str | None, status: str, detail: str) -> None:
        detail = printable(detail)
        body = json.dumps({"request_id": request_id, "status": status, "detail": detail})
        if request_id is not None:
            try:
                self.store.save_command_result(request_id, body, answered_at=rfc3339(utc_now()))
            except Exception as exc:  # noqa: BLE001 - a disk that refuses the write must not eat the answer
                log.error("command %s: answer not stored (%s); a repeat of it would be carried out again",
                          request_id, exc)
        self.link.publish(self.topics.result, body)
        log.info("command %s: %s (%s)", request_id, status, detail)

    async def _answered_before(self, request_id: str) -> bool:
        """Answers a request_id seen before again the same way (True), also when the first copy
        is still being carried out (a QoS 1 re-delivery): never carried out twice."""
        running = self._running.get(request_id)
        if running is not None:
            await asyncio.shield(running)
        try:
            previous = self.store.command_result(request_id)
        except Exception as exc:  # noqa: BLE001 - unknown whether it ran before: do not run it
            self._answer(request_id, "error", f"the gateway cannot read its stored answers: {exc}")
            return True
        if previous is None:
            return False
        self.link.publish(self.topics.result, previous.body)
        return True

    async def _carry_out(self, name: str, fields: dict[str, Any]) -> tuple[str, str]:
        if name == "start":
            return await self._start(fields)
        if name == "stop":
            return await self._stop(fields)
        if name == "set_availability":
            return self._set_availability(fields)
        if name == "resync":
            for what in (("users", "tariffs") if fields["what"] == "all" else (fields["what"],)):
                self.store.forget_list_version(what)
            self._lists_forgotten()
            return "accepted", f"local {fields['what']} version forgotten; the next full list is applied"
        if name == "set_site_limit":
            return self._set_site_limit(fields)
        return "error", f"unknown command {name!r}"

    async def _start(self, fields: dict[str, Any]) -> tuple[str, str]:
        evse = self.evses.get(fields["evse_id"])
        if evse is None:
            return "rejected", f"unknown EVSE {fields['evse_id']!r}"
        machine = evse.machine
        if (why_not := machine.can_start()) is not None:
            return "rejected", why_not
        decision = self.authorizer.authorize_user(fields["user_id"])
        if not decision.accepted:
            return "rejected", f"user {fields['user_id']!r} may not charge: {decision.reason}"
        await evse.handle(lambda: machine.on_authorized(decision, now=time.monotonic(), at=utc_now()))
        if machine.session is not None:
            return "accepted", f"session {machine.session.id} started"
        return "accepted", f"waiting up to {self.connect_timeout_s:g} s for the vehicle"

    async def _stop(self, fields: dict[str, Any]) -> tuple[str, str]:
        evse = None
        if fields.get("session_id"):
            evse = next((e for e in self.evses.values() if e.machine.session is not None
                         and e.machine.session.id == fields["session_id"]), None)
        elif fields.get("evse_id") is not None:
            evse = self.evses.get(fields["evse_id"])
            if evse is None:
                return "rejected", f"unknown EVSE {fields['evse_id']!r}"
        if evse is None or evse.machine.session is None:
            return "rejected", "no session to stop"
        machine, session_id = evse.machine, evse.machine.session.id
        await evse.handle(lambda: machine.on_stop("remote", at=utc_now()))
        return "accepted", f"session {session_id} stopped"

    def _set_availability(self, fields: dict[str, Any]) -> tuple[str, str]:
        evse = self.evses.get(fields["evse_id"])
        if evse is None:
            return "rejected", f"unknown EVSE {fields['evse_id']!r}"
        evse.machine.available = fields["available"]
        if not fields["available"]:
            evse.machine.pending = None
        self.store.set_evse_available(evse.evse_id, fields["available"])
        running = " after the running session" if evse.machine.session and not fields["available"] else ""
        return "accepted", f"EVSE {evse.evse_id} {'available' if fields['available'] else 'unavailable'}{running}"

    def _set_site_limit(self, fields: dict[str, Any]) -> tuple[str, str]:
        if self.load is None:
            return "rejected", "load management is not configured on this gateway (no site: section)"
        try:
            limit = self.load.set_site_limit(fields["max_current_a"], until=fields["until"])
        except ValueError as exc:
            return "rejected", str(exc)
        if limit.source != "cloud":
            return "accepted", f"the configured site limit of {limit.max_current_a:g} A applies"
        until = self.load.state()["limit_until"]
        return "accepted", (f"site limit {limit.max_current_a:g} A per phase "
                            f"{f'until {until}' if until else 'until changed'}, kept across restarts")
