"""The gateway's local OCPP 1.6J central system: a websocket server the chargers connect to.

    async with CentralSystem(host="0.0.0.0", port=8887, charge_points={"ZAP049123": ChargePointAuth("s3cret")},
                             handler=agent) as cs:
        link = await cs.wait_booted("ZAP049123", timeout=60)
        config = await link.call_get_configuration()

A charger connects to ws[s]://GATEWAY:PORT/.../{charge_point_id}. The handshake refuses an id that
is not configured (HTTP 404), missing or wrong basic-auth credentials (401) and a client that does
not offer the `ocpp1.6` subprotocol (400); each refusal is logged once per (id, reason) until that
id connects, not on every retry. A second connection with the same id replaces the first, which
is closed. Each connection is one `ChargePointLink`.
"""
from __future__ import annotations

import asyncio
import hmac
import http
import logging
import ssl as ssl_module
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader
from websockets.headers import build_www_authenticate_basic, parse_authorization_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from drivers.errors import ChargerNotConnected

from ._api import CentralSystemHandler, ChargePointAuth
from ._link import ChargePointLink, DemotedLog

log = logging.getLogger("drivers.ocpp")

SUBPROTOCOL = Subprotocol("ocpp1.6")
_REFUSALS_MAX = 1024  # (id, reason) pairs remembered for logging once; unknown ids could be endless
_WEBSOCKETS_LOG = DemotedLog(logging.getLogger("drivers.ocpp.websockets"), keep_from=logging.WARNING)


def charge_point_id(path: str) -> str:
    """The last segment of the URL's path, percent-decoded ("" when there is none)."""
    return unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])


class CentralSystem:
    """The OCPP 1.6J central system; an async context manager that listens while it is entered.

    `charge_points` (id -> ChargePointAuth) is looked up at every handshake, so a mapping the owner
    updates takes effect for the next connection. `heartbeat_s` is the interval given in the
    BootNotification reply; `call_timeout_s` bounds every call to a charger. `ssl` makes it wss
    (OCPP security profile 2).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        charge_points: Mapping[str, ChargePointAuth],
        handler: CentralSystemHandler,
        ssl: ssl_module.SSLContext | None = None,
        heartbeat_s: int = 300,
        call_timeout_s: float = 30.0,
    ) -> None:
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be positive, got {heartbeat_s}")
        if call_timeout_s <= 0:
            raise ValueError(f"call_timeout_s must be positive, got {call_timeout_s}")
        self._host = host
        self._port = port
        self._charge_points = charge_points
        self._handler = handler
        self._ssl = ssl
        self._heartbeat_s = heartbeat_s
        self._call_timeout_s = call_timeout_s
        self._server: Server | None = None
        self._links: dict[str, ChargePointLink] = {}
        self._refused: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()  # replaced by a fresh one at every change of a link

    async def __aenter__(self) -> CentralSystem:
        extra: dict[str, Any] = {} if self._ssl is None else {"ssl": self._ssl}
        self._server = await serve(self._serve_connection, self._host, self._port, subprotocols=[SUBPROTOCOL],
                                   process_request=self._check_handshake, logger=_WEBSOCKETS_LOG, **extra)
        log.info("OCPP central system listening on %s:%d (%s)", self._host, self.port,
                 "wss" if self._ssl is not None else "ws")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # closes every connection (1001 going away); their handlers end
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS chose when `port` was 0)."""
        if self._server is None:
            raise RuntimeError("the central system is not running (use it as `async with`)")
        return int(self._server.sockets[0].getsockname()[1])

    def link(self, cp_id: str) -> ChargePointLink | None:
        """The current connection of `cp_id`, None when it has none."""
        return self._links.get(cp_id)

    def connected(self) -> list[str]:
        """The ids of the charge points connected now, sorted."""
        return sorted(self._links)

    async def wait_booted(self, cp_id: str, timeout: float) -> ChargePointLink:
        """The link of `cp_id` once it may be called (boot answered, see ChargePointLink.ready);
        ChargerNotConnected if that takes longer than `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    link = self._links.get(cp_id)
                    if link is not None and link.ready:
                        return link
                    await changed.wait()
        except TimeoutError:
            raise ChargerNotConnected(f"not connected and booted within {timeout:g} s", device=cp_id) from None

    # -- the handshake ---------------------------------------------------------------------------------------

    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        cp_id = charge_point_id(request.path)
        auth = self._charge_points.get(cp_id)
        if auth is None:
            return self._refuse(connection, cp_id, "unknown charge point id", http.HTTPStatus.NOT_FOUND)
        if auth.password is not None:
            header = request.headers.get("Authorization")
            if header is None:
                return self._refuse(connection, cp_id, "no credentials", http.HTTPStatus.UNAUTHORIZED)
            try:
                _, password = parse_authorization_basic(header)
            except InvalidHeader:
                return self._refuse(connection, cp_id, "credentials not in basic auth form",
                                    http.HTTPStatus.UNAUTHORIZED)
            if not hmac.compare_digest(password.encode(errors="surrogateescape"),
                                       auth.password.encode(errors="surrogateescape")):
                return self._refuse(connection, cp_id, "wrong password", http.HTTPStatus.UNAUTHORIZED)
        if SUBPROTOCOL not in _offered_subprotocols(request.headers):
            return self._refuse(connection, cp_id, f"no {SUBPROTOCOL} subprotocol offered", http.HTTPStatus.BAD_REQUEST)
        return None

    def _refuse(self, connection: ServerConnection, cp_id: str, reason: str, status: http.HTTPStatus) -> Response:
        if (cp_id, reason) not in self._refused:
            if len(self._refused) >= _REFUSALS_MAX:
                self._refused.clear()
            self._refused.add((cp_id, reason))
            log.warning("OCPP: refused %r from %s at the handshake: %s (HTTP %d); not logged again until it "
                        "connects", cp_id, _address(connection), reason, status.value)
        else:
            log.debug("OCPP: refused %r from %s again: %s", cp_id, _address(connection), reason)
        response = connection.respond(status, f"{reason}\n")
        if status == http.HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = build_www_authenticate_basic("OCPP")
        return response

    # -- connections ------------------------------------------------------------------------------------------

    async def _serve_connection(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # the handshake is done
        cp_id = charge_point_id(connection.request.path)
        self._refused = {key for key in self._refused if key[0] != cp_id}
        link = ChargePointLink(cp_id, connection, self._handler, heartbeat_s=self._heartbeat_s,
                               call_timeout_s=self._call_timeout_s, spawn=self._spawn, on_ready=self._notify)
        old = self._links.get(cp_id)
        self._links[cp_id] = link
        self._notify()
        if old is not None:
            log.warning("%s: a new connection from %s replaces the one from %s", cp_id, _address(connection),
                        _address(old.connection))
            self._spawn(old.close("replaced by a newer connection"), f"{cp_id}: closing the replaced connection")
        else:
            log.info("%s: connected from %s", cp_id, _address(connection))
        try:
            await link.serve()
        finally:
            if self._links.get(cp_id) is link:
                del self._links[cp_id]
                self._notify()
                log.info("%s: disconnected (%s)", cp_id, connection.close_code)
                try:
                    await self._handler.disconnected(cp_id)
                except Exception:
                    log.exception("%s: the handler's disconnected() failed", cp_id)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s failed: %s", task.get_name(), exc, exc_info=exc)


def _offered_subprotocols(headers: Headers) -> list[str]:
    return [part.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for part in value.split(",")]


def _address(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
    except (TypeError, ValueError):
        return "?"
    return f"{host}:{port}"
