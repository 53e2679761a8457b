"""Properties of the pricer over generated tariffs and sessions."""
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from itertools import pairwise

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge_agent.pricing import (
    ChargingPeriod,
    Cost,
    MeterSample,
    RunningCost,
    parse_tariff,
    periods_from_samples,
    price_periods,
    price_session,
)

settings.register_profile("pricing", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
SETTINGS = settings.get_profile("pricing")

ZONES = ["UTC", "Europe/Oslo", "America/New_York", "Australia/Lord_Howe"]
WEEKDAYS = ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"]
DIMENSIONS = ["ENERGY", "TIME", "PARKING_TIME", "FLAT"]
TINY = Decimal("1e-20")

money = st.decimals(min_value=0, max_value=5, places=3)
vats = st.one_of(st.none(), st.sampled_from([Decimal(0), Decimal("5.2"), Decimal(10), Decimal(25)]))
wall_times = st.sampled_from(["00:00", "02:30", "06:00", "08:15", "12:00", "17:00", "22:00", "23:59"])


@st.composite
def components(draw, dimensions=DIMENSIONS, steps=(1, 60, 100, 300, 500, 900)):
    return {"type": draw(st.sampled_from(dimensions)), "price": draw(money), "vat": draw(vats),
            "step_size": draw(st.sampled_from(steps))}


@st.composite
def restrictions(draw, time_based=True, kwh_based=True):
    """One or two kinds of restriction, so that elements switch on and off within sessions."""
    kinds = ["power"] + (["window", "weekday", "duration"] if time_based else []) + (["kwh"] if kwh_based else [])
    r = {}
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=2, unique=True)):
        low_or_high = draw(st.booleans())
        if kind == "window":
            r["start_time"], r["end_time"] = draw(wall_times), draw(wall_times)
            if draw(st.integers(0, 3)) == 0:
                del r["start_time" if low_or_high else "end_time"]
        elif kind == "weekday":
            r["day_of_week"] = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=4))
        elif kind == "duration":
            r["min_duration" if low_or_high else "max_duration"] = draw(st.integers(0, 6 * 3600))
        elif kind == "kwh":
            r["min_kwh" if low_or_high else "max_kwh"] = draw(st.decimals(0, 40, places=1))
        else:
            r["min_power" if low_or_high else "max_power"] = draw(st.sampled_from([3, 7, 11, 22]))
    return r


@st.composite
def tariff_objects(draw, dimensions=DIMENSIONS, steps=(1, 60, 100, 300, 500, 900), time_based=True,
                   kwh_based=True, limits=True):
    elements = []
    for _ in range(draw(st.integers(1, 4))):
        element = {"price_components": draw(st.lists(components(dimensions, steps), min_size=1, max_size=3))}
        if draw(st.integers(0, 2)):
            element["restrictions"] = draw(restrictions(time_based, kwh_based))
        elements.append(element)
    if draw(st.booleans()):  # the usual unrestricted fallback
        elements.append({"price_components": [draw(components([kind], steps)) for kind in dimensions]})
    obj = {"id": "P", "currency": "EUR", "elements": elements}
    if limits:
        low, high = sorted(draw(st.lists(st.decimals(0, 30, places=2), min_size=2, max_size=2)))
        low_incl, high_incl = sorted(draw(st.lists(st.decimals(0, 30, places=2), min_size=2, max_size=2)))
        if draw(st.booleans()):
            obj["min_price"] = {"excl_vat": low, **({"incl_vat": low_incl} if draw(st.booleans()) else {})}
        if draw(st.booleans()):
            obj["max_price"] = {"excl_vat": high, **({"incl_vat": high_incl} if draw(st.booleans()) else {})}
    return obj


starts = st.sampled_from([datetime(2024, 3, 30, 22, tzinfo=UTC), datetime(2024, 10, 26, 21, tzinfo=UTC),
                          datetime(2024, 6, 3, 7, 30, tzinfo=UTC)]).flatmap(
    lambda base: st.integers(0, 48 * 60).map(lambda minutes: base + timedelta(minutes=minutes)))


@st.composite
def sessions(draw, charging_only=False):
    """(periods, session_start, session_end) with back-to-back periods."""
    start = moment = draw(starts)
    periods = []
    for _ in range(draw(st.integers(1, 5))):
        minutes = draw(st.integers(1, 600))
        hours = Decimal(minutes) / 60
        charging = charging_only or draw(st.booleans())
        power = draw(st.one_of(st.none(), st.sampled_from([Decimal(0), Decimal(3), Decimal(11), Decimal(50)])))
        periods.append(ChargingPeriod(
            start=moment,
            energy_kwh=Decimal(draw(st.integers(0, 40_000))) / 1000 if charging else Decimal(0),
            charging_h=hours if charging else Decimal(0),
            parking_h=Decimal(0) if charging else hours,
            min_power_kw=power, max_power_kw=power))
        moment += timedelta(minutes=minutes)
    return periods, start, moment


def price(tariff_obj, session, tz) -> Cost:
    periods, start, end = session
    return price_periods(parse_tariff(tariff_obj), periods, session_start=start, session_end=end, tz=tz)


