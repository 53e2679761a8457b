"""Taps from every kind of reader -> authorization -> the EVSE they are for."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from drivers.api import Tap

from ..authorization import Authorizer, Decision
from ..clock import rfc3339, utc_now
from ..cloud import events
from ._evse import EvseController
from ._journal import Journal

log = logging.getLogger("edge_agent.agent")


class TapRouter:
    def __init__(self, *, evses: Mapping[str, EvseController], authorizer: Authorizer, journal: Journal,
                 connect_timeout_s: float, spawn: Callable[[Coroutine[Any, Any, None], str], None]) -> None:
        self.evses = evses
        self.authorizer = authorizer
        self.journal = journal
        self.connect_timeout_s = connect_timeout_s
        self._spawn = spawn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._site_wide: tuple[Decision, float] | None = None  # a site-wide reader's card, no EVSE yet
        for evse in evses.values():
            evse.on_plugged = self._plugged

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def tap(self, tap: Tap) -> None:
        """A tap from the event loop (a charger's built-in reader): handled in its own task."""
        self._spawn(self.on_tap(tap), f"tap {tap.token}")

    def tap_from_thread(self, tap: Tap) -> None:
        """A tap from a reader's thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.tap, tap)

    def tick(self, now: float) -> None:
        if self._site_wide is not None and now >= self._site_wide[1]:
            log.info("site-wide reader: no vehicle plugged in for %s; authorization dropped",
                     self._site_wide[0].summary)
            self._site_wide = None

    async def on_tap(self, tap: Tap) -> None:
        evse = self._evse_for_tap(tap)
        if evse is None:
            if tap.evse_id is None:
                await self._site_wide_tap(tap)
            else:
                log.warning("tap %s from reader %s: unknown EVSE %s", tap.token, tap.reader, tap.evse_id)
            return
        machine = evse.machine
        if machine.session is not None:
            if machine.session.token == tap.token:
                await evse.handle(lambda: machine.on_stop("local", at=utc_now()))
            else:
                log.info("EVSE %s busy: tap %s ignored (another card's session runs)", evse.evse_id, tap.token)
            return
        if machine.pending is not None and machine.pending.decision.token == tap.token:
            machine.pending = None
            log.info("EVSE %s: %s tapped again before plugging in; authorization cancelled",
                     evse.evse_id, tap.token)
            return
        if (why_not := machine.can_start()) is not None:
            log.info("EVSE %s: tap %s ignored: %s", evse.evse_id, tap.token, why_not)
            return
        decision = await self.authorizer.authorize(tap.token, evse_id=evse.evse_id)
        log.info("EVSE %s: %s", evse.evse_id, decision.summary)
        if not decision.accepted:
            self._rejected(tap, evse.evse_id, decision)
            return
        await evse.handle(lambda: machine.on_authorized(decision, now=time.monotonic(), at=utc_now()))

    def _evse_for_tap(self, tap: Tap) -> EvseController | None:
        if tap.evse_id is not None:
            return self.evses.get(tap.evse_id)
        for evse in self.evses.values():  # a site-wide reader: the card's own session first
            if evse.machine.session is not None and evse.machine.session.token == tap.token:
                return evse
        waiting = [e for e in self.evses.values()
                   if e.machine.plugged and e.machine.can_start() is None and e.machine.pending is None]
        return waiting[0] if waiting else None

    async def _site_wide_tap(self, tap: Tap) -> None:
        """No vehicle waits yet: the card's authorization goes to the next EVSE plugged in."""
        if self._site_wide is not None and self._site_wide[0].token == tap.token:
            self._site_wide = None
            log.info("site-wide reader: %s tapped again; authorization cancelled", tap.token)
            return
        decision = await self.authorizer.authorize(tap.token, evse_id=None)
        log.info("site-wide reader: %s", decision.summary)
        if not decision.accepted:
            self._rejected(tap, None, decision)
            return
        self._site_wide = (decision, time.monotonic() + self.connect_timeout_s)
        log.info("site-wide reader: the next vehicle plugged in within %g s charges for %s",
                 self.connect_timeout_s, decision.token)

    def _plugged(self, evse: EvseController) -> Decision | None:
        """A vehicle plugged in at an EVSE that can start: it takes a site-wide reader's card."""
        if self._site_wide is None:
            return None
        decision, self._site_wide = self._site_wide[0], None
        log.info("EVSE %s: the vehicle plugged in takes the site-wide reader's %s", evse.evse_id,
                 decision.summary)
        return decision

    def _rejected(self, tap: Tap, evse_id: str | None, decision: Decision) -> None:
        self.journal.record_event(events.auth_rejected(tap.token, evse_id, decision.reason, ts=rfc3339(utc_now()),
                                                       offline=self.journal.offline))
