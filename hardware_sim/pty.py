"""A pair of linked pseudo-terminals from socat: a serial cable for tests.

    with SocatPair() as pair:
        driver opens pair.a, simulator opens pair.b
        pair.restart()   # the "USB adapter" is unplugged and plugged back: same paths, new ptys

A pty takes no parity setting (tcsetattr with parity gives EINVAL), so use parity N on it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


class SocatPair:
    """socat ``pty,raw,echo=0,link=A pty,raw,echo=0,link=B``, started and stopped by its PID."""

    def __init__(
        self,
        a: str | os.PathLike[str] | None = None,
        b: str | os.PathLike[str] | None = None,
        *,
        log_path: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 5.0,
    ) -> None:
        if shutil.which("socat") is None:
            raise FileNotFoundError("socat is not installed")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if a is None or b is None or log_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="socat-pair-")
        base = Path(self._tmp.name) if self._tmp else None
        self.a = str(a if a is not None else base / "a")  # type: ignore[operator]
        self.b = str(b if b is not None else base / "b")  # type: ignore[operator]
        self.log_path = str(log_path if log_path is not None else base / "socat.log")  # type: ignore[operator]
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> SocatPair:
        if self.running:
            return self
        for link in (self.a, self.b):
            if os.path.islink(link):
                os.unlink(link)  # left over from a killed socat; socat would refuse it
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                ["socat", "-d", "-d", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while not (os.path.exists(self.a) and os.path.exists(self.b)):
            if self._proc.poll() is not None:
                raise RuntimeError(f"socat exited with {self._proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"socat did not create {self.a} and {self.b} within {self.start_timeout_s} s")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=2)
        for link in (self.a, self.b):
            if os.path.islink(link):
                os.unlink(link)

    def restart(self) -> None:
        """Stop and start again: the same link paths, pointing at new ptys."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SocatPair:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
