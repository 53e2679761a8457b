"""RDM6300: 125 kHz EM4100 reader on a serial port (9600 8N1).

Each read of a card is one frame: STX 0x02, 10 ASCII hex digits of data, 2 ASCII hex digits
of checksum (XOR of the 5 data bytes), ETX 0x03. The reader repeats the frame while the card
is held, so repeats of one token are folded into one tap.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import serial

from drivers.api import Tap
from edge_agent.tokens import normalize_uid

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
FRAME_LEN = 14  # STX + 10 data + 2 checksum + ETX
_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")

BAUDRATE = 9600
READ_TIMEOUT_S = 0.25  # bounds how long stop() waits; a frame's bytes return at once regardless
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
STOP_JOIN_TIMEOUT_S = 1.0


def _frame_token(frame: bytes) -> str | None:
    """The token of one complete 14-byte frame starting with STX, or None if it is invalid."""
    body = frame[1:13]
    if frame[13] != ETX or not all(b in _HEX_DIGITS for b in body):
        return None
    data = bytes.fromhex(body[:10].decode("ascii"))
    checksum = int(body[10:12], 16)
    xor = 0
    for b in data:
        xor ^= b
    if xor != checksum:
        return None
    return normalize_uid(body[:10].decode("ascii"))


def _could_start_frame(partial: bytes) -> bool:
    """Whether bytes from an STX up to the end of the buffer can still become a valid frame."""
    return all(b in _HEX_DIGITS for b in partial[1:13])


def decode_frames(buffer: bytes) -> tuple[list[str], bytes, int]:
    """Split a byte stream into tokens.

    Returns (tokens in order, bytes to keep for the next read, number of bad frames dropped).
    Anything that is not a valid frame (garbage, bad checksum, a frame cut off by a new STX)
    counts as one bad frame per dropped run; decoding resyncs on the next STX. At most one
    incomplete frame (< 14 bytes) is kept.
    """
    tokens: list[str] = []
    bad = 0
    pos = 0
    dropping = False  # inside a run already counted as bad: skipped bytes up to the next STX are part of it
    while pos < len(buffer):
        stx = buffer.find(STX, pos)
        if stx < 0:
            return tokens, b"", bad + (0 if dropping else 1)
        if stx > pos and not dropping:
            bad += 1
        dropping = False
        candidate = buffer[stx : stx + FRAME_LEN]
        if len(candidate) < FRAME_LEN and _could_start_frame(candidate):
            return tokens, candidate, bad
        token = _frame_token(candidate) if len(candidate) == FRAME_LEN else None
        if token is None:
            bad += 1
            dropping = True
            pos = stx + 1
            continue
        tokens.append(token)
        pos = stx + FRAME_LEN
    return tokens, b"", bad


class Rdm6300Reader:
    """Reads taps from one RDM6300 on a daemon thread; survives the port disappearing.

    on_tap is called from the reader thread; bridge to asyncio with loop.call_soon_threadsafe.
    """

    def __init__(
        self,
        *,
        port: str,
        evse_id: str | None,
        on_tap: Callable[[Tap], None],
        debounce_s: float = 2.0,
        name: str | None = None,
    ) -> None:
        self.port = port
        self.evse_id = evse_id
        self.name = name or port
        self.debounce_s = debounce_s
        self._on_tap = on_tap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._healthy = False
        self._last_error: str | None = None
        self._last_frame_at: dict[str, float] = {}  # token -> monotonic of its latest frame
        self.frames_ok = 0
        self.frames_bad = 0

    @property
    def healthy(self) -> bool:
        """True while the port is open and reading without errors."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        """The most recent reason the port was unavailable (kept after it comes back)."""
        return self._last_error

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"reader {self.name} already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"rdm6300 {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("reader %s thread did not stop within %.1f s", self.name, STOP_JOIN_TIMEOUT_S)
            self._thread = None

    def __enter__(self) -> Rdm6300Reader:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        unavailable_reported = False
        while not self._stop.is_set():
            try:
                port = serial.Serial(self.port, BAUDRATE, timeout=READ_TIMEOUT_S)
            except (serial.SerialException, OSError, ValueError) as exc:
                unavailable_reported = self._unavailable(exc, unavailable_reported)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self._healthy = True
            opened_at = time.monotonic()
            if unavailable_reported:
                log.info("reader %s back", self.name)
                unavailable_reported = False
            try:
                self._read_until_error_or_stop(port)
            except (serial.SerialException, OSError) as exc:
                unavailable_reported = self._unavailable(exc, unavailable_reported)
            finally:
                port.close()
            # A port that fails right after opening keeps the backoff growing instead of spinning.
            if time.monotonic() - opened_at >= BACKOFF_MAX_S:
                backoff = BACKOFF_MIN_S
            self._stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        self._healthy = False

    def _unavailable(self, exc: BaseException, already_reported: bool) -> bool:
        self._healthy = False
        self._last_error = str(exc)
        if not already_reported:
            log.warning("reader %s unavailable: %s", self.name, exc)
        return True

    def _read_until_error_or_stop(self, port: serial.Serial) -> None:
        pending = b""
        while not self._stop.is_set():
            # read(1) returns as soon as the first byte arrives; in_waiting picks up the rest.
            chunk = port.read(1)
            if not chunk:
                continue
            if port.in_waiting:
                chunk += port.read(port.in_waiting)
            read_at = time.monotonic()
            tokens, pending, bad = decode_frames(pending + chunk)
            if bad:
                self.frames_bad += bad
                log.debug("reader %s dropped %d bad frame(s)", self.name, bad)
            for token in tokens:
                self.frames_ok += 1
                self._frame(token, read_at)

    def _frame(self, token: str, at: float) -> None:
        previous = self._last_frame_at.get(token)
        self._last_frame_at[token] = at
        if previous is not None and at - previous < self.debounce_s:
            return
        self._forget_old_tokens(at)
        try:
            self._on_tap(Tap(token=token, reader=self.name, evse_id=self.evse_id, monotonic=at))
        except Exception:
            log.exception("reader %s: on_tap failed for token %s", self.name, token)

    def _forget_old_tokens(self, now: float) -> None:
        expired = [t for t, at in self._last_frame_at.items() if now - at >= self.debounce_s]
        for t in expired:
            del self._last_frame_at[t]
