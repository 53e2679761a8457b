"""The OCPI 2.2.1 pricer: the shared vectors, every restriction, DST, limits, and meter samples."""
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

import edge_agent.pricing as pricing
from edge_agent.pricing import (
    ChargingPeriod,
    Cost,
    MeterSample,
    TariffError,
    parse_tariff,
    periods_from_samples,
    price_cdr,
    price_periods,
)

# A copy of the contract's vectors travels with the tests; where the contract sits beside the
# checkout (../shared, as in CI), the copy must still equal it.
VECTORS_FILE = Path(__file__).parent / "data/tariff-vectors.json"
CONTRACT_VECTORS = Path(__file__).resolve().parents[1].parent / "shared/contract/tariff-vectors.json"
VECTORS = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))

if CONTRACT_VECTORS.exists():
    def test_vendored_vectors_equal_the_contract():
        assert json.loads(CONTRACT_VECTORS.read_text(encoding="utf-8")) == VECTORS
FOUR_DECIMALS = Decimal("0.0001")


def d(text: str) -> Decimal:
    return Decimal(text)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def component(kind: str, price: float, *, vat: float | None = None, step: int = 1) -> dict:
    c = {"type": kind, "price": price, "step_size": step}
    if vat is not None:
        c["vat"] = vat
    return c


def tariff(*elements: dict, **extra) -> pricing.Tariff:
    return parse_tariff({"id": "T", "currency": "EUR", "elements": list(elements), **extra})


def element(*components: dict, **restrictions) -> dict:
    e = {"price_components": list(components)}
    if restrictions:
        e["restrictions"] = restrictions
    return e


def excl(cost: Cost) -> Decimal:
    return cost.excl_vat.quantize(FOUR_DECIMALS)


def incl(cost: Cost) -> Decimal:
    return cost.incl_vat.quantize(FOUR_DECIMALS)


# -- shared vectors ---------------------------------------------------------------------------

def test_vectors_file_has_cases():
    assert len(VECTORS) >= 12


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"].split()[0] for v in VECTORS])
def test_vector(vector):
    cost = price_cdr(vector["tariff"], vector["cdr"], tz=vector["tz"])
    assert cost.currency == vector["tariff"]["currency"]
    assert excl(cost) == Decimal(str(vector["expected"]["excl_vat"]))
    assert incl(cost) == Decimal(str(vector["expected"]["incl_vat"]))
    assert cost.to_json() == {"currency": vector["tariff"]["currency"],
                              "excl_vat": vector["expected"]["excl_vat"],
                              "incl_vat": vector["expected"]["incl_vat"]}


def test_public_surface_is_exactly_all():
    public = sorted(n for n in vars(pricing) if not n.startswith("_") and n != "annotations")
    assert pricing.__all__ == sorted(pricing.__all__)
    assert public == pricing.__all__


# -- time of day ------------------------------------------------------------------------------

NIGHT_ENERGY = tariff(element(component("ENERGY", 0.10), start_time="22:00", end_time="06:00"),
                      element(component("ENERGY", 0.30)))


@pytest.mark.parametrize(("start", "end"), [("2024-05-06T21:00", "2024-05-06T23:00"),
                                            ("2024-05-07T05:00", "2024-05-07T07:00")])
def test_window_wrapping_midnight(start, end):
    period = ChargingPeriod(start=utc(start), energy_kwh=d("10"), charging_h=d("2"))
    cost = price_periods(NIGHT_ENERGY, [period], session_start=utc(start), session_end=utc(end), tz="UTC")
    assert excl(cost) == d("2.0000")  # 5 kWh at 0.30 + 5 kWh at 0.10


