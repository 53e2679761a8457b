"""The limit tree: the site connection, its sub-circuits, and where each charger hangs and on which phases.

Phases are site phases 0, 1, 2 (L1, L2, L3). A charger's own L1 sits on site phase `phase_l1`
and its phases rotate cyclically from there (`phase_l1: L2` puts its L2 on L3 and its L3 on L1).
Every current here is per phase, in A.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.config import SiteConfig

PHASE_NAMES = ("L1", "L2", "L3")
Currents = tuple[float, float, float]
ZERO: Currents = (0.0, 0.0, 0.0)
EPS = 1e-6


class LoadManagementError(Exception):
    """Something about load management's inputs is wrong. Not retryable: the input must change."""

    retryable = False


class TreeError(LoadManagementError, ValueError):
    """The limit tree is inconsistent (unknown circuit, cycle, duplicate id, bad phase)."""


class FailsafeBudgetError(LoadManagementError):
    """Fixed fail-safe currents alone exceed a limit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrentRange:
    """What a charger can be offered: 0 (paused) or min_a..max_a in steps of step_a."""

    min_a: float = 6.0
    max_a: float = 32.0
    step_a: float = 1.0

    def __post_init__(self) -> None:
        if not (self.step_a > 0 and 0 < self.min_a <= self.max_a):
            raise TreeError(f"current range needs 0 < min_a <= max_a and step_a > 0, got {self}")

    def floor(self, amps: float) -> float:
        """The largest offerable value <= amps (0 below the minimum)."""
        if amps < self.min_a - EPS:
            return 0.0
        stepped = math.floor(amps / self.step_a + EPS) * self.step_a
        return round(min(self.max_a, max(self.min_a, stepped)), 6)

    def ceil(self, amps: float) -> float:
        """The smallest offerable value >= amps, at least the minimum and at most the maximum."""
        stepped = math.ceil(amps / self.step_a - EPS) * self.step_a
        return round(min(self.max_a, max(self.min_a, stepped)), 6)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvseLink:
    """One charger in the tree."""

    evse_id: str
    circuit: str | None = None  # None: directly on the site connection
    phases: int = 3
    phase_l1: int = 0  # site phase of the charger's L1
    priority: int = 0
    range: CurrentRange = field(default_factory=CurrentRange)
    failsafe_current_a: float | None = None  # fixed by the installer; None: computed

    def __post_init__(self) -> None:
        if self.phases not in (1, 3):
            raise TreeError(f"EVSE {self.evse_id}: phases must be 1 or 3, got {self.phases}")
        if self.phase_l1 not in (0, 1, 2):
            raise TreeError(f"EVSE {self.evse_id}: phase_l1 must be 0..2 (L1..L3), got {self.phase_l1}")
        fixed = self.failsafe_current_a
        if fixed is not None and fixed != 0 and not self.range.min_a <= fixed <= self.range.max_a:
            raise TreeError(f"EVSE {self.evse_id}: failsafe_current_a {fixed:g} is neither 0 nor within "
                            f"{self.range.min_a:g}..{self.range.max_a:g}")

    @property
    def site_phases(self) -> tuple[int, ...]:
        """The site phases this charger draws from, its L1's first."""
        return tuple((self.phase_l1 + k) % 3 for k in range(self.phases))

    def load(self, amps: float) -> Currents:
        """The site-phase load of offering `amps` per phase."""
        out = [0.0, 0.0, 0.0]
        for p in self.site_phases:
            out[p] += amps
        return (out[0], out[1], out[2])

    def to_site(self, charger_currents: Sequence[float]) -> Currents:
        """Currents measured in the charger's own L1..L3 mapped onto site phases."""
        out = [0.0, 0.0, 0.0]
        for k, p in enumerate(self.site_phases):
            out[p] += float(charger_currents[k]) if k < len(charger_currents) else 0.0
        return (out[0], out[1], out[2])


