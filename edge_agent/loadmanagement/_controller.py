"""The dynamic side of load management, still pure: fed readings, writes and clock times by its caller.

    controller = LoadController(tree, grid=GridLimits(max_current_a=63, safe_current_a=32, meter=True))
    controller.site_meter_reading((21.0, 18.5, 20.2), at=now)
    controller.session_started("7", at=now)
    decision = controller.decide(now)         # lowering steps, then raising steps that fit now
    ... write them; controller.offer_written("7", 16, at=...) / offer_failed(...)

What counts against the limits for each EVSE is `counted_a`: the last offer written, but the
old, higher one while a lowering is unconfirmed (until the charger's reading shows the car
follows, at most IEC 61851's 5 s), and the higher of old and new after a failed write or while
the charger does not answer (then also at least its own fail-safe current).

The site's limit, the other load and the headroom they leave are SiteHeadroom's (_headroom).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._allocator import Allocation, Demand, Headroom, Step, allocate, violations
from ._headroom import SiteHeadroom, SiteLimit
from ._settings import GridLimits, LoadSettings
from ._tree import EPS, ZERO, Currents, LimitTree, add

# GridLimits, LoadSettings and SiteLimit live with the parts that read them; they are named here too.
__all__ = ["Decision", "GridLimits", "LoadController", "LoadSettings", "Reaction", "ReactionLog", "SiteLimit"]


@dataclass(frozen=True, slots=True)
class Decision:
    at: float
    headroom: Headroom
    allocation: Allocation
    lowering: tuple[Step, ...]  # write these first
    raising: tuple[Step, ...]  # then these; each already fits with what is counted now
    deferred: tuple[Step, ...]  # raises that must wait for lowerings to be confirmed
    cause: str | None  # what made this decision lower someone
    cause_at: float | None  # when that happened (for reaction times)


@dataclass(frozen=True, slots=True)
class Reaction:
    """How long load management took to follow a change that needed lower offers."""

    cause: str
    since: float  # when the change happened (or the silent meter's last fresh reading)
    decided_at: float
    applied_at: float  # all lowering writes done

    @property
    def seconds(self) -> float:
        return self.applied_at - self.since


@dataclass(slots=True)
class _Session:
    arrived: float
    priority: int | None
    max_current_a: float | None
    resumed: bool = False  # running when the agent stopped (see session_resumed)


@dataclass(slots=True)
class _Evse:
    session: _Session | None = None
    commanded_a: float | None = None  # last offer written; None: unknown
    counted_a: float = 0.0
    offer_changed_at: float = -math.inf
    hold_until: float | None = None  # a lowering not yet confirmed by a reading
    written_at: float = -math.inf
    needs_write: bool = True
    reachable: bool = True
    read: bool = False  # the charger answered a poll since the start
    draw: Currents | None = None  # site phases
    draw_at: float = -math.inf
    ceiling_a: float | None = None
    waiting_since: float | None = None
    paused_at: float | None = None  # when a running session was paused (for min_pause_s)


class LoadController:
    def __init__(self, tree: LimitTree, *, grid: GridLimits, settings: LoadSettings | None = None,
                 failsafe_a: Mapping[str, float] | None = None) -> None:
        if abs(grid.max_current_a - tree.max_current_a) > EPS:
            raise ValueError(f"grid max_current_a {grid.max_current_a} differs from the tree's {tree.max_current_a}")
        self.tree = tree
        self.grid = grid
        self.settings = settings or LoadSettings()
        self.failsafe_a = dict(failsafe_a or {})
        self._evses = {link.evse_id: _Evse(counted_a=link.range.max_a) for link in tree.evses}
        self._site = SiteHeadroom(tree, grid=grid, settings=self.settings, note=self._note)
        self._cause: tuple[str, float] | None = None
        self._last_headroom: Headroom | None = None
        self._last: Decision | None = None

    # -- inputs ---------------------------------------------------------------------------------

    def session_started(self, evse_id: str, *, at: float, priority: int | None = None,
                        max_current_a: float | None = None) -> None:
        """A session wants current (idempotent: a known session keeps its place and updates its options)."""
        evse = self._evse(evse_id)
        if evse.session is None:
            evse.session = _Session(arrived=at, priority=priority, max_current_a=max_current_a)
            evse.waiting_since = None
            evse.paused_at = None
            evse.ceiling_a = None
            self._note(f"session started on EVSE {evse_id}", at)
        else:
            evse.session.priority = priority
            evse.session.max_current_a = max_current_a

    def session_resumed(self, evse_id: str, *, at: float, arrived: float) -> None:
        """A session that was running when the agent stopped. It keeps its place (`arrived`, on this
        clock) and counts as running, not as a new arrival, until load management has written its
        charger; that first write waits for the charger's first reading (what it offers is unknown
        until then: its last offer, its fail-safe current, or nothing)."""
        evse = self._evse(evse_id)
        if evse.session is not None:
            return
        evse.session = _Session(arrived=arrived, priority=None, max_current_a=None, resumed=True)
        evse.waiting_since = evse.paused_at = evse.ceiling_a = None
        self._note(f"session resumed on EVSE {evse_id}", at)

    def session_ended(self, evse_id: str, *, at: float, stopped: bool = False) -> None:
        """The session is over. `stopped`: the caller already wrote the stop (offer 0) itself."""
        evse = self._evse(evse_id)
        evse.session = None
        evse.waiting_since = evse.paused_at = evse.ceiling_a = None
        if stopped:
            self._written(evse, 0.0, at)

    def has_session(self, evse_id: str) -> bool:
        return self._evse(evse_id).session is not None

    def offer_known(self, evse_id: str) -> bool:
        """An offer was written since the start (until then only the charger's readback says what it offers)."""
        return self._evse(evse_id).commanded_a is not None

    def site_meter_reading(self, currents_a: Sequence[float] | None, *, at: float,
                           power_w: float | None = None) -> None:
        """A reading of the grid connection meter (site phases). None currents: the meter had no value."""
        if currents_a is None or len(currents_a) < 3 or not all(math.isfinite(float(c)) for c in currents_a[:3]):
            return
        # Other load = meter minus the chargers' draws, but the chargers were read at other moments.
        # A charger whose offer changed lately (or that was not read since) may be anywhere between
        # its last reading and its offer: counting it at the higher of both gives a lower bound of
        # the other load, which only raises the estimate; the estimate keeps the latest sample
        # without such chargers (a settled one) until a newer settled sample replaces it.
        draws = ZERO
        settled = True
        for evse_id, evse in self._evses.items():
            if evse.draw is None:
                continue  # never read: counted as drawing nothing, which over-estimates the other load
            draw = evse.draw
            if evse.draw_at <= evse.offer_changed_at or at - evse.offer_changed_at < self.settings.ramp_s:
                settled = False
                offered = self.tree.evse(evse_id).load(evse.counted_a)
                draw = (max(draw[0], offered[0]), max(draw[1], offered[1]), max(draw[2], offered[2]))
            draws = add(draws, draw)
        self._site.meter_reading(currents_a, at=at, power_w=power_w, draws=draws, settled=settled)

    def evse_reading(self, evse_id: str, *, at: float, state: str | None = None,
                     currents_a: Sequence[float] | None = None, offered_a: float | None = None) -> bool:
        """A poll of the charger: IEC 61851 state, its own L1..L3 currents, its setpoint readback.

        True when this calls for a decision now (back from unreachable, a lowering confirmed,
        an unexpected setpoint, a changed cap)."""
        evse = self._evse(evse_id)
        link = self.tree.evse(evse_id)
        urgent = False
        if not evse.read:
            evse.read = True
            urgent = evse.session is not None and evse.session.resumed and evse.commanded_a is None
        if not evse.reachable:
            evse.reachable = True
            evse.needs_write = True
            urgent = True
        if currents_a is not None:
            evse.draw = link.to_site(currents_a)
            evse.draw_at = at
        elif state is not None and state not in "CD":
            evse.draw, evse.draw_at = ZERO, at
        step = link.range.step_a
        if offered_a is not None and at > evse.written_at:
            if evse.commanded_a is None:
                evse.counted_a = max(offered_a, 0.0)
            elif offered_a > evse.commanded_a + step / 2:
                # Rebooted to its default, or someone else wrote it: count it, and write ours again.
                evse.counted_a = max(evse.counted_a, offered_a)
                evse.needs_write = urgent = True
                self._note(f"EVSE {evse_id} offers {offered_a:g} A, not {evse.commanded_a:g} A", at)
            elif offered_a < evse.commanded_a - step / 2 and at - evse.written_at > self.settings.lowering_confirm_s:
                # In its fail-safe, or it clamps what we write: write ours again now and then, not every poll.
                evse.needs_write = urgent = True
        if evse.hold_until is not None and evse.commanded_a is not None and at > evse.written_at:
            draw = max((evse.draw[p] for p in link.site_phases), default=0.0) if evse.draw is not None else None
            if (state is not None and state not in "CD") or (
                    draw is not None and evse.draw_at > evse.written_at
                    and draw <= evse.commanded_a + self.settings.confirm_tolerance_a):
                self._confirm(evse)
                urgent = True
        ceiling = evse.ceiling_a
        self._judge_use(evse_id, evse, at)
        return urgent or evse.ceiling_a != ceiling

    def evse_unreachable(self, evse_id: str, *, at: float) -> None:
        """The charger did not answer: count it at the most it may be offering now."""
        evse = self._evse(evse_id)
        evse.reachable = False
        evse.needs_write = True
        fallback = self.failsafe_a.get(evse_id, 0.0)
        evse.counted_a = max(evse.counted_a, fallback)

    def offer_written(self, evse_id: str, amps: float, *, at: float) -> None:
        self._written(self._evse(evse_id), amps, at)

    def offer_failed(self, evse_id: str, amps: float, *, at: float) -> None:
        evse = self._evse(evse_id)
        evse.counted_a = max(evse.counted_a, amps)
        evse.needs_write = True

    def set_site_limit(self, max_current_a: float | None, *, at: float, until: float | None = None) -> SiteLimit:
        """The cloud's limit: lowers (never raises above the configured) the site's per-phase limit
        until `until` (monotonic; None: until changed). None, or at least the configured limit: restore."""
        return self._site.set_limit(max_current_a, at=at, until=until)

    # -- what it says ---------------------------------------------------------------------------

    def site_limit(self, now: float) -> SiteLimit:
        return self._site.site_limit(now)

    def meter_fresh(self, now: float) -> bool:
        return self._site.meter_fresh(now)

    def headroom(self, now: float) -> Headroom:
        return self._site.headroom(now)

    def other_load(self, now: float) -> Currents | None:
        return self._site.other_load(now)

    def next_deadline(self, now: float) -> float | None:
        """The next time something changes without any input (meter staleness, holds, limit expiry)."""
        times = [e.hold_until for e in self._evses.values() if e.hold_until is not None]
        times += self._site.deadlines()
        future = [t for t in times if t > now]
        return min(future) if future else None

    def counted(self) -> dict[str, float]:
        return {evse_id: e.counted_a for evse_id, e in self._evses.items()}

    def status(self, now: float) -> dict[str, Any]:
        """For `~/state`: the limit, the headroom and its source, the allocation."""
        limit = self.site_limit(now)
        last = self._last
        other = self.other_load(now)
        headroom = self.headroom(now)
        return {
            "max_current_a": limit.max_current_a,
            "limit_source": limit.source,
            "limit_until_s": None if limit.until is None else round(limit.until - now, 1),
            "headroom_a": [round(a, 2) for a in headroom.site_a],
            "headroom_source": headroom.source,
            "other_load_a": None if other is None else [round(a, 2) for a in other],
            "offered_a": {e: (s.commanded_a or 0.0) for e, s in self._evses.items()},
            "waiting": list(last.allocation.waiting) if last else [],
        }

    def evse_status(self, evse_id: str) -> dict[str, Any]:
        """For `~/evse/{id}/status`: what load management gives this EVSE, and why not more."""
        self._evse(evse_id)  # an unknown EVSE raises here
        last = self._last
        target = last.allocation.offers.get(evse_id, 0.0) if last else 0.0
        waiting = bool(last and evse_id in last.allocation.waiting)
        return {"allocated_current_a": target, "paused_by_load_management": waiting,
                "reason": last.allocation.reasons.get(evse_id) if last and waiting else None}

    # -- deciding -------------------------------------------------------------------------------

    def decide(self, now: float) -> Decision:
        self._expire_holds(now)
        headroom = self.headroom(now)
        previous = self._last_headroom
        if previous is not None and any(headroom.site_a[p] < previous.site_a[p] - EPS for p in range(3)) \
                and self._cause is None:
            self._note(f"headroom fell ({headroom.source})", now)
        self._last_headroom = headroom
        pinned = {e: s.counted_a for e, s in self._evses.items() if not s.reachable}
        demands = []
        offered: dict[str, float] = {}
        for evse_id, evse in self._evses.items():
            if evse.session is None:
                continue
            offered[evse_id] = evse.commanded_a or 0.0
            if evse.commanded_a is None and evse.session.resumed:
                # Charging before the restart: it goes on (even if its fail-safe stopped it meanwhile).
                offered[evse_id] = max(evse.counted_a, self.tree.evse(evse_id).range.min_a)
            may_start = evse.paused_at is None or now - evse.paused_at >= self.settings.min_pause_s
            demands.append(Demand(
                evse_id=evse_id, arrived=evse.session.arrived, priority=evse.session.priority,
                max_current_a=evse.session.max_current_a, ceiling_a=evse.ceiling_a,
                offered_a=offered[evse_id], waiting_since=evse.waiting_since, may_start=may_start))
        allocation = allocate(self.tree, demands, headroom, pinned=pinned,
                              resume_margin_a=self.settings.resume_margin_a)
        for evse_id in allocation.running:
            evse = self._evses[evse_id]
            evse.waiting_since = evse.paused_at = None
        for evse_id in allocation.waiting:
            evse = self._evses[evse_id]
            assert evse.session is not None
            if evse.waiting_since is None:
                was_running = offered[evse_id] > 0
                evse.waiting_since = now if was_running else evse.session.arrived
                if was_running:
                    evse.paused_at = now

        lowering, raising, deferred = [], [], []
        for evse_id, target in allocation.offers.items():
            evse = self._evses[evse_id]
            if not evse.reachable:
                continue
            current = evse.commanded_a
            if current is None and evse.session is not None and evse.session.resumed and not evse.read \
                    and target > 0:
                deferred.append(Step(evse_id, evse.counted_a, target))  # from what? its first reading says
                continue
            # Never written since the start: it offers at most what it is counted at (the charger's own
            # readback once it was read); going above that is a raise.
            start = evse.counted_a if current is None else current
            if target < start - EPS or (current is None and target <= start + EPS) \
                    or (evse.needs_write and target <= evse.counted_a + EPS):
                lowering.append(Step(evse_id, start, target))
            elif target > start + EPS or evse.needs_write:
                raising.append(Step(evse_id, start, target))
        lowering.sort(key=lambda s: (-(s.from_a - s.to_a), s.evse_id))
        raising.sort(key=lambda s: (s.to_a - s.from_a, s.evse_id))
        # A raise goes out now only if it fits with everything counted as it is (unconfirmed lowerings
        # still at their old offers); the rest waits for a later decision.
        counted = self.counted()
        ok_raising = []
        for step in raising:
            trial = dict(counted)
            trial[step.evse_id] = max(counted[step.evse_id], step.to_a)
            if violations(self.tree, headroom, trial):
                deferred.append(step)
            else:
                counted = trial
                ok_raising.append(step)
        cause, cause_at = self._cause if self._cause else (None, None)
        self._cause = None  # a change that needed no lowering needs no reaction either
        decision = Decision(now, headroom, allocation, tuple(lowering), tuple(ok_raising), tuple(deferred),
                            cause if lowering else None, cause_at if lowering else None)
        self._last = decision
        return decision

    # -- internals ------------------------------------------------------------------------------

    def _evse(self, evse_id: str) -> _Evse:
        self.tree.evse(evse_id)
        return self._evses[evse_id]

    def _note(self, cause: str, at: float) -> None:
        if self._cause is None:
            self._cause = (cause, at)

    def _written(self, evse: _Evse, amps: float, at: float) -> None:
        previous = evse.commanded_a
        if previous is None or abs(amps - previous) > EPS:
            evse.offer_changed_at = at
        if amps < evse.counted_a - EPS:
            evse.hold_until = at + self.settings.lowering_confirm_s  # counted stays until confirmed
        else:
            evse.counted_a = amps
            evse.hold_until = None
        evse.commanded_a = amps
        evse.written_at = at
        evse.needs_write = False

    def _confirm(self, evse: _Evse) -> None:
        if evse.commanded_a is not None:
            evse.counted_a = evse.commanded_a
        evse.hold_until = None

    def _expire_holds(self, now: float) -> None:
        for evse in self._evses.values():
            if evse.hold_until is not None and now >= evse.hold_until and evse.reachable:
                self._confirm(evse)

    def _judge_use(self, evse_id: str, evse: _Evse, at: float) -> None:
        """Give back what a car leaves unused (keeping a margin); a capped car using all of its cap grows back."""
        s = self.settings
        offer = evse.commanded_a or 0.0
        if evse.session is None or offer <= 0 or evse.draw is None or at - evse.offer_changed_at < s.giveback_after_s:
            return
        link = self.tree.evse(evse_id)
        draw = max(evse.draw[p] for p in link.site_phases)
        if offer - draw >= s.giveback_threshold_a:
            evse.ceiling_a = link.range.ceil(draw + s.giveback_margin_a)
        elif evse.ceiling_a is not None and draw >= evse.ceiling_a - s.grow_threshold_a:
            evse.ceiling_a = None


@dataclass(slots=True)
class ReactionLog:
    """Collects reactions (a bounded history) and hands each to an optional hook."""

    limit: int = 100
    items: deque[Reaction] = field(default_factory=deque)

    def add(self, reaction: Reaction) -> None:
        self.items.append(reaction)
        while len(self.items) > self.limit:
            self.items.popleft()