def test_window_ending_00_00_runs_to_end_of_day():
    late = tariff(element(component("PARKING_TIME", 6), start_time="22:00", end_time="00:00"),
                  element(component("PARKING_TIME", 1)))
    period = ChargingPeriod(start=utc("2024-05-06T23:00"), parking_h=d("2"))
    cost = price_periods(late, [period], session_start=period.start, session_end=utc("2024-05-07T01:00"),
                         tz="UTC")
    assert excl(cost) == d("7.0000")  # 23:00-00:00 at 6, 00:00-01:00 at 1


def test_window_00_00_to_00_00_is_all_day():
    all_day = tariff(element(component("TIME", 5), start_time="00:00", end_time="00:00"),
                     element(component("TIME", 1)))
    period = ChargingPeriod(start=utc("2024-05-06T20:00"), charging_h=d("10"))
    cost = price_periods(all_day, [period], session_start=period.start, session_end=utc("2024-05-07T06:00"),
                         tz="UTC")
    assert excl(cost) == d("50.0000")


def test_parking_straddling_window_end_is_split():
    office = tariff(element(component("PARKING_TIME", 4), start_time="09:00", end_time="17:00"),
                    element(component("PARKING_TIME", 1)))
    period = ChargingPeriod(start=utc("2024-05-06T14:30"), parking_h=d("1"))  # 16:30 Berlin (CEST)
    cost = price_periods(office, [period], session_start=period.start, session_end=utc("2024-05-06T15:30"),
                         tz="Europe/Berlin")
    assert excl(cost) == d("2.5000")


def test_day_of_week_and_dates_use_local_calendar():
    weekend = tariff(element(component("TIME", 3), day_of_week=["SATURDAY", "SUNDAY"],
                             start_date="2024-01-01", end_date="2024-06-02"),
                     element(component("TIME", 1)))
    # Friday 23:00Z = Saturday 01:00 in Oslo (CEST): all weekend rate
    start = utc("2024-05-31T23:00")
    period = ChargingPeriod(start=start, charging_h=d("2"))
    cost = price_periods(weekend, [period], session_start=start, session_end=start + timedelta(hours=2),
                         tz="Europe/Oslo")
    assert excl(cost) == d("6.0000")
    # Saturday 22:00Z .. Sunday 00:00Z = Sunday 00:00-02:00 local, past end_date (exclusive)
    start = utc("2024-06-01T22:00")
    cost = price_periods(weekend, [ChargingPeriod(start=start, charging_h=d("2"))], session_start=start,
                         session_end=start + timedelta(hours=2), tz="Europe/Oslo")
    assert excl(cost) == d("2.0000")


# -- energy and duration ----------------------------------------------------------------------

def test_kwh_threshold_inside_a_period_splits_by_energy():
    tiered = tariff(element(component("ENERGY", 0.50), max_kwh=10),
                    element(component("ENERGY", 0.20)),
                    element(component("TIME", 2), min_kwh=10))
    start = utc("2024-05-06T10:00")
    period = ChargingPeriod(start=start, energy_kwh=d("20"), charging_h=d("2"))
    cost = price_periods(tiered, [period], session_start=start, session_end=start + timedelta(hours=2), tz="UTC")
    assert cost.by_dimension["energy"].amount.excl_vat == d("7.0")  # 10 x 0.50 + 10 x 0.20
    assert cost.by_dimension["time"].amount.excl_vat.quantize(FOUR_DECIMALS) == d("2.0000")  # last hour only
    assert excl(cost) == d("9.0000")


def test_kwh_so_far_counts_earlier_periods():
    tiered = tariff(element(component("ENERGY", 0.50), max_kwh=10), element(component("ENERGY", 0.20)))
    start = utc("2024-05-06T10:00")
    periods = [ChargingPeriod(start=start, energy_kwh=d("8"), charging_h=d("1")),
               ChargingPeriod(start=start + timedelta(hours=1), parking_h=d("1")),
               ChargingPeriod(start=start + timedelta(hours=2), energy_kwh=d("6"), charging_h=d("1"))]
    cost = price_periods(tiered, periods, session_start=start, session_end=start + timedelta(hours=3), tz="UTC")
    assert excl(cost) == d("5.8000")  # 10 x 0.50 + 4 x 0.20


