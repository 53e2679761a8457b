"""OCPI 2.2.1 Tariff JSON -> frozen, validated dataclasses.

Numbers become Decimal through their shortest text form (a JSON 0.1 becomes Decimal("0.1")), so no
binary float ever reaches the money arithmetic. Unknown fields are ignored; a known field with a
wrong type or out-of-range value raises TariffError naming its path.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import StrEnum
from typing import Any


class TariffError(ValueError):
    """An OCPI tariff that cannot be used; the message starts with the field path."""


class TariffDimension(StrEnum):
    ENERGY = "ENERGY"
    FLAT = "FLAT"
    PARKING_TIME = "PARKING_TIME"
    TIME = "TIME"


WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
_TARIFF_TYPES = frozenset({"AD_HOC_PAYMENT", "PROFILE_CHEAP", "PROFILE_FAST", "PROFILE_GREEN", "REGULAR"})
_RESERVATION_TYPES = frozenset({"RESERVATION", "RESERVATION_EXPIRES"})
_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CURRENCY = re.compile(r"[A-Z]{3}")
# Ceilings that keep every session's amounts exact in Decimal and in the JSON numbers of the
# contract (a float holds 15 significant digits: up to about 10**10 with 4 decimals). A million
# per kWh, per hour or per session covers every currency in use (VND, IDR and KRW included).
MAX_PRICE = 1_000_000
MAX_STEP_SIZE = 1_000_000  # Wh (1,000 kWh) or seconds (11.5 days)
MAX_DURATION_S = 10 * 366 * 86_400  # min_duration/max_duration: ten years


@dataclass(frozen=True)
class Price:
    """An amount without and with VAT.

    As a computed amount both are always set. As a tariff's min_price/max_price, OCPI 2.2.1 makes
    incl_vat optional; it is then None and the limit binds the excl-VAT total only.
    """

    excl_vat: Decimal
    incl_vat: Decimal | None = None


@dataclass(frozen=True)
class PriceComponent:
    type: TariffDimension
    price: Decimal
    """Per kWh (ENERGY), per hour (TIME, PARKING_TIME) or per session (FLAT), excluding VAT."""
    vat: Decimal | None
    """Percent; None means no VAT applies (not the same as 0)."""
    step_size: int
    """Wh for ENERGY, seconds for TIME and PARKING_TIME."""


@dataclass(frozen=True)
class TariffRestrictions:
    start_time: time | None = None
    end_time: time | None = None
    start_date: date | None = None
    end_date: date | None = None
    min_kwh: Decimal | None = None
    max_kwh: Decimal | None = None
    min_current: Decimal | None = None
    max_current: Decimal | None = None
    min_power: Decimal | None = None
    max_power: Decimal | None = None
    min_duration: int | None = None
    max_duration: int | None = None
    day_of_week: frozenset[str] = frozenset()
    reservation: str | None = None


@dataclass(frozen=True)
class TariffElement:
    price_components: tuple[PriceComponent, ...]
    restrictions: TariffRestrictions | None = None

    def component(self, dimension: TariffDimension) -> PriceComponent | None:
        """The element's first component of this dimension (OCPI uses no other)."""
        return next((c for c in self.price_components if c.type is dimension), None)


@dataclass(frozen=True)
class Tariff:
    id: str
    currency: str
    elements: tuple[TariffElement, ...]
    min_price: Price | None = None
    max_price: Price | None = None
    start_date_time: datetime | None = None
    end_date_time: datetime | None = None
    type: str | None = None
    country_code: str | None = None
    party_id: str | None = None
    last_updated: datetime | None = None


def parse_tariff(obj: Mapping[str, Any]) -> Tariff:
    """Validate an OCPI 2.2.1 Tariff object and return it as a Tariff.

    start_date_time/end_date_time are parsed but not enforced anywhere in this package: the
    caller picks the tariff in force when the session starts.
    """
    tariff = _object(obj, "tariff")
    min_price = _optional(tariff, "min_price", "", _price_limit)
    max_price = _optional(tariff, "max_price", "", _price_limit)
    if min_price is not None and max_price is not None:
        if max_price.excl_vat < min_price.excl_vat:
            raise TariffError("max_price.excl_vat: must be >= min_price.excl_vat")
        if (max_price.incl_vat is not None and min_price.incl_vat is not None
                and max_price.incl_vat < min_price.incl_vat):
            raise TariffError("max_price.incl_vat: must be >= min_price.incl_vat")
    tariff_type = _optional(tariff, "type", "", _string)
    if tariff_type is not None and tariff_type not in _TARIFF_TYPES:
        raise TariffError(f"type: must be one of {', '.join(sorted(_TARIFF_TYPES))}")
    currency = _required(tariff, "currency", "", _string)
    if not _CURRENCY.fullmatch(currency):
        raise TariffError("currency: must be a 3-letter ISO 4217 code")
    elements = _required(tariff, "elements", "", _list)
    if not elements:
        raise TariffError("elements: must hold at least one element")
    return Tariff(
        id=_required(tariff, "id", "", _string),
        currency=currency,
        elements=tuple(_element(e, f"elements[{i}]") for i, e in enumerate(elements)),
        min_price=min_price,
        max_price=max_price,
        start_date_time=_optional(tariff, "start_date_time", "", _datetime),
        end_date_time=_optional(tariff, "end_date_time", "", _datetime),
        type=tariff_type,
        country_code=_optional(tariff, "country_code", "", _string),
        party_id=_optional(tariff, "party_id", "", _string),
        last_updated=_optional(tariff, "last_updated", "", _datetime),
    )


