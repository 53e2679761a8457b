"""Load management on its own (the proof harness): it sets up, polls and writes each charger itself."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from drivers.api import Charger, ChargerReading
from drivers.errors import DeviceError

from ._share import put_share

log = logging.getLogger("edge_agent.loadmanagement")


class _Sessions(Protocol):
    def has_session(self, evse_id: str) -> bool: ...


class LoopInputs(Protocol):
    """What an owned charger tells the control loop (LoadManagementLoop)."""

    @property
    def controller(self) -> _Sessions: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    def charger_stopped(self, evse_id: str) -> None: ...
    def charger_unavailable(self, evse_id: str) -> None: ...
    def charger_reading(self, evse_id: str, reading: ChargerReading) -> None: ...


class OwnedCharger:
    """The one writer of a charger load management owns; a session is what the loop's controller holds."""

    def __init__(self, evse_id: str, charger: Charger, loop: LoopInputs) -> None:
        self.evse_id = evse_id
        self.charger = charger
        self._loop = loop
        self._lock = asyncio.Lock()
        self._enabled = False

    async def write_share(self, amps: float) -> bool:
        async with self._lock:
            enabled = await put_share(self.charger, amps, enabled=self._enabled,
                                      holds_share=self._loop.controller.has_session(self.evse_id))
            if enabled is None:
                return False
            self._enabled = enabled
            return True

    async def poll_forever(self, interval_s: float) -> None:
        clock, loop = self._loop.clock, self._loop
        needs_setup, failed = True, 0
        while True:
            started = clock()
            async with self._lock:
                try:
                    if needs_setup:
                        await self.charger.setup()
                        if not loop.controller.has_session(self.evse_id):
                            await self.charger.enable(False)
                            self._enabled = False
                            loop.charger_stopped(self.evse_id)
                        needs_setup = False
                    reading = await self.charger.poll()
                    await self.charger.keepalive()
                except DeviceError as exc:
                    failed += 1
                    if failed == 1:
                        log.warning("load management: EVSE %s unavailable: %s", self.evse_id, exc)
                    loop.charger_unavailable(self.evse_id)
                else:
                    if failed:
                        log.info("load management: EVSE %s back after %d failed polls", self.evse_id, failed)
                    failed = 0
                    loop.charger_reading(self.evse_id, reading)
            await asyncio.sleep(max(0.0, interval_s - (clock() - started)))
