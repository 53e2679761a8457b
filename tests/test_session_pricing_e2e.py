"""Sessions on simulated chargers priced as a hand calculation says: across a time-of-day price
change, across a spring-forward and across a fall-back, with a new tariff list arriving mid-session.

Real parts throughout: RDM6300 readers on ptys, a Bender on Modbus TCP and a Heidelberg on RTU,
the agent as its own process, samples in SQLite, events and status on mosquitto.

A test cannot wait for 17:00 or for the last Sunday of March, and tariff windows are HH:MM in the
site's local time. So each test compiles (zic) a zone of its own for the site, in which the price
boundary falls a few seconds into a real session: a fixed UTC offset with seconds, so that a local
minute boundary comes 12 s after the test starts; or a daylight-saving jump at a chosen second.
The agent reads that zone like any IANA zone (PYTHONTZPATH). The expected price is worked out
here by hand from the boundary instant and the meter samples the agent stored: energy between two
samples is shared in proportion to time (the simulated car draws constant power).
"""
import json
import os
import shutil
import subprocess
import time
import zoneinfo
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from pathlib import Path

import pytest

from edge_agent.pricing import MeterSample, RunningCost, money_json, price_session
from edge_agent.store import Store
from hardware_sim.site import SimulatedSite
from helpers import edge_agent

KARI, OLA = "04A2B3C4D5", "0A1B2C3D4E"  # both residents
LEAD_S = 12  # from compiling the zone to the price boundary; the site is up and charging in ~3 s
CHEAP, DEAR, START_FEE, VAT = 1.0, 3.0, 2.0, 0.25


# -- zones ----------------------------------------------------------------------------------

@pytest.fixture
def use_zone(tmp_path, monkeypatch):
    """use_zone(zic source): compile it; the agent (PYTHONTZPATH) and this process both see it."""
    before = zoneinfo.TZPATH
    zic = shutil.which("zic") or "/usr/sbin/zic"

    def use(source: str) -> None:
        src, out = tmp_path / "zones.zi", tmp_path / "zoneinfo"
        src.write_text(source, encoding="utf-8")
        subprocess.run([zic, "-d", str(out), str(src)], check=True, capture_output=True)
        path = [str(out), *before]
        monkeypatch.setenv("PYTHONTZPATH", os.pathsep.join(path))
        zoneinfo.reset_tzpath(to=path)
        zoneinfo.ZoneInfo.clear_cache()

    yield use
    zoneinfo.reset_tzpath(to=before)
    zoneinfo.ZoneInfo.clear_cache()


def assert_offsets(zone: str, jump: datetime, *, before: int, after: int) -> None:
    """The compiled zone jumps at `jump` as intended (else the test, not the pricer, is wrong)."""
    offset = lambda moment: moment.astimezone(zoneinfo.ZoneInfo(zone)).utcoffset()  # noqa: E731
    assert offset(jump - timedelta(seconds=1)) == timedelta(seconds=before)
    assert offset(jump) == timedelta(seconds=after)


def zic_offset(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def zic_until(moment: datetime) -> str:
    return moment.strftime("%Y %b %d %H:%M:%S") + "u"


def next_whole_second(after_s: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=after_s)).replace(microsecond=0) + timedelta(seconds=1)


def wall(moment: datetime, offset_s: int) -> datetime:
    """The local wall clock at `moment` in a zone `offset_s` ahead of UTC (naive)."""
    return (moment + timedelta(seconds=offset_s)).replace(tzinfo=None)


def hhmm(wall_clock: datetime) -> str:
    return wall_clock.strftime("%H:%M")


# -- tariffs --------------------------------------------------------------------------------

def two_price_tariff(tariff_id: str, *, window: tuple[str, str], inside: float, outside: float) -> dict:
    """ENERGY at `inside` within the local window, else `outside` plus a start fee; 25 % VAT."""
    return {"id": tariff_id, "currency": "NOK", "country_code": "NO", "party_id": "COO",
            "last_updated": "2026-01-01T00:00:00Z", "elements": [
                {"price_components": [{"type": "ENERGY", "price": inside, "vat": 25.0, "step_size": 1}],
                 "restrictions": {"start_time": window[0], "end_time": window[1]}},
                {"price_components": [{"type": "FLAT", "price": START_FEE, "vat": 25.0, "step_size": 1},
                                      {"type": "ENERGY", "price": outside, "vat": 25.0, "step_size": 1}]}]}


def tariff_list(tariff: dict) -> dict:
    return {"groups": {"residents": tariff["id"], "guests": tariff["id"]}, "default": tariff["id"],
            "tariffs": [tariff]}