@dataclass(frozen=True, slots=True, kw_only=True)
class Circuit:
    """A sub-distribution board: a per-phase limit (and optionally a power limit), no meter of its own."""

    id: str
    max_current_a: float
    parent: str | None = None  # None: on the site connection
    max_power_w: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitTree:
    max_current_a: float  # site connection, per phase
    phases: int = 3
    max_power_w: float | None = None
    circuits: tuple[Circuit, ...] = ()
    evses: tuple[EvseLink, ...] = ()
    voltage_v: float = 230.0
    _by_id: dict[str, EvseLink] = field(default_factory=dict, init=False, repr=False, compare=False)
    _paths: dict[str, tuple[str | None, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.phases not in (1, 3):
            raise TreeError(f"site phases must be 1 or 3, got {self.phases}")
        circuits: dict[str, Circuit] = {}
        for c in self.circuits:
            if c.id in circuits:
                raise TreeError(f"duplicate circuit id {c.id!r}")
            circuits[c.id] = c
        for c in self.circuits:
            seen = {c.id}
            parent = c.parent
            while parent is not None:
                if parent not in circuits:
                    raise TreeError(f"circuit {c.id!r}: unknown parent circuit {parent!r}")
                if parent in seen:
                    raise TreeError(f"circuit {c.id!r}: circuits form a cycle through {parent!r}")
                seen.add(parent)
                parent = circuits[parent].parent
        for link in self.evses:
            if link.evse_id in self._by_id:
                raise TreeError(f"duplicate EVSE id {link.evse_id!r}")
            if link.circuit is not None and link.circuit not in circuits:
                raise TreeError(f"EVSE {link.evse_id}: unknown circuit {link.circuit!r}")
            if self.phases == 1 and link.site_phases != (0,):
                raise TreeError(f"EVSE {link.evse_id}: a single-phase site takes single-phase chargers on L1")
            self._by_id[link.evse_id] = link
            path: list[str | None] = []
            node = link.circuit
            while node is not None:
                path.append(node)
                node = circuits[node].parent
            path.append(None)
            self._paths[link.evse_id] = tuple(path)

    # -- lookups --

    def evse(self, evse_id: str) -> EvseLink:
        try:
            return self._by_id[evse_id]
        except KeyError:
            raise TreeError(f"unknown EVSE {evse_id!r}") from None

    def path(self, evse_id: str) -> tuple[str | None, ...]:
        """The nodes an EVSE's current flows through: its circuit, that circuit's parents, then None (the site)."""
        self.evse(evse_id)
        return self._paths[evse_id]

    def circuit(self, circuit_id: str) -> Circuit:
        return next(c for c in self.circuits if c.id == circuit_id)

    def site_limits(self, per_phase: float | None = None) -> Currents:
        amps = self.max_current_a if per_phase is None else per_phase
        return (amps, amps, amps) if self.phases == 3 else (amps, 0.0, 0.0)

    # -- construction from the site configuration --

    @classmethod
    def from_config(cls, config: SiteConfig, *, ranges: Mapping[str, CurrentRange] | None = None,
                    voltage_v: float = 230.0) -> LimitTree:
        """The tree of a site config's `site:`, `circuits:` and chargers' circuit/phases/phase_l1/priority.

        `ranges` gives each EVSE's offerable currents (from its driver); without it, 6 A up to
        the charger's configured max_current_a (32 A if unset) in 1 A steps.
        """
        if config.site is None:
            raise TreeError("the configuration has no site section (load management is off)")
        links = []
        for charger in config.chargers:
            rng = (ranges or {}).get(charger.evse_id)
            if rng is None:
                rng = CurrentRange(max_a=float(charger.max_current_a or 32.0))
            links.append(EvseLink(
                evse_id=charger.evse_id, circuit=charger.circuit, phases=charger.phases,
                phase_l1=PHASE_NAMES.index(charger.phase_l1), priority=charger.priority, range=rng,
                failsafe_current_a=charger.failsafe_current_a))
        return cls(max_current_a=float(config.site.max_current_a), phases=config.site.phases,
                   circuits=tuple(Circuit(id=c.id, max_current_a=float(c.max_current_a)) for c in config.circuits),
                   evses=tuple(links), voltage_v=voltage_v)


def node_name(node: str | None) -> str:
    return "site" if node is None else f"circuit {node}"


def add(a: Currents, b: Currents) -> Currents:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def total_load(tree: LimitTree, offers: Mapping[str, float], evse_ids: Iterable[str] | None = None) -> Currents:
    """Site-phase sum of the offers (only those of `evse_ids` if given)."""
    out = ZERO
    for evse_id in offers if evse_ids is None else evse_ids:
        out = add(out, tree.evse(evse_id).load(offers.get(evse_id, 0.0)))
    return out
