"""Meter samples of one session -> OCPI-style charging periods.

Consecutive samples make intervals; intervals are grouped greedily, in time order, into runs
(one run = one period). The grouping is incremental (Runs.push), so a running session can keep
its closed runs and only re-group its open tail when it is priced again.
"""
from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from ._arithmetic import PRECISION
from ._charging_period import ChargingPeriod, as_utc
from ._restrictions import TimeCuts, kwh_thresholds, rate_signature, site_zone
from ._tariff import Tariff, decimal_from_json, parse_ocpi_datetime

_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class MeterSample:
    """One reading of an EVSE's meter during a session.

    charging: the vehicle was drawing energy (IEC 61851 state C or D) at this sample.
    current_a: optional present current summed over phases, for min/max_current restrictions.
    """

    ts: datetime
    energy_wh: int
    power_w: int | None
    charging: bool
    current_a: Decimal | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", as_utc(self.ts, "MeterSample.ts"))
        if isinstance(self.energy_wh, bool) or not isinstance(self.energy_wh, int):
            raise TypeError("MeterSample.energy_wh: must be an int (lifetime register, Wh)")
        if self.current_a is not None:
            current = decimal_from_json(self.current_a)
            if current is None or current < 0:
                raise ValueError("MeterSample.current_a: must be a finite number >= 0")
            object.__setattr__(self, "current_a", current)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> MeterSample:
        """A sample as the store and the meter_values event carry it: {"ts": RFC 3339, "energy_wh",
        "power_w", "current_a": [l1, l2, l3] or a number or null, "charging"}. Phase currents are
        summed (OCPI compares the sum over phases); a null phase counts 0."""
        ts = parse_ocpi_datetime(obj.get("ts"))
        if ts is None:
            raise ValueError(f"sample.ts: must be an RFC 3339 date-time, got {obj.get('ts')!r}")
        raw = obj.get("current_a")
        current: Decimal | None = None
        if isinstance(raw, list | tuple):
            phases = [decimal_from_json(p) for p in raw if p is not None]
            numbers = [p for p in phases if p is not None]
            if len(numbers) < len(phases):
                raise ValueError(f"sample.current_a: must hold numbers, got {raw!r}")
            current = sum(numbers, Decimal(0)) if numbers else None
        elif raw is not None:
            current = decimal_from_json(raw)
            if current is None:
                raise ValueError(f"sample.current_a: must be a number or a list, got {raw!r}")
        return cls(ts=ts, energy_wh=obj.get("energy_wh"), power_w=obj.get("power_w"),  # type: ignore[arg-type]
                   charging=bool(obj.get("charging")), current_a=current)