FLAT_TEN = {"id": "T-RES2", "currency": "NOK", "country_code": "NO", "party_id": "COO",
            "last_updated": "2026-02-01T00:00:00Z",
            "elements": [{"price_components": [{"type": "ENERGY", "price": 10.0, "vat": 25.0, "step_size": 1}]}]}


# -- the site -------------------------------------------------------------------------------

def simulated_site(tmp_path: Path, timezone: str) -> SimulatedSite:
    return SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2, meter_values_interval_s=5,
                         status_heartbeat_s=1, timezone=timezone)


def tariffs_version(site: SimulatedSite, version: int) -> bool:
    return site.cloud.wait_for(lambda: (site.cloud.state or {}).get("tariffs_version") == version, 15)


def start_charging(site: SimulatedSite, evse: str, token: str) -> dict:
    site.tap(evse, token)
    time.sleep(0.3)
    site.plug_and_charge(evse)
    return site.cloud.wait_event("session_started", timeout=10, evse_id=evse)


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stored_samples(site: SimulatedSite, session_id: str) -> list[dict]:
    with Store(site.data_dir, read_only=True) as store:
        return store.samples(session_id)


def meter_points(samples: list[dict], ended: dict) -> list[tuple[datetime, int]]:
    """(time, register) from the session start to its end, as the agent stored them."""
    points = [(utc(s["ts"]), s["energy_wh"]) for s in samples]
    return sorted([*points, (utc(ended["ended_at"]), ended["meter_stop_wh"])])


def energy_around(points: list[tuple[datetime, int]], boundary: datetime) -> tuple[float, float]:
    """Wh before and after `boundary`; the interval holding it is shared in proportion to time."""
    before = after = 0.0
    for (t0, e0), (t1, e1) in pairwise(points):
        rise = max(e1 - e0, 0)
        if t1 <= boundary:
            before += rise
        elif t0 >= boundary:
            after += rise
        else:
            share = (boundary - t0) / (t1 - t0)
            before, after = before + rise * share, after + rise * (1 - share)
    return before, after


def hand_price(before_wh: float, after_wh: float) -> tuple[float, float]:
    """Start fee + energy before the boundary at CHEAP + after it at DEAR, 25 % VAT on all."""
    excl = START_FEE + before_wh / 1000 * CHEAP + after_wh / 1000 * DEAR
    return excl, excl * (1 + VAT)


def assert_priced_by_hand(ended: dict, site: SimulatedSite, boundary: datetime) -> tuple[float, float]:
    data = ended["data"]
    points = meter_points(stored_samples(site, data["session_id"]), data)
    assert points[0][0] < boundary - timedelta(seconds=1) < boundary + timedelta(seconds=1) < points[-1][0], (
        f"the session {points[0][0]}..{points[-1][0]} does not straddle the boundary {boundary}; "
        f"machine too slow?\n{site.agent_log_tail()}")
    before_wh, after_wh = energy_around(points, boundary)
    assert before_wh > 200 and after_wh > 200, (before_wh, after_wh)  # the split moves the price a lot
    assert before_wh + after_wh == pytest.approx(data["energy_wh"])
    excl, incl = hand_price(before_wh, after_wh)
    cost = data["cost"]
    assert (cost["currency"], cost["tariff_id"]) == ("NOK", data["tariff_id"])
    assert cost["excl_vat"] == pytest.approx(excl, abs=1.5e-4), (cost, before_wh, after_wh)
    assert cost["incl_vat"] == pytest.approx(incl, abs=1.5e-4), (cost, before_wh, after_wh)
    # The breakdown: the start fee, and all the energy, in Wh, billed as ENERGY.
    assert cost["flat"] == {"quantity": 1, "unit": "session", "excl_vat": START_FEE,
                            "incl_vat": START_FEE * (1 + VAT)}
    assert cost["energy"]["quantity"] == data["energy_wh"] and cost["energy"]["unit"] == "Wh"
    assert cost["energy"]["excl_vat"] == pytest.approx(excl - START_FEE, abs=1.5e-4)
    assert cost["time"]["excl_vat"] == cost["parking_time"]["excl_vat"] == 0
    assert cost["min_max_adjustment"] == {"excl_vat": 0, "incl_vat": 0}
    # The charging periods are cut at the boundary, and hold all the energy and time.
    periods = data["charging_periods"]
    starts = [utc(p["start_date_time"]) for p in periods]
    assert boundary in starts, (boundary, starts)
    assert starts == sorted(starts) and starts[0] == points[0][0]
    volume = lambda kind: sum(d["volume"] for p in periods for d in p["dimensions"] if d["type"] == kind)  # noqa: E731
    assert volume("ENERGY") * 1000 == pytest.approx(data["energy_wh"], abs=0.01)
    assert (volume("TIME") + volume("PARKING_TIME")) * 3600 == pytest.approx(
        (points[-1][0] - points[0][0]).total_seconds(), abs=0.01)
    return before_wh, after_wh


