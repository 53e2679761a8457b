"""`edge-agent report` and `edge-agent sessions` on a real SQLite store: sums checked against the
sessions in the store, periods in the site's local calendar, CSV and JSON exports."""
import csv
import io
import json
import subprocess
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pytest

from edge_agent.cli import Period, quarter_of
from edge_agent.cloud import Event, events
from edge_agent.pricing import MeterSample, price_session
from edge_agent.store import SessionRecord, Store
from helpers import edge_agent as run_edge_agent

OSLO = ZoneInfo("Europe/Oslo")
RES = {"id": "T-RES", "currency": "NOK", "elements": [
    {"price_components": [{"type": "ENERGY", "price": 2.0, "vat": 25.0, "step_size": 1}]}]}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def cost_of(wh: int, minutes: int, started: datetime) -> dict:
    samples = [MeterSample(ts=started, energy_wh=0, power_w=None, charging=True),
               MeterSample(ts=started + timedelta(minutes=minutes), energy_wh=wh, power_w=None, charging=False)]
    return price_session(RES, "T-RES", samples, tz="Europe/Oslo").cost_json


def add_session(store: Store, sid: str, *, evse: str, user: str | None, group: str | None, started: datetime,
                wh: int = 0, cost: dict | None = None, name: str | None = None, token: str | None = "AA",
                minutes: int = 30, ended: bool = True) -> None:
    record = SessionRecord(id=sid, evse_id=evse, status="active", token=token, user_id=user, group=group,
                           user_name=name, auth="local_list", started_at=rfc3339(started), meter_start_wh=10_000,
                           tariff_id=(cost or {}).get("tariff_id"), tariffs_version=1, offline_start=False,
                           clock_synced=True)
    store.start_session(record, event=events.session_started(record, ts=record.started_at, offline=False))
    if not ended:
        return
    cost = cost or {"currency": None, "excl_vat": 0, "incl_vat": 0, "tariff_id": None}
    end = rfc3339(started + timedelta(minutes=minutes))
    done = {"ended_at": end, "meter_stop_wh": 10_000 + wh, "energy_wh": wh, "charging_s": minutes * 60,
            "parking_s": 0, "reason": "local", "cost": json.dumps(cost)}
    store.end_session(sid, ended=done, event=Event(
        "session_ended", {**events.session_started_data(record), **done, "cost": cost}, end, False))


def half_cent(tariff_id: str = "T-RES") -> dict:
    return {"currency": "NOK", "excl_vat": 0.004, "incl_vat": 0.005, "tariff_id": tariff_id}


@pytest.fixture
def data_dir(tmp_path):
    """Q1 2026 in Oslo, its edges, a running session, a free one, and sessions of other quarters."""
    with Store(tmp_path) as store:
        q1 = datetime(2026, 2, 10, 8, tzinfo=UTC)
        add_session(store, "s1", evse="1", user="u-1", group="residents", name="Kari", started=q1, wh=12_345,
                    cost=cost_of(12_345, 90, q1))
        add_session(store, "s2", evse="2", user="u-1", group="residents", name="Kari", started=q1 + timedelta(days=3),
                    wh=7_777, cost=cost_of(7_777, 60, q1 + timedelta(days=3)))
        add_session(store, "s3", evse="2", user="u-2", group="residents", name="Ola", started=q1 + timedelta(days=5),
                    wh=3_001, cost=cost_of(3_001, 20, q1 + timedelta(days=5)))
        # Three sessions of half a cent: summed they are 1.5 cents -> 0.02; rounded one by one, 0.03.
        for i in range(3):
            add_session(store, f"h{i}", evse="1", user="u-3", group="guests", started=q1 + timedelta(hours=i + 1),
                        wh=2, cost=half_cent())
        add_session(store, "free", evse="1", user=None, group=None, token="9988776655", started=q1 + timedelta(days=9),
                    wh=500)
        # 31 March 23:59 in Oslo (CEST) is still Q1; 1 April 00:01 is not.
        add_session(store, "edge-in", evse="2", user="u-2", group="residents", started=datetime(2026, 3, 31, 21, 59,
                    tzinfo=UTC), wh=1_000, cost=cost_of(1_000, 10, datetime(2026, 3, 31, 21, 59, tzinfo=UTC)))
        add_session(store, "edge-out", evse="2", user="u-2", group="residents", started=datetime(2026, 3, 31, 22, 1,
                    tzinfo=UTC), wh=1_000, cost=cost_of(1_000, 10, datetime(2026, 3, 31, 22, 1, tzinfo=UTC)))
        add_session(store, "running", evse="1", user="u-1", group="residents", started=q1 + timedelta(days=20),
                    ended=False)
        add_session(store, "now", evse="1", user="u-2", group="residents", started=datetime.now(UTC) - timedelta(
                    minutes=40), wh=4_000, cost=cost_of(4_000, 30, datetime.now(UTC) - timedelta(minutes=40)))
    return tmp_path


