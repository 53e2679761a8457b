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

Which component applies where (1, 2) is _restrictions; the arithmetic of 1, 3 and 5 is _arithmetic.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from itertools import pairwise
from typing import Any

from ._arithmetic import PRECISION, STEP_UNITS, bounded, microseconds, money_json, share, step_extra, sum_lines
from ._charging_period import ChargingPeriod, as_utc
from ._restrictions import TimeCuts, first_component, kwh_thresholds, site_zone
from ._tariff import (
    Price,
    PriceComponent,
    Tariff,
    TariffDimension,
    decimal_from_json,
    parse_ocpi_datetime,
    parse_tariff,
)

_ZERO = Decimal(0)
# kWh, hours, A or kW of one CDR period: far above any real one, low enough for exact Decimal.
MAX_CDR_VOLUME = 1_000_000
_CDR_DIMENSIONS = {"ENERGY": "energy_kwh", "TIME": "charging_h", "PARKING_TIME": "parking_h",
                   "MIN_CURRENT": "min_current_a", "MAX_CURRENT": "max_current_a",
                   "MIN_POWER": "min_power_kw", "MAX_POWER": "max_power_kw"}


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
                component = first_component(self.tariff, dimension, local, elapsed, piece.energy_before_kwh,
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
                extra = step_extra(used.total, used.last.step_size, STEP_UNITS[dimension])
                if extra:
                    lines[used.last] = lines.get(used.last, _ZERO) + extra
            by_dimension[dimension.value.lower()] = DimensionCost(
                quantity=used.total + extra, amount=sum_lines(lines.items()))

        flat = first_component(tariff, TariffDimension.FLAT, self.session_start.astimezone(zone), timedelta(0),
                               _ZERO, self.first_period)
        flat_lines = [(flat, Decimal(1))] if flat is not None else []
        by_dimension["flat"] = DimensionCost(quantity=Decimal(len(flat_lines)), amount=sum_lines(flat_lines))

        excl = sum((d.amount.excl_vat for d in by_dimension.values()), _ZERO)
        incl = sum((d.amount.incl_vat or _ZERO for d in by_dimension.values()), _ZERO)
        excl, incl = bounded(excl, incl, tariff)
        return Cost(currency=tariff.currency, excl_vat=excl, incl_vat=incl, by_dimension=by_dimension)

    def _slices(self, period: ChargingPeriod, end: datetime) -> Iterator[_Slice]:
        thresholds = self.thresholds
        edges = [period.start, *self.cuts.between(period.start, end), end]
        spans = [microseconds(b - a) for a, b in pairwise(edges)] if end > period.start else [Decimal(1)]
        for at, energy, charging, parking in zip(
                edges[:-1], share(period.energy_kwh, spans), share(period.charging_h, spans),
                share(period.parking_h, spans), strict=True):
            energy_so_far = self.energy_so_far
            marks = [energy_so_far, *(k for k in thresholds if energy_so_far < k < energy_so_far + energy),
                     energy_so_far + energy]
            by_energy = [b - a for a, b in pairwise(marks)]
            start = at
            for part, charging_part, parking_part in zip(
                    share(energy, by_energy), share(charging, by_energy), share(parking, by_energy),
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
