"""A real mosquitto broker on a free loopback port, for tests and demos.

    with MosquittoBroker() as broker:
        client.connect(broker.host, broker.port)
        broker.restart()        # same port, same persistence file

Optional extra listeners next to the plain one (which the simulated cloud keeps using):
a TLS listener (`tls=TlsListener(...)`, e.g. with require_certificate) on `broker.tls_port`,
and a listener that wants a user name and password (`password=PasswordListener(...)`) on
`broker.password_port`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

FALLBACK_MOSQUITTO_PATH = "/usr/sbin/mosquitto"


class MosquittoError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener: the broker's certificate and key, and the CA its clients' certificates
    must chain to (with require_certificate, a client without one is refused)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True
    use_identity_as_username: bool = False
    tls_version: str | None = None  # e.g. "tlsv1.2"; None: mosquitto's default (1.2 and 1.3)
    port: int | None = None  # None: a free port, kept across restarts


@dataclass(frozen=True, slots=True)
class PasswordListener:
    """A plain listener that refuses anonymous clients; `users` maps user name -> password."""

    users: tuple[tuple[str, str], ...]
    port: int | None = None


def find_mosquitto() -> str:
    path = shutil.which("mosquitto")
    if path:
        return path
    if os.access(FALLBACK_MOSQUITTO_PATH, os.X_OK):
        return FALLBACK_MOSQUITTO_PATH
    raise MosquittoError("mosquitto not installed: apt-get install mosquitto")


def find_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class MosquittoBroker:
    """One mosquitto process with its own config, persistence dir and log file.

    The port is chosen once and kept across restarts, so clients can reconnect to the same
    address. `stop()` lets mosquitto save its persistence file; `kill()` is a crash and loses
    what was not saved yet, as a real broker crash would.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        workdir: str | Path | None = None,
        max_queued_messages: int = 0,
        max_inflight_messages: int = 20,
        extra_config: str = "",
        start_timeout_s: float = 5.0,
        tls: TlsListener | None = None,
        password: PasswordListener | None = None,
    ) -> None:
        self._executable = find_mosquitto()
        self.host = host
        self.port = port if port is not None else find_free_port(host)
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="mosquitto-sim-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir = self.workdir / "persistence"
        self.persistence_dir.mkdir(exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.extra_config = extra_config
        self.start_timeout_s = start_timeout_s
        self.tls = tls
        self.tls_port = (tls.port or find_free_port(host)) if tls is not None else None
        self.password = password
        self.password_port = (password.port or find_free_port(host)) if password is not None else None
        self.password_file = self.workdir / "passwords"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config_text(self) -> str:
        lines = []
        if self.password is not None:
            # Otherwise allow_anonymous and password_file would apply to every listener.
            lines.append("per_listener_settings true")
        # Started as root, mosquitto drops to user `mosquitto`, which cannot write our tmp dir.
        if os.geteuid() == 0:
            lines.append("user root")
        lines += [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                "allow_anonymous true",
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
                f"use_identity_as_username {'true' if self.tls.use_identity_as_username else 'false'}",
            ]
            if self.tls.tls_version:
                lines.append(f"tls_version {self.tls.tls_version}")
        if self.password is not None:
            lines += [
                f"listener {self.password_port} {self.host}",
                "allow_anonymous false",
                f"password_file {self.password_file}",
            ]
        lines += [
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            # The default of 1000 silently drops QoS 1 messages for offline persistent sessions.
            f"max_queued_messages {self.max_queued_messages}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"log_dest file {self.log_path}",
            "log_timestamp_format %H:%M:%S",
        ]
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if self.running:
            return
        self.config_path.write_text(self.config_text())
        if self.password is not None:
            self._write_password_file()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log_file:
            # Own session and redirected output: an inherited stdout keeps `cmd | grep` pipes open.
            self._process = subprocess.Popen(
                [self._executable, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise MosquittoError(
                    f"mosquitto exited with code {self._process.returncode} on port {self.port}:\n{self.log_tail()}"
                )
            # The log line as well as the port: another process may hold the port we picked.
            if self._logged_running_since(log_offset) and self._port_accepts():
                return
            time.sleep(0.005)
        self.kill()
        raise MosquittoError(
            f"mosquitto did not accept on {self.host}:{self.port} within {self.start_timeout_s} s:\n{self.log_tail()}"
        )

    def stop(self, *, timeout_s: float = 5.0) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def kill(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._process = None

    def restart(self, *, crash: bool = False) -> None:
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _write_password_file(self) -> None:
        assert self.password is not None
        self.password_file.write_text("")
        self.password_file.chmod(0o600)
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for user, secret in self.password.users:
            subprocess.run([tool, "-b", str(self.password_file), user, secret], check=True,
                           capture_output=True)

    def _logged_running_since(self, offset: int) -> bool:
        with open(self.log_path, "rb") as log_file:
            log_file.seek(offset)
            return b" running" in log_file.read()

    def _port_accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def __enter__(self) -> MosquittoBroker:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.host}:{self.port}, pid={self.pid}, running={self.running})"
