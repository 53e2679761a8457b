"""What the records say: `edge-agent report` and `edge-agent sessions` (usage and revenue from the
session records), and `edge-agent outbox` (the events the cloud has not acknowledged yet).

Both read the agent's database read-only (it never blocks charging) and take a period in the
site's local calendar: --from and --to are dates, both included; the default is the current
quarter. A session belongs to the period in which it started.

Money: each session's cost is summed exactly as it was recorded and sent to the cloud (4
decimals), and only the sum is rounded, half up, to cents. So a report's figure equals the sum
of the session costs to the cent; rows are each rounded from their own exact sum, so they may not
add up to the rounded total to the cent (the exact sums are in --json and --csv).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..store import SessionRecord, Store
from ._common import data_dir_of, load_config, open_existing_store_read_only
from ._exit_codes import ExitCode

CENT = Decimal("0.01")
ROUNDING = ("each session's cost as recorded (4 decimals, as sent to the cloud) is summed exactly; "
            "only the sum is rounded, half up, to cents")
REPORT_DESCRIPTION = (__doc__ or "").split("\n\n", 1)[1]  # `report --help`: all but the first paragraph


# -- the period ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    """Local dates first..last (both included) in `zone`; [start, end) in UTC."""

    first: date
    last: date
    zone: ZoneInfo

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(0), self.zone).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(0), self.zone).astimezone(UTC)

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def to_json(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat(), "tz": self.zone.key,
                "start_utc": _utc_text(self.start), "end_utc": _utc_text(self.end)}


def quarter_of(day: date) -> tuple[date, date]:
    first = date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    next_first = date(first.year + (first.month == 10), (first.month + 2) % 12 + 1, 1)
    return first, next_first - timedelta(days=1)


def period_from_args(args: argparse.Namespace, zone: ZoneInfo, *, today: date | None = None) -> Period:
    """Neither date: this quarter. Only --from: to the end of this quarter (or of --from's, if
    later). Only --to: from the start of --to's quarter."""
    today = today or datetime.now(zone).date()
    first, last = quarter_of(today)
    if args.date_from is not None:
        first = args.date_from
        last = max(last, quarter_of(first)[1])
    if args.date_to is not None:
        last = args.date_to
        if args.date_from is None:
            first = quarter_of(last)[0]
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    return Period(first, last, zone)


def _system_zone() -> ZoneInfo:
    """The gateway's own zone (/etc/timezone or the /etc/localtime link), else UTC."""
    candidates = []
    if (tz := os.environ.get("TZ")) and not tz.startswith(":"):
        candidates.append(tz)
    try:
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    except OSError:
        pass
    link = Path("/etc/localtime")
    if link.is_symlink():
        parts = os.path.realpath(link).split("/zoneinfo/", 1)
        if len(parts) == 2:
            candidates.append(parts[1])
    for name in candidates:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


# -- reading the store ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Where:
    data_dir: Path
    zone: ZoneInfo


def _where(args: argparse.Namespace) -> Where:
    if args.config:
        config = load_config(args.config)
        return Where(Path(config.data_dir), args.tz or ZoneInfo(config.timezone))
    return Where(Path(args.data_dir), args.tz or _system_zone())


def sessions_in(store: Store, period: Period, *, evse: str | None = None, user: str | None = None,
                status: str | None = None) -> list[SessionRecord]:
    """Sessions that started within the period, in start order. started_at is RFC 3339 UTC text;
    the store's bounds are a coarse cut (text order is not time order within a second), the exact
    one is made on the parsed time."""
    found = store.sessions(since=period.start - timedelta(seconds=1), until=period.end + timedelta(seconds=1),
                           evse_id=evse, user_or_token=user, status=status)
    return [s for s in found if period.holds(_parse_utc(s.started_at))]


# -- sums -------------------------------------------------------------------------------------------

@dataclass
class Tally:
    """Usage and revenue of a set of sessions; revenue exact, per currency."""

    key: str
    name: str | None = None
    sessions: int = 0
    energy_wh: int = 0
    unbilled_wh: int = 0  # counted by the chargers and not billed (lasting implausible jumps)
    charging_s: int = 0
    parking_s: int = 0
    revenue: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)

    def add(self, session: SessionRecord) -> None:
        self.sessions += 1
        self.energy_wh += session.energy_wh or 0
        self.unbilled_wh += session.unbilled_wh or 0
        self.charging_s += session.charging_s or 0
        self.parking_s += session.parking_s or 0
        cost = session_cost(session)
        if cost is not None:
            currency, excl, incl = cost
            old_excl, old_incl = self.revenue.get(currency, (Decimal(0), Decimal(0)))
            self.revenue[currency] = (old_excl + excl, old_incl + incl)

    def to_json(self, currencies: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if self.name is not None:
            out["name"] = self.name
        out.update(sessions=self.sessions, energy_wh=self.energy_wh, unbilled_wh=self.unbilled_wh,
                   charging_s=self.charging_s, parking_s=self.parking_s)
        out["revenue"] = {}
        for currency in currencies:
            excl, incl = self.revenue.get(currency, (Decimal(0), Decimal(0)))
            out["revenue"][currency] = {"excl_vat": _number(cents(excl)), "incl_vat": _number(cents(incl)),
                                        "excl_vat_exact": _number(excl), "incl_vat_exact": _number(incl)}
        return out


def session_cost(session: SessionRecord) -> tuple[str, Decimal, Decimal] | None:
    """(currency, excl, incl) exactly as recorded; None for a free or unpriced session."""
    if not session.cost:
        return None
    cost = json.loads(session.cost, parse_float=Decimal, parse_int=Decimal)
    if not isinstance(cost, dict) or not cost.get("currency") or cost.get("pricing_error"):
        return None
    return str(cost["currency"]), Decimal(cost.get("excl_vat") or 0), Decimal(cost.get("incl_vat") or 0)


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, ROUND_HALF_UP)