def test_first_hour_of_parking_free_by_session_duration():
    grace = tariff(element(component("PARKING_TIME", 0), max_duration=3600),
                   element(component("PARKING_TIME", 3, step=900)))
    start = utc("2024-05-06T10:00")
    periods = [ChargingPeriod(start=start, energy_kwh=d("5"), charging_h=d("0.5")),
               ChargingPeriod(start=start + timedelta(minutes=30), parking_h=d("1.25"))]
    cost = price_periods(grace, periods, session_start=start,
                         session_end=start + timedelta(minutes=105), tz="UTC")
    # parking 10:30-11:45; free until 11:00, then 45 min at 3/h; total 75 min is a whole 15-min step
    assert excl(cost) == d("2.2500")


def test_current_and_power_restrictions_read_the_period_rates():
    fast = tariff(element(component("ENERGY", 0.60), min_power=22),
                  element(component("ENERGY", 0.40), max_current=16),
                  element(component("ENERGY", 0.50)))
    start = utc("2024-05-06T10:00")

    def cost_at(**rates):
        period = ChargingPeriod(start=start, energy_kwh=d("10"), charging_h=d("1"), **rates)
        return excl(price_periods(fast, [period], session_start=start, session_end=start + timedelta(hours=1),
                                  tz="UTC"))

    assert cost_at(min_power_kw=d("50"), max_power_kw=d("50")) == d("6.0000")
    assert cost_at(min_power_kw=d("11"), max_power_kw=d("11"), max_current_a=d("15.9")) == d("4.0000")
    assert cost_at(min_power_kw=d("11"), max_power_kw=d("11"), max_current_a=d("16")) == d("5.0000")
    assert cost_at(min_power_kw=d("22"), max_power_kw=d("30")) == d("6.0000")  # min_* is inclusive
    assert cost_at(min_power_kw=d("21.9"), max_power_kw=d("22"), max_current_a=d("20")) == d("5.0000")
    assert cost_at(min_power_kw=d("21.9"), max_power_kw=d("22")) == d("4.0000")  # unknown current: holds


def test_reservation_elements_never_price_a_charging_session():
    reserved = tariff(element(component("TIME", 9), reservation="RESERVATION"), element(component("TIME", 1)))
    start = utc("2024-05-06T10:00")
    cost = price_periods(reserved, [ChargingPeriod(start=start, charging_h=d("1"))], session_start=start,
                         session_end=start + timedelta(hours=1), tz="UTC")
    assert excl(cost) == d("1.0000")


# -- step_size, FLAT, VAT, limits -------------------------------------------------------------

def test_energy_step_on_session_total_billed_at_last_component():
    two_rates = tariff(element(component("ENERGY", 0.30), start_time="10:00", end_time="11:00"),
                       element(component("ENERGY", 0.20, step=500)))
    start = utc("2024-05-06T10:00")
    periods = [ChargingPeriod(start=start, energy_kwh=d("4.3"), charging_h=d("1")),
               ChargingPeriod(start=start + timedelta(hours=1), energy_kwh=d("1.1"), charging_h=d("1"))]
    cost = price_periods(two_rates, periods, session_start=start, session_end=start + timedelta(hours=2), tz="UTC")
    assert cost.by_dimension["energy"].quantity == d("5.5")
    assert excl(cost) == d("1.5300")  # 4.3 x 0.30 + (1.1 + 0.1) x 0.20


