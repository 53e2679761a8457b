"""Load management's pure parts: the limit tree, the allocator, change-over plans, fail-safe
currents, and the dynamic controller (fed readings and clock times by the test)."""
from __future__ import annotations

import itertools
import math
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config import parse_config_text
from edge_agent.loadmanagement import (
    Circuit,
    CurrentRange,
    Demand,
    EvseLink,
    FailsafeBudgetError,
    GridLimits,
    Headroom,
    LimitTree,
    LoadController,
    LoadSettings,
    TreeError,
    allocate,
    failsafe_currents,
    plan_changeover,
    site_plan,
    total_load,
    violations,
)
from edge_agent.loadmanagement._allocator import _limits

EPS = 1e-6


# -- strategies -------------------------------------------------------------------------------------

@st.composite
def trees(draw: st.DrawFn) -> LimitTree:
    site_phases = draw(st.sampled_from((3, 3, 3, 1)))
    n_circuits = draw(st.integers(0, 3))
    circuits: list[Circuit] = []
    for i in range(n_circuits):
        parent = draw(st.sampled_from([None, *[c.id for c in circuits]]))
        power = draw(st.one_of(st.none(), st.floats(3000, 60000)))
        circuits.append(Circuit(id=f"c{i}", max_current_a=draw(st.floats(6, 80)), parent=parent, max_power_w=power))
    evses = []
    for i in range(draw(st.integers(1, 12))):
        phases = 1 if site_phases == 1 else draw(st.sampled_from((1, 3)))
        step = draw(st.sampled_from((1.0, 1.0, 0.1)))
        top = draw(st.integers(6, 32))
        evses.append(EvseLink(
            evse_id=f"e{i}", circuit=draw(st.sampled_from([None, *[c.id for c in circuits]])),
            phases=phases, phase_l1=0 if site_phases == 1 else draw(st.integers(0, 2)),
            priority=draw(st.integers(-2, 2)), range=CurrentRange(min_a=6, max_a=top, step_a=step)))
    return LimitTree(max_current_a=draw(st.floats(16, 200)), phases=site_phases, circuits=tuple(circuits),
                     evses=tuple(evses), max_power_w=draw(st.one_of(st.none(), st.floats(4000, 120000))))


@st.composite
def situations(draw: st.DrawFn) -> tuple[LimitTree, list[Demand], Headroom, dict[str, float]]:
    tree = draw(trees())
    site = draw(st.floats(-10, tree.max_current_a))
    site_a = tuple(draw(st.floats(site - 10, tree.max_current_a)) for _ in range(3))
    headroom = Headroom(site_a=site_a, site_power_w=tree.max_power_w)  # type: ignore[arg-type]
    ids = [link.evse_id for link in tree.evses]
    pinned_ids = draw(st.lists(st.sampled_from(ids), unique=True, max_size=2))
    pinned = {e: float(draw(st.sampled_from((0, 6, 10)))) for e in pinned_ids}
    wanting = draw(st.lists(st.sampled_from(ids), unique=True))
    demands = []
    for order, evse_id in enumerate(wanting):
        demands.append(Demand(
            evse_id=evse_id, arrived=float(order),
            priority=draw(st.one_of(st.none(), st.integers(-3, 3))),
            max_current_a=draw(st.one_of(st.none(), st.floats(6, 32))),
            ceiling_a=draw(st.one_of(st.none(), st.floats(0, 20))),
            offered_a=float(draw(st.sampled_from((0, 0, 6, 10)))),
            waiting_since=draw(st.one_of(st.none(), st.floats(0, 20))),
            may_start=draw(st.booleans())))
    return tree, demands, headroom, pinned


def over(tree: LimitTree, headroom: Headroom, offers: dict[str, float], *, pinned: dict[str, float] | None = None) -> list:
    """Violations not already there with nobody (but the pinned) offered anything: other load alone
    over the limit (negative headroom) is not the allocator's doing."""
    given = {v.limit for v in violations(tree, headroom, dict(pinned or {}))}
    return [v for v in violations(tree, headroom, offers) if v.limit not in given]


def _ceiling(tree: LimitTree, d: Demand) -> float:
    rng = tree.evse(d.evse_id).range
    top = min(rng.max_a, d.max_current_a or math.inf, math.inf if d.ceiling_a is None else d.ceiling_a)
    return max(rng.min_a, top)


