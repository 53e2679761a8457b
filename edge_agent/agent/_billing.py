"""What a session costs: at its end (never raises: a session ends whatever pricing does), and
while it runs (cost_so_far in ~/evse/{id}/status)."""
from __future__ import annotations

import logging
from typing import Any

from ..clock import utc_now
from ..pricing import (
    MeterSample,
    RunningCost,
    SessionPrice,
    TariffError,
    price_session,
    tariff_in_list,
    unpriced_session,
)
from ..store import SessionRecord, Store

log = logging.getLogger("edge_agent.agent")


def tariff_for(store: Store, group: str | None) -> tuple[str | None, int | None]:
    """The tariff of a user group (or the default) in the list in force, and that list's version."""
    tariffs = store.tariff_list()
    if tariffs is None:
        return None, None
    tariff_id = (tariffs.get("groups") or {}).get(group) if group else None
    return tariff_id or tariffs.get("default"), tariffs["version"]


def price_ended_session(store: Store, record: SessionRecord, samples: list[MeterSample], *, tz: str) -> SessionPrice:
    """Prices with the tariff list version in force when the session started (the store keeps
    it while the session runs), whatever list arrived since. Never raises: ending a session
    never depends on pricing it. A session its tariff cannot price (gone, unreadable, amounts
    out of range) ends unpriced: cost amounts 0 and pricing_error saying why."""
    tariff_obj: Any = None
    try:
        if record.tariff_id is not None and record.tariffs_version is not None:
            tariff_obj = tariff_in_list(store.tariff_list(record.tariffs_version), record.tariff_id)
            if tariff_obj is None:
                raise LookupError("it is not on the gateway")
        priced = price_session(tariff_obj, record.tariff_id, samples, tz=tz)
        priced.cost_json  # noqa: B018 - amounts the JSON cannot carry fail here, not in the caller
        return priced
    except Exception as exc:  # noqa: BLE001 - whatever fails, the session still ends
        why = str(exc) if isinstance(exc, TariffError | LookupError) else f"{type(exc).__name__}: {exc}"
        error = f"tariff {record.tariff_id} of list version {record.tariffs_version} cannot price it: {why}"
    log.error("session %s: %s; it ends unpriced", record.id, error)
    currency = tariff_obj.get("currency") if isinstance(tariff_obj, dict) else None
    currency = currency if isinstance(currency, str) and len(currency) == 3 and currency.isascii() else None
    try:
        return unpriced_session(samples, record.tariff_id, tz=tz, error=error, currency=currency)
    except Exception:
        log.exception("session %s: no charging periods either", record.id)
        return SessionPrice(record.tariff_id, None, (), 0, 0, pricing_error=error, currency=currency)


class RunningCostMeter:
    """The price of one running session if it ended now (incl. VAT, the tariff's currency), fed
    the stored samples. The store is read again only when `mark` (the caller's count of samples
    recorded) moved."""

    def __init__(self, store: Store, record: SessionRecord, *, tz: str) -> None:
        self.session_id = record.id
        self._store = store
        self._record = record
        self._meter: RunningCost | None = None
        self._mark: object = None
        try:
            tariff_obj = (tariff_in_list(store.tariff_list(record.tariffs_version), record.tariff_id)
                          if record.tariffs_version is not None else None)
            if tariff_obj is None and record.tariff_id is not None:
                raise LookupError(f"tariff {record.tariff_id} is not on the gateway")  # not free: unknown
            self._meter = RunningCost(tariff_obj, record.tariff_id, tz=tz)
        except Exception as exc:  # noqa: BLE001 - the session ends unpriced; cost_so_far is null
            log.error("session %s: no running cost (%s)", record.id, exc)

    def cost_so_far(self, energy_wh: int | None, *, mark: object) -> float | None:
        meter, record = self._meter, self._record
        if meter is None:
            return None
        try:
            if mark != self._mark:
                for row in self._store.samples(record.id)[meter.sample_count:]:
                    meter.add(MeterSample.from_json(row))
                self._mark = mark
            energy = energy_wh
            if energy is None:
                energy = meter.last_sample.energy_wh if meter.last_sample else record.meter_start_wh
            return meter.cost_so_far(MeterSample(
                ts=utc_now(), energy_wh=max(energy, record.meter_start_wh), power_w=None, charging=False))
        except Exception:  # a display value must never stop the agent; say it once per session
            log.exception("session %s: running cost failed; cost_so_far stays null", record.id)
            self._meter = None
            return None