def test_time_rounded_alone_but_not_when_parking_is_billed():
    start = utc("2024-05-06T10:00")
    charging = ChargingPeriod(start=start, charging_h=d("0.35"))  # 21 min
    parked = ChargingPeriod(start=start + timedelta(minutes=21), parking_h=Decimal(16) / 60)
    end = start + timedelta(minutes=37)
    both = tariff(element(component("TIME", 6, step=600), component("PARKING_TIME", 6, step=600)))
    cost = price_periods(both, [charging, parked], session_start=start, session_end=end, tz="UTC")
    assert excl(cost) == d("4.1000")  # 21 min + 20 min at 0.10/min
    time_only = tariff(element(component("TIME", 6, step=600)))
    cost = price_periods(time_only, [charging, parked], session_start=start, session_end=end, tz="UTC")
    assert excl(cost) == d("3.0000")  # 21 -> 30 min


def test_flat_once_per_session_at_session_start():
    day_fee = tariff(element(component("FLAT", 1, vat=25), start_time="08:00", end_time="20:00"),
                     element(component("ENERGY", 0)))
    start = utc("2024-05-06T19:00")
    periods = [ChargingPeriod(start=start + timedelta(minutes=30 * i), energy_kwh=d("1"), charging_h=d("0.5"))
               for i in range(4)]
    cost = price_periods(day_fee, periods, session_start=start, session_end=start + timedelta(hours=2), tz="UTC")
    assert (excl(cost), incl(cost)) == (d("1.0000"), d("1.2500"))
    assert cost.by_dimension["flat"].quantity == 1
    late = start + timedelta(hours=2)
    cost = price_periods(day_fee, [ChargingPeriod(start=late, energy_kwh=d("1"), charging_h=d("1"))],
                         session_start=late, session_end=late + timedelta(hours=1), tz="UTC")
    assert excl(cost) == 0


def test_vat_absent_means_no_vat_and_is_per_component():
    mixed = tariff(element(component("ENERGY", 0.25), component("TIME", 1, vat=20)))
    start = utc("2024-05-06T10:00")
    cost = price_periods(mixed, [ChargingPeriod(start=start, energy_kwh=d("10"), charging_h=d("1"))],
                         session_start=start, session_end=start + timedelta(hours=1), tz="UTC")
    assert (excl(cost), incl(cost)) == (d("3.5000"), d("3.7000"))


def _energy_cost(t: pricing.Tariff, kwh: str) -> Cost:
    start = utc("2024-05-06T10:00")
    return price_periods(t, [ChargingPeriod(start=start, energy_kwh=d(kwh), charging_h=d("1"))],
                         session_start=start, session_end=start + timedelta(hours=1), tz="UTC")


def test_min_and_max_price_bind_excl_and_incl_separately():
    energy_50_vat = element(component("ENERGY", 0.40, vat=50))
    # 2 kWh -> 0.80 excl, 1.20 incl
    raised = tariff(energy_50_vat, min_price={"excl_vat": 1.00, "incl_vat": 1.10})
    assert (excl(_energy_cost(raised, "2")), incl(_energy_cost(raised, "2"))) == (d("1.0000"), d("1.2000"))
    capped = tariff(energy_50_vat, max_price={"excl_vat": 0.90, "incl_vat": 1.00})
    assert (excl(_energy_cost(capped, "2")), incl(_energy_cost(capped, "2"))) == (d("0.8000"), d("1.0000"))


def test_limit_without_incl_vat_binds_excl_only():
    no_vat = element(component("ENERGY", 0.40))
    raised = tariff(no_vat, min_price={"excl_vat": 1.00})
    cost = _energy_cost(raised, "2")
    assert (excl(cost), incl(cost)) == (d("1.0000"), d("0.8000"))
    assert raised.min_price.incl_vat is None


def test_to_json_rounds_half_up_to_four_decimals():
    cost = Cost(currency="NOK", excl_vat=d("1.00005"), incl_vat=d("2.123449999"), by_dimension={})
    assert cost.to_json() == {"currency": "NOK", "excl_vat": 1.0001, "incl_vat": 2.1234}
    assert json.dumps(cost.to_json()) == '{"currency": "NOK", "excl_vat": 1.0001, "incl_vat": 2.1234}'


