"""How the simulated charge point answers the central system's calls (OCPP 1.6 §5).

Each answer returns (the reply, what to do once the reply is on the wire, or None): a charger
replies to RemoteStartTransaction before it sends StartTransaction, to Reset before it reboots.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ocpp.v16 import call, call_result

from hardware_sim._ocpp_model import (
    InstalledProfile,
    bool_key,
    change_key,
    clear,
    find_key,
    int_key,
    update_local_list,
)
from hardware_sim._ocpp_station import Connector, Station

Answer = tuple[Any, Callable[[], object] | None]


class Answers(Station):
    """The central system's calls, answered from the station's state."""

    def answer(self, action: str, payload: dict[str, Any]) -> Answer:
        """The reply to one call of the central system (called by the link)."""
        method: Callable[..., Answer] = getattr(self, f"_answer_{_snake(action)}")
        return method(**payload)

    def _report_all(self) -> None:
        for connector in self.connectors:
            self._report(connector.number)

    def _connector(self, number: int | None) -> Connector | None:
        if number is None or not 1 <= number < len(self.connectors):
            return None
        return self.connectors[number]

    # -- configuration --

    def _answer_get_configuration(self, key: list[str] | None = None) -> Answer:
        known, unknown = [], []
        for wanted in key or list(self.config):
            name = find_key(self.config, wanted)
            if name is None:
                unknown.append(wanted)
            else:
                entry = self.config[name]
                known.append({"key": name, "readonly": entry.readonly, "value": entry.value})
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None), None

    def _answer_change_configuration(self, key: str, value: str) -> Answer:
        status = change_key(self.config, key, value)
        if status == "Accepted":
            self._wake.set()  # intervals may have changed
        return call_result.ChangeConfiguration(status=status), None

    # -- transactions --

    def _answer_remote_start_transaction(self, id_tag: str, connector_id: int | None = None,
                                         charging_profile: dict[str, Any] | None = None) -> Answer:
        rejected = call_result.RemoteStartTransaction(status="Rejected"), None
        if charging_profile is not None and charging_profile.get("charging_profile_purpose") != "TxProfile":
            return rejected
        if connector_id is not None:
            candidates = [c for c in [self._connector(connector_id)] if c is not None]
        else:
            candidates = sorted(self.connectors[1:], key=lambda c: not c.plugged)
        free = next((c for c in candidates if c.tx is None and c.operative), None)
        if free is None:
            return rejected
        return (call_result.RemoteStartTransaction(status="Accepted"),
                lambda: self._spawn(self._remote_start(free, id_tag, charging_profile)))

    async def _remote_start(self, connector: Connector, id_tag: str, profile: dict[str, Any] | None) -> None:
        if bool_key(self.config, "AuthorizeRemoteTxRequests"):
            status, source = await self._authorize(id_tag)
            self.authorizations.append((id_tag, status, source))
            if status != "Accepted":
                return
        if connector.tx is not None:
            return
        if connector.plugged:
            self._start_tx(connector, id_tag, profile)
        else:
            connector.waiting = (id_tag, time.monotonic() + int_key(self.config, "ConnectionTimeOut"), profile)
            self._report(connector.number)
            self._wake.set()

    def _answer_remote_stop_transaction(self, transaction_id: int) -> Answer:
        running = next((c for c in self.connectors[1:] if c.tx is not None and c.tx.transaction_id == transaction_id),
                       None)
        if running is None:
            return call_result.RemoteStopTransaction(status="Rejected"), None
        return call_result.RemoteStopTransaction(status="Accepted"), lambda: self._stop_tx(running, "Remote")

    def _answer_unlock_connector(self, connector_id: int) -> Answer:
        connector = self._connector(connector_id)
        if connector is None:
            return call_result.UnlockConnector(status="NotSupported"), None
        return call_result.UnlockConnector(status="Unlocked"), lambda: self._stop_tx(connector, "UnlockCommand")

    def _answer_change_availability(self, connector_id: int, type: str) -> Answer:
        if connector_id == 0:
            targets = self.connectors[1:]
        else:
            targets = [c for c in [self._connector(connector_id)] if c is not None]
            if not targets:
                return call_result.ChangeAvailability(status="Rejected"), None
        scheduled = False
        for connector in targets:
            if type == "Operative":
                connector.operative, connector.inoperative_pending = True, False
            elif connector.tx is not None:
                connector.inoperative_pending = scheduled = True
            else:
                connector.operative, connector.waiting = False, None
        return call_result.ChangeAvailability(status="Scheduled" if scheduled else "Accepted"), self._report_all

    def _answer_reset(self, type: str) -> Answer:
        reason = "HardReset" if type == "Hard" else "SoftReset"
        return call_result.Reset(status="Accepted"), lambda: self._reboot(reason)

    # -- smart charging --

    def _answer_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Answer:
        rejected = call_result.SetChargingProfile(status="Rejected"), None
        profile = cs_charging_profiles
        purpose = profile["charging_profile_purpose"]
        if not 0 <= connector_id < len(self.connectors):
            return rejected
        if purpose == "TxProfile":
            connector = self._connector(connector_id)
            tx = connector.tx if connector is not None else None
            if self.quirks.no_tx_profile or tx is None:
                return rejected
            if profile.get("transaction_id") not in (None, tx.transaction_id):
                return rejected
        if purpose == "ChargePointMaxProfile" and connector_id != 0:
            return rejected
        if profile["stack_level"] > int_key(self.config, "ChargeProfileMaxStackLevel"):
            return rejected
        if len(profile["charging_schedule"]["charging_schedule_period"]) > int_key(self.config, "ChargingScheduleMaxPeriods"):
            return rejected
        self._install(InstalledProfile(connector_id, profile, self.clock.now()))
        return call_result.SetChargingProfile(status="Accepted"), self._report_all

    def _answer_clear_charging_profile(self, **wanted: Any) -> Answer:
        self._advance()
        removed = clear(self.profiles, profile_id=wanted.get("id"), connector=wanted.get("connector_id"),
                        purpose=wanted.get("charging_profile_purpose"), stack_level=wanted.get("stack_level"))
        self._wake.set()
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown"), self._report_all

    # -- local list --

    def _answer_send_local_list(self, list_version: int, update_type: str,
                                local_authorization_list: list[dict[str, Any]] | None = None) -> Answer:
        if not bool_key(self.config, "LocalAuthListEnabled"):
            return call_result.SendLocalList(status="NotSupported"), None
        status, self.local_list_version = update_local_list(
            self.local_list, self.local_list_version, new_version=list_version, update_type=update_type,
            entries=local_authorization_list or [], max_length=int_key(self.config, "LocalAuthListMaxLength"),
            max_send=int_key(self.config, "SendLocalListMaxLength"))
        return call_result.SendLocalList(status=status), None

    def _answer_get_local_list_version(self) -> Answer:
        enabled = bool_key(self.config, "LocalAuthListEnabled")
        return call_result.GetLocalListVersion(list_version=self.local_list_version if enabled else -1), None

    def _answer_clear_cache(self) -> Answer:
        return call_result.ClearCache(status="Accepted"), None  # it keeps no authorisation cache

    # -- remote trigger and the rest --

    def _answer_trigger_message(self, requested_message: str, connector_id: int | None = None) -> Answer:
        if connector_id is not None and not 0 <= connector_id < len(self.connectors):
            return call_result.TriggerMessage(status="Rejected"), None
        numbers = [connector_id] if connector_id is not None else [c.number for c in self.connectors]
        followups: dict[str, Callable[[], object]] = {
            "BootNotification": lambda: self._spawn(self._quietly(call.BootNotification(
                charge_point_model=self.model, charge_point_vendor=self.vendor))),
            "Heartbeat": lambda: self._spawn(self._quietly(call.Heartbeat())),
            "StatusNotification": lambda: [self._report(n, again=True) for n in numbers],
            "MeterValues": lambda: [self._triggered_meter_values(n) for n in numbers if n > 0],
            "DiagnosticsStatusNotification": lambda: self._spawn(self._quietly(
                call.DiagnosticsStatusNotification(status="Idle"))),
            "FirmwareStatusNotification": lambda: self._spawn(self._quietly(
                call.FirmwareStatusNotification(status="Idle"))),
        }
        followup = followups.get(requested_message)
        if followup is None:
            return call_result.TriggerMessage(status="NotImplemented"), None
        return call_result.TriggerMessage(status="Accepted"), followup

    def _triggered_meter_values(self, number: int) -> None:
        connector = self.connectors[number]
        sample = self._sample(connector, "Trigger")
        if connector.tx is not None:
            self._enqueue("MeterValues", {"connector_id": number, "meter_value": [sample]}, connector.tx)
        else:
            self._spawn(self._quietly(call.MeterValues(connector_id=number, meter_value=[sample])))

    def _answer_data_transfer(self, vendor_id: str, **_: Any) -> Answer:
        return call_result.DataTransfer(status="UnknownVendorId"), None


def _snake(action: str) -> str:
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in action).lstrip("_")
