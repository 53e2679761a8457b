"""Data the benchmarks feed the agent: a large user list, the site's tariffs, outbox events."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from edge_agent.store import Store
from hardware_sim.site import TARIFFS

USERS = 100_000
TOKEN_BASE = 0x5000000000  # well away from the demo residents' cards


def token_of(index: int) -> str:
    return f"{TOKEN_BASE + index:010X}"


def users(count: int = USERS) -> list[dict[str, Any]]:
    """`count` residents with one card each, shaped as the cloud sends them (~150 bytes of JSON each)."""
    return [{"id": f"u-{i:06d}", "name": f"Resident {i:06d}", "phone": f"+47{40000000 + i}",
             "group": "residents" if i % 10 else "guests", "tokens": [token_of(i)],
             "blocked": False, "valid_until": None} for i in range(count)]


def tariff_body(version: int = 1) -> dict[str, Any]:
    return {"version": version, **TARIFFS}


def seed_store(data_dir: Path, *, user_count: int = USERS) -> list[dict[str, Any]]:
    """The user and tariff lists written straight into the agent's database, as if the cloud had sent them."""
    people = users(user_count)
    with Store(data_dir) as store:
        store.replace_users(1, people)
        store.replace_tariffs(1, tariff_body(1))
    return people


def sample_tokens(count: int, *, seed: int = 9, user_count: int = USERS) -> list[str]:
    """Distinct cards spread over the whole list (a lookup is not helped by recent inserts)."""
    return [token_of(i) for i in random.Random(seed).sample(range(user_count), count)]


def session_ended_data(index: int) -> dict[str, Any]:
    """A realistic session_ended payload (the largest routine event), ~600 bytes as JSON."""
    start_wh = 1_000_000 + index * 7_000
    return {
        "session_id": f"00000000-0000-4000-8000-{index:012d}", "evse_id": str(1 + index % 2),
        "token": token_of(index), "user_id": f"u-{index:06d}", "group": "residents", "auth": "local_list",
        "started_at": "2026-01-05T17:02:11Z", "meter_start_wh": start_wh, "tariff_id": "T-RES",
        "tariffs_version": 1, "ended_at": "2026-01-05T19:45:40Z", "meter_stop_wh": start_wh + 6_850,
        "energy_wh": 6_850, "charging_s": 9_420, "parking_s": 389, "reason": "ev_disconnected",
        "cost": {"excl_vat": 13.7, "incl_vat": 17.125, "currency": "NOK", "tariff_id": "T-RES",
                 "total_energy_kwh": 6.85, "total_time_h": 2.7247},
    }
