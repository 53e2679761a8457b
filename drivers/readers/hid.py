"""Keyboard-type (HID) card readers, read from /dev/input/eventN: no keyboard focus needed.

The reader's key presses are read as Linux ``struct input_event`` records straight from the
evdev device (no extra dependency): ``struct timeval`` (two C longs), then type (u16), code
(u16) and value (s32), in the machine's native layout. Only key presses (EV_KEY, value 1) of
0-9, A-F (keypad digits too) count; separators are skipped; Enter ends the card's line. The
device is grabbed (EVIOCGRAB) so the typed digits do not also reach a console or a desktop.

What the line means (hex or decimal, and which byte order a decimal has) is explained in
drivers.readers._uid. Prefer /dev/input/by-id/... paths: eventN numbers change on re-plug.
The device is re-opened when it comes back; a character device that disappears fails the
read (ENODEV), anything else is noticed when the path no longer names the opened file.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
import struct
import time
from collections.abc import Callable

from drivers.api import Tap
from drivers.tokens import InvalidToken

from ._base import ThreadedReader
from ._uid import ByteOrder, uid_from_typed

EVENT = struct.Struct("@llHHi")  # struct input_event: timeval, type, code, value
EV_KEY = 0x01
KEY_PRESS = 1
EVIOCGRAB = 0x40044590  # _IOW('E', 0x90, int)

KEY_CHARS: dict[int, str] = {
    2: "1", 3: "2", 4: "3", 5: "4", 6: "5", 7: "6", 8: "7", 9: "8", 10: "9", 11: "0",
    30: "A", 48: "B", 46: "C", 32: "D", 18: "E", 33: "F",
    79: "1", 80: "2", 81: "3", 75: "4", 76: "5", 77: "6", 71: "7", 72: "8", 73: "9", 82: "0",  # keypad
    12: "-", 39: ":", 57: " ",  # separators some readers type (minus, ; or :, space)
}
ENTER_KEYS = (28, 96)  # Enter, keypad Enter
LINE_TIMEOUT_S = 1.0  # keys further apart than this are not one card's line
_POLL_S = 0.1


def key_events(chars: str) -> list[tuple[int, int]]:
    """(code, value) press/release pairs that type `chars` and Enter: what a reader sends (for simulators)."""
    codes = {char: code for code, char in reversed(list(KEY_CHARS.items()))}
    out: list[tuple[int, int]] = []
    for char in chars.upper():
        code = codes.get(char)
        if code is None:
            raise ValueError(f"a card reader does not type {char!r}")
        out += [(code, 1), (code, 0)]
    return [*out, (28, 1), (28, 0)]


class HidReader(ThreadedReader):
    """Reads taps from one keyboard-type reader on a daemon thread; survives the device disappearing.

    on_tap is called from the reader thread; bridge to asyncio with loop.call_soon_threadsafe.
    """

    kind = "hid"

    def __init__(
        self,
        *,
        device: str,
        evse_id: str | None,
        on_tap: Callable[[Tap], None],
        debounce_s: float = 2.0,
        name: str | None = None,
        decimal_byte_order: ByteOrder = "big",
        grab: bool = True,
    ) -> None:
        if not device:
            raise ValueError("a hid reader needs a device (/dev/input/by-id/...-event-kbd)")
        if decimal_byte_order not in ("big", "little"):
            raise ValueError(f"reader {device}: decimal_byte_order must be big or little, got {decimal_byte_order!r}")
        super().__init__(name=name or device, evse_id=evse_id, on_tap=on_tap, debounce_s=debounce_s)
        self.device = device
        self.decimal_byte_order: ByteOrder = decimal_byte_order
        self.grab = grab
        self.lines_bad = 0

    def _open(self) -> tuple[int, int]:
        st = os.stat(self.device)
        # A FIFO (tests feed recorded events through one) is opened read-write so it never reads EOF.
        flags = os.O_RDWR if stat.S_ISFIFO(st.st_mode) else os.O_RDONLY
        fd = os.open(self.device, flags | os.O_NONBLOCK | os.O_CLOEXEC)
        if self.grab and stat.S_ISCHR(st.st_mode):
            try:
                fcntl.ioctl(fd, EVIOCGRAB, 1)
            except OSError as exc:
                os.close(fd)
                raise OSError(exc.errno, f"cannot grab {self.device} (another program holds it?): {exc.strerror}") from None
        return fd, st.st_ino

    def _close(self, handle: tuple[int, int]) -> None:
        os.close(handle[0])

    def _read(self, handle: tuple[int, int]) -> None:
        fd, inode = handle
        pending = b""
        line = ""
        last_key = 0.0
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], _POLL_S)
            if not ready:
                try:
                    if os.stat(self.device).st_ino != inode:
                        raise OSError(errno.ENODEV, f"{self.device} was replaced")
                except FileNotFoundError:
                    raise OSError(errno.ENODEV, f"{self.device} is gone") from None
                continue
            try:
                chunk = os.read(fd, EVENT.size * 64)
            except BlockingIOError:
                continue
            if not chunk:
                raise OSError(errno.ENODEV, f"{self.device} closed")
            pending += chunk
            usable = len(pending) - len(pending) % EVENT.size
            events, pending = pending[:usable], pending[usable:]
            for _, _, type_, code, value in EVENT.iter_unpack(events):
                if type_ != EV_KEY or value != KEY_PRESS:
                    continue
                now = time.monotonic()
                if line and now - last_key > LINE_TIMEOUT_S:
                    line = ""  # a stale half line (a key bumped, a read cut short)
                last_key = now
                if code in ENTER_KEYS:
                    self._line(line, now)
                    line = ""
                elif code in KEY_CHARS:
                    line += KEY_CHARS[code]

    def _line(self, line: str, at: float) -> None:
        if not line.strip(" -:"):
            return
        try:
            token = uid_from_typed(line, byte_order=self.decimal_byte_order)
        except InvalidToken as exc:
            self.lines_bad += 1
            self._log.debug("reader %s: ignored line %r: %s", self.name, line, exc)
            return
        self._sighting(token, at)
