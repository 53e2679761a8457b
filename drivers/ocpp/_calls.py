"""The calls the gateway sends to a charge point, with a timeout and typed errors (the link's `call_*`).

OCPP allows one call in flight per charge point (the library holds a lock), so the timeout counts
from the moment a call is asked for, waiting for the one before included. A call is never sent
before the charge point is ready (its boot answered), and never from inside its own receive loop
(an `@on` handler, or the owner's handler methods other than `boot`): that loop is the only reader
of the answer, so the call would wait for itself; it raises RuntimeError at once instead.

The request is checked against OCPP's schema here (a bad one is the caller's bug: ValueError); the
answer is read leniently (a status outside OCPP's enum is passed on as it is).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError, UnknownCallErrorCodeError
from ocpp.messages import Call, validate_payload
from ocpp.v16 import call
from websockets.exceptions import ConnectionClosed

from drivers.errors import CallError, CallTimeout, ChargerNotConnected, InvalidAnswer

from . import _parse as parse
from ._api import Configuration, ConfigurationKey, LocalListEntry


class LinkCalls:
    """The `call_*` methods of `ChargePointLink` (which provides what is declared here)."""

    cp_id: str
    call_timeout_s: float
    call: Callable[..., Awaitable[Any]]  # ocpp.ChargePoint.call
    _ready: asyncio.Event
    _closed: asyncio.Event
    _receive_task: asyncio.Task[Any] | None

    async def call_get_configuration(self, keys: Sequence[str] | None = None) -> Configuration:
        """GetConfiguration of `keys` (all keys when None)."""
        answer = await self._call(call.GetConfiguration(key=list(keys) if keys else None))
        found: list[ConfigurationKey] = []
        for entry in getattr(answer, "configuration_key", None) or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                raise InvalidAnswer(f"GetConfiguration: configurationKey entry {entry!r} has no key", device=self.cp_id)
            readonly = entry.get("readonly")
            value = entry.get("value")
            found.append(ConfigurationKey(
                key=entry["key"],
                readonly=readonly if isinstance(readonly, bool) else str(readonly).casefold() == "true",
                value=None if value is None else str(value),
            ))
        unknown = getattr(answer, "unknown_key", None) or []
        return Configuration(keys=tuple(found), unknown=tuple(str(k) for k in unknown))

    async def call_change_configuration(self, key: str, value: str) -> str:
        """ChangeConfiguration: "Accepted", "Rejected", "RebootRequired" or "NotSupported"."""
        return self._status("ChangeConfiguration", await self._call(call.ChangeConfiguration(key=key, value=value)))

    async def call_remote_start(self, id_tag: str, connector_id: int | None = None,
                                charging_profile: Mapping[str, Any] | None = None) -> str:
        """RemoteStartTransaction: "Accepted" or "Rejected" (the transaction itself comes as StartTransaction)."""
        request = call.RemoteStartTransaction(id_tag=id_tag, connector_id=connector_id,
                                              charging_profile=None if charging_profile is None
                                              else dict(charging_profile))
        return self._status("RemoteStartTransaction", await self._call(request))

    async def call_remote_stop(self, transaction_id: int) -> str:
        """RemoteStopTransaction: "Accepted" or "Rejected"."""
        answer = await self._call(call.RemoteStopTransaction(transaction_id=transaction_id))
        return self._status("RemoteStopTransaction", answer)

    async def call_change_availability(self, connector_id: int, operative: bool) -> str:
        """ChangeAvailability (connector 0: the whole charge point): "Accepted", "Rejected" or "Scheduled"."""
        request = call.ChangeAvailability(connector_id=connector_id,
                                          type="Operative" if operative else "Inoperative")
        return self._status("ChangeAvailability", await self._call(request))

    async def call_set_charging_profile(self, connector_id: int, profile: Mapping[str, Any]) -> str:
        """SetChargingProfile with `profile` as OCPP's csChargingProfiles (camelCase keys as on the wire):
        "Accepted", "Rejected" or "NotSupported"."""
        request = call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=dict(profile))
        return self._status("SetChargingProfile", await self._call(request))

    async def call_clear_charging_profile(self, *, profile_id: int | None = None, connector_id: int | None = None,
                                          purpose: str | None = None, stack_level: int | None = None) -> str:
        """ClearChargingProfile of those matching all the given criteria: "Accepted" or "Unknown"."""
        request = call.ClearChargingProfile(id=profile_id, connector_id=connector_id,
                                            charging_profile_purpose=purpose, stack_level=stack_level)
        return self._status("ClearChargingProfile", await self._call(request))

    async def call_send_local_list(self, version: int, update_type: str, entries: Sequence[LocalListEntry]) -> str:
        """SendLocalList ("Full" or "Differential"): "Accepted", "Failed", "NotSupported" or "VersionMismatch"."""
        listed = [{"id_tag": e.id_tag} if e.status is None else {"id_tag": e.id_tag,
                                                                   "id_tag_info": parse.id_tag_info(e.status)}
                  for e in entries]
        request = call.SendLocalList(list_version=version, update_type=update_type, local_authorization_list=listed)
        return self._status("SendLocalList", await self._call(request))

    async def call_get_local_list_version(self) -> int:
        """GetLocalListVersion: the version of the charger's list (0 empty, -1 no list support)."""
        answer = await self._call(call.GetLocalListVersion())
        version = getattr(answer, "list_version", None)
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidAnswer(f"GetLocalListVersion: listVersion {version!r} is not an integer", device=self.cp_id)
        return version

    async def call_trigger_message(self, requested: str, connector_id: int | None = None) -> str:
        """TriggerMessage of `requested` ("BootNotification", "MeterValues", "StatusNotification", ...):
        "Accepted", "Rejected" or "NotImplemented"."""
        request = call.TriggerMessage(requested_message=requested, connector_id=connector_id)
        return self._status("TriggerMessage", await self._call(request))

    def _status(self, action: str, answer: Any) -> str:
        status = getattr(answer, "status", None)
        if not isinstance(status, str):
            raise InvalidAnswer(f"{action}: status {status!r} is not a string", device=self.cp_id)
        return str(status)

    async def _call(self, request: Any) -> Any:
        """Sends `request` (an ocpp.v16.call dataclass) and returns the library's answer dataclass."""
        action = type(request).__name__
        if self._receive_task is not None and asyncio.current_task() is self._receive_task:
            raise RuntimeError(f"{self.cp_id}: {action} called from inside its own receive loop: it would deadlock")
        if self._closed.is_set():
            raise ChargerNotConnected(f"{action} not sent: not connected", device=self.cp_id)
        if not self._ready.is_set():
            raise ChargerNotConnected(f"{action} not sent: its BootNotification is not answered yet", device=self.cp_id)
        await _check_request(request, action)
        sending = asyncio.ensure_future(self.call(request, suppress=False, skip_schema_validation=True))
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait({sending, closing}, timeout=self.call_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not sending.done():
                sending.cancel()
        if sending in done:
            try:
                return sending.result()
            except ConnectionClosed:
                raise ChargerNotConnected(f"{action}: the connection closed", device=self.cp_id) from None
            except TimeoutError:
                raise CallTimeout(f"{action}: no answer within {self.call_timeout_s:g} s", device=self.cp_id) from None
            except OCPPError as exc:
                raise CallError(f"{action} refused: {exc.description}", code=exc.code, device=self.cp_id) from None
            except UnknownCallErrorCodeError as exc:
                raise CallError(f"{action} refused: {exc}", code="unknown", device=self.cp_id) from None
            except TypeError as exc:  # the library builds its answer dataclass from the payload's keys
                raise InvalidAnswer(f"{action}: the answer's fields are not OCPP's: {exc}", device=self.cp_id) from None
        if closing in done:
            raise ChargerNotConnected(f"{action}: the connection closed before the answer", device=self.cp_id)
        raise CallTimeout(f"{action}: no answer within {self.call_timeout_s:g} s", device=self.cp_id)


async def _check_request(request: Any, action: str) -> None:
    """The request as the library will send it, against OCPP 1.6's schema."""
    payload = remove_nones(snake_to_camel_case(serialize_as_dict(request)))
    try:
        await validate_payload(Call(unique_id="check", action=action, payload=payload), "1.6")
    except OCPPError as exc:
        raise ValueError(f"{action}: not a valid OCPP 1.6 request: {exc}") from None
