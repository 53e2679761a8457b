"""OCPP 1.6J chargers: the gateway is their local central system (Zaptec, Easee, CTEK, Wallbox, ...).

    async with CentralSystem(host="0.0.0.0", port=8887, handler=agent,
                             charge_points={"ZAP049123": ChargePointAuth(password="...")}) as cs:
        link = await cs.wait_booted("ZAP049123", timeout=60)
        status = await link.call_change_configuration("MeterValueSampleInterval", "30")

The charge point's messages reach the owner's `CentralSystemHandler` as plain dataclasses (`_api`);
calls to it are the link's `call_*` methods, which raise drivers.errors.ChargerNotConnected,
CallTimeout, CallError (with the OCPP error code) or InvalidAnswer.

What a model does differently is data, `load_quirks(model)` (quirks/*.yaml, schema in
quirks/README.md); what the site sets on every boot, its local list and its charging profiles are
pure functions of those quirks (`boot_configuration`, `plan_configuration`, `local_list_plan`,
`charging_profile`, `ProfileWriteBudget`).
"""
from __future__ import annotations

from ._api import (
    ENERGY_IMPORT_REGISTER,
    AuthStatus,
    BootInfo,
    CentralSystemHandler,
    ChargePointAuth,
    Configuration,
    ConfigurationKey,
    IdTagStatus,
    LocalListEntry,
    MeterReport,
    MeterSample,
    StartAnswer,
    StatusReport,
    TransactionStart,
    TransactionStop,
)
from ._link import ChargePointLink
from ._quirks import (
    ConfigValue,
    OcppQuirks,
    QuirksError,
    SmartCharging,
    available_quirk_models,
    load_quirks,
    parse_quirks,
)
from ._server import SUBPROTOCOL, CentralSystem, charge_point_id
from ._setup import (
    ConfigChange,
    ConfigPlan,
    ConfigSkip,
    LocalListMessage,
    LocalListPlan,
    LocalListState,
    ProfileWriteBudget,
    boot_configuration,
    charging_profile,
    live_current_change,
    local_list_limits,
    local_list_plan,
    plan_configuration,
    profile_id,
    rate_unit_for,
    whole_amps,
)

__all__ = [
    "ENERGY_IMPORT_REGISTER",
    "SUBPROTOCOL",
    "AuthStatus",
    "BootInfo",
    "CentralSystem",
    "CentralSystemHandler",
    "ChargePointAuth",
    "ChargePointLink",
    "ConfigChange",
    "ConfigPlan",
    "ConfigSkip",
    "ConfigValue",
    "Configuration",
    "ConfigurationKey",
    "IdTagStatus",
    "LocalListEntry",
    "LocalListMessage",
    "LocalListPlan",
    "LocalListState",
    "MeterReport",
    "MeterSample",
    "OcppQuirks",
    "ProfileWriteBudget",
    "QuirksError",
    "SmartCharging",
    "StartAnswer",
    "StatusReport",
    "TransactionStart",
    "TransactionStop",
    "available_quirk_models",
    "boot_configuration",
    "charge_point_id",
    "charging_profile",
    "live_current_change",
    "load_quirks",
    "local_list_limits",
    "local_list_plan",
    "parse_quirks",
    "plan_configuration",
    "profile_id",
    "rate_unit_for",
    "whole_amps",
]