def test_no_rounding_to_cents_inside():
    cost = _energy_cost(tariff(element(component("ENERGY", 0.3333, vat=25))), "1.5")
    assert cost.excl_vat == d("0.49995")
    assert cost.incl_vat == d("0.6249375")


# -- DST in the site time zone ----------------------------------------------------------------

def _oslo_time_cost(t: pricing.Tariff, start: datetime, end: datetime) -> Cost:
    period = ChargingPeriod(start=start, charging_h=Decimal((end - start).total_seconds()) / 3600)
    return price_periods(t, [period], session_start=start, session_end=end, tz="Europe/Oslo")


def test_dst_spring_forward_counts_real_hours():
    # 2024-03-31 in Oslo: 02:00 CET -> 03:00 CEST at 01:00Z. 00:30 CET -> 04:30 CEST is 3 real hours.
    start, end = utc("2024-03-30T23:30"), utc("2024-03-31T02:30")
    assert excl(_oslo_time_cost(tariff(element(component("TIME", 1, step=900))), start, end)) == d("3.0000")
    night = tariff(element(component("TIME", 2), start_time="00:00", end_time="03:00"),
                   element(component("TIME", 1)))
    assert excl(_oslo_time_cost(night, start, end)) == d("4.5000")  # 1.5 h at 2 until 01:00Z, 1.5 h at 1
    # 02:30 never happens that night: the window opens when the clock jumps to 03:00 (01:00Z)
    from_0230 = tariff(element(component("TIME", 2), start_time="02:30", end_time="12:00"),
                       element(component("TIME", 1)))
    assert excl(_oslo_time_cost(from_0230, start, end)) == d("4.5000")  # 1.5 h at 1, then 1.5 h at 2


def test_dst_fall_back_counts_the_repeated_hour_twice():
    # 2024-10-27 in Oslo: 03:00 CEST -> 02:00 CET at 01:00Z. 00:30 CEST -> 04:30 CET is 5 real hours.
    start, end = utc("2024-10-26T22:30"), utc("2024-10-27T03:30")
    assert excl(_oslo_time_cost(tariff(element(component("TIME", 1))), start, end)) == d("5.0000")
    two_to_three = tariff(element(component("TIME", 10), start_time="02:00", end_time="03:00"),
                          element(component("TIME", 1)))
    assert excl(_oslo_time_cost(two_to_three, start, end)) == d("23.0000")  # 02:00-03:00 happens twice
    # 02:30-04:00: in 00:30Z-01:00Z, out when the clock goes back to 02:00, in again 01:30Z-03:00Z
    from_0230 = tariff(element(component("TIME", 10), start_time="02:30", end_time="04:00"),
                       element(component("TIME", 1)))
    assert excl(_oslo_time_cost(from_0230, start, end)) == d("23.0000")


# -- validation -------------------------------------------------------------------------------

VALID = {"id": "T1", "currency": "EUR", "elements": [
    {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1}]},
    {"price_components": [{"type": "TIME", "price": 2, "step_size": 60}],
     "restrictions": {"start_time": "08:00", "end_time": "18:00", "day_of_week": ["MONDAY"]}}]}


def _with(path: list, value) -> dict:
    obj = json.loads(json.dumps(VALID))
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


