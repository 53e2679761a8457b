"""Test rigs the benchmarks build around the agent: its configuration, a consumer of its events
whose MQTT work is done in C, and an RS-485 line that takes as long as the real wire."""
from __future__ import annotations

import heapq
import os
import re
import select
import subprocess
import threading
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hardware_sim.broker import MosquittoBroker

from . import _common as c


def agent_yaml(*, gateway_id: str, data_dir: Path, broker: MosquittoBroker, chargers: Sequence[str],
               poll_interval_s: float = 1.0, readers: Sequence[str] = (), log_level: str = "INFO",
               ack_timeout_s: float = 60) -> str:
    """A site configuration; `chargers` and `readers` are YAML list items (without the leading dash)."""
    def items(entries: Sequence[str]) -> str:
        out = []
        for entry in entries:
            lines = entry.strip().splitlines()
            out.append("  - " + lines[0] + "".join("\n    " + line.strip() for line in lines[1:]))
        return "\n".join(out)

    text = f"""\
gateway_id: {gateway_id}
timezone: Europe/Oslo
data_dir: {data_dir}
log_level: {log_level}
cloud:
  host: {broker.host}
  port: {broker.port}
  ack_timeout_s: {ack_timeout_s}
  reconnect_max_s: 2
sessions:
  poll_interval_s: {poll_interval_s}
chargers:
{items(chargers)}
"""
    if readers:
        text += f"readers:\n{items(readers)}\n"
    return text


def bender_tcp(evse_id: str, port: int) -> str:
    return f'evse_id: "{evse_id}"\nmodel: bender-cc613\nhost: 127.0.0.1\nport: {port}\nmax_current_a: 16\ntimeout_s: 0.5'


def heidelberg_rtu(evse_id: str, serial: str, unit: int) -> str:
    return (f'evse_id: "{evse_id}"\nmodel: heidelberg-energy-control\nserial: {serial}\nbaudrate: 19200\n'
            f"parity: N\nunit: {unit}\nmax_current_a: 16\ntimeout_s: 0.5")


# -- a consumer of the gateway's events that is not itself the bottleneck --------------------------

_ID = re.compile(rb'"id":\s*"([^"]+)"')
_ONLINE = re.compile(rb'"online":\s*true')


