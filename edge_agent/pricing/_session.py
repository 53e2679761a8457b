"""A gateway session priced from its meter samples: the final price, and the price so far.

price_session gives what the session_ended event carries: the totals, a breakdown per dimension,
and the charging periods as priced. RunningCost gives the same totals for a session still
running, as if it ended with the latest reading, without pricing the whole session again: it
keeps the periods that can no longer change already billed, and prices only the open tail.
Both go through the same code (Runs, Bill), so the running cost at the moment a session ends is
the final price, to the last digit.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from ._arithmetic import PRECISION, money_json
from ._charging_period import ChargingPeriod
from ._periods import IntervalMaker, MeterSample, Runs, intervals_of, periods_from_samples
from ._pricer import Bill, Cost
from ._restrictions import TimeCuts, site_zone
from ._tariff import Price, Tariff, parse_tariff

_ZERO = Decimal(0)
_UNITS = {"energy": "Wh", "time": "s", "parking_time": "s", "flat": "session"}
_PER_UNIT = {"energy": Decimal(1000), "time": Decimal(3600), "parking_time": Decimal(3600), "flat": Decimal(1)}


def tariff_in_list(tariff_list: Mapping[str, Any] | None, tariff_id: str | None) -> dict[str, Any] | None:
    """The OCPI Tariff object with this id in a cloud tariff list ({"tariffs": [...]}), or None."""
    if tariff_list is None or tariff_id is None:
        return None
    return next((t for t in tariff_list.get("tariffs") or [] if isinstance(t, dict) and t.get("id") == tariff_id),
                None)


@dataclass(frozen=True)
class SessionPrice:
    """A priced session. cost is None for a free session (no tariff) and for one that could not
    be priced (pricing_error says why; see unpriced_session)."""

    tariff_id: str | None
    cost: Cost | None
    periods: tuple[ChargingPeriod, ...]
    """As priced: cut at every boundary a restriction of the tariff can depend on."""
    charging_s: int
    parking_s: int
    pricing_error: str | None = None
    currency: str | None = None
    """Of an unpriced session: its tariff's currency, when that much of the tariff is readable."""

    @property
    def cost_json(self) -> dict[str, Any]:
        """The session_ended `cost`: the contract's {"currency", "excl_vat", "incl_vat",
        "tariff_id"}, plus per dimension (energy, time, parking_time, flat) the quantity billed
        (after step_size; Wh, s, or 1/0 sessions) and its amount, and min_max_adjustment: what
        min_price/max_price added (or took off) after the dimensions. Amounts are JSON numbers,
        4 decimals, half up, each rounded on its own: the totals are what the session costs."""
        if self.cost is None:
            # Free: every amount 0. Unpriced: 0 too, since the contract's money is always a number
            # (a null would get the whole event rejected, the session lost to billing), with the
            # tariff that failed and pricing_error saying why: the backend prices it itself.
            amount = 0
            energy_wh = sum((p.energy_kwh for p in self.periods), _ZERO) * 1000
            quantities = {"energy": energy_wh, "time": Decimal(self.charging_s),
                          "parking_time": Decimal(self.parking_s), "flat": _ZERO}
            out: dict[str, Any] = {"currency": self.currency, "excl_vat": amount, "incl_vat": amount,
                                   "tariff_id": self.tariff_id if self.pricing_error is not None else None}
            if self.pricing_error is not None:
                out["pricing_error"] = self.pricing_error
            for name, quantity in quantities.items():
                out[name] = {"quantity": _quantity_json(quantity), "unit": _UNITS[name],
                             "excl_vat": amount, "incl_vat": amount}
            out["min_max_adjustment"] = {"excl_vat": amount, "incl_vat": amount}
            return out
        cost = self.cost
        out = {**cost.to_json(), "tariff_id": self.tariff_id}
        excl_parts = incl_parts = _ZERO
        with localcontext() as ctx:
            ctx.prec = PRECISION
            for name, line in cost.by_dimension.items():
                incl = line.amount.incl_vat if line.amount.incl_vat is not None else line.amount.excl_vat
                out[name] = {"quantity": _quantity_json(line.quantity * _PER_UNIT[name]), "unit": _UNITS[name],
                             "excl_vat": money_json(line.amount.excl_vat), "incl_vat": money_json(incl)}
                excl_parts += line.amount.excl_vat
                incl_parts += incl
            out["min_max_adjustment"] = {"excl_vat": money_json(cost.excl_vat - excl_parts),
                                         "incl_vat": money_json(cost.incl_vat - incl_parts)}
        return out

    @property
    def periods_json(self) -> list[dict[str, Any]]:
        """OCPI 2.2.1 CDR charging periods: start_date_time and dimensions (ENERGY kWh, TIME and
        PARKING_TIME hours, MIN/MAX_POWER kW, MIN/MAX_CURRENT A summed over phases)."""
        return [_period_json(p) for p in self.periods]

    @property
    def totals(self) -> Price:
        if self.cost is None:
            return Price(excl_vat=_ZERO, incl_vat=_ZERO)
        return Price(excl_vat=self.cost.excl_vat, incl_vat=self.cost.incl_vat)