@SETTINGS
@given(tariff_objects(), sessions(), st.sampled_from(ZONES))
def test_cost_is_never_negative(tariff_obj, session, tz):
    cost = price(tariff_obj, session, tz)
    assert cost.excl_vat >= 0 and cost.incl_vat >= 0
    for line in cost.by_dimension.values():
        assert line.quantity >= 0 and line.amount.excl_vat >= 0 and line.amount.incl_vat >= 0


@SETTINGS
@given(tariff_objects(), sessions(), st.sampled_from(ZONES))
def test_cost_stays_within_min_and_max_price(tariff_obj, session, tz):
    cost = price(tariff_obj, session, tz)
    low, high = tariff_obj.get("min_price", {}), tariff_obj.get("max_price", {})
    assert cost.excl_vat >= low.get("excl_vat", 0)
    assert cost.incl_vat >= low.get("incl_vat", 0)
    assert cost.excl_vat <= high.get("excl_vat", cost.excl_vat)
    assert cost.incl_vat <= high.get("incl_vat", cost.incl_vat)


# Step rounding may bill the extra of a cheap total at an expensive last price, so cost can fall
# as energy rises in general; with step_size 1 on whole Wh there is no extra, and it must not.

@SETTINGS
@given(tariff_objects(dimensions=["ENERGY"], steps=(1,), limits=False), sessions(charging_only=True),
       st.integers(1, 600), st.integers(0, 40_000), st.sampled_from(ZONES))
def test_energy_only_cost_never_falls_when_energy_is_added_later(tariff_obj, session, minutes, wh, tz):
    periods, start, end = session
    before = price(tariff_obj, session, tz)
    later = ChargingPeriod(start=end, energy_kwh=Decimal(wh) / 1000, charging_h=Decimal(minutes) / 60)
    after = price(tariff_obj, ([*periods, later], start, end + timedelta(minutes=minutes)), tz)
    assert after.excl_vat >= before.excl_vat - TINY
    assert after.incl_vat >= before.incl_vat - TINY


@SETTINGS
@given(tariff_objects(dimensions=["ENERGY"], steps=(1,), kwh_based=False, limits=False),
       sessions(charging_only=True), st.data(), st.sampled_from(ZONES))
def test_energy_only_cost_never_falls_when_a_period_draws_more(tariff_obj, session, data, tz):
    periods, start, end = session
    index = data.draw(st.integers(0, len(periods) - 1))
    extra_kwh = Decimal(data.draw(st.integers(1, 20_000))) / 1000
    more = list(periods)
    more[index] = replace(periods[index], energy_kwh=periods[index].energy_kwh + extra_kwh)
    before, after = price(tariff_obj, session, tz), price(tariff_obj, (more, start, end), tz)
    assert after.excl_vat >= before.excl_vat - TINY
    assert after.incl_vat >= before.incl_vat - TINY