@dataclass(frozen=True)
class Report:
    period: Period
    total: Tally
    by_user: list[Tally]
    by_group: list[Tally]
    by_evse: list[Tally]
    running: int
    """Sessions that started in the period and are still running: not in the sums."""

    @property
    def currencies(self) -> list[str]:
        return sorted(self.total.revenue)

    def to_json(self) -> dict[str, Any]:
        currencies = self.currencies
        return {"period": self.period.to_json(), "rounding": ROUNDING, "running_sessions_excluded": self.running,
                "total": self.total.to_json(currencies),
                "by_user": [t.to_json(currencies) for t in self.by_user],
                "by_group": [t.to_json(currencies) for t in self.by_group],
                "by_evse": [t.to_json(currencies) for t in self.by_evse]}


def build_report(sessions: Iterable[SessionRecord], period: Period) -> Report:
    total = Tally("total")
    users: dict[str, Tally] = {}
    groups: dict[str, Tally] = {}
    evses: dict[str, Tally] = {}
    running = 0
    for s in sessions:
        if s.status != "ended":
            running += 1
            continue
        user_key = s.user_id or (f"token:{s.token}" if s.token else "(nobody)")
        for table, key, name in ((users, user_key, s.user_name), (groups, s.group or "(none)", None),
                                 (evses, s.evse_id, None)):
            tally = table.setdefault(key, Tally(key))
            if name and not tally.name:
                tally.name = name
            tally.add(s)
        total.add(s)
    def ordered(table: dict[str, Tally]) -> list[Tally]:
        return [table[k] for k in sorted(table)]

    return Report(period, total, ordered(users), ordered(groups), ordered(evses), running)


# -- edge-agent report ---------------------------------------------------------------------------------

