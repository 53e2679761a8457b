"""RDM6300: 125 kHz EM4100 reader on a serial port (9600 8N1).

Each read of a card is one frame: STX 0x02, 10 ASCII hex digits of data, 2 ASCII hex digits
of checksum (XOR of the 5 data bytes), ETX 0x03. The reader repeats the frame while the card
is held, so repeats of one token are folded into one tap.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import serial

from drivers.api import Tap
from drivers.readers._base import ThreadedReader
from drivers.tokens import normalize_uid

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
FRAME_LEN = 14  # STX + 10 data + 2 checksum + ETX
_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")

BAUDRATE = 9600
READ_TIMEOUT_S = 0.25  # bounds how long stop() waits; a frame's bytes return at once regardless


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


class Rdm6300Reader(ThreadedReader):
    """Reads taps from one RDM6300 on a daemon thread; survives the port disappearing.

    on_tap is called from the reader thread; bridge to asyncio with loop.call_soon_threadsafe.
    """

    kind = "rdm6300"

    def __init__(
        self,
        *,
        port: str,
        evse_id: str | None,
        on_tap: Callable[[Tap], None],
        debounce_s: float = 2.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or port, evse_id=evse_id, on_tap=on_tap, debounce_s=debounce_s)
        self.port = port
        self.frames_ok = 0
        self.frames_bad = 0

    def _open(self) -> serial.Serial:
        return serial.Serial(self.port, BAUDRATE, timeout=READ_TIMEOUT_S)

    def _close(self, handle: serial.Serial) -> None:
        handle.close()

    def _read(self, handle: serial.Serial) -> None:
        pending = b""
        while not self._stop.is_set():
            # read(1) returns as soon as the first byte arrives; in_waiting picks up the rest.
            chunk = handle.read(1)
            if not chunk:
                continue
            if handle.in_waiting:
                chunk += handle.read(handle.in_waiting)
            read_at = time.monotonic()
            tokens, pending, bad = decode_frames(pending + chunk)
            if bad:
                self.frames_bad += bad
                log.debug("reader %s dropped %d bad frame(s)", self.name, bad)
            for token in tokens:
                self.frames_ok += 1
                self._sighting(token, read_at)
