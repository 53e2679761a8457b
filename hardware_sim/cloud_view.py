"""One-line, human-readable renderings of what SimCloud received, for terminal demos."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any


def clock(ts: Any, *, tz: tzinfo | None = None) -> str:
    """HH:MM:SS of an RFC 3339 timestamp in the given zone (default: local time)."""
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).astimezone(tz).strftime("%H:%M:%S")
    except ValueError:
        return "??:??:??"


def kwh(wh: Any) -> str:
    return f"{wh / 1000:.2f} kWh" if isinstance(wh, (int, float)) else "? kWh"


def format_event(event: Mapping[str, Any], *, user_names: Mapping[str, str] = {}, tz: tzinfo | None = None) -> str:
    data: Mapping[str, Any] = event.get("data") or {}
    kind = event.get("type", "?")
    parts = [clock(event.get("ts"), tz=tz), f"#{event.get('seq', '?')}", str(kind)]
    if "evse_id" in data:
        parts.append(f"evse {data['evse_id']}")
    user = user_names.get(data.get("user_id") or "", data.get("user_id") or data.get("token"))
    if kind == "session_started":
        parts += [str(user or "anonymous"), f"auth {data.get('auth')}"]
    elif kind == "session_ended":
        cost = data.get("cost") or {}
        price = cost.get("incl_vat")
        parts += [str(user or "anonymous"), kwh(data.get("energy_wh"))]
        parts.append(f"{price:.2f} {cost.get('currency', '')}".strip() if isinstance(price, (int, float)) else "free")
        parts.append(f"reason {data.get('reason')}")
    elif kind == "meter_values":
        samples = data.get("samples") or []
        last = samples[-1] if samples else {}
        parts += [f"{len(samples)} samples", kwh(last.get("energy_wh")), f"{(last.get('power_w') or 0) / 1000:.1f} kW"]
    elif kind == "auth_rejected":
        parts += [f"token {data.get('token')}", str(data.get("reason"))]
    elif kind == "evse_fault":
        parts.append(f"fault: {data['error']}" if data.get("error") else "fault cleared")
    if event.get("offline"):
        parts.append("offline")
    return " ".join(parts)


def format_state(state: Mapping[str, Any] | None) -> str:
    if not state:
        return "gateway: no state yet"
    if not state.get("online"):
        return "gateway: OFFLINE"
    return (
        f"gateway: online v{state.get('version')} users v{state.get('users_version')} "
        f"tariffs v{state.get('tariffs_version')} outbox {state.get('outbox_pending')} "
        f"rejected {state.get('rejected_messages')}" + ("" if state.get("clock_synced", True) else " clock NOT synced")
    )


def format_evse_status(status: Mapping[str, Any]) -> str:
    line = (
        f"evse {status.get('evse_id')} {status.get('status')} ({status.get('iec61851')}) "
        f"{status.get('offered_current_a')} A {(status.get('power_w') or 0) / 1000:.1f} kW "
        f"meter {kwh(status.get('energy_wh'))}"
    )
    return line + (f" error: {status['error']}" if status.get("error") else "")


def format_result(result: Mapping[str, Any]) -> str:
    detail = f": {result['detail']}" if result.get("detail") else ""
    return f"result {result.get('request_id')} {result.get('status')}{detail}"