@pytest.mark.parametrize(("path", "value", "message"), [
    (["elements", 1, "price_components", 0, "step_size"], 0,
     "elements[1].price_components[0].step_size: must be an integer from 1 to 1,000,000"),
    (["elements", 1, "price_components", 0, "step_size"], 1.5,
     "elements[1].price_components[0].step_size: must be an integer from 1 to 1,000,000"),
    (["elements", 1, "price_components", 0, "step_size"], 1e308,  # OCPI's step_size is an int
     "elements[1].price_components[0].step_size: must be an integer from 1 to 1,000,000"),
    (["elements", 1, "price_components", 0, "step_size"], 60.0,
     "elements[1].price_components[0].step_size: must be an integer from 1 to 1,000,000"),
    (["elements", 1, "price_components", 0, "step_size"], True,
     "elements[1].price_components[0].step_size: must be an integer from 1 to 1,000,000"),
    (["elements", 1, "price_components", 0, "step_size"], 10**7,
     "elements[1].price_components[0].step_size: must be an integer from 1 to 1,000,000"),
    (["elements", 0, "price_components", 0, "price"], -0.25,
     "elements[0].price_components[0].price: must be a number from 0 to 1,000,000"),
    (["elements", 0, "price_components", 0, "price"], "0.25",
     "elements[0].price_components[0].price: must be a number from 0 to 1,000,000"),
    (["elements", 0, "price_components", 0, "price"], 1e308,
     "elements[0].price_components[0].price: must be a number from 0 to 1,000,000"),
    (["elements", 0, "price_components", 0, "vat"], 1e308,
     "elements[0].price_components[0].vat: must be a percentage from 0 to 100"),
    (["elements", 0, "price_components", 0, "vat"], 100.01,
     "elements[0].price_components[0].vat: must be a percentage from 0 to 100"),
    (["elements", 0, "price_components", 0, "vat"], -1,
     "elements[0].price_components[0].vat: must be a percentage from 0 to 100"),
    (["min_price"], {"excl_vat": 1e308}, "min_price.excl_vat: must be a number from 0 to 1,000,000"),
    (["max_price"], {"excl_vat": 1, "incl_vat": 1e7}, "max_price.incl_vat: must be a number from 0 to 1,000,000"),
    (["elements", 1, "restrictions", "min_duration"], 1e308,
     "elements[1].restrictions.min_duration: must be a whole number of seconds"),
    (["elements", 0, "price_components", 0, "type"], "KWH",
     "elements[0].price_components[0].type: must be one of"),
    (["elements", 1, "restrictions", "start_time"], "24:00",
     "elements[1].restrictions.start_time: must be a time of day"),
    (["elements", 1, "restrictions", "day_of_week"], ["MONDAY", "FUNDAY"],
     "elements[1].restrictions.day_of_week[1]: must be one of"),
    (["elements", 1, "restrictions", "end_date"], "2024-02-30",
     "elements[1].restrictions.end_date: must be a date"),
    (["elements", 1, "price_components"], [], "elements[1].price_components: must hold at least one"),
    (["elements"], [], "elements: must hold at least one"),
    (["currency"], KeyError, "currency: is required"),
    (["currency"], "euro", "currency: must be a 3-letter ISO 4217 code"),
    (["min_price"], {"incl_vat": 1}, "min_price.excl_vat: is required"),
    (["start_date_time"], "yesterday", "start_date_time: must be an RFC 3339 date-time"),
])
def test_tariff_error_names_the_path(path, value, message):
    with pytest.raises(TariffError) as raised:
        parse_tariff(_with(path, value))
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, ValueError)


def test_flat_takes_step_size_0_as_ocpi_examples_do_and_other_dimensions_do_not():
    free = parse_tariff({"id": "FREE", "currency": "EUR",
                         "elements": [{"price_components": [{"type": "FLAT", "price": 0, "step_size": 0}]}]})
    assert free.elements[0].price_components[0].step_size == 0
    start = utc("2024-05-06T10:00")
    flat = tariff(element(component("FLAT", 1.5, vat=20, step=0), component("ENERGY", 0.25, step=1)))
    cost = price_periods(flat, [ChargingPeriod(start=start, energy_kwh=d("2"), charging_h=d("1"))],
                         session_start=start, session_end=start + timedelta(hours=1), tz="UTC")
    assert (excl(cost), incl(cost)) == (d("2.0000"), d("2.3000"))
    step = r"^elements\[0\]\.price_components\[0\]\.step_size: must be an integer from"
    for kind in ("ENERGY", "TIME", "PARKING_TIME"):
        with pytest.raises(TariffError, match=step + " 1 "):
            tariff(element(component(kind, 1, step=0)))
    for bad in (0.0, 1e308, -1, False):
        with pytest.raises(TariffError, match=step + " 0 "):
            tariff(element(component("FLAT", 1, step=bad)))


