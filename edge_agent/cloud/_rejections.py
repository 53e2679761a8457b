"""Logging of rejected cloud messages: one line per message, but a flood of bad messages (a
broken backend, a hostile peer) cannot fill the disk: at most `burst` lines per `window_s`,
then one line saying how many were not logged."""
from __future__ import annotations

import logging
import time

MAX_DETAIL_CHARS = 300


class RejectionLog:
    def __init__(self, *, logger: logging.Logger, burst: int = 20, window_s: float = 60.0) -> None:
        self._log = logger
        self._burst = burst
        self._window_s = window_s
        self._window_start = float("-inf")
        self._in_window = 0
        self._suppressed = 0

    def note(self, topic: str, error: BaseException) -> None:
        now = time.monotonic()
        if now - self._window_start >= self._window_s:
            if self._suppressed:
                self._log.warning("%d more rejected messages were not logged", self._suppressed)
            self._window_start, self._in_window, self._suppressed = now, 0, 0
        self._in_window += 1
        if self._in_window > self._burst:
            self._suppressed += 1
            return
        detail = str(error)
        if len(detail) > MAX_DETAIL_CHARS:
            detail = detail[:MAX_DETAIL_CHARS] + "..."
        if not isinstance(error, ValueError):  # not a PayloadError: a bug of ours, worth its type
            detail = f"{type(error).__name__}: {detail}"
        self._log.warning("rejected message on %s: %s", topic, detail)
        if self._in_window == self._burst:
            self._log.warning("more than %d rejected messages within %g s; the next are only counted",
                              self._burst, self._window_s)