def _prio(tree: LimitTree, d: Demand) -> int:
    return tree.evse(d.evse_id).priority if d.priority is None else d.priority


# -- the allocator's properties ---------------------------------------------------------------------

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(situations())
def test_no_limit_is_exceeded_at_any_level_and_everyone_gets_6_a_or_nothing(case) -> None:
    tree, demands, headroom, pinned = case
    allocation = allocate(tree, demands, headroom, pinned=pinned, resume_margin_a=1.0)
    overloaded = {v.limit for v in allocation.overload}
    for v in violations(tree, headroom, allocation.offers):
        assert v.limit in overloaded, f"{v} (not caused by pinned currents {pinned})"
    wanted = {d.evse_id: d for d in demands}
    for evse_id, amps in allocation.offers.items():
        rng = tree.evse(evse_id).range
        if evse_id in pinned:
            assert amps == pinned[evse_id]
        elif evse_id not in wanted:
            assert amps == 0
        elif amps:
            assert rng.min_a - EPS <= amps <= _ceiling(tree, wanted[evse_id]) + EPS
            assert abs(amps / rng.step_a - round(amps / rng.step_a)) < 1e-6, f"{amps} is not in {rng.step_a} A steps"
    assert set(allocation.running) | set(allocation.waiting) == set(wanted) - set(pinned)
    for evse_id in allocation.waiting:
        assert allocation.offers[evse_id] == 0 and allocation.reasons[evse_id]
    for evse_id in allocation.running:
        assert allocation.offers[evse_id] >= tree.evse(evse_id).range.min_a - EPS


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(situations())
def test_share_is_max_min_fair_within_1_a_and_nothing_is_left_unused(case) -> None:
    tree, demands, headroom, pinned = case
    allocation = allocate(tree, demands, headroom, pinned=pinned)
    offers = dict(allocation.offers)
    wanted = {d.evse_id: d for d in demands}
    running = [wanted[e] for e in allocation.running]
    for e in running:
        step = tree.evse(e.evse_id).range.step_a
        below_ceiling = offers[e.evse_id] + step <= _ceiling(tree, e) + EPS
        if not below_ceiling:
            continue
        # Nothing wasted: one more step for e would exceed some limit.
        trial = dict(offers)
        trial[e.evse_id] += step
        assert over(tree, headroom, trial, pinned=pinned), f"{e.evse_id} could have {trial[e.evse_id]} A"
        # Fair: taking a step from anyone with more than 1 A more (and no higher priority) for e must not fit.
        for f in running:
            if f is e or _prio(tree, f) > _prio(tree, e):
                continue
            if offers[f.evse_id] - offers[e.evse_id] > 1.0 + EPS:
                trial = dict(offers)
                trial[f.evse_id] -= step
                trial[e.evse_id] += step
                assert over(tree, headroom, trial, pinned=pinned), (
                    f"{e.evse_id} ({offers[e.evse_id]} A) could take {step} A from {f.evse_id} ({offers[f.evse_id]} A)")


@settings(max_examples=300, deadline=None)
@given(situations(), st.data())
def test_change_over_never_exceeds_a_limit_after_any_step(case, data) -> None:
    tree, demands, headroom, pinned = case
    if pinned:
        return
    target = allocate(tree, demands, headroom).offers
    # Where we come from: another fitting allocation (fewer demands, other ceilings).
    before_demands = data.draw(st.lists(st.sampled_from(demands), unique_by=lambda d: d.evse_id)) if demands else []
    current = dict(allocate(tree, before_demands, headroom).offers)
    plan = plan_changeover(current, target)
    state = dict(current)
    assert not over(tree, headroom, state)
    for step in plan.steps:
        state[step.evse_id] = step.to_a
        assert not over(tree, headroom, state), f"after {step}: {over(tree, headroom, state)}"
    assert state == dict(target)
    assert all(s.to_a < s.from_a for s in plan.lowering) and all(s.to_a > s.from_a for s in plan.raising)


