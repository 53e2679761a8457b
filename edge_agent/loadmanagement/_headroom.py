"""The site side of load management, pure like the rest: the limit in force, the other load, and
the headroom they leave for the chargers.

The limit is the configured one, or the cloud's lower one until it expires. The other load (what
the site draws besides the chargers) comes from site meter readings, held at its peak for a while;
while the meter is silent, the chargers share the safe current instead.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._allocator import Headroom
from ._settings import GridLimits, LoadSettings
from ._tree import Currents, LimitTree


@dataclass(frozen=True, slots=True)
class SiteLimit:
    max_current_a: float  # per phase, in force now
    until: float | None  # monotonic; None: until changed
    source: str  # "configured" or "cloud"


class SiteHeadroom:
    """LoadController's site limit, site meter readings and headroom. `note` is told what changed
    when a change may need lower offers (the controller's reaction cause)."""

    def __init__(self, tree: LimitTree, *, grid: GridLimits, settings: LoadSettings,
                 note: Callable[[str, float], None]) -> None:
        self.tree = tree
        self.grid = grid
        self.settings = settings
        self._note = note
        self._override: SiteLimit | None = None
        self._meter_at: float | None = None  # last fresh site meter reading
        self._meter_silent_since: float | None = None
        self._other: deque[tuple[float, Currents, float | None, bool]] = deque()  # (at, A, W, settled)

    def meter_reading(self, currents_a: Sequence[float], *, at: float, power_w: float | None, draws: Currents,
                      settled: bool) -> None:
        """A site meter reading with a value, and the chargers' draws as LoadController counts them
        against it (`settled`: no charger among them may be between its reading and its offer)."""
        other = tuple(max(0.0, float(currents_a[p]) - draws[p]) for p in range(3))
        other_w = None
        if power_w is not None and math.isfinite(power_w):
            other_w = max(0.0, power_w - sum(draws) * self.tree.voltage_v)
        before = self._other_load(at) if self._meter_at is not None else None
        if self._meter_at is None or self._meter_silent_since is not None:
            self._meter_silent_since = None
        self._meter_at = at
        self._other.append((at, (other[0], other[1], other[2]), other_w, settled))
        after = self._other_load(at)
        if before is not None and any(after[p] > before[p] + 0.5 for p in range(3)):
            self._note("other load rose", at)

    def set_limit(self, max_current_a: float | None, *, at: float, until: float | None = None) -> SiteLimit:
        """The cloud's limit: lowers (never raises above the configured) the site's per-phase limit
        until `until` (monotonic; None: until changed). None, or at least the configured limit: restore."""
        configured = self.grid.max_current_a
        if until is not None and until <= at:
            raise ValueError(f"until is {at - until:.1f} s in the past")
        if max_current_a is not None and not (math.isfinite(max_current_a) and max_current_a >= 0):
            raise ValueError(f"max_current_a must be a finite number >= 0, got {max_current_a}")
        if max_current_a is None or max_current_a >= configured:
            self._override = None
        else:
            self._override = SiteLimit(float(max_current_a), until, "cloud")
            self._note(f"site limit set to {max_current_a:g} A", at)
        return self.site_limit(at)

    def site_limit(self, now: float) -> SiteLimit:
        if self._override is not None and self._override.until is not None and now >= self._override.until:
            self._override = None
        return self._override or SiteLimit(self.grid.max_current_a, None, "configured")

    def meter_fresh(self, now: float) -> bool:
        return self._meter_at is not None and now - self._meter_at < self._stale_after()

    def headroom(self, now: float) -> Headroom:
        limit = self.site_limit(now)
        source = "configured limit" if limit.source == "configured" else f"cloud limit {limit.max_current_a:g} A"
        if not self.grid.meter:
            return Headroom(site_a=self.tree.site_limits(limit.max_current_a), site_power_w=self.grid.max_power_w,
                            source=f"{source}, no site meter")
        if not self.meter_fresh(now):
            if self._meter_at is not None and self._meter_silent_since is None:
                self._meter_silent_since = now
                self._note("site meter silent", self._meter_at)
            why = "no site meter reading yet" if self._meter_at is None else "site meter silent"
            safe = min(self.grid.safe_current_a, limit.max_current_a)
            return Headroom(site_a=self.tree.site_limits(safe), site_power_w=self.grid.max_power_w,
                            source=f"{why}: safe current {safe:g} A")
        other = self._other_load(now)
        caps = self.tree.site_limits(limit.max_current_a)
        site_a = (caps[0] - other[0], caps[1] - other[1], caps[2] - other[2])
        power = self.grid.max_power_w
        other_w = self._other_power(now)
        if power is not None and other_w is not None:
            power -= other_w
        return Headroom(site_a=site_a, site_power_w=power, source=f"{source} minus other load (site meter)")

    def other_load(self, now: float) -> Currents | None:
        return self._other_load(now) if self.grid.meter and self.meter_fresh(now) else None

    def deadlines(self) -> list[float]:
        """When the site meter turns stale and when the cloud's limit expires, as far as known."""
        times: list[float] = []
        if self.grid.meter and self._meter_at is not None and self._meter_silent_since is None:
            times.append(self._meter_at + self._stale_after())
        if self._override is not None and self._override.until is not None:
            times.append(self._override.until)
        return times

    def _stale_after(self) -> float:
        timeout = self.grid.meter_timeout_s
        return max(timeout - self.settings.reaction_budget_s, timeout / 2)

    def _window(self, now: float) -> list[tuple[float, Currents, float | None, bool]]:
        """The samples of the hold window (at least the latest), plus the latest settled one if the
        window has none; older ones are dropped."""
        if not self._other:
            return []
        start = now - self.settings.other_load_hold_s
        kept = [s for s in self._other if s[0] >= start] or [self._other[-1]]
        if not any(s[3] for s in kept):
            settled = next((s for s in reversed(self._other) if s[3]), None)
            if settled is not None and settled not in kept:
                kept.insert(0, settled)
        if len(kept) != len(self._other):
            self._other = deque(kept)
        return kept

    def _other_load(self, now: float) -> Currents:
        peak = [0.0, 0.0, 0.0]
        for _, other, _, _ in self._window(now):
            for p in range(3):
                peak[p] = max(peak[p], other[p])
        return (peak[0], peak[1], peak[2])

    def _other_power(self, now: float) -> float | None:
        values = [w for _, _, w, _ in self._window(now) if w is not None]
        return max(values) if values else None