@dataclass(frozen=True)
class Interval:
    """What happened between two consecutive samples."""

    start: datetime
    end: datetime
    charging: bool
    energy_wh: int
    currents: tuple[Decimal, ...]

    @property
    def power_kw(self) -> Decimal:
        seconds = Decimal((self.end - self.start) // _ONE_MICROSECOND) / 1_000_000
        return Decimal(self.energy_wh) * Decimal("3.6") / seconds

    def as_period(self) -> ChargingPeriod:
        return Run.of(self, 0, ()).as_period()


class IntervalMaker:
    """Samples in time order -> intervals. Each interval is charging if the register rose in it or
    the earlier sample says charging, parking otherwise; its energy is the register difference (a
    decrease counts 0). Samples with the same timestamp pass their energy on to the next interval."""

    def __init__(self) -> None:
        self.last: MeterSample | None = None
        self._carried_wh = 0
        self._carried_charging = False

    def peek(self, later: MeterSample) -> Interval | None:
        """The interval `later` would close, without taking it in."""
        return self._step(later)[0]

    def feed(self, later: MeterSample) -> Interval | None:
        interval, self._carried_wh, self._carried_charging = self._step(later)
        self.last = later
        return interval

    @property
    def carried_wh(self) -> int:
        return self._carried_wh

    def _step(self, later: MeterSample) -> tuple[Interval | None, int, bool]:
        earlier = self.last
        if earlier is None:
            return None, 0, False
        energy = max(later.energy_wh - earlier.energy_wh, 0) + self._carried_wh
        charging = energy > 0 or earlier.charging or self._carried_charging
        if later.ts == earlier.ts:
            return None, energy, charging
        currents = tuple(s.current_a for s in (earlier, later) if s.current_a is not None)
        return Interval(earlier.ts, later.ts, charging, energy, currents), 0, False


def intervals_of(ordered: Sequence[MeterSample]) -> list[Interval]:
    """All intervals of samples in time order; energy left over by samples sharing the last
    timestamp goes to the last interval."""
    maker = IntervalMaker()
    intervals = [i for i in map(maker.feed, ordered) if i is not None]
    if maker.carried_wh and intervals:
        last = intervals[-1]
        intervals[-1] = Interval(last.start, last.end, True, last.energy_wh + maker.carried_wh, last.currents)
    return intervals


@dataclass(frozen=True)
class Run:
    """Consecutive intervals of one kind within which no restriction of the tariff changes."""

    start: datetime
    end: datetime
    charging: bool
    start_wh: int
    """The session's energy before this run."""
    energy_wh: int
    signature: tuple[bool, ...]
    min_power_kw: Decimal
    max_power_kw: Decimal
    min_current_a: Decimal | None
    max_current_a: Decimal | None

    @classmethod
    def of(cls, interval: Interval, start_wh: int, signature: tuple[bool, ...]) -> Run:
        power = interval.power_kw
        return cls(interval.start, interval.end, interval.charging, start_wh, interval.energy_wh, signature,
                   power, power, min(interval.currents, default=None), max(interval.currents, default=None))

    def plus(self, interval: Interval) -> Run:
        power = interval.power_kw
        return Run(self.start, interval.end, self.charging, self.start_wh, self.energy_wh + interval.energy_wh,
                   self.signature, min(self.min_power_kw, power), max(self.max_power_kw, power),
                   _least(self.min_current_a, min(interval.currents, default=None)),
                   _most(self.max_current_a, max(interval.currents, default=None)))

    def as_period(self) -> ChargingPeriod:
        hours = Decimal((self.end - self.start) // _ONE_MICROSECOND) / 3_600_000_000
        return ChargingPeriod(
            start=self.start, energy_kwh=Decimal(self.energy_wh) / 1000,
            charging_h=hours if self.charging else Decimal(0), parking_h=Decimal(0) if self.charging else hours,
            min_current_a=self.min_current_a, max_current_a=self.max_current_a,
            min_power_kw=self.min_power_kw, max_power_kw=self.max_power_kw)


class Runs:
    """Groups intervals into runs, greedily in time order.

    With a tariff, an interval joins the open run only if nothing that could change which element
    applies lies between: a local-time or session-duration boundary, a kWh threshold, or a change
    in which current/power restrictions hold. Without one, all same-kind neighbours join.
    """

    def __init__(self, tariff: Tariff | None, cuts: TimeCuts | None) -> None:
        self._tariff = tariff
        self._cuts = cuts
        self._thresholds_wh = [k * 1000 for k in kwh_thresholds(tariff)] if tariff else []
        self.last: Run | None = None
        self.energy_wh = 0

    def join(self, interval: Interval) -> tuple[Run | None, Run]:
        """(the run that `interval` closes, if any; the run it belongs to), changing nothing."""
        last, tariff = self.last, self._tariff
        signature = rate_signature(tariff, interval.as_period()) if tariff else ()
        if (last is not None and last.charging == interval.charging and last.signature == signature
                and (tariff is None or not (
                    (self._cuts is not None and self._cuts.any_between(last.start, interval.end))
                    or _any_strictly_between(self._thresholds_wh, last.start_wh,
                                             self.energy_wh + interval.energy_wh)))):
            return None, last.plus(interval)
        return last, Run.of(interval, self.energy_wh, signature)

    def push(self, interval: Interval) -> Run | None:
        """Takes `interval` in; returns the run it closed, if any."""
        closed, self.last = self.join(interval)
        self.energy_wh += interval.energy_wh
        return closed


def periods_from_samples(samples: Sequence[MeterSample], *, tz: str,
                         tariff: Tariff | None = None) -> list[ChargingPeriod]:
    """Turn a session's meter samples into charging periods (see Runs for how they are cut).

    With `tariff` given, price_periods sees the energy where the meter put it. Without one,
    price_periods spreads a period's energy evenly over its time when it cuts it at a time-of-day
    boundary. The session starts at the first sample; samples may come in any order.
    """
    zone = site_zone(tz)
    ordered = sorted(samples, key=lambda s: s.ts)
    if len(ordered) < 2:
        return []
    with localcontext() as ctx:
        ctx.prec = PRECISION
        runs = Runs(tariff, TimeCuts(tariff, zone, ordered[0].ts) if tariff else None)
        closed = [run for run in map(runs.push, intervals_of(ordered)) if run is not None]
        return [run.as_period() for run in [*closed, *([runs.last] if runs.last else [])]]


def _least(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return b if a is None else a if b is None else min(a, b)


def _most(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return b if a is None else a if b is None else max(a, b)


def _any_strictly_between(sorted_values: Sequence[Any], low: Any, high: Any) -> bool:
    index = bisect.bisect_right(sorted_values, low)
    return index < len(sorted_values) and sorted_values[index] < high
