"""What the agent needs from a charger, a meter and a reader.

`Charger` is the core every charger driver has, and all the agent may assume: set up, poll,
keep up, enable/disable and offer a current, plus its model and its highest current. What only
some chargers can do is a small separate Protocol of its own (as evcc's optional interfaces):
a built-in card reader (`Identifier`), a lifetime counter the driver keeps itself
(`OwnEnergyCounter`), a keep-alive deadline shorter than the poll (`KeepAlive`) and a warning
about its fail-safe (`FailsafeReporter`). The agent asks for those with isinstance (they are
runtime_checkable), never with getattr. Metering (`Meter`) is an ability of its own too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from drivers.energy import SessionEnergyLifetime

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
    """The core of every charger: what the agent's poll loop and the load manager call.

    ``setup()`` once, and again after the device stopped answering (it may have rebooted);
    then ``poll()`` and ``keepalive()`` every cycle (keepalive() also retries a failed write,
    and returns at once when there is nothing to do). ``enable(False)`` stops charging,
    ``enable(True)`` offers the current last set; ``set_max_current`` below the model's minimum
    pauses. Every call may raise a drivers.errors.DeviceError.
    """

    @property
    def model(self) -> str: ...  # the register map's (or quirk map's) model name

    @property
    def max_current_a(self) -> float: ...  # the most it is ever offered, per phase

    async def setup(self) -> None: ...
    async def poll(self) -> ChargerReading: ...
    async def keepalive(self) -> None: ...
    async def enable(self, on: bool) -> None: ...
    async def set_max_current(self, amps: float) -> None: ...


@runtime_checkable
class KeepAlive(Protocol):
    """A charger whose setpoint expires: keepalive() must come at least this often (None: no limit)."""

    @property
    def keepalive_interval_s(self) -> float | None: ...  # may change as the device tells its timeout


@runtime_checkable
class OwnEnergyCounter(Protocol):
    """A charger with only a per-session register: the driver keeps the lifetime counter.

    ``energy_counter`` is None where the device (or its billing meter) has a lifetime register;
    the agent flushes a counter there is at shutdown.
    """

    @property
    def energy_counter(self) -> SessionEnergyLifetime | None: ...


@runtime_checkable
class FailsafeReporter(Protocol):
    """A charger that can tell when a gateway outage would give current no session pays for."""

    @property
    def failsafe_warning(self) -> str | None: ...  # plain words for a technician, or None


@runtime_checkable
class Meter(Protocol):
    async def measure(self) -> Measurement: ...


@runtime_checkable
class Identifier(Protocol):
    """A charger with a built-in RFID reader: the UID of the card presented, or None."""

    async def identify(self) -> str | None: ...  # normalised like every token (drivers.tokens)


@dataclass(frozen=True, slots=True)
class Tap:
    """A card presented to a reader: one tap, already de-bounced and normalised."""

    token: str  # upper-case hex, no separators
    reader: str  # reader name (its port or device)
    evse_id: str | None  # None for a site-wide reader
    monotonic: float  # time.monotonic() at the last byte of the frame
