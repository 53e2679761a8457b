"""Which price component of a tariff applies where, and where that can change.

A restriction is read at the start of a piece of a period (see _pricer); TimeCuts gives the
instants of a session where a time- or duration-based verdict may change, kwh_thresholds and
rate_signature the energy and rate bounds the pieces are cut or grouped by.
"""
from __future__ import annotations

import bisect
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._charging_period import ChargingPeriod
from ._tariff import WEEKDAYS, PriceComponent, Tariff, TariffDimension, TariffRestrictions

_MIDNIGHT = time(0, 0)


# -- what the tariff makes relevant (also used to build periods from meter samples) -------------

def site_zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"tz: unknown time zone {tz!r}") from exc


def kwh_thresholds(tariff: Tariff) -> list[Decimal]:
    values = {v for r in _all_restrictions(tariff) for v in (r.min_kwh, r.max_kwh) if v is not None}
    return sorted(values)


def rate_signature(tariff: Tariff, period: ChargingPeriod) -> tuple[bool, ...]:
    """Which elements' current/power restrictions this period's rates satisfy."""
    return tuple(_rates_match(r, period) for r in _all_restrictions(tariff))


class TimeCuts:
    """The instants of one session where a time- or duration-based restriction may change its
    verdict, computed per local day on demand and kept sorted. A few harmless extra instants
    (midnight, the DST change itself) may be included."""

    def __init__(self, tariff: Tariff, zone: tzinfo, session_start: datetime) -> None:
        self._zone = zone
        self._walls = sorted(_wall_boundaries(tariff))
        self._instants = sorted({session_start + timedelta(seconds=s) for s in _duration_thresholds(tariff)})
        self._days: tuple[date, date] | None = None

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """The cuts strictly inside (start, end)."""
        if end <= start:
            return []
        self._cover(start, end)
        return self._instants[bisect.bisect_right(self._instants, start):bisect.bisect_left(self._instants, end)]

    def any_between(self, start: datetime, end: datetime) -> bool:
        if end <= start:
            return False
        self._cover(start, end)
        index = bisect.bisect_right(self._instants, start)
        return index < len(self._instants) and self._instants[index] < end

    def _cover(self, start: datetime, end: datetime) -> None:
        first = start.astimezone(self._zone).date() - timedelta(days=1)
        last = end.astimezone(self._zone).date() + timedelta(days=1)
        if self._days is not None and self._days[0] <= first and last <= self._days[1]:
            return
        if self._days is not None:
            first, last = min(first, self._days[0]), max(last, self._days[1])
        new: set[datetime] = set(self._instants)
        day = first
        while day <= last:
            if self._days is None or not self._days[0] <= day <= self._days[1]:
                for wall in self._walls:
                    new.update(_instants_of_wall_time(datetime.combine(day, wall), self._zone))
            day += timedelta(days=1)
        self._instants = sorted(new)
        self._days = (first, last)


def first_component(tariff: Tariff, dimension: TariffDimension, local: datetime, elapsed: timedelta,
                    energy_so_far: Decimal, period: ChargingPeriod | None) -> PriceComponent | None:
    for element in tariff.elements:
        component = element.component(dimension)
        if component is not None and _matches(element.restrictions, local, elapsed, energy_so_far, period):
            return component
    return None


def _matches(r: TariffRestrictions | None, local: datetime, elapsed: timedelta, energy_so_far: Decimal,
             period: ChargingPeriod | None) -> bool:
    if r is None:
        return True
    if r.reservation is not None:  # the gateway prices no reservations
        return False
    return (_in_window(r.start_time, r.end_time, local.time())
            and (r.start_date is None or local.date() >= r.start_date)
            and (r.end_date is None or local.date() < r.end_date)
            and (not r.day_of_week or WEEKDAYS[local.weekday()] in r.day_of_week)
            and (r.min_kwh is None or energy_so_far >= r.min_kwh)
            and (r.max_kwh is None or energy_so_far < r.max_kwh)
            and (r.min_duration is None or elapsed >= timedelta(seconds=r.min_duration))
            and (r.max_duration is None or elapsed < timedelta(seconds=r.max_duration))
            and (period is None or _rates_match(r, period)))


def _in_window(start: time | None, end: time | None, now: time) -> bool:
    """[start, end) in wall-clock time; end before start wraps past midnight; equal start and
    end (other than 00:00) is an empty window, as OCPI only wraps when end < start."""
    if end == _MIDNIGHT:
        end = None  # "00:00" as end_time is the end of the day
    if start is not None and end is not None and end < start:
        return now >= start or now < end
    return (start is None or now >= start) and (end is None or now < end)


def _rates_match(r: TariffRestrictions, period: ChargingPeriod) -> bool:
    def at_least(value: Decimal | None, bound: Decimal | None) -> bool:
        return bound is None or value is None or value >= bound

    def below(value: Decimal | None, bound: Decimal | None) -> bool:
        return bound is None or value is None or value < bound

    return (at_least(period.min_current_a, r.min_current) and below(period.max_current_a, r.max_current)
            and at_least(period.min_power_kw, r.min_power) and below(period.max_power_kw, r.max_power))


# -- local wall time -------------------------------------------------------------------------

def _all_restrictions(tariff: Tariff) -> list[TariffRestrictions]:
    return [e.restrictions for e in tariff.elements if e.restrictions is not None]


def _wall_boundaries(tariff: Tariff) -> set[time]:
    walls = {_MIDNIGHT}  # day_of_week, start_date and end_date change at local midnight
    for r in _all_restrictions(tariff):
        walls.update(t for t in (r.start_time, r.end_time) if t is not None)
    return walls


def _duration_thresholds(tariff: Tariff) -> set[int]:
    return {d for r in _all_restrictions(tariff) for d in (r.min_duration, r.max_duration) if d is not None}


def _instants_of_wall_time(wall: datetime, zone: tzinfo) -> set[datetime]:
    """The UTC instants at which local time reaches `wall`. Around a DST change the two folds
    differ; the change itself is then included too, because there the local clock jumps over
    (spring forward) or back across (fall back) the wall time."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return {first}
    return {first, second, _offset_change_between(min(first, second), max(first, second), zone)}


def _offset_change_between(before: datetime, after: datetime, zone: tzinfo) -> datetime:
    """The first whole second in (before, after] with `after`'s UTC offset."""
    target = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