class PipeCloud:
    """mosquitto_sub | id extraction | mosquitto_pub -l: acknowledges every event within `batch_s`.

    The MQTT work (QoS 1 receive, PUBACKs, publishing acks) is done by the C clients; Python only
    cuts the id out of each line. It records when the gateway's state said online, and when each
    event arrived.
    """

    def __init__(self, broker: MosquittoBroker, gateway_id: str, *, batch_s: float = 0.002,
                 prefix: str = "edge/v1") -> None:
        self.root = f"{prefix}/{gateway_id}"
        self.batch_s = batch_s
        common = ["-h", broker.host, "-p", str(broker.port), "-V", "5", "-q", "1"]
        self._sub = subprocess.Popen(
            ["mosquitto_sub", *common, "-i", f"pipe-cloud-{gateway_id}", "-v",
             "-t", f"{self.root}/events", "-t", f"{self.root}/state"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self._pub = subprocess.Popen(["mosquitto_pub", *common, "-t", f"{self.root}/ack", "-l"],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self.arrivals: list[float] = []  # time.time() of each event
        self.online_at: list[float] = []  # time.time() of each state message saying online
        self._closing = False
        self._reader = threading.Thread(target=self._read, name="pipe-cloud-read", daemon=True)
        self._acker = threading.Thread(target=self._ack, name="pipe-cloud-ack", daemon=True)
        self._reader.start()
        self._acker.start()
        time.sleep(0.3)  # subscribed (mosquitto_sub has no ready signal)

    def _read(self) -> None:
        assert self._sub.stdout is not None
        events = f"{self.root}/events ".encode()
        for line in self._sub.stdout:
            now = time.time()
            if line.startswith(events):
                found = _ID.search(line, len(events))
                if found:
                    with self._lock:
                        self._pending.append(found.group(1))
                        self.arrivals.append(now)
            elif _ONLINE.search(line):
                self.online_at.append(now)

    def _ack(self) -> None:
        assert self._pub.stdin is not None
        while not self._closing:
            time.sleep(self.batch_s)
            with self._lock:
                batch, self._pending = self._pending[:500], self._pending[500:]
            if batch:
                self._pub.stdin.write(b'{"ids":["' + b'","'.join(batch) + b'"]}\n')
                self._pub.stdin.flush()

    def close(self) -> None:
        self._closing = True
        self._acker.join(2)
        for proc in (self._sub, self._pub):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# -- an RS-485 line with wire time ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Line:
    baudrate: int = 19200
    bits_per_char: int = 11  # 8E1: start + 8 data + parity + stop

    @property
    def char_s(self) -> float:
        return self.bits_per_char / self.baudrate

    def wire_s(self, chars: float) -> float:
        return chars * self.char_s

    @property
    def gap_s(self) -> float:
        """The Modbus RTU inter-frame silence: 3.5 characters (1.75 ms fixed above 19200 baud)."""
        return 3.5 * self.char_s if self.baudrate <= 19200 else 0.00175


class WireRelay:
    """Two pseudo-terminal pairs joined by a relay that holds every burst of bytes for as long as
    it takes on a half-duplex line at `line.baudrate` (the line is busy with one burst at a time,
    and quiet for 3.5 characters between bursts).

    The agent opens `agent_port`, the simulated devices `device_port`. A pty delivers instantly;
    through this relay a request arrives at the device when its last byte would have, and so
    does the answer at the agent. Counts frames (bursts) each way.
    """

    def __init__(self, line: Line, *, wire_time: bool = True) -> None:
        self.line = line
        self.wire_time = wire_time
        self._fds: list[int] = []
        a_master, a_slave = os.openpty()
        d_master, d_slave = os.openpty()
        for fd in (a_slave, d_slave):
            tty.setraw(fd)
        self._fds = [a_master, a_slave, d_master, d_slave]
        self.agent_port = os.ttyname(a_slave)
        self.device_port = os.ttyname(d_slave)
        self._peer = {a_master: d_master, d_master: a_master}
        self._stop_r, self._stop_w = os.pipe()
        self.trace: list[tuple[float, str, int]] | None = None  # set to [] to record (time, direction, bytes)
        self.bursts = {"to_device": 0, "to_agent": 0}
        self.bytes = {"to_device": 0, "to_agent": 0}
        self._thread = threading.Thread(target=self._run, name="wire-relay", daemon=True)
        self._a_master = a_master

    def start(self) -> WireRelay:
        self._thread.start()
        return self

    def _run(self) -> None:
        masters = list(self._peer)
        queue: list[tuple[float, int, int, bytes]] = []  # (deliver at, order, fd, data)
        order = 0
        line_free = 0.0
        while True:
            timeout = None
            if queue:
                timeout = max(0.0, queue[0][0] - time.monotonic())
            readable, _, _ = select.select([*masters, self._stop_r], [], [], timeout)
            if self._stop_r in readable:
                return
            now = time.monotonic()
            for fd in readable:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if not data:
                    continue
                direction = "to_device" if fd == self._a_master else "to_agent"
                if self.trace is not None:
                    self.trace.append((now, direction, len(data)))
                self.bursts[direction] += 1
                self.bytes[direction] += len(data)
                if self.wire_time:
                    # The sender starts transmitting when it writes, but not before the line has
                    # been quiet for 3.5 characters (Modbus RTU: a device answers no sooner); the
                    # last byte is on the far side len(data) character times later.
                    line_free = max(now, line_free + self.line.gap_s) + self.line.wire_s(len(data))
                    deliver = line_free
                else:
                    deliver = now
                heapq.heappush(queue, (deliver, order, self._peer[fd], data))
                order += 1
            now = time.monotonic()
            while queue and queue[0][0] <= now:
                _, _, fd, data = heapq.heappop(queue)
                os.write(fd, data)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(2)
        for fd in [*self._fds, self._stop_r, self._stop_w]:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> WireRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_online(cloud: PipeCloud, since: int, timeout: float) -> float:
    if not c.wait_until(lambda: len(cloud.online_at) > since, timeout):
        raise c.BenchError("the agent's state never said online")
    return cloud.online_at[since]
