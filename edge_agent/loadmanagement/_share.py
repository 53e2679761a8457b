"""How a share reaches a charger: the one way both writers (the agent's EVSE controller, and
OwnedCharger when load management runs alone) put it there."""
from __future__ import annotations

from typing import Protocol

from drivers.api import Charger


class ShareWriter(Protocol):
    """The one writer of an EVSE's offer (the agent's EVSE controller); load management asks it."""

    async def write_share(self, amps: float) -> bool:
        """Offers `amps` to the session holding a share (0 with none: the charger is disabled).
        False: nothing written, the session ended while the request waited. Raises DeviceError."""
        ...


async def put_share(charger: Charger, amps: float, *, holds_share: bool, enabled: bool) -> bool | None:
    """Writes a share: with no session holding one only a stop goes out. Returns whether the charger
    is enabled afterwards, or None when nothing was written (a raise for a session that ended)."""
    if not holds_share:
        if amps > 0:
            return None
        await charger.enable(False)
        return False
    await charger.set_max_current(amps)
    if not enabled:
        await charger.enable(True)  # writes the setpoint just set (or the stop value)
    return True