@settings(max_examples=200, deadline=None)
@given(situations(), st.data())
def test_change_over_from_an_overload_only_lowers_until_it_fits(case, data) -> None:
    """The headroom fell (the meter went silent): no limit's use grows during the lowering phase."""
    tree, demands, headroom, pinned = case
    if pinned:
        return
    high = Headroom(site_a=tree.site_limits(), site_power_w=tree.max_power_w)
    current = dict(allocate(tree, demands, high).offers)
    target = allocate(tree, demands, headroom).offers
    plan = plan_changeover(current, target)
    state = dict(current)
    for step in plan.lowering:
        before = {lim.name: sum(w * state.get(e, 0) for e, w in lim.weights.items()) for lim in _limits(tree, headroom)}
        state[step.evse_id] = step.to_a
        for lim in _limits(tree, headroom):
            assert sum(w * state.get(e, 0) for e, w in lim.weights.items()) <= before[lim.name] + EPS
    assert not over(tree, headroom, state)
    for step in plan.raising:
        state[step.evse_id] = step.to_a
        assert not over(tree, headroom, state)


@settings(max_examples=300, deadline=None)
@given(trees(), st.floats(0, 200))
def test_failsafe_currents_fit_every_limit_and_are_0_or_at_least_6(tree, budget) -> None:
    currents = failsafe_currents(tree, budget_a=budget)
    site = total_load(tree, currents)
    for p in range(3):
        assert site[p] <= min(budget, tree.max_current_a) + EPS
    headroom = Headroom(site_a=tree.site_limits(min(budget, tree.max_current_a)), site_power_w=tree.max_power_w)
    assert not violations(tree, headroom, currents)
    for evse_id, amps in currents.items():
        assert amps == 0 or amps >= tree.evse(evse_id).range.min_a


# -- examples ------------------------------------------------------------------------------------

def site_tree(n3: int = 4, singles: tuple[int, ...] = (), *, max_a: float = 63, top: float = 16,
              priorities: dict[str, int] | None = None) -> LimitTree:
    links = [EvseLink(evse_id=str(i + 1), phases=3, phase_l1=i % 3, range=CurrentRange(max_a=top),
                      priority=(priorities or {}).get(str(i + 1), 0)) for i in range(n3)]
    links += [EvseLink(evse_id=f"s{p}{i}", phases=1, phase_l1=p, range=CurrentRange(max_a=top))
              for i, p in enumerate(singles)]
    return LimitTree(max_current_a=max_a, evses=tuple(links))


def test_equal_share_and_a_car_drawing_less_gives_the_rest_back() -> None:
    tree = site_tree(4)
    headroom = Headroom(site_a=(55, 55, 55))
    equal = allocate(tree, [Demand(evse_id=e, arrived=i) for i, e in enumerate("1234")], headroom).offers
    assert sorted(equal.values()) == [13, 14, 14, 14]
    capped = allocate(tree, [Demand(evse_id=e, arrived=i, ceiling_a=11 if e == "4" else None)
                             for i, e in enumerate("1234")], headroom).offers
    assert capped["4"] == 11 and sorted(capped[e] for e in "123") == [14, 15, 15]


def test_when_not_everyone_gets_6_a_the_lowest_priority_then_the_latest_arrival_waits() -> None:
    tree = site_tree(5, priorities={"5": -1, "1": 2})
    headroom = Headroom(site_a=(20, 20, 20))  # room for three at 6 A
    demands = [Demand(evse_id=e, arrived=float(i), offered_a=6.0) for i, e in enumerate("12345")]
    allocation = allocate(tree, demands, headroom)
    assert set(allocation.running) == {"1", "2", "3"}
    assert allocation.waiting == ("4", "5")  # 5 has the lowest priority; of the rest 4 came last
    assert "no 6 A left" in allocation.reasons["4"]


def test_paused_sessions_resume_in_the_order_they_were_paused_and_new_ones_queue_behind() -> None:
    tree = site_tree(6)
    headroom = Headroom(site_a=(24, 24, 24))  # four at 6 A, but waiting ones need 1 A to spare: three
    demands = [
        Demand(evse_id="1", arrived=0.0, offered_a=6.0),
        Demand(evse_id="2", arrived=1.0, waiting_since=30.0),  # paused second
        Demand(evse_id="3", arrived=2.0, waiting_since=20.0),  # paused first
        Demand(evse_id="4", arrived=25.0),  # new, arrived after 3 was paused but before 2
        Demand(evse_id="5", arrived=40.0),  # new, last
    ]
    allocation = allocate(tree, demands, headroom, resume_margin_a=1.0)
    assert allocation.running == ("1", "3", "4")
    assert allocation.waiting == ("2", "5")
    assert allocation.reasons["5"] == "queued behind EVSE 2"
    not_yet = [d if d.evse_id != "3" else Demand(evse_id="3", arrived=2.0, waiting_since=20.0, may_start=False)
               for d in demands]
    held = allocate(tree, not_yet, headroom, resume_margin_a=1.0)
    assert held.running == ("1",) and held.waiting == ("3", "4", "2", "5")  # nobody overtakes 3


