"""Bus owners: one pymodbus client per TCP endpoint, serial port or serial server, shared by device handles.

Three transports: Modbus TCP (ModbusTcpLink), Modbus RTU on a serial port (SerialBus) and
Modbus RTU framing over a TCP socket to a serial server (RtuOverTcpLink, "rtu-over-tcp").

A link serialises every request behind one asyncio.Lock (FIFO, so devices take turns) and keeps
the quiet time a device needs before each frame. Each request is bounded by the timeout of the
device it addresses, so one slow or dead device costs the bus one timeout per request and never
more; retries take the lock again, letting other devices in between. A device that is known to
be unavailable is tried on the bus at most once per `recheck_s`; in between its requests fail at
once without touching the bus, so a dead unit cannot eat the poll rate of the others.

Connections are opened on first use and re-opened on the next use after any failure, so a
device (or USB adapter) that disappears and comes back works again without a restart.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import termios
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from drivers.errors import (
    DeviceError,
    DeviceTimeout,
    DeviceUnreachable,
    ModbusExceptionResponse,
    PortSettingRefused,
    UnsupportedByModel,
)

log = logging.getLogger("drivers.modbus")

# pymodbus' own timeout and retries stay out of the way: every call is bounded by the
# addressed device's timeout instead, and retries are ours.
_CLIENT_TIMEOUT_S = 60.0

ClientT = TypeVar("ClientT", AsyncModbusTcpClient, AsyncModbusSerialClient)


class _LinkDown(Exception):
    """The link could not be opened; `refused_setting` is set when a port refused its settings."""

    def __init__(self, message: str, *, refused_setting: str | None = None) -> None:
        super().__init__(message)
        self.refused_setting = refused_setting


class _Link(Generic[ClientT]):
    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = asyncio.Lock()
        self._client: ClientT | None = None
        self._last_end = 0.0
        self._last_gap = 0.0
        self._closed = False

    def _new_client(self) -> ClientT:
        raise NotImplementedError

    async def _open(self, client: ClientT, timeout_s: float) -> None:
        try:
            ok = await asyncio.wait_for(client.connect(), timeout_s)
        except TimeoutError:
            raise _LinkDown(f"connecting to {self.name} took longer than {timeout_s} s") from None
        if not ok:
            raise _LinkDown(f"cannot connect to {self.name}")

    def _after_timeout(self) -> None:
        """Called with the lock held after a request went unanswered or got a garbled answer."""

    async def transact(
        self,
        call: Callable[[ClientT], Awaitable[ModbusPDU]],
        *,
        timeout_s: float,
        gap_s: float,
    ) -> ModbusPDU:
        """Run one request with the link to itself. Raises TimeoutError, _LinkDown,
        ConnectionException or ModbusIOException; the device handle turns them into drivers.errors."""
        async with self._lock:
            if self._closed:
                raise _LinkDown(f"{self.name} is closed")
            # The device addressed last may need its quiet time as much as the next one.
            wait = self._last_end + max(gap_s, self._last_gap) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if self._client is None:
                    self._client = self._new_client()
                if not self._client.connected:
                    await self._open(self._client, timeout_s)
                return await asyncio.wait_for(call(self._client), timeout_s)
            except (TimeoutError, ModbusIOException):
                self._after_timeout()
                raise
            except (_LinkDown, ConnectionException, OSError):
                self._drop()
                raise
            finally:
                self._last_end = time.monotonic()
                self._last_gap = gap_s

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            self._drop()
            self._client = None


class ModbusTcpLink(_Link[AsyncModbusTcpClient]):
    """One TCP connection to host:port (a charger, or a gateway with several units behind it)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"{host}:{port}")
        self.host = host
        self.port = port

    def _new_client(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            self.host, port=self.port, timeout=_CLIENT_TIMEOUT_S, retries=0, reconnect_delay=0, name=self.name
        )

    def _after_timeout(self) -> None:
        # A late answer would carry a stale transaction id into the next request; a fresh
        # connection is cheap on TCP and leaves nothing in flight.
        self._drop()


