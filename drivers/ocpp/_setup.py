"""What the site sets on an OCPP 1.6J charger, as pure functions: no I/O, no clock of their own.

The boot configuration and the plan of ChangeConfiguration calls given what GetConfiguration
returned; the SendLocalList messages given the list versions; the SetChargingProfile payloads for
the live share and the stored fail-safe; and the budget of profile writes a model's flash allows.
Payloads are OCPP-J JSON (camelCase), as they go on the wire.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ._api import AuthStatus, IdTagStatus, LocalListEntry
from ._quirks import OcppQuirks, RateUnit

VOLTAGE_V = 230.0  # W = 230 V x A x phases, as evcc converts
MIN_CURRENT_A = 6  # IEC 61851-1: the lowest current the control pilot can signal; below it, 0
DEFAULT_PING_INTERVAL_S = 30  # evcc cp_setup.go sets WebSocketPingInterval=30
# The lists' size when the charger does not say (LocalAuthListMaxLength): MicroOcpp's default
# (SmartEVSE-3.5 PR #104), small enough for any charger we know of.
DEFAULT_LOCAL_LIST_MAX_LENGTH = 48
# A fixed, short list set at once: probing measurand by measurand reboot-loops an ABB Terra AC
# (lbbrhzn/ocpp #1275). Current.Import per phase is what load management reads.
MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import")
STOP_MEASURANDS = ("Energy.Active.Import.Register",)
FAILSAFE_STACK_LEVEL = 0
LIVE_DEFAULT_STACK_LEVEL = 1  # a live share in a TxDefaultProfile sits above the fail-safe
CLOCK_SKEW_S = 60  # an Absolute schedule starts a minute early, so a charger clock behind ours applies it now (evcc)
_WINDOW_S = 86_400.0
_INT32_MAX = 2**31 - 1

@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One ChangeConfiguration call, and why the site makes it."""

    key: str
    value: str
    why: str

    def payload(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value}


@dataclass(frozen=True, slots=True)
class ConfigSkip:
    """A key the site wants but may not write: the charger reports it read-only, or the quirk map says so."""

    key: str
    wanted: str
    current: str | None
    why: str


@dataclass(frozen=True, slots=True)
class ConfigPlan:
    """What to do with one charger's configuration after GetConfiguration."""

    changes: tuple[ConfigChange, ...]  # to send, in this order
    unchanged: tuple[str, ...]  # keys already as wanted
    read_only: tuple[ConfigSkip, ...]  # wanted but not written (report them: the charger runs without)
    unknown: tuple[ConfigChange, ...]  # keys the charger did not report: it does not know them


def boot_configuration(
    quirks: OcppQuirks, *, meter_interval_s: int, heartbeat_s: int, ping_interval_s: int = DEFAULT_PING_INTERVAL_S
) -> list[ConfigChange]:
    """The keys the site sets at every boot, in order: its own, then the model's (which override by key).

    Keys the quirk map lists as read-only are left out.
    """
    never = {k.casefold() for k in quirks.read_only}
    return [c for c in _wanted(quirks, meter_interval_s, heartbeat_s, ping_interval_s) if c.key.casefold() not in never]


def plan_configuration(
    quirks: OcppQuirks,
    current: Mapping[str, str | None],
    read_only: set[str],
    *,
    meter_interval_s: int,
    heartbeat_s: int,
    ping_interval_s: int = DEFAULT_PING_INTERVAL_S,
) -> ConfigPlan:
    """The ChangeConfiguration calls needed, given GetConfiguration's keys (`current`, value None when the
    charger gave none) and the keys it marked readonly. Equal values are skipped (booleans compare
    without case, integers by value, lists item by item)."""
    have_by_key = {k.casefold(): v for k, v in current.items()}  # OCPP keys are case-insensitive
    charger_read_only = {k.casefold() for k in read_only}
    map_read_only = {k.casefold(): why for k, why in quirks.read_only.items()}
    changes: list[ConfigChange] = []
    unchanged: list[str] = []
    skipped: list[ConfigSkip] = []
    unknown: list[ConfigChange] = []
    for change in _wanted(quirks, meter_interval_s, heartbeat_s, ping_interval_s):
        folded = change.key.casefold()
        have = have_by_key.get(folded)
        if folded in map_read_only:
            skipped.append(ConfigSkip(change.key, change.value, have, map_read_only[folded]))
        elif folded in charger_read_only:
            skipped.append(ConfigSkip(change.key, change.value, have, "the charger reports it read-only"))
        elif folded not in have_by_key:
            unknown.append(change)
        elif have is not None and _same_value(have, change.value):
            unchanged.append(change.key)
        else:
            changes.append(change)
    return ConfigPlan(tuple(changes), tuple(unchanged), tuple(skipped), tuple(unknown))


