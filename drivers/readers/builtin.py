"""Card readers built into a charger: the charger's map exposes the UID of the presented card
(Bender CC613 register 720, Phoenix CHARX base+275). Not a thread: the charger's own poll loop
calls ``poll()`` right after ``charger.poll()``, on the same bus turn.

A tap is a card UID that appears, or changes to another UID. The same UID staying in the
register (many chargers keep it for the whole session) is one tap; it taps again only after
the register was empty, or showed another card, for at least `debounce_s`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from drivers.api import Identifier, Tap
from drivers.errors import DeviceError

log = logging.getLogger("drivers.readers.builtin")


def identifier_of(charger: object) -> Identifier | None:
    """The charger as an Identifier if its map has a built-in reader, else None."""
    if isinstance(charger, Identifier) and getattr(charger, "has_identifier", True):
        return charger
    return None


class ChargerReader:
    def __init__(
        self,
        charger: Identifier,
        *,
        evse_id: str | None,
        on_tap: Callable[[Tap], None],
        debounce_s: float = 2.0,
        name: str | None = None,
    ) -> None:
        self.charger = charger
        self.evse_id = evse_id
        self.debounce_s = debounce_s
        self.name = name or f"{getattr(charger, 'name', 'charger')} reader"
        self._on_tap = on_tap
        self._present: str | None = None
        self._last_seen: dict[str, float] = {}
        self._failing = False

    async def poll(self) -> Tap | None:
        """Read the UID register once; returns (and hands to on_tap) a new tap, if there is one."""
        try:
            token = await self.charger.identify()
        except DeviceError as exc:
            if not self._failing:
                log.warning("reader %s unavailable: %s", self.name, exc)
                self._failing = True
            return None
        if self._failing:
            log.info("reader %s back", self.name)
            self._failing = False
        now = time.monotonic()
        if self._present is not None and self._present != token:
            self._last_seen[self._present] = now  # it was there until now
        previous, self._present = self._present, token
        if token is None or token == previous:
            return None
        seen = self._last_seen.get(token)
        if seen is not None and now - seen < self.debounce_s:
            return None
        tap = Tap(token=token, reader=self.name, evse_id=self.evse_id, monotonic=now)
        try:
            self._on_tap(tap)
        except Exception:
            log.exception("reader %s: on_tap failed for token %s", self.name, token)
        return tap
