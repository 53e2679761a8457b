"""Site load management: share the connection's fuse among the chargers, safely.

Pure parts (no I/O):
  _tree        LimitTree: the site connection, circuits, each charger's circuit, phases and rotation
  _allocator   allocate() (admission at >= 6 A or paused, max-min fair filling, priorities),
               plan_changeover() (lower before raising), failsafe_currents(), violations()
  _controller  LoadController: meter readings -> headroom (other load, safe current when the meter is
               silent, the cloud's limit), give-back of unused current, confirmations, decisions
The I/O shell:
  _runner      LoadManagementLoop: reads the site meter, writes chargers, measures reaction times

Data flows one way: readings and sessions in, offers out. Nothing here knows MQTT or the store.
"""
from __future__ import annotations

from ._allocator import (
    Allocation,
    ChangeoverPlan,
    Demand,
    Headroom,
    Step,
    Violation,
    allocate,
    failsafe_currents,
    plan_changeover,
    violations,
)
from ._controller import Decision, GridLimits, LoadController, LoadSettings, Reaction, SiteLimit
from ._runner import LoadManagementLoop, SitePlan, charger_ranges, site_plan
from ._tree import (
    PHASE_NAMES,
    Circuit,
    CurrentRange,
    EvseLink,
    FailsafeBudgetError,
    LimitTree,
    LoadManagementError,
    TreeError,
    total_load,
)

__all__ = [
    "PHASE_NAMES",
    "Allocation",
    "ChangeoverPlan",
    "Circuit",
    "CurrentRange",
    "Decision",
    "Demand",
    "EvseLink",
    "FailsafeBudgetError",
    "GridLimits",
    "Headroom",
    "LimitTree",
    "LoadController",
    "LoadManagementError",
    "LoadManagementLoop",
    "LoadSettings",
    "Reaction",
    "SiteLimit",
    "SitePlan",
    "Step",
    "TreeError",
    "Violation",
    "allocate",
    "charger_ranges",
    "failsafe_currents",
    "plan_changeover",
    "site_plan",
    "total_load",
    "violations",
]