def test_phase_rotation_and_single_phase_chargers_on_a_three_phase_site() -> None:
    link = EvseLink(evse_id="x", phases=3, phase_l1=1)
    assert link.site_phases == (1, 2, 0)
    assert link.to_site((10.0, 11.0, 12.0)) == (12.0, 10.0, 11.0)  # its L2 on L3, its L3 on L1
    single = EvseLink(evse_id="y", phases=1, phase_l1=2)
    assert single.load(16) == (0, 0, 16) and single.to_site((7.0, 0.0, 0.0)) == (0, 0, 7.0)
    # Three single-phase chargers on L1, L2, L3 and one three-phase: L1 is the tight phase.
    tree = LimitTree(max_current_a=32, evses=(
        EvseLink(evse_id="3p", phases=3, range=CurrentRange(max_a=32)),
        EvseLink(evse_id="a", phases=1, phase_l1=0, range=CurrentRange(max_a=32)),
        EvseLink(evse_id="b", phases=1, phase_l1=0, range=CurrentRange(max_a=32)),
        EvseLink(evse_id="c", phases=1, phase_l1=1, range=CurrentRange(max_a=32)),
    ))
    offers = allocate(tree, [Demand(evse_id=e, arrived=i) for i, e in enumerate(["3p", "a", "b", "c"])],
                      Headroom(site_a=(30, 30, 30))).offers
    assert offers["3p"] + offers["a"] + offers["b"] <= 30
    assert abs(offers["3p"] - offers["a"]) <= 1 and abs(offers["a"] - offers["b"]) <= 1
    assert offers["c"] == 30 - offers["3p"]  # L2 has room the three-phase charger cannot use (L1 is full)
    assert total_load(tree, offers)[0] <= 30


def test_circuit_limits_hold_below_the_site() -> None:
    tree = LimitTree(max_current_a=63, circuits=(Circuit(id="b", max_current_a=20),), evses=(
        EvseLink(evse_id="1", circuit="b"), EvseLink(evse_id="2", circuit="b"), EvseLink(evse_id="3")))
    offers = allocate(tree, [Demand(evse_id=e, arrived=float(i)) for i, e in enumerate("123")],
                      Headroom(site_a=(63, 63, 63))).offers
    assert offers["1"] + offers["2"] <= 20 and offers["3"] == 32
    with pytest.raises(TreeError, match="unknown circuit 'nope'"):
        LimitTree(max_current_a=63, evses=(EvseLink(evse_id="1", circuit="nope"),))
    with pytest.raises(TreeError, match="cycle"):
        LimitTree(max_current_a=63, circuits=(Circuit(id="a", max_current_a=10, parent="b"),
                                              Circuit(id="b", max_current_a=10, parent="a")))


def test_failsafe_currents_sum_within_the_budget_with_fixed_ones_kept() -> None:
    tree = site_tree(20)
    currents = failsafe_currents(tree, budget_a=63)
    assert sum(1 for a in currents.values() if a) == 10  # ten chargers at 6 A, ten at 0 (a share < 6 A)
    assert max(total_load(tree, currents)) <= 63
    small = site_tree(3)
    assert failsafe_currents(small, budget_a=48) == {"1": 16, "2": 16, "3": 16}
    fixed = LimitTree(max_current_a=32, evses=(EvseLink(evse_id="1", failsafe_current_a=20),
                                               EvseLink(evse_id="2"), EvseLink(evse_id="3")))
    assert failsafe_currents(fixed) == {"1": 20, "2": 6, "3": 6}
    over = LimitTree(max_current_a=32, evses=(EvseLink(evse_id="1", failsafe_current_a=20),
                                              EvseLink(evse_id="2", failsafe_current_a=16)))
    with pytest.raises(FailsafeBudgetError, match=r"EVSE.* 1, 2 alone exceed site L1: 36.00 A > 32.00 A"):
        failsafe_currents(over)