def edge_agent(*args: str) -> subprocess.CompletedProcess:
    out = run_edge_agent(*args)
    assert out.returncode == 0, out.stderr
    return out


def cents(amount: Decimal) -> float:
    return float(amount.quantize(Decimal("0.01"), ROUND_HALF_UP))


def expected_sums(data_dir, first: date, last: date, key) -> dict:
    """From the sessions in the store: ended ones that started within the local dates, summed
    exactly as recorded, per key (a function of the session record)."""
    period = Period(first, last, OSLO)
    sums: dict = {}
    with Store(data_dir, read_only=True) as store:
        for s in store.sessions():
            started = datetime.fromisoformat(s.started_at.replace("Z", "+00:00"))
            if s.status != "ended" or not period.holds(started):
                continue
            cost = json.loads(s.cost, parse_float=Decimal, parse_int=Decimal)
            row = sums.setdefault(key(s), {"sessions": 0, "energy_wh": 0, "excl": Decimal(0), "incl": Decimal(0)})
            row["sessions"] += 1
            row["energy_wh"] += s.energy_wh
            if cost["currency"]:
                row["excl"] += cost["excl_vat"]
                row["incl"] += cost["incl_vat"]
    return sums


Q1 = ("--from", "2026-01-01", "--to", "2026-03-31")


def test_report_sums_equal_the_store_sessions_to_the_cent(data_dir):
    report = json.loads(edge_agent("report", "--data-dir", str(data_dir), "--tz", "Europe/Oslo", *Q1, "--json").stdout)
    assert report["period"] == {"from": "2026-01-01", "to": "2026-03-31", "tz": "Europe/Oslo",
                                "start_utc": "2025-12-31T23:00:00Z", "end_utc": "2026-03-31T22:00:00Z"}
    for section, key in (("by_user", lambda s: s.user_id or f"token:{s.token}"), ("by_group", lambda s: s.group or "(none)"),
                         ("by_evse", lambda s: s.evse_id), ("total", lambda s: "total")):
        expected = expected_sums(data_dir, date(2026, 1, 1), date(2026, 3, 31), key)
        rows = report[section] if section != "total" else [report["total"]]
        assert {r["key"] for r in rows} == set(expected), section
        for row in rows:
            want = expected[row["key"]]
            assert (row["sessions"], row["energy_wh"]) == (want["sessions"], want["energy_wh"]), (section, row)
            money = row["revenue"].get("NOK", {"excl_vat": 0, "incl_vat": 0, "excl_vat_exact": 0, "incl_vat_exact": 0})
            assert money["excl_vat"] == cents(want["excl"]) and money["incl_vat"] == cents(want["incl"]), (section, row)
            assert Decimal(str(money["incl_vat_exact"])) == want["incl"]
    # By hand: Kari 12.345 + 7.777 kWh at 2.50 incl; the half-cent sessions sum before rounding.
    users = {r["key"]: r for r in report["by_user"]}
    assert users["u-1"]["name"] == "Kari" and users["u-1"]["revenue"]["NOK"]["incl_vat"] == 50.31  # 50.305
    assert users["u-3"]["revenue"]["NOK"]["incl_vat"] == 0.02 and users["u-3"]["revenue"]["NOK"]["excl_vat"] == 0.01
    assert users["token:9988776655"]["sessions"] == 1 and users["token:9988776655"]["revenue"]["NOK"]["incl_vat"] == 0
    assert report["total"]["sessions"] == 8 and report["running_sessions_excluded"] == 1
    assert {r["key"] for r in report["by_evse"]} == {"1", "2"}
    assert "summed exactly" in report["rounding"]


