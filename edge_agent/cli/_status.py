"""`edge-agent status`: what the running agent is doing now, as a technician on a ladder needs to see it at a glance.

The live view comes from the agent's status file on tmpfs; the database is only read (read-only)
when the agent is not running.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..clock import parse_rfc3339
from ._common import data_dir_of, db_path, open_store_read_only, schema_version_of
from ._exit_codes import ExitCode


def _database_summary(data_dir: Path) -> dict[str, Any] | None:
    db = db_path(data_dir)
    if not db.exists():
        return None
    with open_store_read_only(data_dir) as store:
        active = store.session_count(active=True)
        return {"path": str(db), "schema_version": schema_version_of(db), "outbox_pending": store.outbox_pending(),
                "last_seq": store.counter("seq"), "users_version": store.list_version("users"),
                "users": store.user_count(), "tariffs_version": store.list_version("tariffs"),
                "active_sessions": int(active)}


def _status_once(data_dir: Path, *, as_json: bool) -> tuple[int, str]:
    from ..runtime_status import read_agent_status, status_file_candidates

    live = read_agent_status(data_dir)
    if live is None:
        hidden = [p for p in status_file_candidates(data_dir) if p.exists() and not os.access(p, os.R_OK)]
        if hidden:
            return ExitCode.NO, (f"cannot read {hidden[0]}: permission denied; run it with sudo, or as a member "
                                 "of the edge-agent group")
    if live is not None and live.running:
        health_ok = (live.content.get("health") or {}).get("ok", True)
        code = ExitCode.OK if health_ok else ExitCode.NO
        if as_json:
            return code, json.dumps({"running": True, "healthy": health_ok, "age_s": round(live.age_s, 2),
                                     "status_file": str(live.path), "agent": live.content}, indent=2)
        return code, render_running(live.content, age_s=live.age_s)
    database = _database_summary(data_dir)
    age = live.age_s if live is not None else None
    if as_json:
        return ExitCode.NO, json.dumps({"running": False, "healthy": False, "status_age_s": age,
                                        "data_dir": str(data_dir), "database": database}, indent=2)
    return ExitCode.NO, render_stopped(database, status_age_s=age, data_dir=str(data_dir))


def cmd_status(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    if not args.watch or args.json:
        code, text = _status_once(data_dir, as_json=args.json)
        print(text)
        return code
    try:
        while True:
            code, text = _status_once(data_dir, as_json=False)
            # Home, draw, clear what is left: no flicker on a slow serial console.
            sys.stdout.write("\x1b[H" + "\n".join(line + "\x1b[K" for line in text.splitlines()) + "\n\x1b[J")
            sys.stdout.write(f"\x1b[2m{time.strftime('%H:%M:%S')} · refreshing every {args.interval:g} s · "
                             "Ctrl-C to quit\x1b[0m\x1b[K\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print()
        return ExitCode.OK


# -- the text ------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _since(rfc3339_text: str | None) -> str:
    if not rfc3339_text:
        return "?"
    try:
        started = parse_rfc3339(rfc3339_text)
    except ValueError:
        return "?"
    return _duration((datetime.now(UTC) - started).total_seconds())


def _kwh(wh: Any) -> str:
    return f"{wh / 1000:.3f} kWh" if isinstance(wh, (int, float)) else "-"


def _power(w: Any) -> str:
    return f"{w / 1000:.1f} kW" if isinstance(w, (int, float)) else "-"


def _currents(values: Any) -> str:
    if not values:
        return "-"
    return " ".join(f"{v:.1f}" for v in values)


def render_running(status: dict[str, Any], *, age_s: float) -> str:
    lines = []
    cloud = status.get("cloud") or {}
    outbox = status.get("outbox") or {}
    lists = status.get("lists") or {}
    health = status.get("health") or {}
    started = _since(status.get("started_at"))
    lines.append(f"edge-agent {status.get('version', '?')} · gateway {status.get('gateway_id', '?')} · "
                 f"pid {status.get('pid', '?')} · up {started} · updated {age_s:.1f} s ago")
    if cloud.get("connected"):
        link = f"online   {cloud.get('host')}:{cloud.get('port')}"
    else:
        error = cloud.get("last_error")
        link = f"OFFLINE  {cloud.get('host')}:{cloud.get('port')}" + (f"  ({error})" if error else "") + \
            "\n          charging goes on from the local lists; events wait in the outbox"
    lines.append(f"cloud     {link}")
    lines.append(f"outbox    {outbox.get('pending', '?')} event(s) waiting for the cloud's acknowledgement "
                 f"(last seq {outbox.get('last_seq', '?')})")
    lines.append(f"lists     users v{lists.get('users_version', '?')} ({lists.get('users', '?')} users) · "
                 f"tariffs v{lists.get('tariffs_version', '?')}")
    clock = "synced" if status.get("clock_synced") else "NOT synced (no NTP yet: times may be wrong)"
    lines.append(f"clock     {clock}")
    if health:
        watched = f"systemd watchdog {health['watchdog_s']:g} s" if health.get("watchdog_s") else \
            "not watched by systemd"
        state = "OK" if health.get("ok") else "PROBLEM: " + "; ".join(health.get("problems") or [])
        lines.append(f"health    {state} ({watched})")
    if status.get("rejected_messages"):
        lines.append(f"rejected  {status['rejected_messages']} malformed cloud message(s) since the database began")
    for evse in status.get("evses") or []:
        lines.append("")
        status_text = evse.get("status") or "?"
        if not evse.get("available", True) and status_text != "Unavailable":
            status_text += " (unavailable after this session)"
        lines.append(f"EVSE {evse.get('evse_id', '?'):3} {status_text:12} car {evse.get('iec61851') or '-'}  "
                     f"offered {evse.get('offered_a', 0):4.1f} A  current {_currents(evse.get('currents_a'))} A  "
                     f"{_power(evse.get('power_w'))}")
        session, pending = evse.get("session"), evse.get("pending")
        if evse.get("fault"):
            lines.append(f"{'':9}FAULT    {evse['fault']}")
        if evse.get("failsafe_warning"):
            lines.append(f"{'':9}WARNING  {evse['failsafe_warning']}")
        if session:
            who = session.get("user_name") or session.get("user_id") or session.get("token") or "?"
            lines.append(f"{'':9}session  {who} ({session.get('auth')}) · {_kwh(session.get('energy_wh'))} "
                         f"in {_since(session.get('started_at'))}"
                         + (" · started offline" if session.get("offline_start") else ""))
        elif pending:
            who = pending.get("user_name") or pending.get("token")
            lines.append(f"{'':9}waiting  {who} tapped; {int(pending.get('expires_in_s') or 0)} s left to plug in")
        lines.append(f"{'':9}charger  {evse.get('model') or '?'} at {evse.get('endpoint') or '?'} · "
                     f"meter {_kwh(evse.get('register_wh'))}"
                     + (f" · {evse['failed_polls']} failed poll(s)" if evse.get("failed_polls") else ""))
    readers = status.get("readers") or []
    lines.append("")
    lines.append("readers" if readers else "readers   none configured")
    width = max([len(str(r.get("name", "?"))) for r in readers] + [8])
    for reader in readers:
        where = f"EVSE {reader['evse_id']}" if reader.get("evse_id") is not None else "site-wide"
        if reader.get("healthy"):
            state = f"OK      {reader.get('frames_ok', 0)} card read(s), {reader.get('frames_bad', 0)} bad frame(s)"
        else:
            error = reader.get("last_error") or "not open yet"
            state = f"FAILED  {error if len(error) <= 48 else error[:45] + '...'}"
        lines.append(f"  {reader.get('name', '?'):{width}} -> {where:9} {state}")
    return "\n".join(lines)


def render_stopped(database: dict[str, Any] | None, *, status_age_s: float | None, data_dir: str) -> str:
    lines = []
    if status_age_s is None:
        lines.append(f"edge-agent is NOT running (no live status for {data_dir})")
    else:
        lines.append(f"edge-agent is NOT running (its live status is {status_age_s:.0f} s old)")
    lines.append("  start it:  systemctl start edge-agent      why it stopped:  journalctl -u edge-agent -n 50")
    if database is None:
        lines.append(f"database  none in {data_dir}")
    else:
        lines.append(f"database  {database['path']} (schema {database['schema_version']})")
        lines.append(f"outbox    {database['outbox_pending']} event(s) waiting for the cloud's acknowledgement "
                     f"(last seq {database['last_seq']})")
        lines.append(f"lists     users v{database['users_version']} ({database['users']} users) · "
                     f"tariffs v{database['tariffs_version']}")
        lines.append(f"sessions  {database['active_sessions']} still open (the agent resumes them when it starts)")
    return "\n".join(lines)
