"""Sessions priced from meter samples: price_session (the session_ended cost, its breakdown and
charging periods), RunningCost (cost_so_far), DST in Europe/Oslo, and the `edge-agent price` CLI."""
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edge_agent.pricing import MeterSample, RunningCost, money_json, price_session, running_cost, tariff_in_list
from helpers import edge_agent

VECTORS = json.loads((Path(__file__).parent / "data/tariff-vectors.json").read_text(encoding="utf-8"))
OSLO = "Europe/Oslo"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- every shared vector through the real entry point ----------------------------------------

@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"].split()[0] for v in VECTORS])
def test_vector_through_edge_agent_price(vector, tmp_path):
    (tmp_path / "tariff.json").write_text(json.dumps(vector["tariff"]), encoding="utf-8")
    (tmp_path / "cdr.json").write_text(json.dumps(vector["cdr"]), encoding="utf-8")
    out = edge_agent("price", "--tariff", str(tmp_path / "tariff.json"), "--cdr", str(tmp_path / "cdr.json"),
                     "--tz", vector["tz"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"currency": vector["tariff"]["currency"],
                                      "excl_vat": vector["expected"]["excl_vat"],
                                      "incl_vat": vector["expected"]["incl_vat"]}


def test_edge_agent_price_names_the_bad_field(tmp_path):
    bad = dict(VECTORS[0]["tariff"], elements=[{"price_components": [{"type": "ENERGY", "price": -1,
                                                                      "step_size": 1}]}])
    (tmp_path / "tariff.json").write_text(json.dumps(bad), encoding="utf-8")
    (tmp_path / "cdr.json").write_text(json.dumps(VECTORS[0]["cdr"]), encoding="utf-8")
    out = edge_agent("price", "--tariff", str(tmp_path / "tariff.json"), "--cdr", str(tmp_path / "cdr.json"))
    assert out.returncode == 1
    assert "elements[0].price_components[0].price: must be a number from 0 to 1,000,000" in out.stderr


# -- sessions across the 2026 DST changes in Oslo ---------------------------------------------

def component(kind: str, price: float, step: int = 1) -> dict:
    return {"type": kind, "price": price, "vat": 25.0, "step_size": step}


NIGHT_CHEAP = {"id": "T-NIGHT", "currency": "NOK", "elements": [
    {"price_components": [component("ENERGY", 1.0)], "restrictions": {"start_time": "00:00", "end_time": "02:30"}},
    {"price_components": [component("ENERGY", 3.0), component("TIME", 1.0, 60), component("PARKING_TIME", 6.0, 900),
                          component("FLAT", 0.5)]}]}


def charging_samples(start: datetime, end: datetime, *, every_min: int = 15, wh_per_step: int = 2750,
                     parked_until: datetime | None = None) -> list[MeterSample]:
    """The site's way: a start sample (not yet charging), one per interval while charging at
    constant power (11 kW with the defaults), then parked samples; the last one is the end."""
    samples = [MeterSample(ts=start, energy_wh=1_000_000, power_w=None, charging=False)]
    moment, energy = start, 1_000_000
    while moment < end:
        moment, energy = moment + timedelta(minutes=every_min), energy + wh_per_step
        samples.append(MeterSample(ts=moment, energy_wh=energy, power_w=11_000, charging=moment < end))
    while parked_until is not None and moment < parked_until:
        moment += timedelta(minutes=every_min)
        samples.append(MeterSample(ts=moment, energy_wh=energy, power_w=0, charging=False))
    return samples


def test_spring_forward_2026_oslo():
    # 29 March 2026: 02:00 CET -> 03:00 CEST at 01:00Z. Charging 23:30Z-02:30Z (00:30-04:30 on the
    # wall, 3 real hours) at 11 kW, then parked until 03:00Z. The night rate (00:00-02:30 local)
    # lasts 1.5 real hours: 02:30 never happens that night, the rate ends when the clock jumps.
    samples = charging_samples(utc("2026-03-28T23:30"), utc("2026-03-29T02:30"),
                               parked_until=utc("2026-03-29T03:00"))
    priced = price_session(NIGHT_CHEAP, "T-NIGHT", samples, tz=OSLO)
    # 16.5 kWh x 1.00 + 16.5 kWh x 3.00, 3 h x 1.00 (not rounded: parking follows), 0.5 h parked
    # x 6.00 (a whole number of 15-min steps), start fee 0.50; 25 % VAT on all.
    assert priced.cost_json == {
        "currency": "NOK", "excl_vat": 72.5, "incl_vat": 90.625, "tariff_id": "T-NIGHT",
        "energy": {"quantity": 33000, "unit": "Wh", "excl_vat": 66.0, "incl_vat": 82.5},
        "time": {"quantity": 10800, "unit": "s", "excl_vat": 3.0, "incl_vat": 3.75},
        "parking_time": {"quantity": 1800, "unit": "s", "excl_vat": 3.0, "incl_vat": 3.75},
        "flat": {"quantity": 1, "unit": "session", "excl_vat": 0.5, "incl_vat": 0.625},
        "min_max_adjustment": {"excl_vat": 0.0, "incl_vat": 0.0}}
    assert (priced.charging_s, priced.parking_s) == (10800, 1800)
    starts = [p["start_date_time"] for p in priced.periods_json]
    assert "2026-03-29T01:00:00Z" in starts  # the cut where the night rate ends
    assert "2026-03-29T02:30:00Z" in starts  # charging -> parked


def test_fall_back_2026_oslo():
    # 25 October 2026: 03:00 CEST -> 02:00 CET at 01:00Z. Charging 22:30Z-03:30Z (00:30 CEST to
    # 04:30 CET, 5 real hours) at 11 kW. The peak rate 01:00-02:30 holds 23:00Z-00:30Z (CEST),
    # then again from the clock going back to 02:00 at 01:00Z until 02:30 CET (01:30Z): 2 hours.
    peak = {"id": "T-PEAK", "currency": "NOK", "elements": [
        {"price_components": [component("ENERGY", 3.0)], "restrictions": {"start_time": "01:00", "end_time": "02:30"}},
        {"price_components": [component("ENERGY", 1.0)]}]}
    samples = charging_samples(utc("2026-10-24T22:30"), utc("2026-10-25T03:30"))
    priced = price_session(peak, "T-PEAK", samples, tz=OSLO)
    assert priced.cost_json["excl_vat"] == 99.0  # 22 kWh x 3.00 + 33 kWh x 1.00
    assert priced.cost_json["incl_vat"] == 123.75
    assert priced.charging_s == 5 * 3600
    starts = [p["start_date_time"] for p in priced.periods_json]
    assert {"2026-10-24T23:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z"} <= set(starts)


# -- the cost breakdown and the charging periods ---------------------------------------------

def test_min_price_shows_as_an_adjustment_after_the_dimensions():
    with_min = dict(NIGHT_CHEAP, min_price={"excl_vat": 100, "incl_vat": 120})
    samples = charging_samples(utc("2026-03-28T23:30"), utc("2026-03-29T02:30"),
                               parked_until=utc("2026-03-29T03:00"))
    cost = price_session(with_min, "T-NIGHT", samples, tz=OSLO).cost_json
    assert (cost["excl_vat"], cost["incl_vat"]) == (100.0, 120.0)
    assert cost["min_max_adjustment"] == {"excl_vat": 27.5, "incl_vat": 29.375}
    parts = sum(cost[d]["incl_vat"] for d in ("energy", "time", "parking_time", "flat"))
    assert parts + cost["min_max_adjustment"]["incl_vat"] == pytest.approx(cost["incl_vat"])


def test_free_session_keeps_the_contract_shape_with_quantities():
    samples = charging_samples(utc("2026-05-04T10:00"), utc("2026-05-04T11:00"), parked_until=utc("2026-05-04T11:30"))
    priced = price_session(None, None, samples, tz=OSLO)
    cost = priced.cost_json
    assert {k: cost[k] for k in ("currency", "excl_vat", "incl_vat", "tariff_id")} == {
        "currency": None, "excl_vat": 0, "incl_vat": 0, "tariff_id": None}
    assert cost["energy"] == {"quantity": 11000, "unit": "Wh", "excl_vat": 0, "incl_vat": 0}
    assert (priced.charging_s, priced.parking_s) == (3600, 1800)
    assert [p["start_date_time"] for p in priced.periods_json] == ["2026-05-04T10:00:00Z", "2026-05-04T11:00:00Z"]


def test_periods_are_an_ocpi_cdr_that_edge_agent_price_prices_the_same(tmp_path):
    tiered = {"id": "T-TIER", "currency": "NOK", "elements": [
        {"price_components": [component("ENERGY", 2.0)], "restrictions": {"max_kwh": 10}},
        {"price_components": [component("ENERGY", 4.0)], "restrictions": {"min_power": 7}},
        {"price_components": [component("ENERGY", 1.0), component("PARKING_TIME", 12.0, 300)]}]}
    fast = charging_samples(utc("2026-03-28T23:30"), utc("2026-03-29T01:30"), parked_until=utc("2026-03-29T02:00"))
    slow = [MeterSample(ts=fast[-1].ts + timedelta(minutes=15 * i), energy_wh=fast[-1].energy_wh + 750 * i,
                        power_w=3000, charging=True) for i in range(1, 5)]
    priced = price_session(tiered, "T-TIER", [*fast, *slow], tz=OSLO)
    cdr = {"start_date_time": "2026-03-28T23:30:00Z", "end_date_time": "2026-03-29T03:00:00Z",
           "charging_periods": priced.periods_json}
    (tmp_path / "tariff.json").write_text(json.dumps(tiered), encoding="utf-8")
    (tmp_path / "cdr.json").write_text(json.dumps(cdr), encoding="utf-8")
    out = edge_agent("price", "--tariff", str(tmp_path / "tariff.json"), "--cdr", str(tmp_path / "cdr.json"),
                     "--tz", OSLO)
    assert out.returncode == 0, out.stderr
    # 10 kWh x 2 + 12 kWh x 4 (11 kW) + 3 kWh x 1 (3 kW), 30 min parked x 12/h
    assert json.loads(out.stdout) == {"currency": "NOK", "excl_vat": 77.0, "incl_vat": 96.25}
    assert (priced.cost_json["excl_vat"], priced.cost_json["incl_vat"]) == (77.0, 96.25)
    kinds = [[d["type"] for d in p["dimensions"]] for p in priced.periods_json]
    assert ["PARKING_TIME", "MIN_POWER", "MAX_POWER"] in kinds
    assert ["ENERGY", "TIME", "MIN_POWER", "MAX_POWER"] in kinds


def test_phase_currents_from_the_store_are_summed_for_current_restrictions():
    by_current = {"id": "T-AMPS", "currency": "EUR", "elements": [
        {"price_components": [component("ENERGY", 0.5)], "restrictions": {"min_current": 32}},
        {"price_components": [component("ENERGY", 0.2)]}]}
    rows = [{"ts": "2026-05-04T10:00:00Z", "energy_wh": 0, "power_w": 0, "current_a": [16, 16, 16], "charging": True},
            {"ts": "2026-05-04T11:00:00Z", "energy_wh": 11000, "power_w": 11000, "current_a": [16, 16, 16],
             "charging": True},
            {"ts": "2026-05-04T12:00:00Z", "energy_wh": 18000, "power_w": 7000, "current_a": [10, 10, None],
             "charging": False}]
    samples = [MeterSample.from_json(r) for r in rows]
    assert [s.current_a for s in samples] == [48, 48, 20]
    cost = price_session(by_current, "T-AMPS", samples, tz=OSLO).cost_json
    assert cost["excl_vat"] == 11 * 0.5 + 7 * 0.2  # 48 A >= 32 A, then 20 A (the hour's min) < 32 A
    with pytest.raises(ValueError, match=r"^sample\.ts"):
        MeterSample.from_json({"ts": "yesterday", "energy_wh": 1, "charging": False})


def test_tariff_in_list():
    listed = {"version": 3, "tariffs": [{"id": "A"}, {"id": "B", "currency": "NOK"}]}
    assert tariff_in_list(listed, "B") == {"id": "B", "currency": "NOK"}
    assert tariff_in_list(listed, "C") is None
    assert tariff_in_list(None, "B") is None and tariff_in_list(listed, None) is None


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="samples"):
        price_session(NIGHT_CHEAP, "T-NIGHT", [], tz=OSLO)