def live_current_change(quirks: OcppQuirks, amps: float) -> ConfigChange:
    """The live share as a configuration write, for models that take it that way (Easee DynamicChargerCurrent)."""
    key = quirks.smart_charging.live_current_key
    if key is None:
        raise ValueError(f"{quirks.model}: no live_current_key; send charging_profile(purpose='live')")
    return ConfigChange(key, str(whole_amps(amps)), "the live share, without a profile write (resets on reboot)")


def _wanted(quirks: OcppQuirks, meter_interval_s: int, heartbeat_s: int, ping_interval_s: int) -> list[ConfigChange]:
    for name, value in (("meter_interval_s", meter_interval_s), ("heartbeat_s", heartbeat_s),
                        ("ping_interval_s", ping_interval_s)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of seconds >= 1, got {value!r}")
    site = [
        ConfigChange("MeterValueSampleInterval", str(meter_interval_s),
                     "sampled meter values for load and running cost; 0 (Zaptec's default) sends none"),
        ConfigChange("MeterValuesSampledData", ",".join(MEASURANDS),
                     "a fixed short list, set at once (probing measurands reboot-loops some chargers)"),
        ConfigChange("StopTxnSampledData", ",".join(STOP_MEASURANDS), "the register readings in StopTransaction"),
        ConfigChange("HeartbeatInterval", str(heartbeat_s), "the site's heartbeat (Zaptec's default is 86400 s)"),
        ConfigChange("WebSocketPingInterval", str(ping_interval_s),
                     "pings the gateway expects; a mismatch drops the socket (code 1006) every 30-45 s"),
        ConfigChange("LocalAuthorizeOffline", "true", "residents charge from the local list while the gateway is down"),
        ConfigChange("LocalAuthListEnabled", "true", "the gateway keeps the charger's local list"),
        ConfigChange("AllowOfflineTxForUnknownId", "false", "a billing site takes no unknown ids"),
        ConfigChange("StopTransactionOnInvalidId", "true", "a transaction the gateway does not accept stops"),
    ]
    model = {c.key.casefold(): ConfigChange(c.key, c.value, c.why) for c in quirks.configuration}
    out = [model.pop(c.key.casefold(), c) for c in site]
    return out + list(model.values())


def _same_value(have: str, want: str) -> bool:
    a, b = [x.strip() for x in have.split(",")], [x.strip() for x in want.split(",")]
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.lower() in ("true", "false") or y.lower() in ("true", "false"):
            if x.lower() != y.lower():
                return False
        elif _as_int(x) is not None and _as_int(y) is not None:
            if _as_int(x) != _as_int(y):
                return False
        elif x != y:
            return False
    return True


def _as_int(text: str) -> int | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


# -- the local authorization list --


@dataclass(frozen=True, slots=True)
class LocalListState:
    """What the gateway recorded a charger's list to be, after its last SendLocalList was Accepted."""

    version: int
    entries: Mapping[str, IdTagStatus] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LocalListMessage:
    """One SendLocalList: `link.call_send_local_list(m.version, m.update_type, m.entries)`."""

    version: int
    update_type: Literal["Full", "Differential"]
    entries: tuple[LocalListEntry, ...]


@dataclass(frozen=True, slots=True)
class LocalListPlan:
    """The SendLocalList messages to send, in order; record `result` once every one is Accepted.

    On Failed or VersionMismatch, plan again with `recorded=None` (O16: the Central System resends Full).
    """

    update_type: Literal["Full", "Differential", "none", "NotSupported"]
    messages: tuple[LocalListMessage, ...]
    result: LocalListState | None
    dropped: tuple[str, ...] = ()  # idTags left out: over max_length, or longer than OCPP's 20 characters


def local_list_limits(quirks: OcppQuirks, current: Mapping[str, str | None]) -> tuple[int, int]:
    """(LocalAuthListMaxLength, SendLocalListMaxLength) from GetConfiguration, else the quirk map, else 48."""
    folded = {k.casefold(): v for k, v in current.items()}
    max_length = _positive(folded.get("localauthlistmaxlength"))
    if max_length is None:
        max_length = quirks.local_list_max_length or DEFAULT_LOCAL_LIST_MAX_LENGTH
    per_message = _positive(folded.get("sendlocallistmaxlength"))
    return max_length, min(per_message or max_length, max_length)


def local_list_plan(
    *,
    charger_version: int,
    recorded: LocalListState | None,
    users: Mapping[str, IdTagStatus],
    max_length: int,
    per_message: int | None = None,
) -> LocalListPlan:
    """What to send so the charger's list holds `users` (idTag -> status): Full on first boot
    (`recorded` None) or when the charger's version (GetLocalListVersion) is not the recorded one,
    else Differential with the delta; nothing when there is none. The list holds at most
    `max_length` tags, Accepted ones first (in the order given); a message carries at most
    `per_message`, so a long Full goes as one Full and Differentials after it."""
    if max_length < 1 or (per_message is not None and per_message < 1):
        raise ValueError("max_length and per_message must be >= 1")
    if charger_version == -1:
        return LocalListPlan("NotSupported", (), None)
    chunk = min(per_message or max_length, max_length)
    target, dropped = _fit(users, max_length)
    if recorded is None or recorded.version != charger_version:
        base = max(charger_version, recorded.version if recorded else 0, 0)
        rows = [LocalListEntry(tag, status) for tag, status in target.items()]
        pieces = [rows[i:i + chunk] for i in range(0, len(rows), chunk)] or [[]]
        if base + len(pieces) > _INT32_MAX:
            base = 0  # a Full may lower the version; only a Differential must raise it
        messages = [LocalListMessage(base + 1 + i, "Differential" if i else "Full", tuple(p))
                    for i, p in enumerate(pieces)]
        return LocalListPlan("Full", tuple(messages), LocalListState(base + len(pieces), target), dropped)
    deletes = [LocalListEntry(tag, None) for tag in recorded.entries if tag not in target]
    upserts = [LocalListEntry(tag, st) for tag, st in target.items() if recorded.entries.get(tag) != st]
    rows = deletes + upserts  # deletes first: the list never outgrows max_length on the way
    if not rows:
        return LocalListPlan("none", (), recorded, dropped)
    pieces = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    if recorded.version + len(pieces) > _INT32_MAX:
        return local_list_plan(charger_version=charger_version, recorded=None, users=users,
                               max_length=max_length, per_message=per_message)
    messages = [LocalListMessage(recorded.version + i, "Differential", tuple(p)) for i, p in enumerate(pieces, start=1)]
    return LocalListPlan("Differential", tuple(messages), LocalListState(recorded.version + len(pieces), target), dropped)


def _fit(users: Mapping[str, IdTagStatus], max_length: int) -> tuple[dict[str, IdTagStatus], tuple[str, ...]]:
    fits = [(tag, st) for tag, st in users.items() if 0 < len(tag) <= 20]
    too_long = [tag for tag in users if not 0 < len(tag) <= 20]
    ordered = sorted(fits, key=lambda item: item[1].status not in (AuthStatus.ACCEPTED, AuthStatus.CONCURRENT_TX))
    return dict(ordered[:max_length]), tuple(too_long + [tag for tag, _ in ordered[max_length:]])


def _positive(text: str | None) -> int | None:
    number = _as_int(text) if text is not None else None
    return number if number is not None and number > 0 else None


# -- charging profiles --


def whole_amps(amps: float) -> int:
    """The current a charger is offered: whole amps, rounded down (never above the share); under 6 A, 0."""
    if isinstance(amps, bool) or not isinstance(amps, (int, float)) or math.isnan(amps):
        raise ValueError(f"amps must be a number, got {amps!r}")
    whole = math.floor(amps + 1e-9)
    return whole if whole >= MIN_CURRENT_A else 0


def rate_unit_for(quirks: OcppQuirks, current: Mapping[str, str | None]) -> RateUnit:
    """A or W: the quirk map's, else what ChargingScheduleAllowedChargingRateUnit allows (A when it allows Current or says nothing)."""
    if quirks.smart_charging.rate_unit is not None:
        return quirks.smart_charging.rate_unit
    allowed = {u.strip().lower() for u in (current.get("ChargingScheduleAllowedChargingRateUnit") or "").split(",")}
    return "W" if "power" in allowed and "current" not in allowed else "A"


def profile_id(purpose: Literal["live", "failsafe"], connector: int) -> int:
    """Fixed ids per connector, so a new profile replaces the site's old one and nobody else's."""
    return (100 if purpose == "live" else 200) + connector


def charging_profile(
    quirks: OcppQuirks,
    *,
    purpose: Literal["live", "failsafe"],
    amps: float,
    phases: int,
    connector: int,
    now: datetime,
    transaction_id: int | None = None,
    rate_unit: RateUnit | None = None,
    duration_s: int | None = None,
    max_stack_level: int | None = None,
) -> dict[str, Any]:
    """A SetChargingProfile payload. "live": the share of a running transaction, a TxProfile (which
    needs its transaction_id), or a TxDefaultProfile at stack level 1 where the model takes no
    TxProfile. "failsafe": the TxDefaultProfile at stack level 0 the charger keeps when the gateway
    dies (connector 0 = all). Limits are whole amps, 0 or >= 6 A, in W as 230 V x A x phases where
    the unit is W. A live profile without `duration_s` outlives the gateway; `now` must be aware."""
    sc = quirks.smart_charging
    if phases not in (1, 2, 3):
        raise ValueError(f"phases must be 1, 2 or 3, got {phases!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    lowest = 0 if purpose == "failsafe" else 1
    if not lowest <= connector <= quirks.connectors:
        raise ValueError(f"{quirks.model}: connector {connector} is outside {lowest}..{quirks.connectors}")
    stack_cap = max_stack_level if max_stack_level is not None else sc.max_stack_level
    profile: dict[str, Any] = {"chargingProfileId": profile_id(purpose, connector)}
    if purpose == "live" and sc.tx_profile:
        if transaction_id is None:
            raise ValueError("a TxProfile needs the transaction_id of the running transaction")
        profile |= {"transactionId": transaction_id, "stackLevel": 0, "chargingProfilePurpose": "TxProfile"}
    else:
        if not sc.default_profile:
            raise ValueError(f"{quirks.model}: takes no TxDefaultProfile")
        level = LIVE_DEFAULT_STACK_LEVEL if purpose == "live" else FAILSAFE_STACK_LEVEL
        if stack_cap is not None and level > stack_cap:
            raise ValueError(f"{quirks.model}: stack level {level} is above ChargeProfileMaxStackLevel {stack_cap}")
        profile |= {"stackLevel": level, "chargingProfilePurpose": "TxDefaultProfile"}
    unit = rate_unit or sc.rate_unit or "A"
    current_a = whole_amps(amps)
    limit = current_a if unit == "A" else round(VOLTAGE_V * current_a * phases)
    schedule: dict[str, Any] = {"chargingRateUnit": unit}
    if sc.profile_kind == "Absolute":
        schedule["startSchedule"] = _iso(now - timedelta(seconds=CLOCK_SKEW_S))
    if duration_s is not None:
        if duration_s < 1:
            raise ValueError(f"duration_s must be >= 1, got {duration_s}")
        schedule["duration"] = duration_s
    schedule["chargingSchedulePeriod"] = [{"startPeriod": 0, "limit": limit, "numberPhases": phases}]
    profile |= {"chargingProfileKind": sc.profile_kind, "chargingSchedule": schedule}
    return {"connectorId": connector, "csChargingProfiles": profile}


class ProfileWriteBudget:
    """Whether a charging-profile write may go now: at most `profile_writes_per_day` in any 24 hours
    and `profile_min_interval_s` apart, as the model's map says (Easee writes profiles to flash).

    Times are wall-clock seconds (time.time()); persist `history` to keep the budget across restarts.
    """

    def __init__(self, quirks: OcppQuirks, history: Iterable[float] = ()) -> None:
        self.per_day = quirks.smart_charging.profile_writes_per_day
        self.min_interval_s = quirks.smart_charging.profile_min_interval_s
        self._writes = sorted(history)

    @property
    def history(self) -> tuple[float, ...]:
        return tuple(self._writes)

    def wait_s(self, now: float) -> float:
        """Seconds until a write may go; 0 when it may go now."""
        self._forget(now)
        wait = 0.0
        if self._writes and self.min_interval_s:
            wait = self._writes[-1] + self.min_interval_s - now
        if self.per_day is not None and len(self._writes) >= self.per_day:
            wait = max(wait, self._writes[-self.per_day] + _WINDOW_S - now)
        return min(max(wait, 0.0), _WINDOW_S + self.min_interval_s)  # a clock set back waits no longer than this

    def may_write(self, now: float) -> bool:
        return self.wait_s(now) == 0.0

    def record(self, now: float) -> None:
        """A profile write was sent (count it whatever the answer: the flash was written or may have been)."""
        self._writes.append(now)
        self._writes.sort()
        self._forget(now)

    def _forget(self, now: float) -> None:
        # profile_min_interval_s is at most a day, so a write older than the window matters to neither rule
        self._writes = [t for t in self._writes if t > now - _WINDOW_S]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
