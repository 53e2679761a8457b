"""Charger simulators that follow the driver's register maps, served by real pymodbus servers.

    cp = SimCharger("bender-cc613", speed=60)
    server = await serve_tcp([cp], host="127.0.0.1", port=0)   # server.port is the bound port
    cp.plug(); cp.set_ev_requesting(True)
    ...
    await server.close()

Addresses, types and scales come from ``drivers.modbus.load_map``, so a sim and the driver
cannot disagree about a register without the map being wrong for both.

The EV model: unplugged -> A; plugged -> B; plugged, enabled (setpoint >= the model's minimum)
and requesting -> C. In C the car draws min(setpoint, ev_max_current_a) on every phase at
230 V, and the lifetime counter integrates that power times `speed`.

The fail-safe is simulated from the map too: once the fail-safe timeout register is non-zero,
a charger whose keep-alive lapses (any request for keepalive kind "traffic", a setpoint write
for "rewrite_setpoint") falls back to the fail-safe current (`failsafe_active`).
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import load_map
from drivers.modbus._registermap import Register, RegisterMap, encode

T = TypeVar("T")

_FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 4: "input"} | dict.fromkeys((3, 6, 16, 22, 23), "holding")
_WRITE_FCS = {5, 6, 15, 16, 22, 23}

# What the identity registers of each simulated model read; anything else reads "SIM" or 0.
_IDENTITY: dict[str, dict[str, str | int]] = {
    "bender-cc613": {"firmware": "5.30", "protocol_version": "0.6", "model_name": "CC613-SIM"},
    "heidelberg-energy-control": {
        "layout_version": 0x0108, "firmware": 4242, "hardware_max_current": 16, "hardware_min_current": 6,
    },
}


class SimCharger:
    """One simulated charger (one Modbus unit). Thread-safe: drive it from any thread."""

    def __init__(
        self,
        model: str,
        *,
        unit: int | None = None,
        ev_max_current_a: float = 32,
        speed: float = 1.0,
        energy_wh: float = 1_000_000,
        phases: int = 3,
        voltage_v: float = 230.0,
    ) -> None:
        self.regmap: RegisterMap = load_map(model)
        self.model = model
        self.unit = self.regmap.transport.unit if unit is None else unit
        self.ev_max_current_a = ev_max_current_a
        self.speed = speed
        self.phases = phases
        self.voltage_v = voltage_v
        self.writes: list[tuple[float, int, int]] = []  # (time.monotonic(), register, value) per register written by a client
        self._lock = threading.Lock()
        self._energy_wh = float(energy_wh)
        self._plugged = False
        self._requesting = False
        self._silent = False
        self._no_value = False
        self._failsafe_active = False
        self._t = time.monotonic()
        self._last_request = self._t
        self._last_setpoint_write = self._t
        self._setpoint = self.regmap.registers[self.regmap.control.register]
        self._image: dict[tuple[str, int], int] = {}
        self._writable: set[int] = set()
        self._power_on()

    # -- the EV and the outside world --

    def plug(self) -> None:
        with self._lock:
            self._advance()
            self._plugged = True

    def unplug(self) -> None:
        with self._lock:
            self._advance()
            self._plugged = False
            self._requesting = False

    def set_ev_requesting(self, requesting: bool) -> None:
        """The car wants energy (it only gets it while plugged and the charger is enabled)."""
        with self._lock:
            self._advance()
            self._requesting = requesting

    def set_silent(self, silent: bool) -> None:
        """Stop (or resume) answering anything: a dead charger or a cut cable."""
        with self._lock:
            self._silent = silent

    def set_no_value(self, on: bool) -> None:
        """Registers with a "no value" sentinel in the map read that sentinel (Bender without a meter)."""
        with self._lock:
            self._no_value = on

    def reboot(self) -> None:
        """Power-cycle: setup, fail-safe and setpoint registers go back to defaults; the lifetime counter stays."""
        with self._lock:
            self._advance()
            self._power_on()

    # -- what a test looks at --

    @property
    def energy_wh(self) -> float:
        with self._lock:
            self._advance()
            return self._energy_wh

    @property
    def state(self) -> str:
        with self._lock:
            self._advance()
            return self._letter()

    @property
    def setpoint_a(self) -> float:
        """The current the charger would offer now (0 when stopped)."""
        with self._lock:
            self._advance()
            return self._setpoint_a()

    @property
    def failsafe_active(self) -> bool:
        with self._lock:
            self._advance()
            return self._failsafe_active

    def register(self, address: int, table: str = "holding") -> int:
        with self._lock:
            self._advance()
            return self._image[(table, address)]

    def writes_to(self, address: int) -> list[int]:
        return [value for _, register, value in list(self.writes) if register == address]

    # -- model, with self._lock held --

    def _power_on(self) -> None:
        regmap = self.regmap
        for reg in regmap.registers.values():
            for i in range(reg.words):
                self._image[(reg.table, reg.address + i)] = 0
        for block in regmap.read_blocks:
            for address in range(block.address, block.address + block.count):
                self._image.setdefault((block.table, address), 0)
        for address, _ in regmap.setup_writes:
            self._image[("holding", address)] = 0
            self._writable.add(address)
        for role in (regmap.control.register, "failsafe_current", "failsafe_timeout"):
            writable = regmap.register(role)
            if writable is not None and writable.table == "holding":
                self._writable.update(range(writable.address, writable.end))
        ident = _IDENTITY.get(self.model, {})
        for role in regmap.identity:
            reg = regmap.registers[role]
            self._put(reg, ident.get(role, "SIM" if reg.type == "ascii" else 0))
        # Unconfigured chargers come up offering their maximum, with the factory fail-safe timeout.
        self._put(self._setpoint, regmap.control.max_current_a)
        if regmap.failsafe is not None:
            self._put(regmap.registers["failsafe_current"], 0)
            factory_watchdog = regmap.keepalive is not None and regmap.keepalive.kind == "traffic"
            self._put(regmap.registers["failsafe_timeout"], regmap.failsafe.timeout_s if factory_watchdog else 0)
        self._failsafe_active = False
        self._last_request = self._last_setpoint_write = time.monotonic()

    def _put(self, reg: Register, value: float | int | str) -> None:
        for i, word in enumerate(encode(reg, value)):
            self._image[(reg.table, reg.address + i)] = word

    def _get(self, reg: Register) -> int:
        out = 0
        words = [self._image[(reg.table, reg.address + i)] for i in range(reg.words)]
        if reg.word_order == "LSW":
            words.reverse()
        for word in words:
            out = (out << 16) | word
        return out

    def _setpoint_a(self) -> float:
        raw = self._get(self._setpoint)
        if raw == self.regmap.control.stop_value:
            return 0.0
        return raw * self._setpoint.scale

    def _offered_a(self) -> float:
        setpoint = self._setpoint_a()
        return min(setpoint, self.ev_max_current_a) if setpoint >= self.regmap.control.min_current_a else 0.0

    def _letter(self) -> str:
        if not self._plugged:
            return "A"
        return "C" if self._requesting and self._offered_a() > 0 else "B"

    def _power_w(self) -> float:
        return self._offered_a() * self.voltage_v * self.phases if self._letter() == "C" else 0.0

    def _advance(self) -> None:
        now = time.monotonic()
        self._energy_wh += self._power_w() * (now - self._t) * self.speed / 3600.0
        self._t = now
        self._check_watchdog(now)

    def _check_watchdog(self, now: float) -> None:
        keepalive = self.regmap.keepalive
        if keepalive is None or self._failsafe_active:
            return
        timeout = self._get(self.regmap.registers["failsafe_timeout"]) * self.regmap.registers["failsafe_timeout"].scale
        if not timeout:
            return
        last = self._last_request if keepalive.kind == "traffic" else self._last_setpoint_write
        if now - last > timeout:
            self._failsafe_active = True
            current = self._get(self.regmap.registers["failsafe_current"]) * self.regmap.registers["failsafe_current"].scale
            self._put(self._setpoint, current if current else self.regmap.control.stop_value * self._setpoint.scale)

    def _refresh_live(self) -> None:
        offered = self._offered_a() if self._letter() == "C" else 0.0
        values: dict[str, float] = {
            "energy": self._energy_wh,
            "power": self._power_w(),
            "current_l1": offered,
            "current_l2": offered if self.phases == 3 else 0.0,
            "current_l3": offered if self.phases == 3 else 0.0,
        }
        for role, value in values.items():
            reg = self.regmap.register(role)
            if reg is None:
                continue
            if self._no_value and reg.no_value:
                raw = min(reg.no_value)
                for i in range(reg.words):
                    shift = 16 * (reg.words - 1 - i)
                    word = (raw >> shift) & 0xFFFF
                    index = reg.words - 1 - i if reg.word_order == "LSW" else i
                    self._image[(reg.table, reg.address + index)] = word
                continue
            steps = int(value / reg.scale + 1e-6)  # counters tick over whole units, like the real thing
            self._put(reg, steps * reg.scale)
        letter = self._letter()
        raw_state = min(raw for raw, mapped in self.regmap.states.items() if mapped == letter)
        self._put(self.regmap.registers["state"], raw_state)

    # -- the pymodbus side --

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        table = _FC_TABLE.get(function_code, "holding")
        with self._lock:
            if self._silent:
                raise NoSuchIdException("silent")  # the server then sends nothing
            now = time.monotonic()
            self._advance()
            self._last_request = now
            if set_values and function_code in _WRITE_FCS:
                result = self._apply_writes(table, address, [int(v) for v in set_values], now)
                if result is not None:
                    return result
            self._refresh_live()
            for (tbl, addr), value in self._image.items():
                if tbl == table and 0 <= addr - start_address < len(registers):
                    registers[addr - start_address] = value
        return None

    def _apply_writes(self, table: str, address: int, values: list[int], now: float) -> ExcCodes | None:
        for offset, value in enumerate(values):
            self.writes.append((now, address + offset, value))
        if table != "holding":
            return ExcCodes.ILLEGAL_ADDRESS
        setpoint = self._setpoint
        control = self.regmap.control
        if address <= setpoint.address < address + len(values):
            raw = values[setpoint.address - address]
            amps = raw * setpoint.scale
            if raw != control.stop_value and not control.min_current_a <= amps <= control.max_current_a:
                return ExcCodes.ILLEGAL_VALUE
            self._last_setpoint_write = now
            self._failsafe_active = False
        for offset, value in enumerate(values):
            self._image[("holding", address + offset)] = value
        return None

    def _simdevice(self) -> SimDevice:
        tables: dict[str, list[SimData]] = {"coil": [], "discrete": [], "holding": [], "input": []}
        by_table: dict[str, list[int]] = {}
        for tbl, addr in self._image:
            by_table.setdefault(tbl, []).append(addr)
        for tbl, addresses in by_table.items():
            for start, count, readonly in _runs(sorted(addresses), self._writable if tbl == "holding" else set()):
                if tbl == "coil":
                    tables[tbl].append(SimData(address=start, values=[False] * count, datatype=DataType.BITS))
                else:
                    tables[tbl].append(
                        SimData(address=start, count=count, values=0, datatype=DataType.REGISTERS, readonly=readonly)
                    )
        for tbl in ("coil", "discrete"):
            if not tables[tbl]:
                # pymodbus needs every table non-empty; park a never-used bit far away.
                tables[tbl].append(SimData(address=0xFFF0, values=[False] * 16, datatype=DataType.BITS))
        for tbl in ("holding", "input"):
            if not tables[tbl]:
                tables[tbl].append(SimData(address=0xFFFE, count=1, datatype=DataType.INVALID))
        return SimDevice(
            id=self.unit,
            simdata=(tables["coil"], tables["discrete"], tables["holding"], tables["input"]),
            action=self._action,
        )


def _runs(addresses: list[int], writable: set[int]) -> list[tuple[int, int, bool]]:
    """Contiguous address runs of equal writability: (start, count, readonly)."""
    runs: list[tuple[int, int, bool]] = []
    for addr in addresses:
        readonly = addr not in writable
        if runs and runs[-1][0] + runs[-1][1] == addr and runs[-1][2] == readonly:
            start, count, _ = runs[-1]
            runs[-1] = (start, count + 1, readonly)
        else:
            runs.append((addr, 1, readonly))
    return runs


async def _nobody(*_: Any) -> ExcCodes | None:
    raise NoSuchIdException("no such unit")  # silence, as on a real bus


def _devices(chargers: Sequence[SimCharger]) -> list[SimDevice]:
    units = [c.unit for c in chargers]
    if len(set(units)) != len(units):
        raise ValueError(f"two simulated chargers share a unit id: {units}")
    if 0 in units:
        raise ValueError("unit 0 is the broadcast address")
    everything = SimData(address=0, count=0x10000, values=0, datatype=DataType.REGISTERS)
    catch_all = SimDevice(id=0, simdata=[everything], action=_nobody)
    return [c._simdevice() for c in chargers] + [catch_all]


def _silencer(chargers: Sequence[SimCharger], unit_offset: int) -> Any:
    """Drop outgoing frames of silent units (also exception answers the datastore gives before the hook)."""
    by_unit = {c.unit: c for c in chargers}

    def trace_packet(sending: bool, data: bytes) -> bytes:
        if sending and len(data) > unit_offset:
            charger = by_unit.get(data[unit_offset])
            if charger is not None and charger._silent:
                return b""
        return data

    return trace_packet


class SimServer:
    """A running simulator server. `port` is the bound TCP port; `path` the serial port."""

    def __init__(
        self,
        server: ModbusTcpServer | ModbusSerialServer,
        chargers: Sequence[SimCharger],
        *,
        port: int | None = None,
        path: str | None = None,
    ) -> None:
        self._server = server
        self.chargers = list(chargers)
        self.port = port
        self.path = path

    async def close(self) -> None:
        await self._server.shutdown()  # type: ignore[no-untyped-call]


async def serve_tcp(chargers: Sequence[SimCharger], host: str = "127.0.0.1", port: int = 0) -> SimServer:
    """Serve the chargers (one unit each) on Modbus TCP. port=0 binds a free port; see .port."""
    server = ModbusTcpServer(
        _devices(chargers), address=(host, port), ignore_missing_devices=True, trace_packet=_silencer(chargers, 6)
    )
    await server.serve_forever(background=True)
    bound = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return SimServer(server, chargers, port=bound)


async def serve_rtu(chargers: Sequence[SimCharger], port_path: str, baudrate: int = 19200, *, parity: str = "N") -> SimServer:
    """Serve the chargers as units on one Modbus RTU bus at `port_path` (e.g. SocatPair.b)."""
    server = ModbusSerialServer(
        _devices(chargers),
        framer=FramerType.RTU,
        port=port_path,
        baudrate=baudrate,
        parity=parity,
        ignore_missing_devices=True,
        trace_packet=_silencer(chargers, 0),
    )
    await server.serve_forever(background=True)
    return SimServer(server, chargers, path=port_path)


class SimChargerThread:
    """A background event loop for simulators, for synchronous code (pytest, demo scripts).

    with SimChargerThread() as sims:
        server = sims.serve_tcp([cp])
        ...
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[SimServer] = []

    def start(self) -> SimChargerThread:
        if self._thread is not None:
            return self
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="sim-chargers", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run a coroutine on the simulator loop and wait for its result."""
        if self._loop is None:
            raise RuntimeError("SimChargerThread is not started")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout_s)

    def serve_tcp(self, chargers: Sequence[SimCharger], host: str = "127.0.0.1", port: int = 0) -> SimServer:
        server = self.call(serve_tcp(chargers, host, port))
        self._servers.append(server)
        return server

    def serve_rtu(
        self, chargers: Sequence[SimCharger], port_path: str, baudrate: int = 19200, *, parity: str = "N"
    ) -> SimServer:
        server = self.call(serve_rtu(chargers, port_path, baudrate, parity=parity))
        self._servers.append(server)
        return server

    def close_server(self, server: SimServer) -> None:
        self.call(server.close())
        if server in self._servers:
            self._servers.remove(server)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        for server in list(self._servers):
            self.close_server(server)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop = None
        self._thread = None

    def __enter__(self) -> SimChargerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_in_thread() -> SimChargerThread:
    """A started SimChargerThread; call .stop() when done (or use it as a context manager)."""
    return SimChargerThread().start()
