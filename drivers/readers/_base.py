"""What every threaded reader shares: a daemon thread that opens its device, reads until the device
fails, and opens it again when it comes back (capped backoff), logging each outage once and each
recovery once; repeats of one card within `debounce_s` of its last sighting are one tap.

Subclasses implement ``_open()`` (returns a handle or raises OSError), ``_read(handle)`` (blocks
reading until stop or an OSError; calls ``_sighting(token, at)`` per card read) and ``_close``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from drivers.api import Tap

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
STOP_JOIN_TIMEOUT_S = 2.0


class ThreadedReader:
    kind = "reader"

    def __init__(self, *, name: str, evse_id: str | None, on_tap: Callable[[Tap], None], debounce_s: float) -> None:
        if debounce_s < 0:
            raise ValueError(f"reader {name}: debounce_s must be >= 0, got {debounce_s}")
        self.name = name
        self.evse_id = evse_id
        self.debounce_s = debounce_s
        self._on_tap = on_tap
        self._log = logging.getLogger(f"drivers.readers.{self.kind}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._healthy = False
        self._last_error: str | None = None
        self._last_seen: dict[str, float] = {}  # token -> monotonic of its latest sighting
        self.opens = 0  # times the device was opened
        self.reads = 0  # card reads, before de-bouncing

    @property
    def healthy(self) -> bool:
        """True while the device is open and reading without errors."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        """The most recent reason the device was unavailable (kept after it comes back)."""
        return self._last_error

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"reader {self.name} already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.kind} {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                self._log.warning("reader %s thread did not stop within %.1f s", self.name, STOP_JOIN_TIMEOUT_S)
            self._thread = None

    def __enter__(self) -> ThreadedReader:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- for subclasses --

    def _open(self) -> Any:
        raise NotImplementedError

    def _read(self, handle: Any) -> None:
        raise NotImplementedError

    def _close(self, handle: Any) -> None:
        raise NotImplementedError

    def _sighting(self, token: str, at: float) -> None:
        """One read of a card. Emits a Tap unless the same card was seen within debounce_s."""
        self.reads += 1
        previous = self._last_seen.get(token)
        self._last_seen[token] = at
        if previous is not None and at - previous < self.debounce_s:
            return
        for old in [t for t, seen in self._last_seen.items() if at - seen >= self.debounce_s]:
            del self._last_seen[old]
        try:
            self._on_tap(Tap(token=token, reader=self.name, evse_id=self.evse_id, monotonic=at))
        except Exception:  # noqa: BLE001 - logged with its traceback; the reader thread lives on
            self._log.exception("reader %s: on_tap failed for token %s", self.name, token)

    # -- the thread --

    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        reported = False
        while not self._stop.is_set():
            try:
                handle = self._open()
            except Exception as exc:  # noqa: BLE001 - whatever the device layer raises, the reader lives on
                reported = self._unavailable(exc, reported)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self.opens += 1
            self._healthy = True
            opened_at = time.monotonic()
            if reported:
                self._log.info("reader %s back", self.name)
                reported = False
            try:
                self._read(handle)
            except Exception as exc:  # noqa: BLE001
                reported = self._unavailable(exc, reported)
            finally:
                try:
                    self._close(handle)
                except Exception:  # noqa: BLE001
                    pass
            if self._stop.is_set():
                break
            # A device that fails right after opening keeps the backoff growing instead of spinning.
            if time.monotonic() - opened_at >= BACKOFF_MAX_S:
                backoff = BACKOFF_MIN_S
            self._stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        self._healthy = False

    def _unavailable(self, exc: BaseException, already_reported: bool) -> bool:
        self._healthy = False
        self._last_error = f"{type(exc).__name__}: {exc}"
        if not already_reported:
            self._log.warning("reader %s unavailable: %s", self.name, self._last_error)
        return True