def _element(value: Any, path: str) -> TariffElement:
    element = _object(value, path)
    components = _required(element, "price_components", path, _list)
    if not components:
        raise TariffError(f"{path}.price_components: must hold at least one component")
    return TariffElement(
        price_components=tuple(_component(c, f"{path}.price_components[{i}]") for i, c in enumerate(components)),
        restrictions=_optional(element, "restrictions", path, _restrictions),
    )


def _component(value: Any, path: str) -> PriceComponent:
    component = _object(value, path)
    kind = _required(component, "type", path, _string)
    if kind not in TariffDimension.__members__:
        raise TariffError(f"{path}.type: must be one of ENERGY, FLAT, PARKING_TIME, TIME")
    dimension = TariffDimension(kind)
    # FLAT has no step; OCPI's own examples and real CDRs give it 0 (or 1).
    least = 0 if dimension is TariffDimension.FLAT else 1
    step_size = _required(component, "step_size", path, lambda v, p: _step_size(v, p, least=least))
    return PriceComponent(
        type=dimension,
        price=_required(component, "price", path, _money),
        vat=_optional(component, "vat", path, _vat),
        step_size=step_size,
    )


def _restrictions(value: Any, path: str) -> TariffRestrictions:
    r = _object(value, path)
    days = _optional(r, "day_of_week", path, _list) or []
    for i, day in enumerate(days):
        if day not in WEEKDAYS:
            raise TariffError(f"{path}.day_of_week[{i}]: must be one of {', '.join(WEEKDAYS)}")
    reservation = _optional(r, "reservation", path, _string)
    if reservation is not None and reservation not in _RESERVATION_TYPES:
        raise TariffError(f"{path}.reservation: must be RESERVATION or RESERVATION_EXPIRES")
    return TariffRestrictions(
        start_time=_optional(r, "start_time", path, _time_of_day),
        end_time=_optional(r, "end_time", path, _time_of_day),
        start_date=_optional(r, "start_date", path, _date),
        end_date=_optional(r, "end_date", path, _date),
        min_kwh=_optional(r, "min_kwh", path, _amount),
        max_kwh=_optional(r, "max_kwh", path, _amount),
        min_current=_optional(r, "min_current", path, _amount),
        max_current=_optional(r, "max_current", path, _amount),
        min_power=_optional(r, "min_power", path, _amount),
        max_power=_optional(r, "max_power", path, _amount),
        min_duration=_optional(r, "min_duration", path, _seconds),
        max_duration=_optional(r, "max_duration", path, _seconds),
        day_of_week=frozenset(days),
        reservation=reservation,
    )


def _price_limit(value: Any, path: str) -> Price:
    limit = _object(value, path)
    return Price(excl_vat=_required(limit, "excl_vat", path, _money),
                 incl_vat=_optional(limit, "incl_vat", path, _money))


# -- field readers: each takes (value, path) and raises TariffError naming the path ---------------

def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _required(obj: Mapping[str, Any], key: str, parent: str, read: Any) -> Any:
    path = _join(parent, key)
    if obj.get(key) is None:
        raise TariffError(f"{path}: is required")
    return read(obj[key], path)


def _optional(obj: Mapping[str, Any], key: str, parent: str, read: Any) -> Any:
    value = obj.get(key)
    return None if value is None else read(value, _join(parent, key))


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TariffError(f"{path}: must be a JSON object")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise TariffError(f"{path}: must be a list")
    return list(value)


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise TariffError(f"{path}: must be a non-empty string")
    return value


def decimal_from_json(value: Any) -> Decimal | None:
    """A finite JSON number as Decimal (floats via their shortest repr), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    return None


def _amount(value: Any, path: str) -> Decimal:
    number = decimal_from_json(value)
    if number is None or number < 0:
        raise TariffError(f"{path}: must be a number >= 0")
    return number


def _money(value: Any, path: str) -> Decimal:
    number = decimal_from_json(value)
    if number is None or not 0 <= number <= MAX_PRICE:
        raise TariffError(f"{path}: must be a number from 0 to {MAX_PRICE:,}")
    return number


def _vat(value: Any, path: str) -> Decimal:
    number = decimal_from_json(value)
    if number is None or not 0 <= number <= 100:
        raise TariffError(f"{path}: must be a percentage from 0 to 100")
    return number


def _whole(value: Any) -> int | None:
    """A JSON integer as int; a float (1.0 included) or a boolean is not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _step_size(value: Any, path: str, *, least: int) -> int:
    number = _whole(value)
    if number is None or not least <= number <= MAX_STEP_SIZE:
        raise TariffError(f"{path}: must be an integer from {least} to {MAX_STEP_SIZE:,}")
    return number


def _seconds(value: Any, path: str) -> int:
    number = decimal_from_json(value)
    if (number is None or not 0 <= number <= MAX_DURATION_S
            or number != number.to_integral_value()):
        raise TariffError(f"{path}: must be a whole number of seconds from 0 to {MAX_DURATION_S:,}")
    return int(number)


def _time_of_day(value: Any, path: str) -> time:
    match = _HH_MM.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise TariffError(f"{path}: must be a time of day as HH:MM (00:00-23:59)")
    return time(int(match[1]), int(match[2]))


def _date(value: Any, path: str) -> date:
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise TariffError(f"{path}: must be a date as YYYY-MM-DD")


def parse_ocpi_datetime(value: Any) -> datetime | None:
    """RFC 3339 text -> aware UTC datetime; OCPI reads a missing offset as UTC. None if invalid."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves it past year 9999 or 1
        return None


def _datetime(value: Any, path: str) -> datetime:
    parsed = parse_ocpi_datetime(value)
    if parsed is None:
        raise TariffError(f"{path}: must be an RFC 3339 date-time")
    return parsed