# -- the tests ------------------------------------------------------------------------------

def test_time_of_day_change_and_a_new_tariff_list_mid_session(tmp_path, use_zone):
    # A zone 1 h + x s ahead of UTC, x chosen so that local time reaches a whole minute at `boundary`.
    boundary = next_whole_second(LEAD_S)
    offset = 3600 + (-int(boundary.timestamp())) % 60
    use_zone(f"Zone Test/Tou {zic_offset(offset)} - TST\n")
    local_boundary = wall(boundary, offset)
    assert local_boundary.second == 0
    # CHEAP until the local minute `boundary`, then DEAR (+ start fee, billed at the session start).
    tou = two_price_tariff("T-TOU", window=(hhmm(local_boundary - timedelta(hours=2)), hhmm(local_boundary)),
                           inside=CHEAP, outside=DEAR)
    with simulated_site(tmp_path, "Test/Tou") as site:
        site.publish_lists(tariffs=tariff_list(tou))
        assert tariffs_version(site, 1), site.agent_log_tail()
        started = start_charging(site, "1", KARI)
        session_id = started["data"]["session_id"]
        assert (started["data"]["tariff_id"], started["data"]["tariffs_version"]) == ("T-TOU", 1)

        # A new tariff list arrives while the session runs: 10 NOK/kWh for everybody from now on.
        site.publish_tariffs(2, tariff_list(FLAT_TEN))
        assert tariffs_version(site, 2), site.agent_log_tail()
        with Store(site.data_dir, read_only=True) as store:
            assert store.tariff_list(1) is not None, "the running session's tariff list was dropped"
        # A session that starts now, on the other charger, gets the new list.
        started_2 = start_charging(site, "2", OLA)
        assert (started_2["data"]["tariff_id"], started_2["data"]["tariffs_version"]) == ("T-RES2", 2)
        time.sleep(2)
        site.unplug("2")
        ended_2 = site.cloud.wait_event("session_ended", timeout=10, evse_id="2")

        sleep_until(boundary + timedelta(seconds=4))
        site.unplug("1")
        ended = site.cloud.wait_event("session_ended", timeout=10, evse_id="1")
        assert site.cloud.wait_for(lambda: site.cloud.evse_status.get("1", {}).get("session_id") is None, 5)
        statuses = [s for s in site.cloud.evse_status_history if s["evse_id"] == "1"]
        samples = stored_samples(site, session_id)

        # The session that started under version 1 is priced with version 1, across the boundary.
        data = ended["data"]
        assert (data["tariff_id"], data["tariffs_version"], data["cost"]["tariff_id"]) == ("T-TOU", 1, "T-TOU")
        assert_priced_by_hand(ended, site, boundary)

        # The one that started under version 2: 10 NOK/kWh, nothing else.
        data_2 = ended_2["data"]
        assert (data_2["tariffs_version"], data_2["cost"]["tariff_id"]) == (2, "T-RES2")
        assert data_2["energy_wh"] > 0
        assert data_2["cost"]["excl_vat"] == pytest.approx(data_2["energy_wh"] * 10 / 1000, abs=1e-9)
        assert data_2["cost"]["incl_vat"] == pytest.approx(data_2["energy_wh"] * 12.5 / 1000, abs=1e-9)

        # cost_so_far: at every status during the session, the price had it ended then (hand
        # calculation from the samples stored by then and the status's own reading).
        running = [s for s in statuses if s["session_id"] == session_id]
        assert len(running) >= 5, running
        for status in running:
            at = utc(status["ts"])
            points = sorted([(utc(s["ts"]), s["energy_wh"]) for s in samples if utc(s["ts"]) <= at]
                            + [(at, status["energy_wh"])])
            _excl, incl = hand_price(*energy_around(points, boundary))
            assert status["cost_so_far"] == pytest.approx(incl, abs=1e-3), (status, incl)
        assert [s["cost_so_far"] for s in running] == sorted(s["cost_so_far"] for s in running)
        assert any(utc(s["ts"]) > boundary for s in running) and any(utc(s["ts"]) < boundary for s in running)
        assert statuses[-1]["session_id"] is None and statuses[-1]["cost_so_far"] is None

        # The running cost at the moment the session ended is the final price, digit for digit.
        meter = RunningCost(tou, "T-TOU", tz="Test/Tou", samples=[MeterSample.from_json(s) for s in samples])
        last = MeterSample(ts=utc(data["ended_at"]), energy_wh=data["meter_stop_wh"], power_w=None, charging=False)
        assert money_json(meter.if_ended(last).excl_vat) == data["cost"]["excl_vat"]
        assert meter.cost_so_far(last) == data["cost"]["incl_vat"]
        repriced = price_session(tou, "T-TOU", [*(MeterSample.from_json(s) for s in samples), last], tz="Test/Tou")
        assert repriced.cost_json == data["cost"] and repriced.periods_json == data["charging_periods"]

        # The report's sums are the sessions' costs, summed then rounded to cents.
        days = sorted(wall(utc(d["started_at"]), offset).date().isoformat() for d in (data, data_2))
        out = edge_agent("report", "--config", site.config_path, "--from", days[0], "--to", days[-1], "--json",
                         check=True)
        report = json.loads(out.stdout)
        cent = lambda x: float(Decimal(str(x)).quantize(Decimal("0.01"), ROUND_HALF_UP))  # noqa: E731
        by_evse = {row["key"]: row for row in report["by_evse"]}
        assert by_evse["1"]["revenue"]["NOK"]["incl_vat"] == cent(data["cost"]["incl_vat"])
        assert by_evse["2"]["revenue"]["NOK"]["excl_vat"] == cent(data_2["cost"]["excl_vat"])
        total = Decimal(str(data["cost"]["incl_vat"])) + Decimal(str(data_2["cost"]["incl_vat"]))
        assert report["total"]["revenue"]["NOK"]["incl_vat"] == cent(total)
        assert report["total"]["energy_wh"] == data["energy_wh"] + data_2["energy_wh"]
        assert [row["key"] for row in report["by_group"]] == ["residents"]