def test_tree_from_the_site_config() -> None:
    text = textwrap.dedent("""
        gateway_id: gw-1
        timezone: Europe/Oslo
        cloud: {host: 127.0.0.1}
        site: {max_current_a: 63, safe_current_a: 32, meter: {model: eastron-sdm630, host: 127.0.0.1, unit: 2}}
        circuits: [{id: garage-b, max_current_a: 32}]
        chargers:
          - {evse_id: "1", model: bender-cc613, host: 127.0.0.1, max_current_a: 16}
          - {evse_id: "7", model: bender-cc613, host: 127.0.0.2, circuit: garage-b, phases: 1, phase_l1: L2,
             priority: 3, failsafe_current_a: 10}
        """)
    config = parse_config_text(text, known_meter_models=["eastron-sdm630"])
    plan = site_plan(config)
    seven = plan.tree.evse("7")
    assert (seven.circuit, seven.phases, seven.site_phases, seven.priority) == ("garage-b", 1, (1,), 3)
    assert plan.tree.evse("1").range == CurrentRange(min_a=6, max_a=16, step_a=1)
    assert plan.tree.path("7") == ("garage-b", None)
    assert plan.grid.meter and plan.grid.safe_current_a == 32 and plan.grid.meter_timeout_s == 5
    assert plan.failsafe_a == {"1": 16, "7": 10}  # within safe_current_a on every phase


# -- the controller ----------------------------------------------------------------------------

def controller(tree: LimitTree, **grid: float | bool) -> LoadController:
    options: dict = {"max_current_a": tree.max_current_a, "safe_current_a": 32.0, "meter": True,
                     "meter_timeout_s": 5.0} | grid
    return LoadController(tree, grid=GridLimits(**options), settings=LoadSettings(
        giveback_after_s=2, other_load_hold_s=3, min_pause_s=4))


def apply(c: LoadController, at: float) -> dict[str, float]:
    """Decide and 'write' everything at once (a charger that obeys at once)."""
    d = c.decide(at)
    for step in (*d.lowering, *d.raising):
        c.offer_written(step.evse_id, step.to_a, at=at)
    offers = c.status(at)["offered_a"]
    for evse_id, amps in offers.items():
        link = c.tree.evse(evse_id)
        c.evse_reading(evse_id, at=at + 0.01, state="C" if amps else "B", currents_a=[amps] * link.phases,
                       offered_a=amps)
    assert c.counted() == offers  # the cars followed at once
    return {e: a for e, a in offers.items() if a}


def test_headroom_from_the_site_meter_then_safe_current_when_it_falls_silent() -> None:
    tree = site_tree(3)
    c = controller(tree)
    assert c.headroom(0).site_a == (32, 32, 32) and "no site meter reading yet" in c.headroom(0).source
    c.site_meter_reading((10.0, 12.0, 8.0), at=1.0)
    assert c.headroom(1.5).site_a == (53, 51, 55)
    for e in "123":
        c.session_started(e, at=2.0)
    offers = apply(c, 2.0)
    assert all(a == 16 for a in offers.values())
    c.site_meter_reading((58.0, 60.0, 56.0), at=3.0)  # 3 x 16 A of chargers + 10/12/8 other
    assert c.headroom(3.1).site_a == (53, 51, 55)
    # No reading since t=3: silent after meter_timeout_s - reaction_budget_s = 4 s.
    assert c.meter_fresh(6.9) and not c.meter_fresh(7.0)
    assert c.next_deadline(3.5) == pytest.approx(7.0)
    decision = c.decide(7.0)
    assert decision.headroom.site_a == (32, 32, 32) and "site meter silent" in decision.headroom.source
    assert decision.cause == "site meter silent" and decision.cause_at == 3.0
    assert sum(s.to_a for s in decision.lowering) <= 32 and not decision.raising


def test_other_load_estimate_holds_its_peak_and_rises_at_once() -> None:
    tree = site_tree(1)
    c = controller(tree)
    c.session_started("1", at=0)
    c.site_meter_reading((5.0, 5.0, 5.0), at=0.0)
    apply(c, 0.0)
    c.site_meter_reading((21.0, 21.0, 21.0), at=1.0)  # 16 A charger + 5 A other
    assert c.other_load(1.0) == (5, 5, 5)
    c.site_meter_reading((36.0, 21.0, 21.0), at=2.0)  # other load on L1 rose by 15 A
    assert c.other_load(2.0) == (20, 5, 5)
    c.site_meter_reading((21.0, 21.0, 21.0), at=3.0)
    assert c.other_load(3.0) == (20, 5, 5)  # held for other_load_hold_s
    c.site_meter_reading((21.0, 21.0, 21.0), at=5.5)
    assert c.other_load(5.5) == (5, 5, 5)