def test_report_default_is_this_quarter_and_csv_and_table_say_the_same(data_dir):
    report = json.loads(edge_agent("report", "--data-dir", str(data_dir), "--tz", "Europe/Oslo", "--json").stdout)
    first, last = quarter_of(datetime.now(OSLO).date())
    assert (report["period"]["from"], report["period"]["to"]) == (first.isoformat(), last.isoformat())
    assert report["total"]["sessions"] == 1 and report["by_user"][0]["key"] == "u-2"
    assert report["total"]["revenue"]["NOK"]["incl_vat"] == 10.0  # 4 kWh x 2.50

    rows = list(csv.DictReader(io.StringIO(edge_agent("report", "--data-dir", str(data_dir), "--tz", "Europe/Oslo",
                                                      *Q1, "--csv").stdout)))
    total = next(r for r in rows if r["by"] == "total")
    # 30.8625 + 19.4425 + 7.5025 + 2.5 + 3 x 0.005, in 8 ended sessions
    assert (total["sessions"], total["incl_vat_NOK"], total["incl_vat_exact_NOK"]) == ("8", "60.32", "60.3225")
    assert Decimal(total["incl_vat_exact_NOK"]) == sum(
        (Decimal(r["incl_vat_exact_NOK"]) for r in rows if r["by"] == "evse"), Decimal(0))
    guests = next(r for r in rows if r["by"] == "group" and r["key"] == "guests")
    assert (guests["incl_vat_NOK"], guests["incl_vat_exact_NOK"]) == ("0.02", "0.015")

    table = edge_agent("report", "--data-dir", str(data_dir), "--tz", "Europe/Oslo", *Q1).stdout
    assert "per user" in table and "per group" in table and "per EVSE" in table
    assert "60.32" in table and "Rounding: each session's cost" in table
    assert "1 session(s) that started in the period are still running" in table


def test_report_with_the_site_config_uses_its_data_dir_and_zone(data_dir, tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text(f"""\
gateway_id: gw-test
timezone: America/New_York
data_dir: {data_dir}
cloud:
  host: 127.0.0.1
  port: 1883
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 127.0.0.1
    port: 502
""", encoding="utf-8")
    # In New York, 31 March 22:01Z is still 31 March: both edge sessions are in Q1 there.
    report = json.loads(edge_agent("report", "--config", str(config), *Q1, "--json").stdout)
    assert report["period"]["tz"] == "America/New_York"
    assert report["total"]["sessions"] == 9


def test_sessions_filters_and_csv(data_dir):
    def listed(*args: str) -> list[dict]:
        return json.loads(edge_agent("sessions", "--data-dir", str(data_dir), "--tz", "Europe/Oslo", *args,
                                     "--json").stdout)

    assert len(listed()) == 11
    assert [s["id"] for s in listed(*Q1, "--evse", "2")] == ["s2", "s3", "edge-in"]
    assert {s["id"] for s in listed("--user", "u-1")} == {"s1", "s2", "running"}
    assert [s["id"] for s in listed("--user", "9988776655")] == ["free"]
    assert [s["id"] for s in listed("--status", "active")] == ["running"]
    assert [s["id"] for s in listed("--from", "2026-04-01", "--to", "2026-04-01")] == ["edge-out"]
    assert [s["id"] for s in listed("--limit", "2")] == ["edge-out", "now"]
    s1 = listed("--user", "u-1")[0]
    assert (s1["currency"], s1["excl_vat"], s1["incl_vat"]) == ("NOK", 24.69, 30.8625)

    out = edge_agent("sessions", "--data-dir", str(data_dir), "--tz", "Europe/Oslo", "--evse", "1", *Q1, "--csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["id"] for r in rows] == ["s1", "h0", "h1", "h2", "free", "running"]
    assert (rows[0]["incl_vat"], rows[0]["user_name"], rows[4]["currency"]) == ("30.8625", "Kari", "")

    table = edge_agent("sessions", "--data-dir", str(data_dir), "--tz", "Europe/Oslo", "--user", "u-1").stdout
    assert "2026-02-10 09:00:00" in table  # local time, CET
    assert "30.86 NOK" in table


def test_bad_dates_and_missing_database_are_clear_errors(tmp_path, data_dir):
    out = run_edge_agent("report", "--data-dir", data_dir, "--from", "2026-02-30")
    assert out.returncode == 2 and "--from: '2026-02-30' is not a date as YYYY-MM-DD" in out.stderr
    out = run_edge_agent("report", "--data-dir", data_dir, "--from", "2026-03-01", "--to", "2026-02-01")
    assert out.returncode == 2 and "--to 2026-02-01 is before --from 2026-03-01" in out.stderr
    out = run_edge_agent("report", "--data-dir", tmp_path / "nothing")
    assert out.returncode == 1 and "no database in" in out.stderr