def test_prices_and_vat_at_their_ceilings_are_accepted_and_priced():
    t = tariff(element(component("ENERGY", 1_000_000, vat=100)), min_price={"excl_vat": 1_000_000})
    start = utc("2024-05-06T10:00")
    cost = price_periods(t, [ChargingPeriod(start=start, energy_kwh=d("500"))], session_start=start,
                         session_end=start + timedelta(hours=50), tz="UTC")
    assert (cost.excl_vat, cost.incl_vat) == (d("500000000"), d("1000000000"))
    assert cost.to_json()["incl_vat"] == 1_000_000_000.0


def test_max_price_below_min_price_is_rejected():
    with pytest.raises(TariffError, match=r"^max_price\.excl_vat: must be >= min_price\.excl_vat"):
        parse_tariff({**VALID, "min_price": {"excl_vat": 2}, "max_price": {"excl_vat": 1}})


def test_parse_keeps_decimals_exact_and_validity_dates():
    t = parse_tariff({**VALID, "end_date_time": "2019-06-30T23:59:59Z", "min_price": {"excl_vat": 0.1}})
    assert t.elements[0].price_components[0].price == d("0.25")
    assert t.elements[0].price_components[0].vat == d("10.0")
    assert t.elements[1].price_components[0].vat is None
    assert t.min_price == pricing.Price(excl_vat=d("0.1"))
    assert t.end_date_time == datetime(2019, 6, 30, 23, 59, 59, tzinfo=UTC)
    with pytest.raises(TariffError, match=r"^tariff: must be a JSON object"):
        parse_tariff([VALID])


def test_bad_inputs_to_the_pricer_are_value_errors():
    t = tariff(element(component("ENERGY", 1)))
    start = utc("2024-05-06T10:00")
    with pytest.raises(ValueError, match="tz"):
        price_periods(t, [], session_start=start, session_end=start, tz="Mars/Olympus")
    with pytest.raises(ValueError, match="session_start"):
        price_periods(t, [], session_start=start.replace(tzinfo=None), session_end=start, tz="UTC")
    with pytest.raises(TypeError, match="float"):
        ChargingPeriod(start=start, energy_kwh=1.5)
    with pytest.raises(ValueError, match="start order"):
        price_periods(t, [ChargingPeriod(start=start + timedelta(hours=1)), ChargingPeriod(start=start)],
                      session_start=start, session_end=start, tz="UTC")
    cdr = {"start_date_time": "2024-05-06T10:00:00Z", "end_date_time": "2024-05-06T11:00:00Z",
           "charging_periods": [{"start_date_time": "2024-05-06T10:00:00Z",
                                 "dimensions": [{"type": "ENERGY", "volume": -1}]}]}
    with pytest.raises(ValueError, match=r"^charging_periods\[0\]\.dimensions\[0\]\.volume"):
        price_cdr(VALID, cdr, tz="UTC")


def test_no_periods_still_bills_flat_and_min_price():
    t = tariff(element(component("FLAT", 0.5), component("ENERGY", 1)), min_price={"excl_vat": 0.75})
    start = utc("2024-05-06T10:00")
    cost = price_periods(t, [], session_start=start, session_end=start, tz="UTC")
    assert excl(cost) == d("0.7500")
    assert cost.by_dimension["flat"].amount.excl_vat == d("0.5")
    assert set(cost.by_dimension) == {"energy", "time", "parking_time", "flat"}


# -- meter samples ----------------------------------------------------------------------------

T0 = utc("2024-05-06T16:00")


def seconds(hours: Decimal) -> Decimal:
    return (hours * 3600).quantize(FOUR_DECIMALS)