def test_give_back_with_a_margin_and_grow_back() -> None:
    tree = site_tree(2, max_a=30)
    c = controller(tree, meter=False)
    c.session_started("1", at=0)
    c.session_started("2", at=0.1)
    assert apply(c, 0.5) == {"1": 15, "2": 15}
    c.evse_reading("2", at=1.0, state="C", currents_a=[9.6, 9.5, 9.7], offered_a=15)  # car 2 takes 9.7 A
    assert c.decide(1.0).allocation.offers["2"] == 15  # not judged before giveback_after_s
    c.evse_reading("2", at=3.0, state="C", currents_a=[9.6, 9.5, 9.7], offered_a=15)
    d = c.decide(3.0)
    assert d.allocation.offers == {"1": 16, "2": 11}  # 9.7 + 1 A margin, rounded up; 1 takes the rest up to its max
    assert [(s.evse_id, s.to_a) for s in d.lowering] == [("2", 11)] and d.deferred  # 1 waits for 2 to follow
    c.offer_written("2", 11, at=3.1)
    c.evse_reading("2", at=3.2, state="C", currents_a=[9.6, 9.5, 9.7], offered_a=11)  # confirmed
    d = c.decide(3.3)
    assert [(s.evse_id, s.to_a) for s in d.raising] == [("1", 16)]
    c.offer_written("1", 16, at=3.3)
    c.evse_reading("2", at=6.0, state="C", currents_a=[10.8, 10.8, 10.8], offered_a=11)  # it wants more now
    assert c.decide(6.0).allocation.offers == {"1": 15, "2": 15}


def test_a_paused_session_stays_paused_a_minimum_time_and_resumes_first() -> None:
    tree = site_tree(3, max_a=20)
    c = controller(tree, meter=False)
    for i, e in enumerate("123"):
        c.session_started(e, at=float(i))
    assert apply(c, 2.0) == {"1": 7, "2": 7, "3": 6}
    c.set_site_limit(13, at=3.0, until=20.0)  # the cloud lowers the limit: room for two
    d = c.decide(3.0)
    assert d.allocation.waiting == ("3",) and d.cause == "site limit set to 13 A"
    apply(c, 3.0)
    c.set_site_limit(None, at=4.0)  # restored, but 3 was paused less than min_pause_s ago
    assert c.decide(4.0).allocation.waiting == ("3",)
    assert c.decide(7.0).allocation.running == ("1", "2", "3")
    c.set_site_limit(13, at=8.0, until=9.0)
    assert c.site_limit(8.5).max_current_a == 13 and c.site_limit(9.0).source == "configured"
    with pytest.raises(ValueError, match="in the past"):
        c.set_site_limit(10, at=10.0, until=9.0)
    assert c.set_site_limit(100, at=10.0).max_current_a == 20  # never above the configured limit


def test_an_unreachable_charger_counts_at_its_old_offer_or_its_failsafe() -> None:
    tree = site_tree(2, max_a=30)
    c = LoadController(tree, grid=GridLimits(max_current_a=30, safe_current_a=30), failsafe_a={"1": 6, "2": 6})
    c.session_started("1", at=0)
    c.session_started("2", at=0)
    apply(c, 0.0)
    c.evse_unreachable("1", at=1.0)
    c.session_ended("1", at=1.5)
    d = c.decide(2.0)
    assert d.allocation.pinned == ("1",) and d.allocation.offers["2"] == 15  # 1 may still draw 15 A
    assert not d.lowering and not d.raising
    c.evse_reading("1", at=3.0, state="A", currents_a=[0, 0, 0], offered_a=6)  # back, in its fail-safe
    d = c.decide(3.0)
    assert [(s.evse_id, s.to_a) for s in d.lowering] == [("1", 0)] and d.deferred


