"""The OCPI 2.2.1 pricer: charging periods + tariff -> Cost, all in Decimal.

How a session is priced:

1. Each period runs from its start to the next period's start (the last one to session_end). It is
   cut wherever a restriction could change its verdict: local wall-clock boundaries of the tariff
   (every start_time/end_time and midnight, found in the site time zone, DST jumps included) and
   session-duration thresholds; energy, charging and parking time are shared out by elapsed
   (UTC) time. Each piece is cut again where the session's energy crosses a min_kwh/max_kwh
   threshold, shared out by energy.
2. For every piece and every metered dimension (ENERGY, TIME, PARKING_TIME) the first element
   that has a component of that dimension and whose restrictions hold at the piece's start is
   used; no such element means that quantity is free.
3. step_size is applied once per dimension on the session total (free quantity included), with
   the step of the last component used for that dimension; the rounded-up extra is billed at that
   component's price. Charging TIME is not rounded when PARKING_TIME was billed in the session.
4. FLAT is billed once, from the first matching FLAT element at the session start.
5. VAT is added per component line; then min_price/max_price bound the totals, excl and incl
   VAT separately.

Nothing is rounded: amounts keep 50 significant digits until Cost.to_json.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._tariff import (
    WEEKDAYS,
    Price,
    PriceComponent,
    Tariff,
    TariffDimension,
    TariffRestrictions,
    decimal_from_json,
    parse_ocpi_datetime,
    parse_tariff,
)

PRECISION = 50
_ZERO = Decimal(0)
_MIDNIGHT = time(0, 0)
_ONE_MICROSECOND = timedelta(microseconds=1)
# Step rounding reads totals at this resolution (seconds or Wh), so that a last-digit remainder
# of proportional splitting can never push a total past a step boundary.
_STEP_RESOLUTION = Decimal("1e-6")
_JSON_RESOLUTION = Decimal("0.0001")
_STEP_UNITS = {TariffDimension.ENERGY: Decimal(1000), TariffDimension.TIME: Decimal(3600),
               TariffDimension.PARKING_TIME: Decimal(3600)}
# kWh, hours, A or kW of one CDR period: far above any real one, low enough for exact Decimal.
MAX_CDR_VOLUME = 1_000_000
_CDR_DIMENSIONS = {"ENERGY": "energy_kwh", "TIME": "charging_h", "PARKING_TIME": "parking_h",
                   "MIN_CURRENT": "min_current_a", "MAX_CURRENT": "max_current_a",
                   "MIN_POWER": "min_power_kw", "MAX_POWER": "max_power_kw"}


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


@dataclass(frozen=True)
class DimensionCost:
    quantity: Decimal
    """The session total after step_size, free parts included: kWh (energy), hours (time,
    parking_time), 1 or 0 (flat)."""
    amount: Price


@dataclass(frozen=True)
class Cost:
    """A priced session. by_dimension has the keys energy, time, parking_time and flat, always;
    its amounts are before min_price/max_price, which bind only excl_vat and incl_vat."""

    currency: str
    excl_vat: Decimal
    incl_vat: Decimal
    by_dimension: dict[str, DimensionCost] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """{"currency", "excl_vat", "incl_vat"} with amounts as JSON numbers, 4 decimals, half up."""
        return {"currency": self.currency, "excl_vat": money_json(self.excl_vat),
                "incl_vat": money_json(self.incl_vat)}


def price_periods(tariff: Tariff, periods: Sequence[ChargingPeriod], *, session_start: datetime,
                  session_end: datetime, tz: str) -> Cost:
    """Price one session. `periods` must be in start order; `tz` is the site's IANA time zone,
    used only to read the tariff's local-time restrictions."""
    zone = site_zone(tz)
    session_start = as_utc(session_start, "session_start")
    session_end = as_utc(session_end, "session_end")
    if any(later.start < earlier.start for earlier, later in pairwise(periods)):
        raise ValueError("periods must be in start order")
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return _price(tariff, list(periods), session_start, session_end, zone)


