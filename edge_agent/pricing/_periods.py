"""Meter samples of one session -> OCPI-style charging periods."""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal, localcontext
from itertools import pairwise
from typing import Any

from ._pricer import PRECISION, ChargingPeriod, as_utc, kwh_thresholds, rate_signature, site_zone, time_cuts
from ._tariff import Tariff, decimal_from_json

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


@dataclass(frozen=True)
class _Interval:
    start: datetime
    end: datetime
    charging: bool
    energy_wh: int
    currents: tuple[Decimal, ...]

    def as_period(self) -> ChargingPeriod:
        return _period(self.start, self.end, self.charging, self.energy_wh, [self])


def periods_from_samples(samples: Sequence[MeterSample], *, tz: str,
                         tariff: Tariff | None = None) -> list[ChargingPeriod]:
    """Turn a session's meter samples into charging periods.

    Each pair of consecutive samples is an interval: charging if the energy register rose in it or
    the earlier sample says charging, parking otherwise. Its energy is the register difference (a
    decrease counts 0); its power is energy / time, its current the samples' currents if known.

    Adjacent intervals of the same kind are merged into one period. With `tariff` given, they are
    not merged across anything that could change which tariff element applies: a local-time
    boundary, a session-duration or kWh threshold of the tariff, or a change in which current/power
    restrictions hold. price_periods then sees the energy where the meter put it. Without a tariff
    all same-kind neighbours merge, and price_periods spreads a period's energy evenly over its
    time when it cuts it at a time-of-day boundary. The session starts at the first sample; samples
    may come in any order.
    """
    zone = site_zone(tz)
    ordered = sorted(samples, key=lambda s: s.ts)
    if len(ordered) < 2:
        return []
    with localcontext() as ctx:
        ctx.prec = PRECISION
        intervals = _intervals(ordered)
        runs = _merge(intervals, tariff, zone, ordered[0].ts) if tariff else _merge_same_kind(intervals)
        return [_period(run[0].start, run[-1].end, run[0].charging, sum(i.energy_wh for i in run), run)
                for run in runs]


def _intervals(ordered: list[MeterSample]) -> list[_Interval]:
    intervals: list[_Interval] = []
    carried_wh, carried_charging = 0, False  # energy seen between samples with the same timestamp
    for earlier, later in pairwise(ordered):
        energy = max(later.energy_wh - earlier.energy_wh, 0) + carried_wh
        charging = energy > 0 or earlier.charging or carried_charging
        if later.ts == earlier.ts:
            carried_wh, carried_charging = energy, charging
            continue
        carried_wh, carried_charging = 0, False
        currents = tuple(s.current_a for s in (earlier, later) if s.current_a is not None)
        intervals.append(_Interval(earlier.ts, later.ts, charging, energy, currents))
    if carried_wh and intervals:
        last = intervals[-1]
        intervals[-1] = _Interval(last.start, last.end, True, last.energy_wh + carried_wh, last.currents)
    return intervals


def _merge_same_kind(intervals: list[_Interval]) -> list[list[_Interval]]:
    runs: list[list[_Interval]] = []
    for interval in intervals:
        if runs and runs[-1][-1].charging == interval.charging:
            runs[-1].append(interval)
        else:
            runs.append([interval])
    return runs


def _merge(intervals: list[_Interval], tariff: Tariff, zone: tzinfo,
           session_start: datetime) -> list[list[_Interval]]:
    cuts = time_cuts(tariff, zone, intervals[0].start, intervals[-1].end, session_start)
    thresholds_wh = [k * 1000 for k in kwh_thresholds(tariff)]
    runs: list[list[_Interval]] = []
    run_start_wh = energy_wh = 0
    signature: tuple[bool, ...] = ()
    for interval in intervals:
        interval_signature = rate_signature(tariff, interval.as_period())
        end_wh = energy_wh + interval.energy_wh
        if (runs and runs[-1][-1].charging == interval.charging and interval_signature == signature
                and not _any_strictly_between(cuts, runs[-1][0].start, interval.end)
                and not _any_strictly_between(thresholds_wh, run_start_wh, end_wh)):
            runs[-1].append(interval)
        else:
            runs.append([interval])
            run_start_wh, signature = energy_wh, interval_signature
        energy_wh = end_wh
    return runs


def _any_strictly_between(sorted_values: Sequence[Any], low: Any, high: Any) -> bool:
    index = bisect.bisect_right(sorted_values, low)
    return index < len(sorted_values) and sorted_values[index] < high


def _period(start: datetime, end: datetime, charging: bool, energy_wh: int,
            intervals: Sequence[_Interval]) -> ChargingPeriod:
    hours = Decimal((end - start) // _ONE_MICROSECOND) / 3_600_000_000
    powers = [_power_kw(i) for i in intervals]
    currents = [c for i in intervals for c in i.currents]
    return ChargingPeriod(
        start=start,
        energy_kwh=Decimal(energy_wh) / 1000,
        charging_h=hours if charging else Decimal(0),
        parking_h=Decimal(0) if charging else hours,
        min_current_a=min(currents, default=None),
        max_current_a=max(currents, default=None),
        min_power_kw=min(powers),
        max_power_kw=max(powers),
    )


def _power_kw(interval: _Interval) -> Decimal:
    seconds = Decimal((interval.end - interval.start) // _ONE_MICROSECOND) / 1_000_000
    return Decimal(interval.energy_wh) * Decimal("3.6") / seconds