def sample(minute: int, wh: int, charging: bool, **extra) -> MeterSample:
    return MeterSample(ts=T0 + timedelta(minutes=minute), energy_wh=wh, power_w=None, charging=charging, **extra)


def test_samples_become_charging_then_parking():
    samples = [sample(0, 1_000, True), sample(10, 3_000, True), sample(20, 5_000, False),
               sample(30, 5_000, False), sample(40, 5_000, False)]
    periods = periods_from_samples(samples, tz="Europe/Oslo")
    assert [(p.start, p.energy_kwh, seconds(p.charging_h), seconds(p.parking_h)) for p in periods] == [
        (T0, d("4"), 1200, 0),
        (T0 + timedelta(minutes=20), 0, 0, 1200),
    ]
    assert periods[0].min_power_kw == periods[0].max_power_kw == d("12")
    assert periods[1].max_power_kw == 0


def test_charging_flag_without_energy_counts_as_charging_and_decrease_counts_zero():
    samples = [sample(0, 5_000, True), sample(10, 5_000, False), sample(20, 4_000, False),
               sample(30, 4_500, False), sample(40, 4_500, False)]
    periods = periods_from_samples(samples, tz="UTC")
    kinds = [(p.charging_h > 0, p.energy_kwh) for p in periods]
    assert kinds == [(True, 0), (False, 0), (True, d("0.5")), (False, 0)]


def test_samples_split_at_tariff_boundaries_only_when_given_a_tariff():
    evening = tariff(element(component("ENERGY", 0.50), start_time="16:20", end_time="23:00"),
                     element(component("ENERGY", 0.10)))
    # 4 kWh in 16:00-16:20 UTC, then 1 kWh in 16:20-16:40
    samples = [sample(0, 0, True), sample(10, 2_000, True), sample(20, 4_000, True),
               sample(30, 4_500, True), sample(40, 5_000, True)]
    merged = periods_from_samples(samples, tz="UTC")
    assert len(merged) == 1
    exact = periods_from_samples(samples, tz="UTC", tariff=evening)
    assert [p.energy_kwh for p in exact] == [d("4"), d("1")]
    cost = price_periods(evening, exact, session_start=samples[0].ts, session_end=samples[-1].ts, tz="UTC")
    assert excl(cost) == d("0.9000")  # 4 x 0.10 + 1 x 0.50


def test_samples_split_at_kwh_thresholds_and_rate_changes():
    t = tariff(element(component("ENERGY", 0.50), max_kwh=1), element(component("ENERGY", 0.40), min_power=11),
               element(component("ENERGY", 0.20)))
    # 12 kW for 20 min, then 3 kW for 20 min
    samples = [sample(0, 0, True), sample(10, 2_000, True), sample(20, 4_000, True), sample(30, 4_500, True),
               sample(40, 5_000, True)]
    periods = periods_from_samples(samples, tz="UTC", tariff=t)
    assert [p.energy_kwh for p in periods] == [d("2"), d("2"), d("1")]
    cost = price_periods(t, periods, session_start=samples[0].ts, session_end=samples[-1].ts, tz="UTC")
    assert excl(cost) == d("1.9000")  # 1 x 0.50, 3 x 0.40 (12 kW), 1 x 0.20 (3 kW)


def test_samples_carry_current_and_same_timestamp_energy():
    samples = [sample(0, 0, True, current_a=30), sample(10, 1_000, True, current_a=Decimal("31.5")),
               sample(10, 1_200, True), sample(20, 2_000, False)]
    periods = periods_from_samples(samples, tz="UTC")
    assert len(periods) == 1
    assert periods[0].energy_kwh == d("2")
    assert (periods[0].min_current_a, periods[0].max_current_a) == (d("30"), d("31.5"))
    assert periods_from_samples(samples[:1], tz="UTC") == []
    with pytest.raises(ValueError, match="aware"):
        MeterSample(ts=datetime(2024, 1, 1), energy_wh=0, power_w=None, charging=False)
