"""Wall-clock helpers. Timestamps on the wire are RFC 3339 UTC with a Z."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from datetime import UTC, datetime
from pathlib import Path

_STA_UNSYNC = 0x0040


def _wall() -> float:
    return time.time()


def utc_now() -> datetime:
    return datetime.fromtimestamp(_wall(), UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{moment.microsecond // 1000:03d}Z" if moment.microsecond else "Z"
    )


def parse_rfc3339(text: str) -> datetime:
    """Accepts '...Z' and '+00:00' forms; always returns an aware UTC datetime."""
    if not isinstance(text, str):
        raise ValueError(f"timestamp must be a string, got {type(text).__name__}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.astimezone(UTC)


@functools.cache
def _libc() -> ctypes.CDLL:
    # find_library runs `ldconfig -p` in a child process: once per process is enough.
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("_rest", ctypes.c_byte * 200)]


def clock_synced(marker: Path | None = None) -> bool:
    """True when the kernel says the clock is NTP-disciplined, or timesyncd left its marker
    (a Pi has no battery clock: until then the wall clock may be days off)."""
    if marker is not None and marker.exists():
        return True
    try:
        libc = _libc()
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return False
    # TIME_ERROR (5) or the unsync flag: nobody has disciplined the clock since boot.
    return state != 5 and not (timex.status & _STA_UNSYNC)


class ClockWatch:
    """Notices the wall clock stepping (NTP's first sync on a Pi that booted without network)
    by watching the distance between the wall clock and the monotonic clock."""

    def __init__(self, *, synced_marker: Path | None = None, jump_threshold_s: float = 2.0) -> None:
        self._marker = synced_marker
        self._threshold = jump_threshold_s
        self.offset = _wall() - time.monotonic()

    def synced(self) -> bool:
        return clock_synced(self._marker)

    def jump(self) -> float | None:
        """Seconds the wall clock stepped since the last call, or None."""
        offset = _wall() - time.monotonic()
        step = offset - self.offset
        self.offset = offset  # small changes are NTP slewing the clock: follow them
        return step if abs(step) >= self._threshold else None

    def since_boot_offset(self, stored: tuple[str, float] | None) -> float | None:
        """The step since a previous agent run of this same boot wrote `stored` (boot id, offset)."""
        if stored is None or stored[0] != boot_id():
            return None
        step = self.offset - stored[1]
        return step if abs(step) >= self._threshold else None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
