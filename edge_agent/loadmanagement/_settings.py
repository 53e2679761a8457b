"""How load management is set up: the site's grid connection and the tuning of the controller."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class GridLimits:
    """The `site:` section as load management needs it."""

    max_current_a: float  # per phase
    safe_current_a: float  # per phase for all chargers while the site meter is silent (or absent: unused)
    meter: bool = False  # a site meter is configured
    meter_timeout_s: float = 5.0
    max_power_w: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSettings:
    """Tuning; the defaults suit real cars (which take up to 5 s to follow a lower offer)."""

    control_interval_s: float = 0.5  # decide at least this often
    meter_interval_s: float = 1.0  # read the site meter this often
    meter_read_timeout_s: float = 1.5  # give up on one meter read after this long
    reaction_budget_s: float = 1.0  # the meter counts as silent this long before meter_timeout_s, so
    # that the safe current is in place by meter_timeout_s after the last fresh reading
    other_load_hold_s: float = 10.0  # the other load estimate is the peak of this window (the meter
    # and the chargers are read at different moments, so one sample can be too low)
    giveback_after_s: float = 5.0  # an offer must stand this long before its use is judged
    giveback_threshold_a: float = 2.0  # unused current that is given back to the others
    giveback_margin_a: float = 1.0  # kept above what a car draws
    grow_threshold_a: float = 0.5  # a capped car drawing within this of its cap gets a full share again
    lowering_confirm_s: float = 5.0  # IEC 61851: an EV follows a lower PWM within 5 s
    ramp_s: float = 5.0  # after a new offer, a charger's draw is uncertain this long (see site_meter_reading)
    confirm_tolerance_a: float = 0.5
    resume_margin_a: float = 1.0  # per phase, to spare before a waiting EVSE (re)starts
    min_pause_s: float = 10.0  # a paused session stays paused at least this long (no start/stop cycling)

