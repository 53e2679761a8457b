"""The checks every section of a map file goes through: one error format, and the value checks."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._maptypes import Kind, MapError, Register


class MapChecks:
    """Checks on one map file's values; every error names the file and the key path."""

    def __init__(self, source: str, kind: Kind) -> None:
        self.source = source
        self.kind = kind

    def fail(self, key: str, message: str) -> MapError:
        return MapError(f"{self.source}: {key}: {message}" if key else f"{self.source}: {message}")

    def section(
        self, data: Any, key: str, *, required: set[str], optional: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a mapping, got {type(data).__name__}")
        for name in data:
            if name not in required and name not in optional:
                raise self.fail(f"{key}.{name}" if key else str(name), "unknown key")
        for name in sorted(required):
            if name not in data:
                raise self.fail(f"{key}.{name}" if key else name, "missing")
        return data

    def int_(self, value: Any, key: str, *, lo: int = 0, hi: int = 0xFFFF) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.fail(key, f"{value} is outside {lo}..{hi}")
        return value

    def bool_(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def number(self, value: Any, key: str, *, positive: bool = False, lo: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(key, f"must be > 0, got {value}")
        if lo is not None and value < lo:
            raise self.fail(key, f"must be >= {lo}, got {value}")
        return float(value)

    def choice(self, value: Any, key: str, options: tuple[Any, ...]) -> Any:
        if value not in options:
            raise self.fail(key, f"{value!r} is not one of {', '.join(map(str, options))}")
        return value

    def str_(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def role_ref(self, value: Any, key: str, registers: Mapping[str, Register]) -> str:
        role = self.str_(value, key)
        if role not in registers:
            raise self.fail(key, f"names role {role!r}, which is not in registers")
        return role
