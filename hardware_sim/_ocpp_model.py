"""The parts of the simulated OCPP charge point that are plain data: quirks, configuration keys,
charging profiles, the local authorisation list and the charger's clock. No I/O here.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MIN_CURRENT_A = 6.0  # IEC 61851: a car does not charge on less
MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Current.Offered", "Voltage")
_CLOCK_BEFORE_2020 = datetime(1970, 1, 1, tzinfo=UTC)  # an RTC without a battery (MicroOcpp #311)


@dataclass(frozen=True)
class SimQuirks:
    """How this charge point differs from the standard (the field-failure catalogue).

    energy_unit: the unit of Energy.Active.Import.Register in MeterValues ("kWh": Zaptec's cloud
      mode); meterStart/meterStop stay integer Wh, as their schema says.
    omit_unit: leave the unit out of sampled values (the charger means energy_unit all the same).
    no_tx_profile: SetChargingProfile with a TxProfile is Rejected (Easee).
    resend_stop_after_reboot: after a reboot the last StopTransaction delivered before it goes out
      again, unchanged (libocpp #907).
    offline_tx_id: a transaction started while offline keeps transactionId -1 in its Stop and
      MeterValues, whatever the StartTransaction reply said (libocpp #495).
    invalid_status_enum: the first Charging status goes out as "charging" (outside the schema).
    meter_interval_default: MeterValueSampleInterval at the factory (0: no meter values, Zaptec).
    clock_before_2020: the clock starts at 1970-01-01 on every boot and is never set from the
      central system's time (every timestamp it sends is before 2020).
    calls_before_boot_reply: like a Wallbox, it sends a StatusNotification right after its
      BootNotification without waiting for the reply, and a call from the central system before
      that reply makes it drop the connection (and boot again).
    read_only_keys: configuration keys ChangeConfiguration may not change on this model.
    """

    energy_unit: str = "Wh"
    omit_unit: bool = False
    no_tx_profile: bool = False
    resend_stop_after_reboot: bool = False
    offline_tx_id: bool = False
    invalid_status_enum: bool = False
    meter_interval_default: int = 0
    clock_before_2020: bool = False
    calls_before_boot_reply: bool = False
    read_only_keys: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.energy_unit not in ("Wh", "kWh"):
            raise ValueError(f"energy_unit must be Wh or kWh, not {self.energy_unit!r}")
        object.__setattr__(self, "read_only_keys", frozenset(self.read_only_keys))


# -- clock --


class SimClock:
    """The charger's idea of the time: the host's, or (clock_before_2020) 1970 plus the time since boot."""

    def __init__(self, before_2020: bool) -> None:
        self.before_2020 = before_2020
        self._booted = datetime.now(UTC)

    def reset(self) -> None:
        """A power cycle: a clock without a battery starts again from 1970."""
        self._booted = datetime.now(UTC)

    def now(self) -> datetime:
        if self.before_2020:
            return _CLOCK_BEFORE_2020 + (datetime.now(UTC) - self._booted)
        return datetime.now(UTC)

    def stamp(self) -> str:
        return iso(self.now())


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- configuration --


@dataclass
class ConfigKey:
    value: str
    readonly: bool
    kind: str  # "int", "bool", "str" or "measurands"


def factory_configuration(quirks: SimQuirks, connectors: int) -> dict[str, ConfigKey]:
    """The configuration keys a charge point of this kind comes with (OCPP 1.6 §9.1, §9.3, §9.4)."""
    keys: dict[str, ConfigKey] = {}

    def put(key: str, value: str, kind: str, readonly: bool = False) -> None:
        keys[key] = ConfigKey(value, readonly or key in quirks.read_only_keys, kind)

    put("AllowOfflineTxForUnknownId", "false", "bool")
    put("AuthorizationCacheEnabled", "false", "bool")
    put("AuthorizeRemoteTxRequests", "false", "bool")
    put("ChargeProfileMaxStackLevel", "8", "int", True)
    put("ChargingScheduleAllowedChargingRateUnit", "Current,Power", "str", True)
    put("ChargingScheduleMaxPeriods", "16", "int", True)
    put("ClockAlignedDataInterval", "0", "int")
    put("ConnectionTimeOut", "60", "int")
    put("GetConfigurationMaxKeys", "100", "int", True)
    put("HeartbeatInterval", "86400", "int")
    put("LocalAuthListEnabled", "true", "bool")
    put("LocalAuthListMaxLength", "48", "int", True)
    put("LocalAuthorizeOffline", "true", "bool")
    put("LocalPreAuthorize", "false", "bool")
    put("MaxChargingProfilesInstalled", "8", "int", True)
    put("MeterValueSampleInterval", str(quirks.meter_interval_default), "int")
    put("MeterValuesAlignedData", "", "measurands")
    put("MeterValuesSampledData", "Energy.Active.Import.Register", "measurands")
    put("NumberOfConnectors", str(connectors), "int", True)
    put("ResetRetries", "1", "int")
    put("SendLocalListMaxLength", "48", "int", True)
    put("StopTransactionOnEVSideDisconnect", "true", "bool")
    put("StopTransactionOnInvalidId", "true", "bool")
    put("StopTxnAlignedData", "", "measurands")
    put("StopTxnSampledData", "Energy.Active.Import.Register", "measurands")
    put("SupportedFeatureProfiles", "Core,LocalAuthListManagement,RemoteTrigger,SmartCharging", "str", True)
    put("TransactionMessageAttempts", "3", "int")
    put("TransactionMessageRetryInterval", "5", "int")
    put("UnlockConnectorOnEVSideDisconnect", "true", "bool")
    put("WebSocketPingInterval", "30", "int")
    return keys


def find_key(config: dict[str, ConfigKey], key: str) -> str | None:
    """The configuration's spelling of `key` (OCPP keys are case-insensitive), None if unknown."""
    wanted = key.casefold()
    return next((k for k in config if k.casefold() == wanted), None)


def change_key(config: dict[str, ConfigKey], key: str, value: str) -> str:
    """Apply ChangeConfiguration; the ConfigurationStatus it answers."""
    name = find_key(config, key)
    if name is None:
        return "NotSupported"
    entry = config[name]
    if entry.readonly:
        return "Rejected"
    if entry.kind == "int":
        try:
            if int(value) < 0:
                return "Rejected"
        except ValueError:
            return "Rejected"
        value = str(int(value))
    elif entry.kind == "bool":
        if value.casefold() not in ("true", "false"):
            return "Rejected"
        value = value.casefold()
    elif entry.kind == "measurands":
        wanted = [m.strip() for m in value.split(",") if m.strip()]
        if any(m not in MEASURANDS for m in wanted):
            return "Rejected"
        value = ",".join(wanted)
    entry.value = value
    return "Accepted"


def int_key(config: dict[str, ConfigKey], key: str) -> int:
    return int(config[key].value or 0)


def bool_key(config: dict[str, ConfigKey], key: str) -> bool:
    return config[key].value == "true"


def list_key(config: dict[str, ConfigKey], key: str) -> list[str]:
    return [m for m in config[key].value.split(",") if m]


# -- charging profiles --


@dataclass
class InstalledProfile:
    """A profile from SetChargingProfile (snake_case keys as the ocpp library hands them over)."""

    connector: int
    profile: dict[str, Any]
    received: datetime  # on the charger's clock

    @property
    def purpose(self) -> str:
        return str(self.profile["charging_profile_purpose"])

    @property
    def stack_level(self) -> int:
        return int(self.profile["stack_level"])

    @property
    def profile_id(self) -> int:
        return int(self.profile["charging_profile_id"])


def install(profiles: list[InstalledProfile], new: InstalledProfile) -> None:
    """A new profile replaces one with its id, or one of the same purpose and stack level on its connector."""
    profiles[:] = [
        p for p in profiles
        if p.profile_id != new.profile_id
        and not (p.connector == new.connector and p.purpose == new.purpose and p.stack_level == new.stack_level)
    ]
    profiles.append(new)


def clear(profiles: list[InstalledProfile], *, profile_id: int | None, connector: int | None,
          purpose: str | None, stack_level: int | None) -> bool:
    """ClearChargingProfile: remove the matching profiles; False when none matched."""
    def matches(p: InstalledProfile) -> bool:
        if profile_id is not None:
            return p.profile_id == profile_id
        return ((connector is None or p.connector == connector) and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level))

    kept = [p for p in profiles if not matches(p)]
    removed = len(kept) != len(profiles)
    profiles[:] = kept
    return removed


def _limit_now(installed: InstalledProfile, now: datetime, tx_start: datetime | None,
               voltage_v: float, phases: int) -> float | None:
    """The profile's limit in A at `now`, None when it is not in force."""
    profile = installed.profile
    valid_from, valid_to = parse_time(profile.get("valid_from")), parse_time(profile.get("valid_to"))
    if (valid_from and now < valid_from) or (valid_to and now >= valid_to):
        return None
    schedule = profile["charging_schedule"]
    kind = profile["charging_profile_kind"]
    start = parse_time(schedule.get("start_schedule"))
    if kind == "Relative" or start is None:
        start = tx_start or installed.received
    elapsed = (now - start).total_seconds()
    if kind == "Recurring":
        cycle = 7 * 86400 if profile.get("recurrency_kind") == "Weekly" else 86400
        elapsed %= cycle
    duration = schedule.get("duration")
    if elapsed < 0 or (duration is not None and elapsed >= duration):
        return None
    periods = sorted(schedule["charging_schedule_period"], key=lambda p: p["start_period"])
    period = next((p for p in reversed(periods) if p["start_period"] <= elapsed), None)
    if period is None:
        return None
    limit = float(period["limit"])
    if schedule["charging_rate_unit"] == "W":
        limit /= voltage_v * (period.get("number_phases") or phases)
    return limit


def _highest(candidates: Iterable[InstalledProfile], now: datetime, tx_start: datetime | None,
             voltage_v: float, phases: int) -> float | None:
    for installed in sorted(candidates, key=lambda p: p.stack_level, reverse=True):
        limit = _limit_now(installed, now, tx_start, voltage_v, phases)
        if limit is not None:
            return limit
    return None


def allowed_current_a(profiles: list[InstalledProfile], connector: int, *, now: datetime, tx_id: int | None,
                      tx_start: datetime | None, hardware_max_a: float, voltage_v: float, phases: int) -> float:
    """What the profiles allow on `connector` now: a TxProfile over a TxDefaultProfile (the
    connector's own over connector 0's), each by highest stack level in force; capped by the
    ChargePointMaxProfile (per connector here, a simplification) and by the hardware."""
    def limit(purpose: str, on: int) -> float | None:
        return _highest((p for p in profiles if p.purpose == purpose and p.connector == on
                         and (purpose != "TxProfile" or p.profile.get("transaction_id") in (None, tx_id))),
                        now, tx_start, voltage_v, phases)

    chosen = limit("TxProfile", connector) if tx_start is not None else None
    if chosen is None:
        chosen = limit("TxDefaultProfile", connector)
    if chosen is None:
        chosen = limit("TxDefaultProfile", 0)
    cap = limit("ChargePointMaxProfile", 0)
    allowed = hardware_max_a if chosen is None else chosen
    if cap is not None:
        allowed = min(allowed, cap)
    return max(0.0, min(allowed, hardware_max_a))


# -- local authorisation list --


def update_local_list(current: dict[str, dict[str, Any]], version: int, *, new_version: int, update_type: str,
                      entries: list[dict[str, Any]], max_length: int, max_send: int) -> tuple[str, int]:
    """SendLocalList on `current` (changed in place on success): (UpdateStatus, the list's version)."""
    if len(entries) > max_send:
        return "Failed", version
    if update_type == "Differential" and new_version <= version:
        return "VersionMismatch", version
    updated = {} if update_type == "Full" else dict(current)
    for entry in entries:
        info = entry.get("id_tag_info")
        if info is None:
            updated.pop(entry["id_tag"], None)
        else:
            updated[entry["id_tag"]] = dict(info)
    if len(updated) > max_length:
        return "Failed", version
    current.clear()
    current.update(updated)
    return "Accepted", new_version


def local_status(info: dict[str, Any] | None, now: datetime) -> str | None:
    """The AuthorizationStatus of a local list entry now (Expired once past its expiry), None if absent."""
    if info is None:
        return None
    expiry = parse_time(info.get("expiry_date"))
    if info.get("status") == "Accepted" and expiry is not None and expiry <= now:
        return "Expired"
    return str(info.get("status"))
