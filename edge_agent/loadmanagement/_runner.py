"""The control loop: reads the site meter, decides, and asks each EVSE to offer its share
(lowering before raising). It never writes a charger itself.

Inside the agent (each EVSE controller polls its charger, owns its sessions and is the only
writer of its offer):

    plan = site_plan(config)                       # tree, grid limits, each charger's fail-safe current
    ... create_charger(..., failsafe_current_a=plan.failsafe_a[evse_id]) ...
    loop = LoadManagementLoop(plan=plan, writers=evse_controllers, meter=meter)
    loop.session_started("3"); loop.charger_reading("3", reading); loop.session_ended("3", stopped=True)

Standalone (`chargers=`), the loop's own OwnedCharger per charger sets it up, polls it and
writes it, as the proof harness does (`_standalone.py`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from drivers.api import Charger, ChargerReading, Measurement
from drivers.errors import DeviceError

from ._allocator import Step, failsafe_currents
from ._controller import Decision, GridLimits, LoadController, LoadSettings, Reaction, ReactionLog, SiteLimit
from ._share import ShareWriter
from ._standalone import OwnedCharger
from ._tree import CurrentRange, LimitTree

if TYPE_CHECKING:
    from edge_agent.config import SiteConfig

log = logging.getLogger("edge_agent.loadmanagement")

SITE_LIMIT_META = "site_limit"  # the cloud's limit in force: {"max_current_a", "until"} or null


class SiteMeter(Protocol):
    async def measure(self) -> Measurement: ...


class MetaStore(Protocol):  # edge_agent.store.Store
    def meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SitePlan:
    tree: LimitTree
    grid: GridLimits
    failsafe_a: dict[str, float]  # each charger's own fail-safe current (A per phase)


def charger_ranges(config: SiteConfig) -> dict[str, CurrentRange]:
    """Each charger's offerable currents from its model's register map and its max_current_a; an
    OCPP charger's are whole amps from 6 A (what a charging profile gives it) up to its
    max_current_a, else 32 A (Type 2's most; OCPP 1.6 has no key that tells it)."""
    from drivers.modbus import load_map
    from edge_agent.config import OcppChargerConfig

    out = {}
    for charger in config.chargers:
        if isinstance(charger, OcppChargerConfig):
            top = 32.0 if charger.max_current_a is None else float(charger.max_current_a)
            out[charger.evse_id] = CurrentRange(min_a=6.0, max_a=top, step_a=1.0)
            continue
        regmap = load_map(charger.model)
        control = regmap.control
        if control is None:
            raise ValueError(f"charger {charger.evse_id}: the {charger.model} map has no current control")
        step = regmap.registers[control.register].scale
        top = control.max_current_a if charger.max_current_a is None else float(charger.max_current_a)
        out[charger.evse_id] = CurrentRange(min_a=float(control.min_current_a), max_a=float(top),
                                            step_a=max(float(step), 0.1))
    return out


def site_plan(config: SiteConfig, *, ranges: Mapping[str, CurrentRange] | None = None) -> SitePlan:
    """Tree, limits and fail-safe currents of a config with a `site:` section.

    The fail-safe currents share `site.safe_current_a` (the chargers' budget when nothing is
    measured; it defaults to max_current_a and never exceeds it) and every circuit limit.
    """
    site = config.site
    if site is None:
        raise ValueError("load management needs a site section in the configuration")
    tree = LimitTree.from_config(config, ranges=ranges if ranges is not None else charger_ranges(config))
    grid = GridLimits(max_current_a=float(site.max_current_a), safe_current_a=float(site.safe_current_a),
                      meter=site.meter is not None, meter_timeout_s=float(site.meter_timeout_s))
    return SitePlan(tree, grid, failsafe_currents(tree, budget_a=float(site.safe_current_a)))


class LoadManagementLoop:
    def __init__(
        self,
        *,
        plan: SitePlan,
        writers: Mapping[str, ShareWriter] | None = None,  # in the agent: its EVSE controllers
        chargers: Mapping[str, Charger] | None = None,  # standalone: the loop polls and writes them itself
        meter: SiteMeter | None = None,
        settings: LoadSettings | None = None,
        poll_interval_s: float = 1.0,
        on_reaction: Callable[[Reaction], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (writers is None) == (chargers is None):
            raise ValueError("give either writers (the agent's EVSE controllers) or chargers (standalone)")
        self._owned = {e: OwnedCharger(e, c, self) for e, c in (chargers or {}).items()}
        self.writers: dict[str, ShareWriter] = dict(writers) if writers is not None else dict(self._owned)
        missing = {link.evse_id for link in plan.tree.evses} - set(self.writers)
        if missing:
            raise ValueError(f"no charger for EVSE(s) {', '.join(sorted(missing))}")
        if plan.grid.meter and meter is None:
            raise ValueError("the site has a meter configured but no meter was given")
        self.plan = plan
        self.settings = settings or LoadSettings()
        self.controller = LoadController(plan.tree, grid=plan.grid, settings=self.settings, failsafe_a=plan.failsafe_a)
        self.meter = meter
        self.reactions = ReactionLog()
        self._poll_interval_s = poll_interval_s
        self._on_reaction = on_reaction
        self._clock = clock
        self.clock = clock
        self._written: set[str] = set()  # EVSEs whose offer is known since the start (written or stopped)
        self._failing: set[str] = set()  # EVSEs whose last write failed (logged once)
        self._meter_ok: bool | None = None
        self._limit_until: datetime | None = None
        self._limit_store: MetaStore | None = None
        self._limit_saved = False  # a cloud limit is on disk
        self._wake = asyncio.Event()
        self.last_decision: Decision | None = None

    # -- inputs from the agent (all synchronous; they wake the control loop) ----------------------

    def session_started(self, evse_id: str, *, priority: int | None = None, max_current_a: float | None = None) -> None:
        self.controller.session_started(evse_id, at=self._clock(), priority=priority, max_current_a=max_current_a)
        self._wake.set()

    def session_resumed(self, evse_id: str, *, started_s_ago: float) -> None:
        """A session that was running when the agent stopped (see LoadController.session_resumed)."""
        now = self._clock()
        self.controller.session_resumed(evse_id, at=now, arrived=now - max(0.0, started_s_ago))
        self._wake.set()

    def session_ended(self, evse_id: str, *, stopped: bool = False) -> None:
        """`stopped`: the EVSE controller has already disabled the charger."""
        self.controller.session_ended(evse_id, at=self._clock(), stopped=stopped)
        if stopped:
            self._written.add(evse_id)
        self._wake.set()

    def charger_stopped(self, evse_id: str) -> None:
        """Standalone: the charger was disabled at its setup (no session), so its offer is known: 0."""
        self.controller.offer_written(evse_id, 0.0, at=self._clock())
        self._written.add(evse_id)

    def has_offered(self, evse_id: str) -> bool:
        """This charger was written an offer since the start."""
        return self.controller.offer_known(evse_id)

    def charger_reading(self, evse_id: str, reading: ChargerReading, *, at: float | None = None) -> None:
        """A successful poll; call it with the EVSE's lock held, right after the poll."""
        currents = reading.measurement.currents_a
        if self.controller.evse_reading(evse_id, at=self._clock() if at is None else at, state=reading.iec61851,
                                        currents_a=currents, offered_a=reading.offered_current_a):
            self._wake.set()

    def charger_unavailable(self, evse_id: str, *, at: float | None = None) -> None:
        self.controller.evse_unreachable(evse_id, at=self._clock() if at is None else at)
        self._wake.set()

    def set_site_limit(self, max_current_a: float | None, *, until: datetime | None = None) -> SiteLimit:
        """The cloud's set_site_limit. Raises ValueError for an `until` in the past or a bad value."""
        now = self._clock()
        until_mono = None
        if until is not None:
            until_mono = now + (until - datetime.now(UTC)).total_seconds()
        limit = self.controller.set_site_limit(max_current_a, at=now, until=until_mono)
        self._limit_until = until.astimezone(UTC).replace(microsecond=0) if limit.source == "cloud" and until else None
        self._save_site_limit(limit)
        self._wake.set()
        return limit

    def keep_site_limit(self, store: MetaStore) -> SiteLimit | None:
        """From now on the cloud's limit is saved in `store` and survives a restart until its
        `until` (without one: until the cloud changes it). Puts back the limit saved there, unless
        its `until` has passed; returns it (None: the configured limit applies)."""
        self._limit_store = store
        saved = self._saved_site_limit(store)
        if saved is None:
            return None
        amps, until = saved
        if until is not None and until <= datetime.now(UTC):
            log.info("the cloud's site limit of %g A ended at %s while the agent was stopped; "
                     "the configured %g A applies", amps, _rfc3339(until), self.plan.grid.max_current_a)
            self._limit_saved = True
            self._save_site_limit(None)
            return None
        try:
            limit = self.set_site_limit(amps, until=until)
        except ValueError as exc:  # edited by hand, or `until` passed this instant
            log.warning("the saved site limit is not used: %s; the configured %g A applies",
                        exc, self.plan.grid.max_current_a)
            self._save_site_limit(None)
            return None
        if limit.source == "cloud":
            log.info("the cloud's site limit of %g A is in force again after the restart, %s", amps,
                     f"until {_rfc3339(until)}" if until is not None else "until the cloud changes it")
            return limit
        return None

    def _saved_site_limit(self, store: MetaStore) -> tuple[float, datetime | None] | None:
        raw = store.meta(SITE_LIMIT_META)
        if raw is None:
            return None
        try:
            saved = json.loads(raw)
            if saved is None:
                return None
            amps = float(saved["max_current_a"])
            until = None if saved["until"] is None else datetime.fromisoformat(saved["until"].replace("Z", "+00:00"))
            if until is not None and until.tzinfo is None:
                raise ValueError("until has no time zone")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("the saved site limit %r is unreadable (%s); the configured %g A applies",
                        raw, exc, self.plan.grid.max_current_a)
            self._limit_saved = True
            self._save_site_limit(None)
            return None
        self._limit_saved = True
        return amps, until

    def _save_site_limit(self, limit: SiteLimit | None) -> None:
        if self._limit_store is None:
            return
        cloud = limit is not None and limit.source == "cloud"
        if not cloud and not self._limit_saved:
            return  # nothing on disk to clear: an idle gateway writes nothing
        value = None
        if cloud:
            assert limit is not None
            value = {"max_current_a": limit.max_current_a,
                     "until": _rfc3339(self._limit_until) if self._limit_until is not None else None}
        try:
            self._limit_store.set_meta(SITE_LIMIT_META, json.dumps(value))
        except sqlite3.Error as exc:
            log.warning("cannot save the site limit (%s): it holds until the agent restarts", exc)
            return
        self._limit_saved = cloud

    def _forget_expired_limit(self, now: float) -> None:
        if self._limit_saved and self.controller.site_limit(now).source != "cloud":
            log.info("the cloud's site limit has ended; the configured %g A applies", self.plan.grid.max_current_a)
            self._limit_until = None
            self._save_site_limit(None)

    # -- what it shows ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """For `~/state`: fields that change only when something happens (not with every meter reading)."""
        now = self._clock()
        limit = self.controller.site_limit(now)
        last = self.last_decision
        return {
            "max_current_a": limit.max_current_a,
            "limit_source": limit.source,
            "limit_until": (self._limit_until.isoformat().replace("+00:00", "Z")
                            if limit.source == "cloud" and self._limit_until else None),
            "headroom_source": self.controller.headroom(now).source,
            "allocated_a": {} if last is None else {e: a for e, a in last.allocation.offers.items() if a},
            "waiting": [] if last is None else list(last.allocation.waiting),
        }

    def status(self) -> dict[str, Any]:
        """Everything, for a technician: headroom per phase, other load, offers, the last reaction."""
        out = self.controller.status(self._clock())
        last = self.reactions.items[-1] if self.reactions.items else None
        out["last_reaction"] = None if last is None else {"cause": last.cause, "seconds": round(last.seconds, 3)}
        return out

    def evse_status(self, evse_id: str) -> dict[str, Any]:
        return self.controller.evse_status(evse_id)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._control_loop(), name="load-control")]
        if self.meter is not None:
            tasks.append(asyncio.create_task(self._meter_loop(), name="site-meter"))
        tasks += [asyncio.create_task(owned.poll_forever(self._poll_interval_s), name=f"load-poll-{e}")
                  for e, owned in self._owned.items()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _control_loop(self) -> None:
        while True:
            self._wake.clear()
            self._forget_expired_limit(self._clock())
            decision = self.controller.decide(self._clock())
            self.last_decision = decision
            await self._apply(decision)
            now = self._clock()
            timeout = self.settings.control_interval_s
            deadline = self.controller.next_deadline(now)
            if deadline is not None:
                timeout = min(timeout, max(0.005, deadline - now + 0.001))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _apply(self, decision: Decision) -> None:
        if decision.lowering:
            # Until the loop has written a charger (after a restart) its offer is unknown: a step
            # down from the assumed maximum may be a raise, so it waits for the certain lowerings.
            certain = [s for s in decision.lowering if s.to_a == 0 or s.evse_id in self._written]
            unknown = [s for s in decision.lowering if s not in certain]
            for steps in (certain, unknown):
                if steps:
                    await asyncio.gather(*(self._write(step) for step in steps))
            if decision.cause is not None and decision.cause_at is not None:
                reaction = Reaction(decision.cause, decision.cause_at, decision.at, self._clock())
                self.reactions.add(reaction)
                log.info("load management: %s -> lower offers in place after %.2f s",
                         reaction.cause, reaction.seconds)
                if self._on_reaction is not None:
                    self._on_reaction(reaction)
        if decision.raising:
            await asyncio.gather(*(self._write(step) for step in decision.raising))

    async def _write(self, step: Step) -> None:
        evse_id, amps = step.evse_id, step.to_a
        try:
            if not await self.writers[evse_id].write_share(amps):
                return  # the session ended while this request waited
        except DeviceError as exc:
            self.controller.offer_failed(evse_id, amps, at=self._clock())
            if evse_id not in self._failing:
                self._failing.add(evse_id)
                log.warning("load management: cannot offer %g A on EVSE %s: %s", amps, evse_id, exc)
            return
        self.controller.offer_written(evse_id, amps, at=self._clock())
        self._written.add(evse_id)
        if evse_id in self._failing:
            self._failing.discard(evse_id)
            log.info("load management: EVSE %s takes offers again", evse_id)

    async def _meter_loop(self) -> None:
        assert self.meter is not None
        interval = self.settings.meter_interval_s
        while True:
            started = self._clock()
            try:
                m = await asyncio.wait_for(self.meter.measure(), self.settings.meter_read_timeout_s)
                if m.currents_a is None:
                    raise ValueError("the site meter gave no phase currents")
                if not all(math.isfinite(c) for c in m.currents_a):
                    raise ValueError(f"the site meter gave {m.currents_a}")
            except (DeviceError, TimeoutError, ValueError) as exc:
                if self._meter_ok is not False:
                    log.warning("site meter unavailable: %s", exc or "no answer")
                self._meter_ok = False
            else:
                if self._meter_ok is False:
                    log.info("site meter answers again")
                self._meter_ok = True
                self.controller.site_meter_reading(m.currents_a, at=self._clock(),
                                                   power_w=None if m.power_w is None else float(m.power_w))
                self._wake.set()
            await asyncio.sleep(max(0.0, interval - (self._clock() - started)))


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
