"""One charge point's websocket: its messages to the owner's handler, and the calls to it.

`ChargePointLink` is an `ocpp.v16.ChargePoint`. The library reads one message at a time and
awaits its `@on` handler before it reads the next, so a handler that called the same charge point
would wait for an answer nobody reads: `call_*` refuses from inside that loop. The library's
own log lines (every frame at INFO, every handler error with a traceback) go to the debug logger
`drivers.ocpp.wire`; the link logs what matters once, on `drivers.ocpp`.

Schema leniency: the library checks every payload against OCPP's JSON schema, and a charger that
sends, say, an errorCode outside the enum gets a CallError and re-sends forever (or drops a
transaction). The handlers of StatusNotification, MeterValues, Start/StopTransaction, DataTransfer
and the status notifications are registered with `@on(..., skip_schema_validation=True)`, and
`_parse` checks the fields the gateway needs itself (ProtocolError or TypeConstraintViolation when
one is missing or mistyped, enums kept as sent, unreadable meter values left out). BootNotification,
Heartbeat and Authorize keep the library's check.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from ocpp.exceptions import InternalError, OCPPError
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action, RegistrationStatus
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from . import _parse as parse
from ._api import BootInfo, CentralSystemHandler, MeterReport, StatusReport, TransactionStart, TransactionStop
from ._calls import LinkCalls

log = logging.getLogger("drivers.ocpp")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Spawn = Callable[[Coroutine[Any, Any, None], str], None]  # runs a coroutine as a task the server owns
_WARNED_MAX = 256  # distinct once-only warnings kept per connection (a hostile charger cannot grow it)


class DemotedLog(logging.LoggerAdapter[logging.Logger]):
    """A library's log lines below `keep_from` at DEBUG: its frame traces are no news on a gateway."""

    def __init__(self, logger: logging.Logger, keep_from: int = logging.CRITICAL + 1) -> None:
        super().__init__(logger, {})
        self.keep_from = keep_from

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(level if level >= self.keep_from else logging.DEBUG, msg, *args, **kwargs)


WIRE_LOG = DemotedLog(logging.getLogger("drivers.ocpp.wire"))


def _on(action: str, *, lenient: bool = False) -> Callable[[F], F]:
    """The library's `@on`, typed; `lenient` skips its schema check of the request (and of our reply)."""
    return cast(Callable[[F], F], on(action, skip_schema_validation=lenient))


