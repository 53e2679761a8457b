"""What the agent needs from a charger, a meter and a reader.

A charger has four abilities (evcc's interface): its IEC 61851 state, whether it is
enabled, enable/disable, and the offered current. Metering is a separate ability, and so is
identification: a charger with a built-in card reader whose map exposes the card's UID.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

IEC61851_STATES = ("A", "B", "C", "D", "E", "F")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One meter reading. Fields the device cannot give this time are None."""

    energy_wh: int | None  # lifetime counter used for billing, never a session counter
    power_w: int | None = None
    currents_a: tuple[float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class ChargerReading:
    """Everything one poll of a charger gives: state plus measurement."""

    iec61851: str  # "A".."F"
    measurement: Measurement
    offered_current_a: float | None = None  # the setpoint as the charger reports it


@runtime_checkable
class Charger(Protocol):
    async def status(self) -> str: ...  # IEC 61851 letter
    async def enabled(self) -> bool: ...
    async def enable(self, on: bool) -> None: ...
    async def set_max_current(self, amps: float) -> None: ...


@runtime_checkable
class Meter(Protocol):
    async def measure(self) -> Measurement: ...


@runtime_checkable
class Identifier(Protocol):
    """A charger with a built-in RFID reader: the UID of the card presented, or None."""

    async def identify(self) -> str | None: ...  # normalised like every token (edge_agent.tokens)


@dataclass(frozen=True, slots=True)
class Tap:
    """A card presented to a reader: one tap, already de-bounced and normalised."""

    token: str  # upper-case hex, no separators
    reader: str  # reader name (its port or device)
    evse_id: str | None  # None for a site-wide reader
    monotonic: float  # time.monotonic() at the last byte of the frame