class RtuOverTcpLink(_Link[AsyncModbusTcpClient]):
    """RTU frames over one TCP connection to a serial server (RS-485 gateway): a shared bus, reached by IP."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"rtu-over-tcp {host}:{port}")
        self.host = host
        self.port = port

    def _new_client(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            self.host, port=self.port, framer=FramerType.RTU, timeout=_CLIENT_TIMEOUT_S, retries=0,
            reconnect_delay=0, name=self.name,
        )

    def _after_timeout(self) -> None:
        # RTU frames carry no transaction id: a late answer would be taken for the next
        # request's. A new connection leaves nothing in flight.
        self._drop()


class SerialBus(_Link[AsyncModbusSerialClient]):
    """The one owner of a serial port (RS-485 bus); every device on the port goes through it."""

    def __init__(self, port: str, *, baudrate: int, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> None:
        super().__init__(port)
        self.port = port
        self.settings = (baudrate, bytesize, parity, stopbits)

    @property
    def settings_text(self) -> str:
        baudrate, bytesize, parity, stopbits = self.settings
        return f"{baudrate} {bytesize}{parity}{stopbits}"

    def _new_client(self) -> AsyncModbusSerialClient:
        baudrate, bytesize, parity, stopbits = self.settings
        return AsyncModbusSerialClient(
            self.port,
            framer=FramerType.RTU,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            timeout=_CLIENT_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            name=self.port,
        )

    async def _open(self, client: AsyncModbusSerialClient, timeout_s: float) -> None:
        # Try the settings first: when pymodbus' own open fails half-way, its serial object
        # keeps the port's exclusive lock until garbage collection, blocking the next open.
        baudrate, bytesize, parity, stopbits = self.settings
        if _try_open(self.port, baudrate, bytesize, parity, stopbits) is not None:
            raise self._diagnose(None)
        try:
            await super()._open(client, timeout_s)
        except termios.error as exc:
            traceback.clear_frames(exc.__traceback__)  # let go of that serial object now
            raise self._diagnose(exc) from None
        except _LinkDown as exc:
            raise self._diagnose(exc) from None

    def _diagnose(self, first: Exception | None) -> _LinkDown:
        """Open the port once more with pyserial to learn why it failed, and name the setting."""
        baudrate, bytesize, parity, stopbits = self.settings
        problem = _try_open(self.port, baudrate, bytesize, parity, stopbits)
        if problem is None:
            return _LinkDown(f"cannot open {self.port} ({self.settings_text}): {first}")
        if not _is_einval(problem):
            return _LinkDown(str(problem))
        setting = f"{self.settings_text}"
        if parity != "N" and _try_open(self.port, baudrate, bytesize, "N", stopbits) is None:
            setting = f"parity={parity}"
        return _LinkDown(
            f"serial port {self.port} refused setting {setting} ({self.settings_text}): {problem}",
            refused_setting=setting,
        )


def _try_open(port: str, baudrate: int, bytesize: int, parity: str, stopbits: int) -> Exception | None:
    try:
        with serial.Serial(
            port, baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits, exclusive=True
        ) as s:
            s.timeout = 0  # a second tcsetattr, as pymodbus does; a pty refuses parity only here
    except (serial.SerialException, termios.error, OSError) as exc:
        return exc
    return None


def _is_einval(exc: Exception) -> bool:
    code = getattr(exc, "errno", None)
    if code is None and exc.args and isinstance(exc.args[0], int):
        code = exc.args[0]
    return code == errno.EINVAL or "Invalid argument" in str(exc)


class BusRegistry:
    """Hands out shared links: one per host:port and one per serial port. Closes them all.

    Use as ``async with BusRegistry() as registry: ...`` or call ``await registry.aclose()``.
    """

    def __init__(self) -> None:
        self._tcp: dict[tuple[str, int], ModbusTcpLink] = {}
        self._rtu_tcp: dict[tuple[str, int], RtuOverTcpLink] = {}
        self._serial: dict[str, SerialBus] = {}

    def tcp(self, host: str, port: int) -> ModbusTcpLink:
        key = (host, port)
        if key in self._rtu_tcp:
            raise ValueError(f"{host}:{port} is already used as rtu-over-tcp, not Modbus TCP")
        if key not in self._tcp:
            self._tcp[key] = ModbusTcpLink(host, port)
        return self._tcp[key]

    def rtu_over_tcp(self, host: str, port: int) -> RtuOverTcpLink:
        key = (host, port)
        if key in self._tcp:
            raise ValueError(f"{host}:{port} is already used as Modbus TCP, not rtu-over-tcp")
        if key not in self._rtu_tcp:
            self._rtu_tcp[key] = RtuOverTcpLink(host, port)
        return self._rtu_tcp[key]

    def serial(self, port: str, *, baudrate: int, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> SerialBus:
        key = os.path.normpath(port)
        bus = self._serial.get(key)
        if bus is None:
            bus = self._serial[key] = SerialBus(key, baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits)
        elif bus.settings != (baudrate, bytesize, parity, stopbits):
            wanted = SerialBus(key, baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits)
            raise ValueError(f"serial port {key} is already in use at {bus.settings_text}, not {wanted.settings_text}")
        return bus

    @property
    def links(self) -> list[_Link[Any]]:
        return [*self._tcp.values(), *self._rtu_tcp.values(), *self._serial.values()]

    async def aclose(self) -> None:
        for link in self.links:
            await link.close()
        self._tcp.clear()
        self._rtu_tcp.clear()
        self._serial.clear()

    async def __aenter__(self) -> BusRegistry:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ModbusDevice:
    """One unit on a link, with its own timeout, retries and frame gap.

    Every failure comes out as a drivers.errors exception naming the device and register.
    While the device is unavailable each request gets one attempt, not retries+1, and only
    one attempt per `recheck_s` goes on the bus at all, so a dead device on a shared bus costs
    the others as little bus time as possible.

    `forbidden` maps addresses to the reason they are never written (ABB's stop register);
    `write_multiple` sends single-register writes as FC16 for devices that refuse FC6.
    """

    def __init__(
        self,
        link: _Link[Any],
        *,
        unit: int,
        name: str,
        timeout_s: float = 1.0,
        retries: int = 1,
        frame_gap_s: float = 0.0,
        recheck_s: float = 5.0,
        forbidden: Mapping[int, str] | None = None,
        write_multiple: bool = False,
    ) -> None:
        if recheck_s < 0:
            raise ValueError(f"{name}: recheck_s must be >= 0, got {recheck_s}")
        if timeout_s <= 0:
            raise ValueError(f"{name}: timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"{name}: retries must be >= 0, got {retries}")
        if not 0 <= unit <= 255:
            raise ValueError(f"{name}: unit must be 0..255, got {unit}")
        self.link = link
        self.unit = unit
        self.name = name
        self.timeout_s = timeout_s
        self.retries = retries
        self.frame_gap_s = frame_gap_s
        self.recheck_s = recheck_s
        self.forbidden: dict[int, str] = dict(forbidden or {})
        self.write_multiple = write_multiple
        self.available: bool | None = None  # None until the first request
        self._failure: DeviceError | None = None  # why it is unavailable
        self._last_attempt = 0.0
        self.last_ok = 0.0  # time.monotonic() of the last answered request
        self.recoveries = 0  # times the device came back after being unavailable

    def __repr__(self) -> str:
        return f"ModbusDevice({self.name!r}, {self.link.name} unit {self.unit})"

    async def read_holding(self, address: int, count: int = 1) -> list[int]:
        rr = await self._request(
            f"read holding {_span(address, count)}", address,
            lambda c: c.read_holding_registers(address, count=count, device_id=self.unit),
        )
        return list(rr.registers)

    async def read_input(self, address: int, count: int = 1) -> list[int]:
        rr = await self._request(
            f"read input {_span(address, count)}", address,
            lambda c: c.read_input_registers(address, count=count, device_id=self.unit),
        )
        return list(rr.registers)

    async def read_coils(self, address: int, count: int = 1) -> list[bool]:
        rr = await self._request(
            f"read coils {_span(address, count)}", address,
            lambda c: c.read_coils(address, count=count, device_id=self.unit),
        )
        return list(rr.bits[:count])

    async def write_register(self, address: int, value: int) -> None:
        _check_word(self.name, address, value)
        self._check_allowed(address, 1)
        if self.write_multiple:
            await self.write_registers(address, [value])
            return
        await self._request(
            f"write {address}={value}", address,
            lambda c: c.write_register(address, value, device_id=self.unit),
        )

    async def write_registers(self, address: int, values: list[int]) -> None:
        for offset, value in enumerate(values):
            _check_word(self.name, address + offset, value)
        self._check_allowed(address, len(values))
        await self._request(
            f"write {_span(address, len(values))}={values}", address,
            lambda c: c.write_registers(address, values, device_id=self.unit),
        )

    async def write_coil(self, address: int, value: bool) -> None:
        self._check_allowed(address, 1)
        await self._request(
            f"write coil {address}={value}", address,
            lambda c: c.write_coil(address, value, device_id=self.unit),
        )

    def _check_allowed(self, address: int, count: int) -> None:
        for a in range(address, address + count):
            if a in self.forbidden:
                raise UnsupportedByModel(f"refusing to write register {a}: {self.forbidden[a]}", device=self.name, register=a)

    async def _request(self, what: str, address: int, call: Callable[[Any], Awaitable[ModbusPDU]]) -> Any:
        now = time.monotonic()
        if self.available is False and self._failure is not None and now - self._last_attempt < self.recheck_s:
            wait = self.recheck_s - (now - self._last_attempt)
            raise type(self._failure)(
                f"{self.link.name} unit {self.unit} unavailable, not tried on the bus for {wait:.1f} s more"
                f" ({what}); last failure: {self._failure}",
                device=self.name, register=address,
            )
        attempts = 1 if self.available is False else self.retries + 1
        failure: DeviceError | None = None
        for _ in range(attempts):
            self._last_attempt = time.monotonic()
            try:
                rr = await self.link.transact(call, timeout_s=self.timeout_s, gap_s=self.frame_gap_s)
            except TimeoutError:
                failure = DeviceTimeout(
                    f"no answer from {self.link.name} unit {self.unit} to {what} within {self.timeout_s} s"
                    f" ({attempts} attempt{'s' if attempts > 1 else ''})",
                    device=self.name, register=address,
                )
            except ModbusIOException as exc:
                failure = DeviceTimeout(
                    f"no valid answer from {self.link.name} unit {self.unit} to {what}: {exc}",
                    device=self.name, register=address,
                )
            except _LinkDown as exc:
                if exc.refused_setting is not None:
                    err = PortSettingRefused(str(exc), device=self.name, register=address)
                    self._mark_failed(err)
                    raise err from None
                failure = DeviceUnreachable(f"{exc} (unit {self.unit}, {what})", device=self.name, register=address)
            except (ConnectionException, OSError) as exc:
                failure = DeviceUnreachable(
                    f"{self.link.name} unit {self.unit} lost during {what}: {exc}", device=self.name, register=address
                )
            else:
                self._mark_ok()
                if isinstance(rr, ExceptionResponse) or rr.isError():
                    raise ModbusExceptionResponse(
                        f"{self.link.name} unit {self.unit} rejected {what}",
                        code=getattr(rr, "exception_code", 0), device=self.name, register=address,
                    )
                return rr
        assert failure is not None
        self._mark_failed(failure)
        raise failure

    def _mark_ok(self) -> None:
        if self.available is False:
            self.recoveries += 1
            log.info("%s: %s unit %d answers again", self.name, self.link.name, self.unit)
        self.available = True
        self.last_ok = time.monotonic()

    def _mark_failed(self, error: DeviceError) -> None:
        if self.available is not False:
            log.warning("unavailable: %s", error)
        self.available = False
        self._failure = error


def _span(address: int, count: int) -> str:
    return str(address) if count == 1 else f"{address}..{address + count - 1}"


def _check_word(name: str, address: int, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} register {address}: {value!r} is not a 16-bit register value")
