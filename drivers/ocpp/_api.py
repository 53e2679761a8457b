"""What the central system needs from its owner (the agent), and the plain types it speaks in.

The server parses every message of a charge point into these dataclasses and calls the owner's
`CentralSystemHandler`; no type of the `ocpp` library leaks out. Times are aware datetimes in
UTC. Energy is in Wh and power in W whatever unit the charger sent (kWh and kW are scaled).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

ENERGY_IMPORT_REGISTER = "Energy.Active.Import.Register"  # OCPP's default measurand: the lifetime counter


@dataclass(frozen=True, slots=True)
class ChargePointAuth:
    """How one configured charge point proves who it is (HTTP basic auth, OCPP security profile 1/2).

    ``password`` is its AuthorizationKey; None lets it connect without credentials. The user name
    is not checked: OCPP makes it the charge point id, which the URL already says.
    """

    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class BootInfo:
    """What a charge point says of itself in BootNotification."""

    vendor: str
    model: str
    charge_point_serial: str | None = None
    charge_box_serial: str | None = None
    firmware_version: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    meter_type: str | None = None
    meter_serial: str | None = None


class AuthStatus(StrEnum):
    """OCPP 1.6 AuthorizationStatus."""

    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    CONCURRENT_TX = "ConcurrentTx"


@dataclass(frozen=True, slots=True)
class IdTagStatus:
    """The answer about one idTag (OCPP IdTagInfo): its status, until when, and its group."""

    status: AuthStatus
    expiry: datetime | None = None
    parent_id_tag: str | None = None


@dataclass(frozen=True, slots=True)
class MeterSample:
    """One sampled value. ``unit`` is Wh, varh, W, var, VA, A, V, Percent, Celsius, Fahrenheit or K
    after scaling (kWh and kW become Wh and W), "" for measurands without one (Power.Factor, RPM,
    Frequency without a unit). ``phase`` and ``location`` are None when the charger gave none.
    """

    measurand: str
    value: float
    unit: str
    context: str
    timestamp: datetime
    phase: str | None = None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class MeterReport:
    """A MeterValues message: the samples that parsed, in the order sent (bad ones are logged and left out)."""

    connector_id: int
    transaction_id: int | None
    samples: tuple[MeterSample, ...]


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A StatusNotification. ``status`` and ``error_code`` are as sent, even outside OCPP's enums
    (logged once); ``timestamp`` is None when the charger gave none or an unreadable one.
    """

    connector_id: int
    status: str
    error_code: str
    timestamp: datetime | None = None
    info: str | None = None
    vendor_id: str | None = None
    vendor_error_code: str | None = None


@dataclass(frozen=True, slots=True)
class TransactionStart:
    """A StartTransaction. ``meter_start_wh`` is the charger's register as sent (OCPP says Wh);
    ``timestamp`` is the charger's own (a queued message is late), None when unreadable.
    """

    connector_id: int
    id_tag: str
    meter_start_wh: int
    timestamp: datetime | None
    reservation_id: int | None = None


@dataclass(frozen=True, slots=True)
class StartAnswer:
    """The answer to a StartTransaction: the transaction id (persisted by then) and the idTag's status."""

    transaction_id: int
    id_tag: IdTagStatus


@dataclass(frozen=True, slots=True)
class TransactionStop:
    """A StopTransaction. ``transaction_data`` are its meter values, parsed like MeterValues."""

    transaction_id: int
    meter_stop_wh: int
    timestamp: datetime | None
    reason: str | None = None
    id_tag: str | None = None
    transaction_data: tuple[MeterSample, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigurationKey:
    """One key of a GetConfiguration answer."""

    key: str
    readonly: bool
    value: str | None


@dataclass(frozen=True, slots=True)
class Configuration:
    """A GetConfiguration answer: the keys the charger knows, and those asked for that it does not."""

    keys: tuple[ConfigurationKey, ...]
    unknown: tuple[str, ...] = ()

    def get(self, key: str) -> ConfigurationKey | None:
        """The entry for `key` (OCPP keys are case-insensitive), None if the answer has none."""
        wanted = key.casefold()
        return next((k for k in self.keys if k.key.casefold() == wanted), None)


@dataclass(frozen=True, slots=True)
class LocalListEntry:
    """One entry of SendLocalList. ``status`` None removes the idTag (in a Differential update)."""

    id_tag: str
    status: IdTagStatus | None


class CentralSystemHandler(Protocol):
    """What the central system asks its owner, one method per kind of message from a charge point.

    Every method but ``boot`` and ``disconnected`` is awaited inside that charge point's receive
    loop, and its result is the answer: it must not call the same charge point (``link.call_*``
    would wait for an answer the loop cannot receive while it waits; the link refuses). ``boot``
    runs in a task of its own after the Accepted reply went out, so it may call the charger (the
    configuration on every boot). An exception is answered with an OCPP InternalError, logged once,
    and the connection lives on.
    """

    async def boot(self, cp_id: str, info: BootInfo) -> None:
        """The charge point booted (again): its BootNotification was accepted and the reply sent."""

    async def authorize(self, cp_id: str, id_tag: str) -> IdTagStatus:
        """Its own reader read `id_tag` (Authorize)."""

    async def start_transaction(self, cp_id: str, start: TransactionStart) -> StartAnswer:
        """A transaction started (maybe long ago, queued). Persist it before answering; a repeat
        of the same start (after a reconnect) must get the same transaction id."""

    async def stop_transaction(self, cp_id: str, stop: TransactionStop) -> IdTagStatus | None:
        """A transaction ended; it may be one this gateway never started (answer it anyway)."""

    async def meter_values(self, cp_id: str, report: MeterReport) -> None:
        """Meter values, periodic or triggered."""

    async def status(self, cp_id: str, report: StatusReport) -> None:
        """A connector's (or, with connector 0, the whole charge point's) status changed."""

    async def disconnected(self, cp_id: str) -> None:
        """Its websocket closed (not called for a connection that a newer one of the same id replaced)."""
