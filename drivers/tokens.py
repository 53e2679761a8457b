"""Token uids: one normal form everywhere (upper-case hex, no separators)."""
from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s:\-.]")
_HEX = re.compile(r"[0-9A-F]+")


class InvalidToken(ValueError):
    pass


def normalize_uid(uid: str) -> str:
    """'04:a2:b3' -> '04A2B3'. Raises InvalidToken for anything that is not hex."""
    if not isinstance(uid, str):
        raise InvalidToken(f"token uid must be a string, got {type(uid).__name__}")
    cleaned = _SEPARATORS.sub("", uid).upper()
    if not cleaned or not _HEX.fullmatch(cleaned):
        raise InvalidToken(f"token uid {uid!r} is not hex")
    return cleaned
