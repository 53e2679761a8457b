"""Wall-clock helpers. Timestamps on the wire are RFC 3339 UTC with a Z."""
from __future__ import annotations

import ctypes
import ctypes.util
from datetime import datetime, timezone

_STA_UNSYNC = 0x0040


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{moment.microsecond // 1000:03d}Z" if moment.microsecond else "Z"
    )


def parse_rfc3339(text: str) -> datetime:
    """Accepts '...Z' and '+00:00' forms; always returns an aware UTC datetime."""
    if not isinstance(text, str):
        raise ValueError(f"timestamp must be a string, got {type(text).__name__}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.astimezone(timezone.utc)


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("_rest", ctypes.c_byte * 200)]


def clock_synced() -> bool:
    """True when the kernel says the clock is NTP-disciplined (a Pi has no RTC)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return False
    # TIME_ERROR (5) or the unsync flag: nobody has disciplined the clock since boot.
    return state != 5 and not (timex.status & _STA_UNSYNC)