def test_a_charger_found_offering_more_than_commanded_is_counted_and_rewritten() -> None:
    tree = site_tree(2, max_a=30)
    c = LoadController(tree, grid=GridLimits(max_current_a=30, safe_current_a=30))
    c.session_started("1", at=0)
    c.session_started("2", at=0)
    apply(c, 0.0)
    c.evse_reading("2", at=1.0, state="C", currents_a=[0, 0, 0], offered_a=32)  # rebooted to its default
    assert c.counted()["2"] == 32
    d = c.decide(1.1)
    assert [(s.evse_id, s.to_a) for s in d.lowering] == [("2", 15)]
    assert d.cause == "EVSE 2 offers 32 A, not 15 A"
    c.offer_written("2", 15, at=1.2)
    # Offering less than commanded (its fail-safe, a clamp): written again, but not on every poll.
    c.evse_reading("1", at=2.0, state="C", currents_a=[6, 6, 6], offered_a=6)
    assert not c.decide(2.1).lowering
    c.evse_reading("1", at=5.5, state="C", currents_a=[6, 6, 6], offered_a=6)
    assert [s.evse_id for s in c.decide(5.6).lowering] == ["1"]  # (to 7 A: it also gives back what it leaves)


def test_sessions_resumed_after_a_restart_keep_charging_and_share_fairly() -> None:
    """Charging at 6 A each on a 12 A cloud limit when the agent was killed: after the restart
    neither is a new arrival that waits for 6 A plus the resume margin, and nothing is written
    before a charger's first reading says what it offers."""
    tree = site_tree(2, max_a=30)
    c = controller(tree, meter=False)
    c.set_site_limit(12, at=0.0)
    c.session_resumed("1", at=0.0, arrived=-300.0)
    c.session_resumed("2", at=0.0, arrived=-600.0)  # 2 started first
    d = c.decide(0.1)
    assert d.allocation.offers == {"1": 6, "2": 6} and d.allocation.running == ("2", "1")
    assert not d.lowering and not d.raising and not d.allocation.waiting
    # 1 is in its fail-safe (12 A); 2's fail-safe stopped it: it must not stay paused.
    assert c.evse_reading("1", at=0.2, state="C", currents_a=[12, 12, 12], offered_a=12)
    assert c.evse_reading("2", at=0.2, state="B", currents_a=[0, 0, 0], offered_a=0)
    d = c.decide(0.3)
    assert d.allocation.offers == {"1": 6, "2": 6} and not d.allocation.waiting
    assert [(s.evse_id, s.from_a, s.to_a) for s in d.lowering] == [("1", 12, 6)]
    assert not d.raising and [(s.evse_id, s.from_a, s.to_a) for s in d.deferred] == [("2", 0, 6)]
    c.offer_written("1", 6, at=0.4)
    c.evse_reading("1", at=0.6, state="C", currents_a=[6, 6, 6], offered_a=6)  # the car followed
    d = c.decide(0.7)
    assert [(s.evse_id, s.from_a, s.to_a) for s in d.raising] == [("2", 0, 6)] and not d.lowering
    c.offer_written("2", 6, at=0.7)
    assert c.counted() == {"1": 6, "2": 6}
    assert c.decide(20.0).allocation.offers == {"1": 6, "2": 6}


def test_bad_trees_are_named() -> None:
    with pytest.raises(TreeError, match="EVSE x: phases must be 1 or 3"):
        EvseLink(evse_id="x", phases=2)
    with pytest.raises(TreeError, match="single-phase site"):
        LimitTree(max_current_a=32, phases=1, evses=(EvseLink(evse_id="x"),))
    with pytest.raises(TreeError, match="duplicate EVSE id"):
        LimitTree(max_current_a=32, evses=(EvseLink(evse_id="x"), EvseLink(evse_id="x")))
    with pytest.raises(TreeError, match="unknown EVSE 'nope'"):
        allocate(site_tree(1), [Demand(evse_id="nope", arrived=0)], Headroom(site_a=(1, 1, 1)))


def test_single_phase_site() -> None:
    tree = LimitTree(max_current_a=40, phases=1, evses=tuple(
        EvseLink(evse_id=str(i), phases=1, range=CurrentRange(max_a=32)) for i in range(3)))
    offers = allocate(tree, [Demand(evse_id=str(i), arrived=i) for i in range(3)],
                      Headroom(site_a=tree.site_limits())).offers
    assert sorted(offers.values()) == [13, 13, 14]
    assert list(itertools.islice(total_load(tree, offers), 3)) == [40, 0, 0]