# -- the running cost --------------------------------------------------------------------------

TARIFFS = [NIGHT_CHEAP,
           {"id": "T-TIER", "currency": "NOK", "min_price": {"excl_vat": 5}, "max_price": {"excl_vat": 60},
            "elements": [{"price_components": [component("ENERGY", 2.0, 100)], "restrictions": {"max_kwh": 10}},
                         {"price_components": [component("ENERGY", 4.0)], "restrictions": {"min_power": 7}},
                         {"price_components": [component("ENERGY", 1.0), component("PARKING_TIME", 12.0, 300)],
                          "restrictions": {"min_duration": 5400}},
                         {"price_components": [component("TIME", 0.6, 600)]}]}]


def a_session() -> list[MeterSample]:
    """Charging across the Oslo spring-forward, parked, then charging slowly again."""
    fast = charging_samples(utc("2026-03-28T23:30"), utc("2026-03-29T01:30"), every_min=5, wh_per_step=917,
                            parked_until=utc("2026-03-29T02:00"))
    slow = [MeterSample(ts=fast[-1].ts + timedelta(minutes=5 * i, seconds=i), energy_wh=fast[-1].energy_wh + 250 * i,
                        power_w=3000, charging=True) for i in range(1, 13)]
    return [*fast, *slow]


@pytest.mark.parametrize("tariff", TARIFFS, ids=lambda t: t["id"])
def test_running_cost_at_every_sample_is_the_final_price_had_it_ended_there(tariff):
    samples = a_session()
    meter = RunningCost(tariff, tariff["id"], tz=OSLO)
    for index, sample in enumerate(samples):
        ended_here = MeterSample(ts=sample.ts + timedelta(seconds=17), energy_wh=sample.energy_wh + 40,
                                 power_w=None, charging=False)
        final = price_session(tariff, tariff["id"], [*samples[:index], ended_here], tz=OSLO)
        assert meter.if_ended(ended_here) == final.totals, index
        assert meter.cost_so_far(ended_here) == final.cost_json["incl_vat"]
        assert running_cost(tariff, tariff["id"], samples[:index], ended_here, tz=OSLO) == final.totals
        meter.add(sample)
    assert meter.sample_count == len(samples) and meter.last_sample == samples[-1]