def price_session(tariff_obj: Mapping[str, Any] | None, tariff_id: str | None, samples: Sequence[MeterSample], *,
                  tz: str) -> SessionPrice:
    """Price a session from its meter samples (any order; the first is the session start, the
    last its end) with an OCPI Tariff object, or free when tariff_obj is None. Raises TariffError
    for an invalid tariff, ValueError for an unknown zone or no samples."""
    if not samples:
        raise ValueError("samples: a session has at least one meter sample (its start)")
    tariff = parse_tariff(tariff_obj) if tariff_obj is not None else None
    zone = site_zone(tz)
    ordered = sorted(samples, key=lambda s: s.ts)
    with localcontext() as ctx:
        ctx.prec = PRECISION
        if tariff is None:
            periods = tuple(periods_from_samples(ordered, tz=tz))
            return SessionPrice(None, None, periods, *_seconds(periods))
        cuts = TimeCuts(tariff, zone, ordered[0].ts)
        runs = Runs(tariff, cuts)
        bill = Bill(tariff, zone, ordered[0].ts, keep_slices=True, cuts=cuts)
        for interval in intervals_of(ordered):
            closed = runs.push(interval)
            if closed is not None:
                bill.add(closed.as_period(), closed.end)
        if runs.last is not None:
            bill.add(runs.last.as_period(), runs.last.end)
        periods = tuple(s.as_period() for s in bill.slices or ()
                        if s.energy_kwh > 0 or s.charging_h > 0 or s.parking_h > 0)
        return SessionPrice(tariff_id or tariff.id, bill.cost(), periods, *_seconds(periods))


def unpriced_session(samples: Sequence[MeterSample], tariff_id: str | None, *, tz: str, error: str,
                     currency: str | None = None) -> SessionPrice:
    """A session that could not be priced (its tariff is unusable or gone): its periods, charging
    and parking time as for a free session, no cost, and the reason. Raises ValueError like
    price_session for no samples or an unknown zone."""
    free = price_session(None, None, samples, tz=tz)
    return SessionPrice(tariff_id, None, free.periods, free.charging_s, free.parking_s,
                        pricing_error=error, currency=currency)