def price_cdr(tariff_obj: Mapping[str, Any], cdr_obj: Mapping[str, Any], *, tz: str) -> Cost:
    """Price an OCPI 2.2.1 CDR (start_date_time, end_date_time, charging_periods) with an OCPI
    Tariff object. CDR hours are read to the nearest second: their 4-6 decimals are a rendering
    of whole seconds, and step_size counts seconds. Raises TariffError or ValueError."""
    tariff = parse_tariff(tariff_obj)
    session_start, session_end, periods = _read_cdr(cdr_obj)
    return price_periods(tariff, periods, session_start=session_start, session_end=session_end, tz=tz)


# -- what the tariff makes relevant (also used to build periods from meter samples) -------------

def site_zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"tz: unknown time zone {tz!r}") from exc


def as_utc(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"{name}: must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def kwh_thresholds(tariff: Tariff) -> list[Decimal]:
    values = {v for r in _all_restrictions(tariff) for v in (r.min_kwh, r.max_kwh) if v is not None}
    return sorted(values)


def rate_signature(tariff: Tariff, period: ChargingPeriod) -> tuple[bool, ...]:
    """Which elements' current/power restrictions this period's rates satisfy."""
    return tuple(_rates_match(r, period) for r in _all_restrictions(tariff))


# -- pricing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Slice:
    """A piece of a period within which no restriction changes its verdict."""

    at: datetime
    """Where the piece's time piece starts: restrictions are read here."""
    start: datetime
    """Where this piece itself starts (later than `at` when a kWh threshold cut the time piece)."""
    energy_before_kwh: Decimal
    energy_kwh: Decimal
    charging_h: Decimal
    parking_h: Decimal
    period: ChargingPeriod

    def quantity(self, dimension: TariffDimension) -> Decimal:
        if dimension is TariffDimension.ENERGY:
            return self.energy_kwh
        return self.charging_h if dimension is TariffDimension.TIME else self.parking_h

    def as_period(self) -> ChargingPeriod:
        p = self.period
        return ChargingPeriod(start=self.start, energy_kwh=self.energy_kwh, charging_h=self.charging_h,
                              parking_h=self.parking_h, min_current_a=p.min_current_a,
                              max_current_a=p.max_current_a, min_power_kw=p.min_power_kw,
                              max_power_kw=p.max_power_kw)


@dataclass
class _Usage:
    """Quantities of one dimension over the session, per component that priced them."""

    total: Decimal = _ZERO
    lines: dict[PriceComponent, Decimal] = field(default_factory=dict)
    last: PriceComponent | None = None

    def bill(self, component: PriceComponent, quantity: Decimal) -> None:
        self.lines[component] = self.lines.get(component, _ZERO) + quantity
        self.last = component

    def copy(self) -> _Usage:
        return _Usage(self.total, dict(self.lines), self.last)


_METERED = (TariffDimension.ENERGY, TariffDimension.TIME, TariffDimension.PARKING_TIME)


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


class Bill:
    """A session's usage, priced period by period in time order; cost() reads the total so far.

    copy() is cheap (a few small dicts), so a running session can be priced as "what has been
    priced so far" plus its open tail.
    """

    def __init__(self, tariff: Tariff, zone: tzinfo, session_start: datetime, *, keep_slices: bool = False,
                 cuts: TimeCuts | None = None) -> None:
        self.tariff = tariff
        self.zone = zone
        self.session_start = session_start
        self.cuts = cuts or TimeCuts(tariff, zone, session_start)
        self.thresholds = kwh_thresholds(tariff)
        self.usage = {dimension: _Usage() for dimension in _METERED}
        self.energy_so_far = _ZERO
        self.first_period: ChargingPeriod | None = None
        self.slices: list[_Slice] | None = [] if keep_slices else None

    def copy(self) -> Bill:
        twin = Bill.__new__(Bill)
        twin.__dict__.update(self.__dict__)
        twin.usage = {dimension: used.copy() for dimension, used in self.usage.items()}
        twin.slices = None if self.slices is None else list(self.slices)
        return twin

    def add(self, period: ChargingPeriod, end: datetime) -> None:
        """Bills `period`, which lasts until `end` (the next period's start or the session end)."""
        if self.first_period is None:
            self.first_period = period
        zone, session_start = self.zone, self.session_start
        for piece in self._slices(period, end):
            if self.slices is not None:
                self.slices.append(piece)
            local = piece.at.astimezone(zone)
            elapsed = piece.at - session_start
            for dimension in _METERED:
                quantity = piece.quantity(dimension)
                if quantity <= 0:
                    continue
                self.usage[dimension].total += quantity
                component = _first_component(self.tariff, dimension, local, elapsed, piece.energy_before_kwh,
                                             piece.period)
                if component is not None:
                    self.usage[dimension].bill(component, quantity)

    def cost(self) -> Cost:
        """The session's price if it ended with the last period added: step_size on each total,
        FLAT, then min/max price. Does not change the bill."""
        tariff, zone = self.tariff, self.zone
        parking_billed = self.usage[TariffDimension.PARKING_TIME].last is not None
        by_dimension: dict[str, DimensionCost] = {}
        for dimension, used in self.usage.items():
            lines = dict(used.lines)
            extra = _ZERO
            if used.last is not None and not (dimension is TariffDimension.TIME and parking_billed):
                extra = _step_extra(used.total, used.last.step_size, _STEP_UNITS[dimension])
                if extra:
                    lines[used.last] = lines.get(used.last, _ZERO) + extra
            by_dimension[dimension.value.lower()] = DimensionCost(
                quantity=used.total + extra, amount=_sum_lines(lines.items()))

        flat = _first_component(tariff, TariffDimension.FLAT, self.session_start.astimezone(zone), timedelta(0),
                                _ZERO, self.first_period)
        flat_lines = [(flat, Decimal(1))] if flat is not None else []
        by_dimension["flat"] = DimensionCost(quantity=Decimal(len(flat_lines)), amount=_sum_lines(flat_lines))

        excl = sum((d.amount.excl_vat for d in by_dimension.values()), _ZERO)
        incl = sum((d.amount.incl_vat or _ZERO for d in by_dimension.values()), _ZERO)
        excl, incl = _bounded(excl, incl, tariff)
        return Cost(currency=tariff.currency, excl_vat=excl, incl_vat=incl, by_dimension=by_dimension)

    def _slices(self, period: ChargingPeriod, end: datetime) -> Iterator[_Slice]:
        thresholds = self.thresholds
        edges = [period.start, *self.cuts.between(period.start, end), end]
        spans = [_microseconds(b - a) for a, b in pairwise(edges)] if end > period.start else [Decimal(1)]
        for at, energy, charging, parking in zip(
                edges[:-1], _share(period.energy_kwh, spans), _share(period.charging_h, spans),
                _share(period.parking_h, spans), strict=True):
            energy_so_far = self.energy_so_far
            marks = [energy_so_far, *(k for k in thresholds if energy_so_far < k < energy_so_far + energy),
                     energy_so_far + energy]
            by_energy = [b - a for a, b in pairwise(marks)]
            start = at
            for part, charging_part, parking_part in zip(
                    _share(energy, by_energy), _share(charging, by_energy), _share(parking, by_energy),
                    strict=True):
                yield _Slice(at, start, self.energy_so_far, part, charging_part, parking_part, period)
                self.energy_so_far += part
                start += timedelta(microseconds=int((charging_part + parking_part) * 3_600_000_000))


def _price(tariff: Tariff, periods: list[ChargingPeriod], session_start: datetime,
           session_end: datetime, zone: tzinfo) -> Cost:
    bill = Bill(tariff, zone, session_start)
    for index, period in enumerate(periods):
        bill.add(period, periods[index + 1].start if index + 1 < len(periods) else session_end)
    return bill.cost()


def _share(total: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """Split total in proportion to weights; the parts add up to total exactly."""
    whole = sum(weights, _ZERO)
    if len(weights) == 1 or whole <= 0 or total == 0:
        return [total] + [_ZERO] * (len(weights) - 1)
    parts = [total * w / whole for w in weights[:-1]]
    parts.append(max(total - sum(parts, _ZERO), _ZERO))
    return parts


def _first_component(tariff: Tariff, dimension: TariffDimension, local: datetime, elapsed: timedelta,
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


def _step_extra(total: Decimal, step_size: int, units_per_quantity: Decimal) -> Decimal:
    """The quantity to add so that the total becomes a whole number of steps."""
    in_units = total * units_per_quantity
    steps = (in_units.quantize(_STEP_RESOLUTION, ROUND_HALF_EVEN) / step_size).to_integral_value(ROUND_CEILING)
    return max(steps * step_size - in_units, _ZERO) / units_per_quantity


def _sum_lines(lines: Iterable[tuple[PriceComponent, Decimal]]) -> Price:
    excl = incl = _ZERO
    for component, quantity in lines:
        amount = quantity * component.price
        excl += amount
        incl += amount if component.vat is None else amount * (100 + component.vat) / 100
    return Price(excl_vat=excl, incl_vat=incl)


def _bounded(excl: Decimal, incl: Decimal, tariff: Tariff) -> tuple[Decimal, Decimal]:
    """min_price/max_price bind excl and incl VAT separately; a limit without incl_vat leaves the
    incl-VAT total alone (OCPI gives no rule to derive it, and VAT rates differ per component)."""
    if tariff.min_price is not None:
        excl = max(excl, tariff.min_price.excl_vat)
        if tariff.min_price.incl_vat is not None:
            incl = max(incl, tariff.min_price.incl_vat)
    if tariff.max_price is not None:
        excl = min(excl, tariff.max_price.excl_vat)
        if tariff.max_price.incl_vat is not None:
            incl = min(incl, tariff.max_price.incl_vat)
    return excl, incl


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


# -- numbers ---------------------------------------------------------------------------------

def _microseconds(delta: timedelta) -> Decimal:
    return Decimal(delta // _ONE_MICROSECOND)


def _quantity(value: Any, name: str) -> Decimal:
    if isinstance(value, float):
        raise TypeError(f"{name}: must be a Decimal or int, not float")
    number = decimal_from_json(value)
    if number is None or number < 0:
        raise ValueError(f"{name}: must be a finite number >= 0")
    return number


def money_json(amount: Decimal) -> float:
    """An amount as the cloud contract wants it: a JSON number, 4 decimals, half up."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return float(amount.quantize(_JSON_RESOLUTION, ROUND_HALF_UP))


# -- OCPI CDR --------------------------------------------------------------------------------

def _read_cdr(cdr: Mapping[str, Any]) -> tuple[datetime, datetime, list[ChargingPeriod]]:
    if not isinstance(cdr, Mapping):
        raise ValueError("cdr: must be a JSON object")
    session_start = _cdr_datetime(cdr.get("start_date_time"), "start_date_time")
    session_end = _cdr_datetime(cdr.get("end_date_time"), "end_date_time")
    raw_periods = cdr.get("charging_periods")
    if not isinstance(raw_periods, list):
        raise ValueError("charging_periods: must be a list")
    periods = [_cdr_period(p, f"charging_periods[{i}]") for i, p in enumerate(raw_periods)]
    if any(later.start < earlier.start for earlier, later in pairwise(periods)):
        raise ValueError("charging_periods: must be in start_date_time order")
    return session_start, session_end, periods


def _cdr_period(raw: Any, path: str) -> ChargingPeriod:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: must be a JSON object")
    dimensions = raw.get("dimensions")
    if not isinstance(dimensions, list):
        raise ValueError(f"{path}.dimensions: must be a list")
    values: dict[str, Decimal] = {}
    for i, dimension in enumerate(dimensions):
        where = f"{path}.dimensions[{i}]"
        kind = dimension.get("type") if isinstance(dimension, Mapping) else None
        if kind not in _CDR_DIMENSIONS:
            continue  # RESERVATION_TIME, STATE_OF_CHARGE, ...: nothing the pricer reads
        volume = decimal_from_json(dimension.get("volume"))
        if volume is None or not 0 <= volume <= MAX_CDR_VOLUME:
            raise ValueError(f"{where}.volume: must be a number from 0 to {MAX_CDR_VOLUME:,}")
        name = _CDR_DIMENSIONS[kind]
        if name in values:
            raise ValueError(f"{where}: {kind} appears twice")
        if name in ("charging_h", "parking_h"):
            volume = (volume * 3600).quantize(Decimal(1), ROUND_HALF_EVEN) / 3600
        values[name] = volume
    return ChargingPeriod(start=_cdr_datetime(raw.get("start_date_time"), f"{path}.start_date_time"), **values)


def _cdr_datetime(value: Any, path: str) -> datetime:
    parsed = parse_ocpi_datetime(value)
    if parsed is None:
        raise ValueError(f"{path}: must be an RFC 3339 date-time")
    return parsed
