"""Card UIDs from every kind of reader, to the one token form (drivers.tokens.normalize_uid).

* NFC readers (nfcpy) give the UID bytes in the order the card sends them (UID0 first):
  4, 7 or 10 bytes -> 8, 14 or 20 upper-case hex digits.
* RDM6300 frames carry 10 hex digits (EM4100: version byte + 4 data bytes), kept as they are.
* Chargers with a built-in reader show the UID as text ("04:A2:B3:C4", "04a2b3c4"): separators
  and case are normalised.
* Keyboard-type (HID) readers type text. Many type hex, many type a decimal number instead.
  The rule here: text with any of A-F is hex. Text of digits only is hex when it has the
  length of a hex UID (8, 14 or 20 digits) and decimal otherwise; a 10-digit number is the
  common "10-digit decimal" output of the 4-byte UID (up to 4294967295; above that it can
  only be 10 hex digits, an EM4100 id). A decimal number becomes the smallest UID size that
  holds it (4, 7 or 10 bytes), big-endian by default: UID0 is the most significant byte, as
  the number printed on most cards. Readers that send the UID least significant byte first
  need byte_order="little" (the HID reader's `decimal_byte_order`).
"""
from __future__ import annotations

import re
from typing import Literal

from drivers.tokens import InvalidToken, normalize_uid

ByteOrder = Literal["big", "little"]
UID_SIZES = (4, 7, 10)
_HEX_LENGTHS = (8, 14, 20)
_SEPARATORS = re.compile(r"[\s:\-.]")


def uid_from_bytes(uid: bytes | bytearray) -> str:
    """UID bytes as the card sent them -> token."""
    if not uid:
        raise InvalidToken("empty UID")
    return bytes(uid).hex().upper()


def uid_from_decimal(digits: str, *, byte_order: ByteOrder = "big") -> str:
    """A UID typed as a decimal number -> token of the smallest UID size that holds it."""
    number = int(digits)
    for size in UID_SIZES:
        if number < 1 << (8 * size):
            return uid_from_bytes(number.to_bytes(size, byte_order))
    raise InvalidToken(f"decimal UID {digits} is longer than 10 bytes")


def uid_from_typed(text: str, *, byte_order: ByteOrder = "big") -> str:
    """What a keyboard-type reader typed (one line) -> token. Raises InvalidToken for anything else."""
    cleaned = _SEPARATORS.sub("", text)
    if not cleaned:
        raise InvalidToken("empty line")
    if cleaned.isdigit():
        if len(cleaned) in _HEX_LENGTHS or (len(cleaned) == 10 and int(cleaned) > 0xFFFFFFFF):
            return normalize_uid(cleaned)
        return uid_from_decimal(cleaned, byte_order=byte_order)
    return normalize_uid(cleaned)
