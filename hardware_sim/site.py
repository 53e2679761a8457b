"""A whole simulated site on real parts, for the tests and the demo.

mosquitto broker, a Bender CC613 on Modbus TCP, a Heidelberg Energy Control on Modbus RTU over a
socat pseudo-terminal, one RDM6300 reader per EVSE on its own pty, the simulated cloud, and the
agent itself as a separate process (so it can be SIGKILLed).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .broker import MosquittoBroker, TlsListener
from .chargers import SimCharger, SimChargerThread
from .cloud import SimCloud
from .pty import SocatPair
from .rdm6300 import SimRdm6300

RESIDENTS = [
    {"id": "u-1001", "name": "Kari Nordmann", "phone": "+4791234567", "group": "residents",
     "tokens": ["04A2B3C4D5"], "blocked": False, "valid_until": None},
    {"id": "u-1002", "name": "Ola Hansen", "group": "residents", "tokens": ["0A1B2C3D4E"]},
    {"id": "u-1003", "name": "Ingrid Berg", "group": "guests", "tokens": ["1122334455"]},
    {"id": "u-1004", "name": "Per Blocked", "group": "residents", "tokens": ["DEADBEEF01"], "blocked": True},
]
UNKNOWN_TOKEN = "9988776655"

TARIFFS = {
    "groups": {"residents": "T-RES", "guests": "T-GUEST"},
    "default": "T-GUEST",
    "tariffs": [
        {"id": "T-RES", "currency": "NOK", "country_code": "NO", "party_id": "COO",
         "last_updated": "2026-01-01T00:00:00Z",
         "elements": [{"price_components": [{"type": "ENERGY", "price": 2.0, "vat": 25.0, "step_size": 1}]}]},
        {"id": "T-GUEST", "currency": "NOK", "country_code": "NO", "party_id": "COO",
         "last_updated": "2026-01-01T00:00:00Z",
         "elements": [{"price_components": [
             {"type": "FLAT", "price": 10.0, "vat": 25.0, "step_size": 1},
             {"type": "ENERGY", "price": 3.5, "vat": 25.0, "step_size": 1},
             {"type": "PARKING_TIME", "price": 60.0, "vat": 25.0, "step_size": 60}]}]},
    ],
}


class SimulatedSite:
    """Start with start(), stop with close(); or use it as a context manager."""

    def __init__(self, workdir: str | Path, *, gateway_id: str = "gw-sim", speed: float = 60.0,
                 offline_unknown: str = "reject", poll_interval_s: float = 0.2,
                 ack_timeout_s: float = 5, meter_values_interval_s: float = 60,
                 connect_timeout_s: float = 30, online_timeout_s: float = 1.0,
                 status_heartbeat_s: float = 10.0, timezone: str = "Europe/Oslo", log_level: str = "INFO",
                 broker_tls: TlsListener | None = None, agent_tls: dict[str, Path] | None = None,
                 cloud_extra: str = "", data_dir: str | Path | None = None) -> None:
        """broker_tls adds a TLS listener to the broker (the simulated cloud stays on the plain one);
        agent_tls (keys ca_file, cert_file, key_file, each optional) points the agent at it;
        cloud_extra is YAML added to the agent's cloud section (indented by two spaces)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.gateway_id = gateway_id
        self.speed = speed
        self.settings = dict(offline_unknown=offline_unknown, poll_interval_s=poll_interval_s,
                             ack_timeout_s=ack_timeout_s, meter_values_interval_s=meter_values_interval_s,
                             connect_timeout_s=connect_timeout_s, online_timeout_s=online_timeout_s,
                             status_heartbeat_s=status_heartbeat_s, timezone=timezone, log_level=log_level)
        self.broker = MosquittoBroker(workdir=self.workdir / "broker", tls=broker_tls)
        self.agent_tls = agent_tls
        self.cloud_extra = cloud_extra
        self.agent_broker_port: int | None = None  # e.g. a FaultyLink in front of the broker
        self.site_wide_reader = False  # reader 1 serves the whole garage (no evse_id)
        self.extra_config = ""  # YAML appended at the top level, e.g. a site: section
        self.builtin_reader = False  # also read cards at the Bender's own reader (register 720)
        self.rtu_bus = SocatPair(self.workdir / "rs485-agent", self.workdir / "rs485-sim",
                                 log_path=self.workdir / "socat-rs485.log")
        self.reader_ports = {
            evse: SocatPair(self.workdir / f"reader{evse}-agent", self.workdir / f"reader{evse}-sim",
                            log_path=self.workdir / f"socat-reader{evse}.log") for evse in ("1", "2")}
        self.chargers = {"1": SimCharger("bender-cc613", speed=speed, energy_wh=1_000_000),
                         "2": SimCharger("heidelberg-energy-control", unit=1, speed=speed, energy_wh=2_500_000)}
        self.initial_energy_wh = {evse: int(c.energy_wh) for evse, c in self.chargers.items()}
        self.sims = SimChargerThread()
        self.readers: dict[str, SimRdm6300] = {}
        self.cloud: SimCloud | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.config_path = self.workdir / "site.yaml"
        self.data_dir = Path(data_dir) if data_dir is not None else self.workdir / "data"
        self.agent_log = self.workdir / "agent.log"
        self.clock_marker = self.workdir / "clock-synchronized"
        self._tcp_port: int | None = None
        # The agent's sd_notify(3) messages, read as systemd reads them (READY=1 once it is up).
        self._notify_address = f"@edge-agent-sim-{os.getpid()}-{id(self):x}"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind("\0" + self._notify_address[1:])
        self._notify.settimeout(0.2)
        self._ready = threading.Event()  # READY=1 from the agent started last
        self._closing = threading.Event()
        self._notify_reader = threading.Thread(target=self._read_notifications, daemon=True, name="sd-notify")
        self._notify_reader.start()

    # -- lifetime ---------------------------------------------------------------------------

    def start(self, *, agent: bool = True) -> SimulatedSite:
        self.broker.start()
        self.rtu_bus.start()
        for pair in self.reader_ports.values():
            pair.start()
        self.sims.start()
        self._tcp_port = self.sims.serve_tcp([self.chargers["1"]]).port
        self.sims.serve_rtu([self.chargers["2"]], self.rtu_bus.b, 19200, parity="N")
        self.readers = {evse: SimRdm6300(pair.b) for evse, pair in self.reader_ports.items()}
        self.cloud = SimCloud(self.broker.host, self.broker.port, gateway_id=self.gateway_id)
        self.cloud.wait_connected(10)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        if agent:
            self.start_agent()
        return self

    def close(self) -> None:
        self.stop_agent()
        if self.cloud is not None:
            self.cloud.close()
        for reader in self.readers.values():
            reader.close()
        self.sims.stop()
        for pair in [self.rtu_bus, *self.reader_ports.values()]:
            pair.close()
        self.broker.close()
        self._closing.set()
        self._notify_reader.join()
        self._notify.close()

    def __enter__(self) -> SimulatedSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def config_text(self) -> str:
        s = self.settings
        return f"""\
gateway_id: {self.gateway_id}
timezone: {s['timezone']}
data_dir: {self.data_dir}
log_level: {s['log_level']}
cloud:
  host: {self.broker.host}
  port: {self.agent_broker_port or (self.broker.tls_port if self.agent_tls is not None else self.broker.port)}
  ack_timeout_s: {s['ack_timeout_s']}
  reconnect_max_s: 2
{self._cloud_tls_text()}authorization:
  offline_unknown: {s['offline_unknown']}
  online_timeout_s: {s['online_timeout_s']}
  connect_timeout_s: {s['connect_timeout_s']}
clock:
  synced_marker: {self.clock_marker}   # the test creates it when "NTP" has synchronised the clock
sessions:
  poll_interval_s: {s['poll_interval_s']}
  meter_values_interval_s: {s['meter_values_interval_s']}
  status_heartbeat_s: {s['status_heartbeat_s']}
  max_plausible_power_kw: {100 * self.speed:g}   # the simulated cars charge {self.speed:g}x faster
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 127.0.0.1
    port: {self._tcp_port}
    max_current_a: 16
    timeout_s: 0.5
  - evse_id: "2"
    model: heidelberg-energy-control
    serial: {self.rtu_bus.a}
    baudrate: 19200
    parity: N                 # a pseudo-terminal takes no parity; the real bus is 8E1
    unit: 1
    max_current_a: 16
    timeout_s: 0.5
readers:
  - driver: rdm6300
    port: {self.reader_ports['1'].a}
{'' if self.site_wide_reader else '    evse_id: "1"' + chr(10)}{'  - driver: charger' + chr(10) + '    evse_id: "1"' + chr(10) if self.builtin_reader else ''}  - driver: rdm6300
    port: {self.reader_ports['2'].a}
    evse_id: "2"
{self.extra_config}"""

    def _cloud_tls_text(self) -> str:
        lines = []
        if self.agent_tls is not None:
            lines.append("  tls:")
            lines += [f"    {key}: {path}" for key, path in self.agent_tls.items()]
        if self.cloud_extra:
            lines.append(self.cloud_extra.rstrip("\n"))
        return "".join(line + "\n" for line in lines)

    # -- the agent process ------------------------------------------------------------------

    def start_agent(self) -> None:
        self._ready.clear()  # the agent before (killed) cannot send any more
        # A test that listens as systemd itself (its own NOTIFY_SOCKET) keeps its socket.
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("NOTIFY_SOCKET", self._notify_address)
        log = open(self.agent_log, "ab")  # noqa: SIM115 - the child owns it
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        log.close()

    def wait_agent_ready(self, timeout: float = 10.0) -> bool:
        """True once the agent started last has told systemd READY=1 (on the site's own socket,
        not one a test put in NOTIFY_SOCKET)."""
        if os.environ.get("NOTIFY_SOCKET", self._notify_address) != self._notify_address:
            raise RuntimeError("NOTIFY_SOCKET is the test's own: wait for READY=1 there")
        return self._ready.wait(timeout)

    def _read_notifications(self) -> None:
        while not self._closing.is_set():
            try:
                message = self._notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if b"READY=1" in message.split(b"\n"):
                self._ready.set()

    def kill_agent(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash or a power cut of the gateway."""
        if self.agent is not None and self.agent.poll() is None:
            os.kill(self.agent.pid, signal.SIGKILL)
            self.agent.wait()
        self.agent = None

    def stop_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.kill_agent()
        self.agent = None

    def agent_log_tail(self, lines: int = 40) -> str:
        if not self.agent_log.exists():
            return ""
        return "\n".join(self.agent_log.read_text(errors="replace").splitlines()[-lines:])

    # -- what the residents do ----------------------------------------------------------------

    def publish_lists(self, *, users_version: int = 1, tariffs_version: int = 1,
                      users: list[dict[str, Any]] | None = None,
                      tariffs: dict[str, Any] | None = None) -> None:
        """tariffs: {"groups", "default", "tariffs"} to publish instead of TARIFFS."""
        assert self.cloud is not None
        self.cloud.publish_users(users_version, users if users is not None else RESIDENTS)
        self.publish_tariffs(tariffs_version, tariffs if tariffs is not None else TARIFFS)

    def publish_tariffs(self, version: int, tariffs: dict[str, Any]) -> None:
        """A new tariff list ({"groups", "default", "tariffs"}) from the cloud, e.g. mid-session."""
        assert self.cloud is not None
        self.cloud.publish_tariffs(version, tariffs["groups"], tariffs.get("default"), tariffs["tariffs"])

    def tap(self, evse_id: str, token: str) -> float:
        """A card held to the reader for a moment; returns when the last frame was written."""
        return self.readers[evse_id].present(token, repeats=2, interval_s=0.05)[-1]

    def plug_and_charge(self, evse_id: str) -> None:
        charger = self.chargers[evse_id]
        charger.plug()
        charger.set_ev_requesting(True)

    def unplug(self, evse_id: str) -> None:
        self.chargers[evse_id].unplug()

    def wait(self, predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return bool(predicate())
