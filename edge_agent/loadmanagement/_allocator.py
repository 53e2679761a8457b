"""Who gets how much: admission (>= the minimum or paused), max-min fair filling, change-over plans.

    allocation = allocate(tree, demands, Headroom(site_a=(55, 55, 55)))
    plan = plan_changeover(current_offers, allocation.offers)   # lowering steps, then raising steps

Every limit is linear in the offers: per node (site, circuit) and site phase, the offers of the
EVSEs under that node using that phase add up; a power limit adds offer x phases x voltage.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ._tree import EPS, PHASE_NAMES, Currents, FailsafeBudgetError, LimitTree, TreeError, node_name

_INF = math.inf


@dataclass(frozen=True, slots=True, kw_only=True)
class Headroom:
    """What all chargers together may be offered at the site connection now."""

    site_a: Currents  # per site phase; may be negative when other load alone is over the limit
    site_power_w: float | None = None
    source: str = "configured limit"


@dataclass(frozen=True, slots=True, kw_only=True)
class Demand:
    """An EVSE with a session that wants current."""

    evse_id: str
    arrived: float  # when the session started (any monotonic order)
    priority: int | None = None  # None: the EVSE's configured priority (pass a user group's here)
    max_current_a: float | None = None  # the session's own maximum, below the charger's
    ceiling_a: float | None = None  # what it actually uses, plus a margin (it gives the rest back)
    offered_a: float = 0.0  # what it has now; > 0 means it is running
    waiting_since: float | None = None  # when load management paused it; None: running, or new
    may_start: bool = True  # False while a paused EVSE must stay paused a little longer


@dataclass(frozen=True, slots=True)
class Violation:
    limit: str  # "site L2", "circuit garage-b L1", "site power"
    used: float
    cap: float

    def __str__(self) -> str:
        unit = "W" if self.limit.endswith("power") else "A"
        return f"{self.limit}: {self.used:.2f} {unit} > {self.cap:.2f} {unit}"


@dataclass(frozen=True, slots=True)
class Allocation:
    offers: Mapping[str, float]  # every EVSE of the tree: 0 (paused, no session) or >= its minimum
    running: tuple[str, ...]  # demands that got current, in rank order
    waiting: tuple[str, ...]  # demands paused for lack of current, in the order they will resume
    reasons: Mapping[str, str]  # why each waiting EVSE waits
    pinned: tuple[str, ...] = ()  # counted at a current we cannot change (unreachable chargers)
    overload: tuple[Violation, ...] = ()  # limits the pinned currents alone exceed


@dataclass(frozen=True, slots=True)
class Step:
    evse_id: str
    from_a: float
    to_a: float


@dataclass(frozen=True, slots=True)
class ChangeoverPlan:
    """Write `lowering` first, all of them, then `raising`; any order within each."""

    lowering: tuple[Step, ...]
    raising: tuple[Step, ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.lowering + self.raising


@dataclass(slots=True)
class _Limit:
    name: str
    cap: float
    weights: dict[str, float] = field(default_factory=dict)


def _limits(tree: LimitTree, headroom: Headroom) -> list[_Limit]:
    out: list[_Limit] = []
    nodes: list[tuple[str | None, Currents, float | None]] = [(None, headroom.site_a, headroom.site_power_w)]
    for c in tree.circuits:
        nodes.append((c.id, tree.site_limits(c.max_current_a), c.max_power_w))
    for node, caps, power in nodes:
        under = [link for link in tree.evses if node in tree.path(link.evse_id)]
        for p in range(3):
            weights = {link.evse_id: 1.0 for link in under if p in link.site_phases}
            if weights:
                out.append(_Limit(f"{node_name(node)} {PHASE_NAMES[p]}", caps[p], weights))
        if power is not None and under:
            weights = {link.evse_id: link.phases * tree.voltage_v for link in under}
            out.append(_Limit(f"{node_name(node)} power", power, weights))
    return out


def violations(tree: LimitTree, headroom: Headroom, offers: Mapping[str, float],
               *, tolerance: float = EPS) -> list[Violation]:
    """Every limit the offers exceed (empty: all fit)."""
    out = []
    for limit in _limits(tree, headroom):
        used = sum(w * offers.get(e, 0.0) for e, w in limit.weights.items())
        if used > limit.cap + tolerance * (tree.voltage_v * 3 if limit.name.endswith("power") else 1):
            out.append(Violation(limit.name, used, limit.cap))
    return out


class _Usage:
    def __init__(self, limits: list[_Limit]) -> None:
        self.limits = limits
        self.used = [0.0] * len(limits)
        self.of: dict[str, list[tuple[int, float]]] = {}
        for i, limit in enumerate(limits):
            for e, w in limit.weights.items():
                self.of.setdefault(e, []).append((i, w))

    def add(self, evse_id: str, amps: float) -> None:
        for i, w in self.of.get(evse_id, ()):
            self.used[i] += w * amps

    def blocking(self, evse_id: str, amps: float, margin_a: float = 0.0) -> list[int]:
        """Limits that adding `amps` for this EVSE would exceed (keeping margin_a per phase free)."""
        out = []
        for i, w in self.of.get(evse_id, ()):
            if self.used[i] + w * (amps + margin_a) > self.limits[i].cap + EPS * w:
                out.append(i)
        return out


def allocate(tree: LimitTree, demands: Iterable[Demand], headroom: Headroom, *,
             pinned: Mapping[str, float] | None = None, resume_margin_a: float = 0.0) -> Allocation:
    """Offers for every EVSE such that no limit is exceeded and everyone running gets its minimum.

    Admission: by priority (highest first); within a priority, those running in order of arrival,
    then those waiting in the order they started waiting (paused, or new). Whoever does not fit
    at its minimum waits; a waiting EVSE needs `resume_margin_a` per phase to spare, and one that
    did not fit holds back later waiting ones on the same limit (no overtaking in the queue).
    Filling: from the minimum up, highest priority first, max-min fair within a priority (equal
    share up to each one's ceiling or a full limit) in each charger's own steps, each within one
    step of its equals.
    """
    pinned = dict(pinned or {})
    limits = _limits(tree, headroom)
    usage = _Usage(limits)
    offers: dict[str, float] = {link.evse_id: 0.0 for link in tree.evses}
    for evse_id, amps in pinned.items():
        tree.evse(evse_id)
        offers[evse_id] = amps
        usage.add(evse_id, amps)
    overload = tuple(Violation(limits[i].name, usage.used[i], limits[i].cap)
                     for i in range(len(limits)) if usage.used[i] > limits[i].cap + EPS)

    wanted: dict[str, Demand] = {}
    for d in demands:
        tree.evse(d.evse_id)
        if d.evse_id in wanted:
            raise TreeError(f"two demands for EVSE {d.evse_id!r}")
        if d.evse_id not in pinned:
            wanted[d.evse_id] = d

    def priority(d: Demand) -> int:
        return tree.evse(d.evse_id).priority if d.priority is None else d.priority

    def rank(d: Demand) -> tuple[int, int, float, float, str]:
        if d.offered_a > 0:
            return (-priority(d), 0, d.arrived, d.arrived, d.evse_id)
        # Paused together: in order of arrival.
        return (-priority(d), 1, d.arrived if d.waiting_since is None else d.waiting_since, d.arrived, d.evse_id)

    def ceiling(d: Demand) -> float:
        rng = tree.evse(d.evse_id).range
        top = min(rng.max_a, _INF if d.max_current_a is None else d.max_current_a,
                  _INF if d.ceiling_a is None else d.ceiling_a)
        return max(rng.min_a, top)

    running: list[Demand] = []
    waiting: list[str] = []
    reasons: dict[str, str] = {}
    held_back: dict[int, str] = {}  # limit index -> the first waiting EVSE it blocked
    for d in sorted(wanted.values(), key=rank):
        link = tree.evse(d.evse_id)
        is_waiting = d.offered_a <= 0
        if is_waiting:
            ahead = [held_back[i] for i, _ in usage.of.get(d.evse_id, ()) if i in held_back]
            if ahead:
                waiting.append(d.evse_id)
                reasons[d.evse_id] = f"queued behind EVSE {ahead[0]}"
                continue
            if not d.may_start:
                waiting.append(d.evse_id)
                reasons[d.evse_id] = "paused recently; resumes after the minimum pause"
                for i, _ in usage.of.get(d.evse_id, ()):
                    held_back.setdefault(i, d.evse_id)
                continue
        blocking = usage.blocking(d.evse_id, link.range.min_a, resume_margin_a if is_waiting else 0.0)
        if blocking:
            waiting.append(d.evse_id)
            names = ", ".join(limits[i].name for i in blocking)
            reasons[d.evse_id] = f"no {link.range.min_a:g} A left on {names}"
            if is_waiting:
                for i in blocking:
                    held_back.setdefault(i, d.evse_id)
            continue
        usage.add(d.evse_id, link.range.min_a)
        running.append(d)

    x = {d.evse_id: tree.evse(d.evse_id).range.min_a for d in running}
    ceil = {d.evse_id: ceiling(d) for d in running}
    order = {d.evse_id: i for i, d in enumerate(running)}
    for prio in sorted({priority(d) for d in running}, reverse=True):
        _fill(tree, usage, x, [d.evse_id for d in running if priority(d) == prio], ceil, order)
    offers.update(x)
    return Allocation(offers=offers, running=tuple(d.evse_id for d in running), waiting=tuple(waiting),
                      reasons=reasons, pinned=tuple(pinned), overload=overload)


def _fill(tree: LimitTree, usage: _Usage, x: dict[str, float], group: list[str], ceil: dict[str, float],
          order: dict[str, int]) -> None:
    """Discrete water-filling: raise whoever of the group has least (ties: by rank) by its own step,
    until nobody's step fits or everyone is at its ceiling. Whenever someone is raised it has the
    least, so all keep within one step of each other, except those a full limit or their ceiling stopped.
    """
    heap = [(x[e], order[e], e) for e in group]
    heapq.heapify(heap)
    while heap:
        _, _, e = heapq.heappop(heap)
        step = tree.evse(e).range.step_a
        more = round(x[e] + step, 6)
        if more <= ceil[e] + EPS and not usage.blocking(e, step):
            usage.add(e, step)
            x[e] = more
            heapq.heappush(heap, (more, order[e], e))


def plan_changeover(current: Mapping[str, float], target: Mapping[str, float]) -> ChangeoverPlan:
    """The writes taking `current` to `target`: every lowering (largest first) before any raising.

    After the lowerings each offer is min(current, target) <= target, and each raise moves one
    offer up towards target, so if target fits, every state after the lowering phase fits; and
    while lowering, no limit's use ever grows. EVSEs missing from `current` are unknown: they
    are lowered to their target first.
    """
    lowering, raising = [], []
    for evse_id, to in target.items():
        now = current.get(evse_id)
        if now is None:
            lowering.append(Step(evse_id, _INF, to))
        elif to < now - EPS:
            lowering.append(Step(evse_id, now, to))
        elif to > now + EPS:
            raising.append(Step(evse_id, now, to))
    lowering.sort(key=lambda s: (-(s.from_a - s.to_a), s.evse_id))
    raising.sort(key=lambda s: (s.to_a - s.from_a, s.evse_id))
    return ChangeoverPlan(tuple(lowering), tuple(raising))


def failsafe_currents(tree: LimitTree, *, budget_a: float | None = None) -> dict[str, float]:
    """Each charger's own fail-safe current, used when the gateway dies: all of them together fit
    `budget_a` per site phase (default the site's max_current_a) and every circuit limit.

    Chargers with a fixed fail-safe keep it; the others share what is left max-min fairly as if
    all were charging, by priority then tree order; a charger whose share would be under its
    minimum gets 0. Raises FailsafeBudgetError when the fixed ones alone do not fit.
    """
    budget = tree.max_current_a if budget_a is None else budget_a
    headroom = Headroom(site_a=tree.site_limits(min(budget, tree.max_current_a)), site_power_w=tree.max_power_w,
                        source="fail-safe budget")
    fixed = {link.evse_id: float(link.failsafe_current_a) for link in tree.evses
             if link.failsafe_current_a is not None}
    demands = [Demand(evse_id=link.evse_id, arrived=float(i), offered_a=1.0)
               for i, link in enumerate(tree.evses) if link.evse_id not in fixed]
    allocation = allocate(tree, demands, headroom, pinned=fixed)
    if allocation.overload:
        names = ", ".join(sorted(fixed))
        raise FailsafeBudgetError(
            f"the fixed failsafe_current_a of EVSE(s) {names} alone exceed "
            + "; ".join(str(v) for v in allocation.overload))
    return dict(allocation.offers)