def test_spring_forward_mid_session(tmp_path, use_zone):
    # Standard time 1 h + x s ahead of UTC until `jump`, then daylight time 2 h + x s. x puts the
    # wall clock at hh:mm:20 just before the jump, so the window opening at the next whole minute
    # (40 s later on a clock without DST) lies in the skipped hour: it opens at the jump itself.
    jump = next_whole_second(LEAD_S)
    x = (20 - int(jump.timestamp())) % 60
    standard = 3600 + x
    use_zone(f"Zone Test/Spring {zic_offset(standard)} - XST {zic_until(jump)}\n"
             f"\t\t\t{zic_offset(standard)} 1:00 XDT\n")
    assert_offsets("Test/Spring", jump, before=standard, after=standard + 3600)
    opens = wall(jump, standard).replace(second=0) + timedelta(minutes=1)
    tariff = two_price_tariff("T-SPRING", window=(hhmm(opens), hhmm(opens + timedelta(hours=2))),
                              inside=DEAR, outside=CHEAP)
    with simulated_site(tmp_path, "Test/Spring") as site:
        site.publish_lists(tariffs=tariff_list(tariff))
        assert tariffs_version(site, 1), site.agent_log_tail()
        start_charging(site, "1", KARI)
        sleep_until(jump + timedelta(seconds=4))
        site.unplug("1")
        ended = site.cloud.wait_event("session_ended", timeout=10, evse_id="1")
        assert_priced_by_hand(ended, site, jump)


def test_fall_back_mid_session(tmp_path, use_zone):
    # Daylight time 2 h + x s ahead of UTC until `jump`, then standard time 1 h + x s. The window
    # ends at the minute the wall clock showed when the test began: the session starts after it
    # (CHEAP), and the clock going back an hour at `jump` brings it inside again (DEAR).
    jump = next_whole_second(LEAD_S)
    x = (20 - int(jump.timestamp())) % 60
    standard = 3600 + x
    # (A zone must enter daylight time by a transition: before its first one, time is standard.)
    use_zone(f"Zone Test/Fall {zic_offset(standard)} - XST {zic_until(jump - timedelta(days=1))}\n"
             f"\t\t\t{zic_offset(standard)} 1:00 XDT {zic_until(jump)}\n"
             f"\t\t\t{zic_offset(standard)} - XST\n")
    assert_offsets("Test/Fall", jump, before=standard + 3600, after=standard)
    closes = wall(datetime.now(UTC), standard + 3600).replace(second=0)
    tariff = two_price_tariff("T-FALL", window=(hhmm(closes - timedelta(hours=2)), hhmm(closes)),
                              inside=DEAR, outside=CHEAP)
    with simulated_site(tmp_path, "Test/Fall") as site:
        site.publish_lists(tariffs=tariff_list(tariff))
        assert tariffs_version(site, 1), site.agent_log_tail()
        start_charging(site, "1", KARI)
        sleep_until(jump + timedelta(seconds=4))
        site.unplug("1")
        ended = site.cloud.wait_event("session_ended", timeout=10, evse_id="1")
        assert_priced_by_hand(ended, site, jump)