def test_running_cost_stays_right_when_the_clock_steps_back_or_stands_still():
    tariff = TARIFFS[1]
    samples = a_session()
    stepped_back = [*samples[:20], samples[25], *samples[20:25]]  # the clock stepped, then caught up
    meter = RunningCost(tariff, "T-TIER", tz=OSLO, samples=stepped_back)
    end = MeterSample(ts=samples[25].ts + timedelta(minutes=1), energy_wh=samples[25].energy_wh, power_w=None,
                      charging=False)
    assert meter.if_ended(end) == price_session(tariff, "T-TIER", [*stepped_back, end], tz=OSLO).totals
    same_time = MeterSample(ts=samples[9].ts, energy_wh=samples[9].energy_wh + 5, power_w=None, charging=False)
    meter = RunningCost(tariff, "T-TIER", tz=OSLO, samples=samples[:10])
    assert meter.if_ended(same_time) == price_session(tariff, "T-TIER", [*samples[:10], same_time], tz=OSLO).totals


def test_running_cost_of_a_free_session_is_zero():
    meter = RunningCost(None, None, tz=OSLO, samples=a_session())
    assert meter.currency is None
    assert meter.cost_so_far(MeterSample(ts=utc("2026-03-29T05:00"), energy_wh=2_000_000, power_w=None,
                                         charging=False)) == 0


def test_a_running_cost_call_does_not_grow_with_the_session():
    """A Pi asks every few seconds: a call must not price the whole session again."""
    tariff = TARIFFS[1]

    def per_call(hours: int) -> float:
        start = utc("2026-03-27T12:00")
        samples = [MeterSample(ts=start + timedelta(minutes=i), energy_wh=180 * i, power_w=11000, charging=True)
                   for i in range(hours * 60)]
        meter = RunningCost(tariff, "T-TIER", tz=OSLO, samples=samples)
        latest = MeterSample(ts=samples[-1].ts + timedelta(seconds=30), energy_wh=samples[-1].energy_wh + 90,
                             power_w=None, charging=False)
        timings = []
        for _ in range(30):
            began = time.perf_counter()
            meter.if_ended(latest)
            timings.append(time.perf_counter() - began)
        return statistics.median(timings)

    short, long = per_call(1), per_call(24)
    assert long < 0.005, f"{long * 1000:.2f} ms per call for a 24 h session"
    assert long < 5 * short + 0.001, (short, long)


def test_money_json_is_four_decimals_half_up():
    assert money_json(Decimal("1.00005")) == 1.0001
    assert money_json(Decimal("2.123449")) == 2.1234
