"""A simulated keyboard-type card reader: raw Linux input_event records written into a FIFO.

    with SimHidReader(tmp_path / "event7") as kbd:     # the reader under test opens that path
        kbd.type_card("0012345678")                   # key presses + Enter, as a real reader sends
        kbd.unplug(); kbd.plug()                      # the device node goes away and comes back

This machine has no /dev/uinput (a container), so the events do not come from a kernel input
device; they go through the same bytes, in the same struct layout, through a FIFO, and the
reader parses them with the same code it uses on /dev/input/eventN.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

from drivers.readers.hid import EV_KEY, EVENT, key_events

EV_SYN = 0x00


class SimHidReader:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def plug(self) -> SimHidReader:
        if self._fd is not None:
            return self
        if not self.path.exists():
            os.mkfifo(self.path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        return self

    def unplug(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path.exists():
            self.path.unlink()

    def send(self, events: list[tuple[int, int, int]]) -> None:
        """Raw (type, code, value) events, each followed by nothing else: the caller decides on SYN."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is unplugged")
        now = time.time()
        sec, usec = int(now), int((now % 1) * 1_000_000)
        os.write(self._fd, b"".join(EVENT.pack(sec, usec, t, c, v) for t, c, v in events))

    def type_card(self, text: str, *, split: bool = False) -> None:
        """Type `text` and Enter, with a SYN after every key event (as the kernel reports them).
        split=True writes the bytes in odd-sized pieces, cutting records in half."""
        events: list[tuple[int, int, int]] = []
        for code, value in key_events(text):
            events += [(EV_KEY, code, value), (EV_SYN, 0, 0)]
        if not split:
            self.send(events)
            return
        assert self._fd is not None
        now = time.time()
        data = b"".join(EVENT.pack(int(now), 0, t, c, v) for t, c, v in events)
        for i in range(0, len(data), 17):
            os.write(self._fd, data[i : i + 17])
            time.sleep(0.001)

    def close(self) -> None:
        self.unplug()

    def __enter__(self) -> SimHidReader:
        return self.plug()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