class RunningCost:
    """The price of one running session if it ended now, kept cheap to ask for.

    Feed it the session's samples as they are stored (add); ask if_ended(latest) with the latest
    reading as a non-charging sample, exactly as the session would end. Each add() bills the
    periods it closes; if_ended() copies that bill and prices only the open tail, so a call costs
    the same after ten minutes as after ten hours. Samples out of time order (the clock stepped
    back) fall back to pricing all samples, which stays correct.
    """

    def __init__(self, tariff_obj: Mapping[str, Any] | None, tariff_id: str | None, *, tz: str,
                 samples: Iterable[MeterSample] = ()) -> None:
        self._tariff_obj = tariff_obj
        self._tariff: Tariff | None = parse_tariff(tariff_obj) if tariff_obj is not None else None
        self._tariff_id = tariff_id
        self._tz = tz
        self._zone = site_zone(tz)
        self._samples: list[MeterSample] = []
        self._in_order = True
        self._maker = IntervalMaker()
        self._runs: Runs | None = None
        self._bill: Bill | None = None
        for sample in samples:
            self.add(sample)

    @property
    def currency(self) -> str | None:
        return self._tariff.currency if self._tariff is not None else None

    @property
    def sample_count(self) -> int:
        return len(self._samples)

    @property
    def last_sample(self) -> MeterSample | None:
        """The last sample added (in the order added, as the store keeps them)."""
        return self._samples[-1] if self._samples else None

    def add(self, sample: MeterSample) -> None:
        if self._samples and sample.ts < self._samples[-1].ts:
            self._in_order = False
        self._samples.append(sample)
        if not self._in_order or self._tariff is None:
            return
        with localcontext() as ctx:
            ctx.prec = PRECISION
            if self._runs is None or self._bill is None:
                cuts = TimeCuts(self._tariff, self._zone, sample.ts)
                self._runs = Runs(self._tariff, cuts)
                self._bill = Bill(self._tariff, self._zone, sample.ts, cuts=cuts)
            interval = self._maker.feed(sample)
            if interval is not None:
                closed = self._runs.push(interval)
                if closed is not None:
                    self._bill.add(closed.as_period(), closed.end)

    def if_ended(self, latest: MeterSample) -> Price:
        """Excl and incl VAT, exact, of the session ending with `latest`."""
        if self._tariff is None:
            return Price(excl_vat=_ZERO, incl_vat=_ZERO)
        if (not self._in_order or self._runs is None or self._bill is None or self._maker.last is None
                or latest.ts <= self._maker.last.ts):
            return price_session(self._tariff_obj, self._tariff_id, [*self._samples, latest], tz=self._tz).totals
        with localcontext() as ctx:
            ctx.prec = PRECISION
            tail = self._maker.peek(latest)
            assert tail is not None  # latest is later than the last sample
            closed, run = self._runs.join(tail)
            bill = self._bill.copy()
            if closed is not None:
                bill.add(closed.as_period(), closed.end)
            bill.add(run.as_period(), run.end)
            cost = bill.cost()
        return Price(excl_vat=cost.excl_vat, incl_vat=cost.incl_vat)

    def cost_so_far(self, latest: MeterSample) -> float:
        """if_ended(latest) incl VAT as the JSON number the final cost would carry."""
        incl_vat = self.if_ended(latest).incl_vat
        assert incl_vat is not None  # a computed Price has both amounts
        return money_json(incl_vat)


def running_cost(tariff_obj: Mapping[str, Any] | None, tariff_id: str | None, samples: Sequence[MeterSample],
                 latest: MeterSample, *, tz: str) -> Price:
    """The session's price if it ended with `latest` (a reading taken now, as a non-charging
    sample): equal to price_session(..., [*samples, latest]) totals. For repeated calls during one
    session keep a RunningCost instead, which does not price the stored samples again."""
    return RunningCost(tariff_obj, tariff_id, tz=tz, samples=samples).if_ended(latest)


# -- JSON ------------------------------------------------------------------------------------

def _seconds(periods: Sequence[ChargingPeriod]) -> tuple[int, int]:
    charging = sum((p.charging_h for p in periods), _ZERO) * 3600
    parking = sum((p.parking_h for p in periods), _ZERO) * 3600
    return int(charging), int(parking)


def _quantity_json(value: Decimal) -> int | float:
    """Whole numbers as JSON integers; otherwise 3 decimals (mWh, ms)."""
    rounded = value.quantize(Decimal("0.001"), ROUND_HALF_UP)
    return int(rounded) if rounded == rounded.to_integral_value() else float(rounded)


def _rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    millis = f".{moment.microsecond // 1000:03d}" if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + millis + "Z"


def _volume(value: Decimal, places: str) -> float:
    return float(value.quantize(Decimal(places), ROUND_HALF_UP))


def _period_json(p: ChargingPeriod) -> dict[str, Any]:
    dimensions: list[dict[str, Any]] = []
    if p.charging_h > 0 or p.energy_kwh > 0:
        dimensions.append({"type": "ENERGY", "volume": _volume(p.energy_kwh, "0.000001")})
        dimensions.append({"type": "TIME", "volume": _volume(p.charging_h, "0.0000001")})
    if p.parking_h > 0:
        dimensions.append({"type": "PARKING_TIME", "volume": _volume(p.parking_h, "0.0000001")})
    for kind, value, places in (("MIN_CURRENT", p.min_current_a, "0.01"), ("MAX_CURRENT", p.max_current_a, "0.01"),
                                ("MIN_POWER", p.min_power_kw, "0.001"), ("MAX_POWER", p.max_power_kw, "0.001")):
        if value is not None:
            dimensions.append({"type": kind, "volume": _volume(value, places)})
    return {"start_date_time": _rfc3339(p.start), "dimensions": dimensions}