def cmd_report(args: argparse.Namespace) -> int:
    where = _where(args)
    try:
        period = period_from_args(args, where.zone)
    except ValueError as exc:
        print(f"edge-agent report: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    with open_existing_store_read_only(where.data_dir) as store:
        report = build_report(sessions_in(store, period), period)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif args.csv:
        _report_csv(report, sys.stdout)
    else:
        _report_table(report, sys.stdout)
    return ExitCode.OK


def _report_rows(report: Report) -> Iterable[tuple[str, Tally]]:
    for section, tallies in (("user", report.by_user), ("group", report.by_group), ("evse", report.by_evse)):
        for tally in tallies:
            yield section, tally
    yield "total", report.total


def _report_csv(report: Report, out: TextIO) -> None:
    currencies = report.currencies
    money = [f"{kind}_{c}" for c in currencies for kind in ("excl_vat", "incl_vat", "excl_vat_exact", "incl_vat_exact")]
    writer = csv.writer(out)
    writer.writerow(["by", "key", "name", "sessions", "energy_kwh", "unbilled_kwh", "charging_h", "parking_h",
                     *money])
    for section, t in _report_rows(report):
        amounts = []
        for c in currencies:
            excl, incl = t.revenue.get(c, (Decimal(0), Decimal(0)))
            amounts += [cents(excl), cents(incl), _plain(excl), _plain(incl)]
        writer.writerow([section, t.key, t.name or "", t.sessions, _kwh(t.energy_wh), _kwh(t.unbilled_wh),
                         _hours(t.charging_s), _hours(t.parking_s), *amounts])


def _report_table(report: Report, out: TextIO) -> None:
    p = report.period
    currencies = report.currencies
    print(f"Usage and revenue {p.first} .. {p.last} ({p.zone.key}), sessions by their start", file=out)
    money_head = "".join(f" {'excl ' + c:>12} {'incl ' + c:>12}" for c in currencies)
    for title, tallies in (("per user", report.by_user), ("per group", report.by_group),
                           ("per EVSE", report.by_evse), ("total", [report.total])):
        print(f"\n{title}", file=out)
        print(f"  {'':28} {'sessions':>8} {'kWh':>11} {'charging h':>10} {'parked h':>9}{money_head}", file=out)
        for t in tallies:
            label = f"{t.key} ({t.name})" if t.name else t.key
            amounts = "".join(f" {cents(excl):>12} {cents(incl):>12}" for excl, incl in
                              (t.revenue.get(c, (Decimal(0), Decimal(0))) for c in currencies))
            print(f"  {label[:28]:28} {t.sessions:>8} {_kwh(t.energy_wh):>11} {_hours(t.charging_s):>10} "
                  f"{_hours(t.parking_s):>9}{amounts}", file=out)
    if report.total.unbilled_wh:
        print(f"\n{_kwh(report.total.unbilled_wh)} kWh counted by the chargers were not billed (the counter "
              "jumped implausibly); `edge-agent sessions` says where and why.", file=out)
    if report.running:
        print(f"\n{report.running} session(s) that started in the period are still running and are not counted.",
              file=out)
    print(f"\nRounding: {ROUNDING}. Each row is rounded from its own exact sum (--json/--csv show both).",
          file=out)


# -- edge-agent sessions ---------------------------------------------------------------------------------

SESSION_FIELDS = ["id", "evse_id", "status", "user_id", "user_name", "group", "token", "auth", "started_at",
                  "ended_at", "meter_start_wh", "meter_stop_wh", "energy_wh", "unbilled_wh", "unbilled_reason",
                  "charging_s", "parking_s", "reason", "tariff_id", "tariffs_version", "offline_start"]
COST_FIELDS = ["currency", "excl_vat", "incl_vat", "pricing_error"]  # pricing_error: why it is unpriced


def session_row(s: SessionRecord) -> dict[str, Any]:
    row = {f: getattr(s, f) for f in SESSION_FIELDS}
    cost = json.loads(s.cost, parse_float=Decimal, parse_int=Decimal) if s.cost else {}
    for name in COST_FIELDS:
        row[name] = cost.get(name)
    return row


def cmd_sessions(args: argparse.Namespace) -> int:
    where = _where(args)
    if args.date_from is None and args.date_to is None:
        period = Period(date(1970, 1, 2), date(9999, 12, 30), where.zone)  # everything
    else:
        try:
            period = period_from_args(args, where.zone)
        except ValueError as exc:
            print(f"edge-agent sessions: {exc}", file=sys.stderr)
            return ExitCode.USAGE
    with open_existing_store_read_only(where.data_dir) as store:
        sessions = sessions_in(store, period, evse=args.evse, user=args.user, status=args.status)
    if args.limit is not None:
        sessions = sessions[-args.limit:] if args.limit > 0 else []
    rows = [session_row(s) for s in sessions]
    if args.json:
        print(json.dumps(rows, indent=2, default=_number))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=[*SESSION_FIELDS, *COST_FIELDS])
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(f"{'started (' + where.zone.key + ')':26} {'EVSE':5} {'status':7} {'user':22} {'kWh':>8} "
              f"{'unbilled':>8} {'price':>14}  reason")
        for r in rows:
            started = _parse_utc(r["started_at"]).astimezone(where.zone).strftime("%Y-%m-%d %H:%M:%S")
            kwh = _kwh(r["energy_wh"]) if r["energy_wh"] is not None else "-"
            price = "unpriced" if r["pricing_error"] else (
                f"{cents(r['incl_vat'])} {r['currency']}" if r["currency"] else
                "free" if r["status"] == "ended" else "-")
            who = (r["user_name"] or r["user_id"] or r["token"] or "-")[:22]
            unbilled = _kwh(r["unbilled_wh"]) if r["unbilled_wh"] else ""
            print(f"{started:26} {r['evse_id']:5} {r['status']:7} {who:22} {kwh:>8} {unbilled:>8} {price:>14}  "
                  f"{r['reason'] or ''}")
            if r["unbilled_reason"]:
                print(f"{'':26} not billed: {r['unbilled_reason']}")
    return ExitCode.OK


# -- edge-agent outbox ---------------------------------------------------------------------------------

def cmd_outbox(args: argparse.Namespace) -> int:
    with open_existing_store_read_only(data_dir_of(args)) as store:
        events = store.pending_events(limit=args.limit)
        pending = store.outbox_pending()
        seq = store.counter("seq")
    if args.json:
        print(json.dumps({"pending": pending, "last_seq": seq, "events": [json.loads(e.body) for e in events]}))
        return ExitCode.OK
    print(f"{pending} event(s) waiting for the cloud's acknowledgement; last seq {seq}")
    for e in events:
        body = json.loads(e.body)
        print(f"  #{e.seq:<6} {e.type:16} {body['ts']}  offline={body['offline']}")
    return ExitCode.OK


# -- small helpers ------------------------------------------------------------------------------------

def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: Any) -> Any:
    """Decimal -> JSON number with the same digits."""
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent  # a letter for NaN and infinities
        whole = value == value.to_integral_value() and isinstance(exponent, int) and exponent >= 0
        return int(value) if whole else float(value)
    raise TypeError(f"not JSON serializable: {value!r}")


def _plain(amount: Decimal) -> str:
    return format(amount.normalize(), "f") if amount else "0"


def _kwh(wh: int) -> str:
    return f"{Decimal(wh) / 1000:.3f}"


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:.2f}"
