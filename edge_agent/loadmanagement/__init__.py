"""Site load management: share the connection's fuse among the chargers, safely.

Pure parts (no I/O):
  _tree        LimitTree: the site connection, circuits, each charger's circuit, phases and rotation
  _allocator   allocate() (admission at >= 6 A or paused, max-min fair filling, priorities),
               plan_changeover() (lower before raising), failsafe_currents(), violations()
  _settings    GridLimits (the site's connection as load management needs it), LoadSettings (tuning)
  _headroom    SiteHeadroom: the site limit in force (configured, or the cloud's lower one until it
               expires), the other load from site meter readings, the headroom they leave
  _controller  LoadController: sessions, readings and writes -> decisions; give-back of unused
               current, confirmations of lowerings, reaction times
The I/O shell:
  _runner      LoadManagementLoop: reads the site meter, decides, and asks each EVSE's ShareWriter
               (in the agent: its EVSE controller) to offer its share; it never writes a charger itself
  _share       ShareWriter (who writes a share) and put_share (how it is written)
  _standalone  OwnedCharger: load management on its own (the proof harness), polling and writing
               each charger itself

Data flows one way: readings and sessions in, offers out. Nothing here knows MQTT; of the store,
only its meta (MetaStore), where _runner keeps the cloud's limit in force across a restart.
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
from ._controller import Decision, LoadController, Reaction
from ._headroom import SiteLimit
from ._runner import LoadManagementLoop, SitePlan, charger_ranges, site_plan
from ._settings import GridLimits, LoadSettings
from ._share import ShareWriter, put_share
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
    "ShareWriter",
    "SiteLimit",
    "SitePlan",
    "Step",
    "TreeError",
    "Violation",
    "allocate",
    "charger_ranges",
    "failsafe_currents",
    "plan_changeover",
    "put_share",
    "site_plan",
    "total_load",
    "violations",
]