def _split(period: ChargingPeriod, end: datetime, fraction: Decimal) -> list[ChargingPeriod]:
    """Two periods with the same totals, the quantities shared in proportion to time."""
    span = end - period.start
    at = period.start + timedelta(microseconds=int(span // timedelta(microseconds=1) * fraction))
    if not period.start < at < end:
        return [period]
    with localcontext() as ctx:
        ctx.prec = 50
        share = Decimal((at - period.start) // timedelta(microseconds=1)) / Decimal(span // timedelta(microseconds=1))
        first = replace(period, energy_kwh=period.energy_kwh * share, charging_h=period.charging_h * share,
                        parking_h=period.parking_h * share)
        second = replace(period, start=at, energy_kwh=period.energy_kwh - first.energy_kwh,
                         charging_h=period.charging_h - first.charging_h,
                         parking_h=period.parking_h - first.parking_h)
    return [first, second]


@SETTINGS
@given(tariff_objects(), sessions(), st.data(), st.sampled_from(ZONES))
def test_splitting_a_period_in_two_does_not_change_the_price(tariff_obj, session, data, tz):
    periods, start, end = session
    index = data.draw(st.integers(0, len(periods) - 1))
    fraction = data.draw(st.decimals(Decimal("0.001"), Decimal("0.999"), places=3))
    period_end = periods[index + 1].start if index + 1 < len(periods) else end
    split = [*periods[:index], *_split(periods[index], period_end, fraction), *periods[index + 1:]]
    whole, parts = price(tariff_obj, session, tz), price(tariff_obj, (split, start, end), tz)
    assert abs(whole.excl_vat - parts.excl_vat) < TINY
    assert abs(whole.incl_vat - parts.incl_vat) < TINY


@st.composite
def sample_runs(draw):
    moment = draw(starts)
    register = draw(st.integers(0, 10**9))
    samples = []
    for _ in range(draw(st.integers(0, 40))):
        samples.append(MeterSample(ts=moment, energy_wh=register, power_w=None, charging=draw(st.booleans())))
        moment += timedelta(seconds=draw(st.integers(0, 1800)))
        register = max(register + draw(st.integers(-50, 5000)), 0)
    return samples


@SETTINGS
@given(sample_runs(), st.one_of(st.none(), tariff_objects()), st.sampled_from(ZONES))
def test_periods_from_samples_keep_energy_and_time(samples, tariff_obj, tz):
    tariff = parse_tariff(tariff_obj) if tariff_obj else None
    periods = periods_from_samples(samples, tz=tz, tariff=tariff)
    rises = sum(max(b.energy_wh - a.energy_wh, 0) for a, b in pairwise(samples))
    elapsed_h = Decimal(((samples[-1].ts - samples[0].ts) if samples else timedelta(0)).total_seconds()) / 3600
    if rises and any(b.ts > a.ts for a, b in pairwise(samples)):
        assert sum(p.energy_kwh for p in periods) * 1000 == rises
    assert abs(sum(p.charging_h + p.parking_h for p in periods) - elapsed_h) < TINY
    assert all(a.start < b.start for a, b in pairwise(periods))
    assert all((p.charging_h == 0) or (p.parking_h == 0) for p in periods)
    if tariff is not None and periods:
        cost = price_periods(tariff, periods, session_start=samples[0].ts, session_end=samples[-1].ts, tz=tz)
        assert cost.excl_vat >= 0


# -- sessions from meter samples: price_session and RunningCost ------------------------------

@st.composite
def meter_sessions(draw, with_parking=True):
    """Samples of one session the way the agent stores them: whole Wh, whole seconds, a start
    sample, constant power between samples, maybe a parked stretch."""
    moment = draw(starts)
    register = draw(st.integers(0, 10**7))
    samples = [MeterSample(ts=moment, energy_wh=register, power_w=None, charging=False)]
    for _ in range(draw(st.integers(1, 25))):
        seconds = draw(st.integers(1, 3600))
        kw = draw(st.sampled_from([0, 0, 3, 7, 11, 22])) if with_parking else draw(st.sampled_from([3, 7, 11, 22]))
        moment += timedelta(seconds=seconds)
        register += kw * seconds * 1000 // 3600
        samples.append(MeterSample(ts=moment, energy_wh=register, power_w=kw * 1000, charging=kw > 0))
    return samples


@SETTINGS
@given(tariff_objects(), meter_sessions(), st.sampled_from(ZONES))
def test_session_cost_never_negative_and_within_min_and_max(tariff_obj, samples, tz):
    priced = price_session(tariff_obj, "P", samples, tz=tz)
    cost = priced.cost
    low, high = tariff_obj.get("min_price", {}), tariff_obj.get("max_price", {})
    assert cost.excl_vat >= max(low.get("excl_vat", 0), 0) and cost.incl_vat >= max(low.get("incl_vat", 0), 0)
    assert cost.excl_vat <= high.get("excl_vat", cost.excl_vat)
    assert cost.incl_vat <= high.get("incl_vat", cost.incl_vat)
    assert all(line[k] >= 0 for name, line in priced.cost_json.items()
               if name in ("energy", "time", "parking_time", "flat") for k in ("quantity", "excl_vat", "incl_vat"))


@SETTINGS
@given(tariff_objects(), meter_sessions(), st.data(), st.sampled_from(ZONES))
def test_running_cost_equals_the_final_price_when_the_session_ends_then(tariff_obj, samples, data, tz):
    stored = data.draw(st.integers(1, len(samples) - 1))
    end = samples[stored]
    ended_now = MeterSample(ts=end.ts, energy_wh=end.energy_wh, power_w=None, charging=False)
    meter = RunningCost(tariff_obj, "P", tz=tz, samples=samples[:stored])
    final = price_session(tariff_obj, "P", [*samples[:stored], ended_now], tz=tz)
    assert meter.if_ended(ended_now) == final.totals
    assert meter.cost_so_far(ended_now) == final.cost_json["incl_vat"]


@SETTINGS
@given(tariff_objects(), meter_sessions(), st.data(), st.sampled_from(ZONES))
def test_a_sample_where_nothing_changes_does_not_change_the_price(tariff_obj, samples, data, tz):
    """A meter read in the middle of a stretch of constant power adds a charging-period boundary
    where no restriction changes; the price must not move."""
    index = data.draw(st.integers(0, len(samples) - 2))
    a, b = samples[index], samples[index + 1]
    span_us = (b.ts - a.ts) // timedelta(microseconds=1)
    rise = b.energy_wh - a.energy_wh
    assume(span_us % 2 == 0 and rise % 2 == 0)  # the midpoint must be a whole Wh at a whole microsecond
    middle = MeterSample(ts=a.ts + timedelta(microseconds=span_us // 2), energy_wh=a.energy_wh + rise // 2,
                         power_w=a.power_w, charging=a.charging or rise > 0)
    whole = price_session(tariff_obj, "P", samples, tz=tz).totals
    more = price_session(tariff_obj, "P", [*samples[:index + 1], middle, *samples[index + 1:]], tz=tz).totals
    assert abs(whole.excl_vat - more.excl_vat) < TINY
    assert abs(whole.incl_vat - more.incl_vat) < TINY