def _after(action: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The library's `@after`, typed: runs right after the reply went out."""
    return cast(Callable[[Callable[..., None]], Callable[..., None]], after(action))


def _answered(action: str) -> Callable[[F], F]:
    """Every failure of a handler becomes an OCPP CallError and one log line; the connection lives on.

    A payload the gateway cannot use gets the OCPP error `_parse` raised (logged once per code);
    anything else, the handler's bug or the owner's, gets InternalError with its traceback logged.
    """
    def wrap(handler: F) -> F:
        @functools.wraps(handler)
        async def guarded(self: ChargePointLink, **payload: Any) -> Any:
            try:
                return await handler(self, **payload)
            except OCPPError as exc:
                cause = exc.details.get("cause") if isinstance(exc.details, dict) else None
                self.warn_once(action, f"answer:{exc.code}", f"answered {exc.code}: {cause or exc.description}")
                raise
            except Exception:
                log.exception("%s: %s failed; answered InternalError", self.cp_id, action)
                raise InternalError(details={"cause": f"{action} could not be handled"}) from None

        return guarded  # type: ignore[return-value]

    return wrap


class ChargePointLink(LinkCalls, ChargePoint):  # type: ignore[misc]  # ocpp is untyped
    """The connection of charge point `cp_id`: answers its messages through `handler`, sends `call_*`.

    ``ready`` is set once calls may go out: when the reply to its BootNotification has been sent,
    or when a Heartbeat, MeterValues or Start/StopTransaction shows a charger that registered
    before this connection (it reconnected without rebooting, as after a gateway restart).
    Until then nothing is sent to it (Wallbox loops on a call before the boot reply).
    """

    def __init__(
        self,
        cp_id: str,
        connection: ServerConnection,
        handler: CentralSystemHandler,
        *,
        heartbeat_s: int,
        call_timeout_s: float,
        spawn: Spawn,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(cp_id, connection, response_timeout=call_timeout_s, logger=WIRE_LOG)
        self.cp_id = cp_id
        self.connection = connection
        self.call_timeout_s = call_timeout_s
        self.boot_info: BootInfo | None = None  # the last BootNotification on this connection
        self._handler = handler
        self._heartbeat_s = heartbeat_s
        self._spawn = spawn
        self._on_ready = on_ready
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()
        self._receive_task: asyncio.Task[Any] | None = None
        self._warned: set[tuple[str, str]] = set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._closed.is_set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def serve(self) -> None:
        """Reads and answers its messages until the websocket closes."""
        self._receive_task = asyncio.current_task()
        try:
            await self.start()
        except ConnectionClosed:
            pass
        except Exception:  # the library's loop itself failed (handler failures are answered, not raised)
            log.exception("%s: the receive loop failed; closing the connection", self.cp_id)
        finally:
            self._closed.set()

    async def close(self, reason: str) -> None:
        await self.connection.close(code=1000, reason=reason)

    def warn_once(self, action: str, key: str, message: str) -> None:
        """Logs `message` about `action` as a warning the first time per (action, key), then at debug."""
        if (action, key) in self._warned or len(self._warned) >= _WARNED_MAX:
            log.debug("%s: %s: %s", self.cp_id, action, message)
            return
        self._warned.add((action, key))
        log.warning("%s: %s: %s (logged once per connection)", self.cp_id, action, message)

    def _warner(self, action: str) -> parse.Warn:
        return functools.partial(self.warn_once, action)

    def _registered(self, action: str) -> None:
        """After the reply went out: this message shows a charger already registered; calls may go."""
        if not self._ready.is_set():
            if self.boot_info is None and action != Action.boot_notification:
                log.info("%s: %s before any BootNotification: registered earlier, calls allowed", self.cp_id, action)
            self._ready.set()
            self._on_ready()

    # -- messages from the charge point ------------------------------------------------------------------

    @_on(Action.boot_notification)
    @_answered("BootNotification")
    async def on_boot_notification(self, **payload: Any) -> Any:
        self.boot_info = parse.boot_info(payload)
        log.info("%s: BootNotification from %s %s (firmware %s): accepted", self.cp_id, self.boot_info.vendor,
                 self.boot_info.model, self.boot_info.firmware_version or "?")
        return result.BootNotification(current_time=parse.iso(datetime.now(UTC)), interval=self._heartbeat_s,
                                       status=RegistrationStatus.accepted)

    @_after(Action.boot_notification)
    def after_boot_notification(self, **payload: Any) -> None:
        self._registered(Action.boot_notification)
        if self.boot_info is not None:
            self._spawn(self._handler.boot(self.cp_id, self.boot_info), f"{self.cp_id}: boot")

    @_on(Action.heartbeat)
    @_answered("Heartbeat")
    async def on_heartbeat(self, **payload: Any) -> Any:
        return result.Heartbeat(current_time=parse.iso(datetime.now(UTC)))

    @_after(Action.heartbeat)
    def after_heartbeat(self, **payload: Any) -> None:
        self._registered(Action.heartbeat)

    @_on(Action.status_notification, lenient=True)
    @_answered("StatusNotification")
    async def on_status_notification(self, **payload: Any) -> Any:
        action, warn = "StatusNotification", self._warner("StatusNotification")
        report = StatusReport(
            connector_id=parse.required_int(payload, "connector_id"),
            status=parse.enum_value(payload, "status", parse.STATUSES, warn),
            error_code=parse.enum_value(payload, "error_code", parse.ERROR_CODES, warn),
            timestamp=self._timestamp(payload, action, required=False),
            info=parse.optional_str(payload, "info"),
            vendor_id=parse.optional_str(payload, "vendor_id"),
            vendor_error_code=parse.optional_str(payload, "vendor_error_code"),
        )
        await self._handler.status(self.cp_id, report)
        return result.StatusNotification()

    @_on(Action.authorize)
    @_answered("Authorize")
    async def on_authorize(self, **payload: Any) -> Any:
        id_tag = parse.required_str(payload, "id_tag")
        status = await self._handler.authorize(self.cp_id, id_tag)
        return result.Authorize(id_tag_info=parse.id_tag_info(status))

    @_on(Action.start_transaction, lenient=True)
    @_answered("StartTransaction")
    async def on_start_transaction(self, **payload: Any) -> Any:
        action = "StartTransaction"
        start = TransactionStart(
            connector_id=parse.required_int(payload, "connector_id"),
            id_tag=parse.required_str(payload, "id_tag"),
            meter_start_wh=parse.required_int(payload, "meter_start"),
            timestamp=self._timestamp(payload, action, required=True),
            reservation_id=parse.optional_int(payload, "reservation_id"),
        )
        answer = await self._handler.start_transaction(self.cp_id, start)
        return result.StartTransaction(transaction_id=int(answer.transaction_id),
                                       id_tag_info=parse.id_tag_info(answer.id_tag))

    @_after(Action.start_transaction)
    def after_start_transaction(self, **payload: Any) -> None:
        self._registered(Action.start_transaction)

    @_on(Action.stop_transaction, lenient=True)
    @_answered("StopTransaction")
    async def on_stop_transaction(self, **payload: Any) -> Any:
        action = "StopTransaction"
        stop = TransactionStop(
            transaction_id=parse.required_int(payload, "transaction_id"),
            meter_stop_wh=parse.required_int(payload, "meter_stop"),
            timestamp=self._timestamp(payload, action, required=True),
            reason=parse.optional_str(payload, "reason"),
            id_tag=parse.optional_str(payload, "id_tag"),
            transaction_data=parse.meter_samples(payload.get("transaction_data"), self._warner(action),
                                                 name="transactionData"),
        )
        status = await self._handler.stop_transaction(self.cp_id, stop)
        return result.StopTransaction(id_tag_info=None if status is None else parse.id_tag_info(status))

    @_after(Action.stop_transaction)
    def after_stop_transaction(self, **payload: Any) -> None:
        self._registered(Action.stop_transaction)

    @_on(Action.meter_values, lenient=True)
    @_answered("MeterValues")
    async def on_meter_values(self, **payload: Any) -> Any:
        action = "MeterValues"
        report = MeterReport(
            connector_id=parse.required_int(payload, "connector_id"),
            transaction_id=parse.optional_int(payload, "transaction_id"),
            samples=parse.meter_samples(payload.get("meter_value"), self._warner(action)),
        )
        await self._handler.meter_values(self.cp_id, report)
        return result.MeterValues()

    @_after(Action.meter_values)
    def after_meter_values(self, **payload: Any) -> None:
        self._registered(Action.meter_values)

    @_on(Action.data_transfer, lenient=True)
    @_answered("DataTransfer")
    async def on_data_transfer(self, **payload: Any) -> Any:
        log.debug("%s: DataTransfer from vendor %r, message %r: accepted", self.cp_id, payload.get("vendor_id"),
                  payload.get("message_id"))
        return result.DataTransfer(status="Accepted")

    @_on(Action.firmware_status_notification, lenient=True)
    @_answered("FirmwareStatusNotification")
    async def on_firmware_status_notification(self, **payload: Any) -> Any:
        log.info("%s: firmware status %s", self.cp_id, payload.get("status"))
        return result.FirmwareStatusNotification()

    @_on(Action.diagnostics_status_notification, lenient=True)
    @_answered("DiagnosticsStatusNotification")
    async def on_diagnostics_status_notification(self, **payload: Any) -> Any:
        log.info("%s: diagnostics status %s", self.cp_id, payload.get("status"))
        return result.DiagnosticsStatusNotification()

    @_on(Action.security_event_notification, lenient=True)
    @_answered("SecurityEventNotification")
    async def on_security_event_notification(self, **payload: Any) -> Any:
        log.info("%s: security event %s at %s", self.cp_id, payload.get("type"), payload.get("timestamp"))
        return result.SecurityEventNotification()

    def _timestamp(self, payload: dict[str, Any], action: str, *, required: bool) -> datetime | None:
        """The message's timestamp; an unreadable one is logged once and given as None (never refused:
        the charger would re-send a Start or Stop forever)."""
        if required:
            parse.required_str(payload, "timestamp")
        raw = payload.get("timestamp")
        moment = parse.timestamp(raw)
        if raw is not None and moment is None:
            self.warn_once(action, "timestamp", f"timestamp {raw!r} is not a dateTime; passed on as None")
        return moment
