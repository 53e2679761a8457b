"""The simulated charge point's own model: connectors, the car, transactions, status, meter values,
its reader's authorisation and the queue of transaction messages. SimOcppChargePoint mixes it in
and supplies the connection (`_call`, `_spawn`, `_booted`); everything runs on the sim's loop.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from hardware_sim._ocpp_model import (
    MIN_CURRENT_A,
    ConfigKey,
    InstalledProfile,
    SimClock,
    SimQuirks,
    allowed_current_a,
    bool_key,
    install,
    int_key,
    iso,
    list_key,
    local_status,
)

T = TypeVar("T")


class Offline(Exception):
    """Not connected (or not booted): the message was not delivered."""


@dataclass
class Transaction:
    connector: int
    id_tag: str
    meter_start_wh: int
    started: datetime  # on the charger's clock
    offline: bool  # started while not connected
    transaction_id: int | None = None  # from the StartTransaction reply
    suspended: bool = False  # the central system said the idTag is not valid, and not to stop
    next_sample: float | None = None  # time.monotonic() of the next periodic MeterValues


@dataclass
class Connector:
    number: int
    ev_max_current_a: float
    phases: int
    energy_wh: float
    plugged: bool = False
    requesting: bool = True
    operative: bool = True
    inoperative_pending: bool = False  # ChangeAvailability(Inoperative) waits for the transaction's end
    tx: Transaction | None = None
    waiting: tuple[str, float, dict[str, Any] | None] | None = None  # authorised, no cable yet: (idTag, deadline, TxProfile)
    finishing: bool = False  # the transaction ended, the cable is still in
    reported: str | None = None  # the status last sent on this connection


@dataclass(eq=False)  # queued messages are told apart by identity
class Queued:
    action: str
    payload: dict[str, Any]
    tx: Transaction | None = None  # whose transactionId goes in when it is sent
    attempts: int = 0


class Station(ABC):
    """The charger's state and behaviour, whatever the connection does."""

    quirks: SimQuirks
    clock: SimClock
    config: dict[str, ConfigKey]
    connectors: list[Connector]
    profiles: list[InstalledProfile]
    profile_writes: int
    local_list: dict[str, dict[str, Any]]
    local_list_version: int
    vendor: str
    model: str
    authorizations: list[tuple[str, str, str]]
    voltage_v: float
    max_current_a: float
    speed: float
    reboots: int
    _queue: deque[Queued]
    _queued: asyncio.Event
    _wake: asyncio.Event
    _booted: bool
    _last_stop: dict[str, Any] | None
    _lowercase_sent: bool
    _t: float

    # -- supplied by the connection side (SimOcppChargePoint) --

    @abstractmethod
    async def _call(self, payload: Any, *, before_boot: bool = False, **options: Any) -> Any: ...

    @abstractmethod
    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]: ...

    @abstractmethod
    async def _quietly(self, payload: Any, **options: Any) -> None: ...

    @abstractmethod
    def _reboot(self, reason: str) -> None: ...  # a power cycle that also drops the connection

    # -- transaction messages --

    def _enqueue(self, action: str, payload: dict[str, Any], tx: Transaction | None) -> None:
        self._queue.append(Queued(action, payload, tx))
        self._queued.set()

    def _sent_tx_id(self, tx: Transaction) -> int:
        if tx.transaction_id is None or (tx.offline and self.quirks.offline_tx_id):
            return -1
        return tx.transaction_id

    def _delivered(self, item: Queued, payload: dict[str, Any], reply: Any) -> None:
        if item.action == "StopTransaction":
            self._last_stop = payload
        if item.action != "StartTransaction" or item.tx is None:
            return
        tx = item.tx
        tx.transaction_id = reply.transaction_id
        connector = self.connectors[tx.connector]
        if reply.id_tag_info.get("status") != "Accepted" and connector.tx is tx:
            if bool_key(self.config, "StopTransactionOnInvalidId"):
                self._stop_tx(connector, "DeAuthorized")
            else:
                tx.suspended = True
                self._report(connector.number)

    # -- the car and the meter --

    def _advance(self) -> None:
        now = time.monotonic()
        hours = (now - self._t) * self.speed / 3600.0
        self._t = now
        for connector in self.connectors[1:]:
            connector.energy_wh += self._drawn_a(connector) * self.voltage_v * connector.phases * hours

    def _meter_wh(self, number: int) -> float:
        self._advance()
        return self.connectors[number].energy_wh

    def _offered_a(self, connector: Connector) -> float:
        tx = connector.tx
        if tx is None or tx.suspended or not connector.plugged:
            return 0.0
        return allowed_current_a(self.profiles, connector.number, now=self.clock.now(), tx_id=tx.transaction_id,
                                 tx_start=tx.started, hardware_max_a=self.max_current_a, voltage_v=self.voltage_v,
                                 phases=connector.phases)

    def _drawn_a(self, connector: Connector) -> float:
        offered = self._offered_a(connector)
        if offered < MIN_CURRENT_A or not connector.requesting:
            return 0.0
        return min(offered, connector.ev_max_current_a)

    def _status_of(self, number: int) -> str:
        if number == 0:
            return "Available" if any(c.operative for c in self.connectors[1:]) else "Unavailable"
        connector = self.connectors[number]
        if connector.tx is not None:
            if connector.tx.suspended or (connector.plugged and self._offered_a(connector) < MIN_CURRENT_A):
                return "SuspendedEVSE"
            return "Charging" if connector.plugged and connector.requesting else "SuspendedEV"
        if not connector.operative:
            return "Unavailable"
        if connector.waiting is not None or (connector.plugged and not connector.finishing):
            return "Preparing"
        return "Finishing" if connector.plugged else "Available"

    def _report(self, number: int, *, again: bool = False) -> None:
        """Send a StatusNotification if the status changed (or `again`) and the boot was accepted."""
        status = self._status_of(number)
        connector = self.connectors[number]
        if not self._booted or (status == connector.reported and not again):
            return
        connector.reported = status
        sent, options = status, {}
        if status == "Charging" and self.quirks.invalid_status_enum and not self._lowercase_sent:
            sent, options, self._lowercase_sent = "charging", {"skip_schema_validation": True}, True
        self._spawn(self._quietly(call.StatusNotification(connector_id=number, error_code="NoError", status=sent,
                                                          timestamp=self.clock.stamp()), **options))

    def _unit_value(self, wh: float) -> tuple[str, str]:
        return (f"{wh / 1000:.3f}", "kWh") if self.quirks.energy_unit == "kWh" else (f"{wh:.0f}", "Wh")

    def _value(self, value: str, context: str, measurand: str, unit: str, phase: str | None = None) -> dict[str, Any]:
        sampled = {"value": value, "context": context, "measurand": measurand, "location": "Outlet"}
        if not self.quirks.omit_unit:
            sampled["unit"] = unit
        if phase is not None:
            sampled["phase"] = phase
        return sampled

    def _energy_value(self, wh: float, context: str) -> dict[str, Any]:
        value, unit = self._unit_value(wh)
        return self._value(value, context, "Energy.Active.Import.Register", unit)

    def _sample(self, connector: Connector, context: str) -> dict[str, Any]:
        """One MeterValue of the measurands in MeterValuesSampledData."""
        self._advance()
        drawn, offered = self._drawn_a(connector), self._offered_a(connector)
        phases = [f"L{n}" for n in range(1, connector.phases + 1)]
        values: list[dict[str, Any]] = []
        for measurand in list_key(self.config, "MeterValuesSampledData"):
            if measurand == "Energy.Active.Import.Register":
                values.append(self._energy_value(connector.energy_wh, context))
            elif measurand == "Power.Active.Import":
                values.append(self._value(f"{drawn * self.voltage_v * connector.phases:.0f}", context, measurand, "W"))
            elif measurand == "Current.Offered":
                values.append(self._value(f"{offered:.1f}", context, measurand, "A"))
            elif measurand == "Current.Import":
                values += [self._value(f"{drawn:.1f}", context, measurand, "A", phase) for phase in phases]
            elif measurand == "Voltage":
                values += [self._value(f"{self.voltage_v:.1f}", context, measurand, "V", f"{p}-N") for p in phases]
        return {"timestamp": self.clock.stamp(), "sampled_value": values}

    def _start_tx(self, connector: Connector, id_tag: str, profile: dict[str, Any] | None = None) -> None:
        self._advance()
        connector.waiting, connector.finishing = None, False
        tx = Transaction(connector.number, id_tag, round(connector.energy_wh), self.clock.now(), not self._booted)
        connector.tx = tx
        if profile is not None and not self.quirks.no_tx_profile:
            self._install(InstalledProfile(connector.number, profile, self.clock.now()))
        self._enqueue("StartTransaction", {"connector_id": connector.number, "id_tag": id_tag,
                                           "meter_start": tx.meter_start_wh, "timestamp": iso(tx.started)}, tx)
        self._report(connector.number)
        self._wake.set()

    def _stop_tx(self, connector: Connector, reason: str, id_tag: str | None = None) -> None:
        self._advance()
        tx = connector.tx
        if tx is None:
            return
        connector.tx = None
        meter_stop, now = round(connector.energy_wh), self.clock.now()
        payload: dict[str, Any] = {"meter_stop": meter_stop, "timestamp": iso(now), "reason": reason}
        if id_tag is not None:
            payload["id_tag"] = id_tag
        if "Energy.Active.Import.Register" in list_key(self.config, "StopTxnSampledData"):
            payload["transaction_data"] = [
                {"timestamp": iso(tx.started), "sampled_value": [self._energy_value(tx.meter_start_wh, "Transaction.Begin")]},
                {"timestamp": iso(now), "sampled_value": [self._energy_value(meter_stop, "Transaction.End")]},
            ]
        self.profiles[:] = [p for p in self.profiles if not (p.purpose == "TxProfile" and p.connector == connector.number)]
        self._enqueue("StopTransaction", payload, tx)
        connector.finishing = connector.plugged
        if connector.inoperative_pending:
            connector.operative, connector.inoperative_pending = False, False
        self._report(connector.number)
        self._wake.set()

    def _plug(self, number: int, ev_max_current_a: float | None, phases: int | None) -> None:
        self._advance()
        connector = self.connectors[number]
        if ev_max_current_a is not None:
            connector.ev_max_current_a = ev_max_current_a
        if phases is not None:
            connector.phases = phases
        connector.plugged, connector.finishing = True, False
        if connector.waiting is not None and connector.tx is None:
            self._start_tx(connector, connector.waiting[0], connector.waiting[2])
        self._report(number)

    def _unplug(self, number: int) -> None:
        self._advance()
        connector = self.connectors[number]
        connector.plugged = False
        if connector.tx is not None and bool_key(self.config, "StopTransactionOnEVSideDisconnect"):
            self._stop_tx(connector, "EVDisconnected")
        connector.finishing = False
        self._report(number)

    def _set_requesting(self, number: int, requesting: bool) -> None:
        self._advance()
        self.connectors[number].requesting = requesting
        self._report(number)

    def _begin_tap(self, id_tag: str, number: int, outcome: concurrent.futures.Future[str]) -> None:
        def settle(task: asyncio.Task[str]) -> None:
            if task.cancelled():
                outcome.cancel()
            elif task.exception() is not None:
                outcome.set_exception(task.exception())
            else:
                outcome.set_result(task.result())

        self._spawn(self._tap(id_tag, self.connectors[number])).add_done_callback(settle)

    async def _tap(self, id_tag: str, connector: Connector) -> str:
        if connector.tx is not None:
            if connector.tx.id_tag != id_tag:
                return "Occupied"
            self._stop_tx(connector, "Local", id_tag)
            return "Stopped"
        if connector.waiting is not None and connector.waiting[0] == id_tag:
            connector.waiting = None
            self._report(connector.number)
            return "Cancelled"
        if not connector.operative:
            return "Unavailable"
        status, source = await self._authorize(id_tag)
        self.authorizations.append((id_tag, status, source))
        if status != "Accepted":
            return status
        if connector.tx is not None:
            return "Occupied"
        if connector.plugged:
            self._start_tx(connector, id_tag)
        else:
            connector.waiting = (id_tag, time.monotonic() + int_key(self.config, "ConnectionTimeOut"), None)
            self._report(connector.number)
            self._wake.set()
        return "Accepted"

    async def _authorize(self, id_tag: str) -> tuple[str, str]:
        """(AuthorizationStatus, where it came from): the central system when connected, else the local list."""
        listed = self.local_list.get(id_tag) if bool_key(self.config, "LocalAuthListEnabled") else None
        local = local_status(listed, self.clock.now())
        if self._booted:
            if local == "Accepted" and bool_key(self.config, "LocalPreAuthorize"):
                return "Accepted", "local list"
            try:
                reply = await self._call(call.Authorize(id_tag=id_tag))
                return str(reply.id_tag_info.get("status")), "central"
            except OCPPError:
                return "Invalid", "central"
            except (Offline, TimeoutError):
                pass  # no answer: decide as if offline
        if not bool_key(self.config, "LocalAuthorizeOffline"):
            return "Invalid", "offline"
        if local is not None:
            return local, "local list"
        if bool_key(self.config, "AllowOfflineTxForUnknownId"):
            return "Accepted", "offline"
        return "Invalid", "offline"

    def _power_cycle(self, reason: str) -> None:
        """Transactions end (their Stop goes out after the boot); what a charger keeps only in RAM goes."""
        for connector in self.connectors[1:]:
            self._stop_tx(connector, reason)
            connector.waiting, connector.reported = None, None
        self.profiles[:] = [p for p in self.profiles if p.purpose != "TxProfile"]
        self.clock.reset()
        self.reboots += 1
        if self.quirks.resend_stop_after_reboot and self._last_stop is not None:
            self._queue.appendleft(Queued("StopTransaction", self._last_stop))  # libocpp #907
        self._last_stop = None

    def _install(self, profile: InstalledProfile) -> None:
        self._advance()
        install(self.profiles, profile)
        self.profile_writes += 1
        self._wake.set()
