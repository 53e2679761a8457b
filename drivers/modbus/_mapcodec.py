"""A register's words to the value in its unit and back, as its map entry says (type, word order, scale, bit field)."""
from __future__ import annotations

import math
import struct

from ._maptypes import Register

_STRUCT = {
    "uint16": "H", "int16": "h", "uint32": "I", "int32": "i", "uint64": "Q", "int64": "q",
    "float32": "f", "float64": "d",
}


def raw_value(reg: Register, words: list[int]) -> int:
    """The register's words as one unsigned integer, high word first after applying word order."""
    ordered = list(reversed(words)) if reg.word_order == "LSW" else list(words)
    out = 0
    for word in ordered:
        out = (out << 16) | (word & 0xFFFF)
    return out


def raw_words(reg: Register, raw: int) -> list[int]:
    """An unsigned raw value (as ``raw_value`` gives it) back to words in wire order."""
    words = [(raw >> (16 * (reg.words - 1 - i))) & 0xFFFF for i in range(reg.words)]
    return list(reversed(words)) if reg.word_order == "LSW" else words


def field_value(reg: Register, raw: int) -> int:
    """An unsigned raw value after the register's shift and mask."""
    value = raw >> reg.shift
    return value & reg.mask if reg.mask is not None else value


def decode(reg: Register, words: list[int]) -> int | float | str | bool:
    """Words (in wire order) to the value in the register's unit. Sentinels are the caller's business."""
    if len(words) != reg.words:
        raise ValueError(f"{reg.role}: expected {reg.words} registers, got {len(words)}")
    if reg.type == "bool":
        return bool(words[0])
    if reg.type == "ascii":
        text = b"".join(w.to_bytes(2, "big") for w in words)
        return text.decode("ascii", errors="replace").strip("\x00 ")
    raw = raw_value(reg, words)
    if reg.shift or reg.mask is not None:
        value: int | float = field_value(reg, raw)
    else:
        value = struct.unpack(f">{_STRUCT[reg.type]}", raw.to_bytes(2 * reg.words, "big"))[0]
    if reg.scale == 1 and reg.type not in ("float32", "float64"):
        return int(value)
    return value * reg.scale


def encode(reg: Register, value: float | int | str | bool) -> list[int]:
    """Value in the register's unit to words in wire order. Raises ValueError if it does not fit."""
    if reg.type == "bool":
        return [1 if value else 0]
    if reg.type == "ascii":
        data = str(value).encode("ascii").ljust(2 * reg.words, b"\x00")
        if len(data) > 2 * reg.words:
            raise ValueError(f"{reg.role}: {value!r} is longer than {2 * reg.words} characters")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if reg.type in ("float32", "float64"):
        packed = struct.pack(f">{_STRUCT[reg.type]}", float(value) / reg.scale)
    else:
        if isinstance(value, int) and reg.scale == 1:
            number = value  # exact, also beyond a float's 53 bits (64-bit serial numbers)
        else:
            scaled = float(value) / reg.scale
            number = round(scaled)
            if not math.isclose(number, scaled, abs_tol=1e-6):
                raise ValueError(f"{reg.role}: {value} is not a multiple of {reg.scale} {reg.unit or ''}".rstrip())
        if reg.shift or reg.mask is not None:
            if number < 0 or (reg.mask is not None and number > reg.mask):
                raise ValueError(f"{reg.role}: {value} does not fit its bit field")
            number <<= reg.shift
        try:
            packed = struct.pack(f">{_STRUCT[reg.type]}", number)
        except struct.error:
            raise ValueError(f"{reg.role}: {value} does not fit {reg.type} at scale {reg.scale}") from None
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    return list(reversed(words)) if reg.word_order == "LSW" else words
