"""The pricer's input: one charging period, checked, and the checks it shares with the pricer."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ._tariff import decimal_from_json

_ZERO = Decimal(0)


@dataclass(frozen=True)
class ChargingPeriod:
    """What happened from `start` until the next period starts (or the session ends).

    The rates are what OCPI CDR dimensions MIN/MAX_CURRENT (A, summed over phases) and
    MIN/MAX_POWER (kW) carry; None means unknown, and a restriction on an unknown rate holds
    (as in the tandemdrive reference pricer).
    """

    start: datetime
    energy_kwh: Decimal = _ZERO
    charging_h: Decimal = _ZERO
    parking_h: Decimal = _ZERO
    min_current_a: Decimal | None = None
    max_current_a: Decimal | None = None
    min_power_kw: Decimal | None = None
    max_power_kw: Decimal | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", as_utc(self.start, "ChargingPeriod.start"))
        for name in ("energy_kwh", "charging_h", "parking_h"):
            object.__setattr__(self, name, _quantity(getattr(self, name), f"ChargingPeriod.{name}"))
        for name in ("min_current_a", "max_current_a", "min_power_kw", "max_power_kw"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _quantity(getattr(self, name), f"ChargingPeriod.{name}"))


def as_utc(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"{name}: must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def _quantity(value: Any, name: str) -> Decimal:
    if isinstance(value, float):
        raise TypeError(f"{name}: must be a Decimal or int, not float")
    number = decimal_from_json(value)
    if number is None or number < 0:
        raise ValueError(f"{name}: must be a finite number >= 0")
    return number

