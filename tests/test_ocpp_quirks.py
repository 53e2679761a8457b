"""Every packaged OCPP quirk map validates and cites its sources; a broken map names its file and key;
the boot configuration, the local list, the charging profiles and the profile-write budget follow the maps."""
from __future__ import annotations

import dataclasses
import decimal
import json
import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from ocpp.messages import get_validator

from drivers.ocpp import (
    AuthStatus,
    IdTagStatus,
    LocalListState,
    OcppQuirks,
    ProfileWriteBudget,
    QuirksError,
    available_quirk_models,
    boot_configuration,
    charging_profile,
    live_current_change,
    load_quirks,
    local_list_limits,
    local_list_plan,
    parse_quirks,
    plan_configuration,
    rate_unit_for,
    whole_amps,
)

QUIRKS = Path(str(resources.files("drivers.ocpp").joinpath("quirks")))
NOW = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
DAY = 86_400.0


def _text(model: str) -> str:
    return (QUIRKS / f"{model}.yaml").read_text(encoding="utf-8")


def _broken(model: str, edit: Any) -> str:
    data = yaml.safe_load(_text(model))
    edit(data)
    return yaml.safe_dump(data)


def _valid(action: str, payload: dict[str, Any]) -> None:
    """Checks a request against the OCPP 1.6 JSON schema, as the library does (floats as Decimal)."""
    validator = get_validator(2, action, "1.6", parse_float=decimal.Decimal)
    validator.validate(json.loads(json.dumps(payload), parse_float=decimal.Decimal))


# -- the maps --


def test_every_quirk_map_loads_and_cites_its_sources() -> None:
    files = sorted(p.stem for p in QUIRKS.glob("*.yaml"))
    assert files == available_quirk_models()
    assert {"generic-ocpp16", "zaptec-go", "zaptec-pro", "easee-home", "easee-charge", "ctek-chargestorm",
            "wallbox-pulsar"} <= set(files)
    for model in files:
        quirks = parse_quirks(_text(model), f"{model}.yaml")
        assert quirks == load_quirks(model)
        assert quirks.model == model and quirks.source == f"{model}.yaml" and quirks.vendor
        assert quirks.sources and all(s.strip() for s in quirks.sources), model
        assert all(c.why.strip() for c in quirks.configuration), model
        assert all(why.strip() for why in quirks.read_only.values()), model


def test_generic_spells_out_the_defaults() -> None:
    generic = load_quirks("generic-ocpp16")
    defaults = OcppQuirks(model="generic-ocpp16", vendor="any")
    for name in ("energy_unit", "connectors", "factory_defaults", "configuration", "read_only", "smart_charging",
                 "remote_start_required", "offline_tx_id_negative", "schema_lenient", "local_list_max_length"):
        assert getattr(generic, name) == getattr(defaults, name), name


def _values(quirks: OcppQuirks) -> dict[str, Any]:
    out = {f"smart_charging.{f.name}": getattr(quirks.smart_charging, f.name)
           for f in dataclasses.fields(quirks.smart_charging)}
    for name in ("energy_unit", "connectors", "remote_start_required", "offline_tx_id_negative", "schema_lenient",
                 "local_list_max_length"):
        out[name] = getattr(quirks, name)
    return out


def test_every_deviation_from_generic_says_why() -> None:
    generic = _values(load_quirks("generic-ocpp16"))
    deviations = 0
    for model in available_quirk_models():
        quirks = load_quirks(model)
        for path, value in _values(quirks).items():
            if value != generic[path]:
                deviations += 1
                assert quirks.why(path), f"{model}: {path} = {value!r} differs from generic-ocpp16 without a why"
    assert deviations >= 8  # the test can fail: the maps do deviate


def test_the_vendor_facts_are_in_the_maps() -> None:
    for model in ("easee-home", "easee-charge"):
        sc = load_quirks(model).smart_charging
        assert not sc.tx_profile and sc.default_profile and sc.profile_kind == "Absolute" and sc.max_periods == 16
        assert sc.profile_writes_per_day == 25 and sc.live_current_key == "DynamicChargerCurrent"
        assert load_quirks(model).remote_start_required
    for model in ("zaptec-go", "zaptec-pro"):
        assert load_quirks(model).factory_defaults["MeterValueSampleInterval"] == "0"
        assert load_quirks(model).factory_defaults["HeartbeatInterval"] == "86400"
    assert load_quirks("zaptec-pro").offline_tx_id_negative
    assert load_quirks("wallbox-pulsar").smart_charging.profile_kind == "Relative"
    assert load_quirks("ctek-chargestorm").connectors == 2
    assert load_quirks("generic-ocpp16").energy_unit == "Wh"
    assert {"MeterValues", "StopTransaction"} <= load_quirks("generic-ocpp16").schema_lenient


@pytest.mark.parametrize(
    ("model", "edit", "message"),
    [
        ("zaptec-go", lambda d: d.update(colour="red"), "zaptec-go.yaml: colour: unknown key"),
        ("easee-home", lambda d: d["smart_charging"].update(max_period=3),
         "easee-home.yaml: smart_charging.max_period: unknown key"),
        ("easee-home", lambda d: d["smart_charging"].update(rate_unit="V"),
         "easee-home.yaml: smart_charging.rate_unit: 'V' is not one of A, W"),
        ("easee-home", lambda d: d["smart_charging"].update(profile_writes_per_day=0),
         "easee-home.yaml: smart_charging.profile_writes_per_day: 0 is outside 1..100000"),
        ("easee-home", lambda d: d["smart_charging"]["max_periods"].pop("why"),
         "easee-home.yaml: smart_charging.max_periods.why: missing"),
        ("easee-home", lambda d: d["smart_charging"]["tx_profile"].update(because="x"),
         "easee-home.yaml: smart_charging.tx_profile.because: unknown key"),
        ("zaptec-go", lambda d: d.update(sources=[]), "zaptec-go.yaml: sources: must be a non-empty list"),
        ("zaptec-go", lambda d: d.pop("sources"), "zaptec-go.yaml: sources: missing"),
        ("zaptec-go", lambda d: d.update(model="zaptec-gone"), "zaptec-go.yaml: model: 'zaptec-gone' does not match"),
        ("zaptec-go", lambda d: d.update(energy_unit="MWh"), "zaptec-go.yaml: energy_unit: 'MWh' is not one of Wh, kWh"),
        ("zaptec-go", lambda d: d.update(connectors=0), "zaptec-go.yaml: connectors: 0 is outside 1..8"),
        ("zaptec-go", lambda d: d.update(remote_start_required="yes"),
         "zaptec-go.yaml: remote_start_required: must be true or false"),
        ("zaptec-go", lambda d: d.update(schema_lenient=["MeterValue"]),
         "zaptec-go.yaml: schema_lenient[0]: 'MeterValue' is not one of"),
        ("zaptec-go", lambda d: d.update(configuration={"HeartbeatInterval": {"value": 60}}),
         "zaptec-go.yaml: configuration.HeartbeatInterval.why: missing"),
        ("zaptec-go", lambda d: d.update(configuration={"Heartbeat Interval": {"value": 60, "why": "x"}}),
         "zaptec-go.yaml: configuration.Heartbeat Interval: 'Heartbeat Interval' is not an OCPP configuration key"),
        ("zaptec-go", lambda d: d.update(configuration={"A": {"value": {"x": 1}, "why": "x"}}),
         "zaptec-go.yaml: configuration.A.value: must be a boolean"),
        ("zaptec-go", lambda d: d.update(configuration={"A": {"value": 1, "why": "x"}}, read_only={"a": "y"}),
         "zaptec-go.yaml: configuration.A: is also in read_only"),
        ("zaptec-go", lambda d: d.update(read_only={"FreeCharging": ""}),
         "zaptec-go.yaml: read_only.FreeCharging: must be a non-empty string"),
        ("wallbox-pulsar", lambda d: d["smart_charging"].update(tx_profile=False, default_profile=False),
         "wallbox-pulsar.yaml: smart_charging: no TxProfile, no TxDefaultProfile"),
    ],
)
def test_a_broken_map_names_its_file_and_key(model: str, edit: Any, message: str) -> None:
    with pytest.raises(QuirksError) as caught:
        parse_quirks(_broken(model, edit), f"{model}.yaml")
    assert str(caught.value).startswith(message), str(caught.value)


def test_load_errors() -> None:
    with pytest.raises(QuirksError, match=r"unknown OCPP model 'zaptec-gone'; known: .*zaptec-go"):
        load_quirks("zaptec-gone")
    with pytest.raises(QuirksError, match=re.escape("unknown OCPP model '../zaptec-go'")):
        load_quirks("../zaptec-go")
    with pytest.raises(QuirksError, match=re.escape("x.yaml: not valid YAML")):
        parse_quirks("model: [", "x.yaml")
    with pytest.raises(QuirksError, match=re.escape("x.yaml: must be a mapping, got list")):
        parse_quirks("[1]", "x.yaml")


# -- the boot configuration --


def _map(**extra: Any) -> OcppQuirks:
    data = {"model": "test-cp", "vendor": "T", "sources": ["a test"], **extra}
    return parse_quirks(yaml.safe_dump(data), "test-cp.yaml")


def test_boot_configuration_sets_what_the_site_needs() -> None:
    changes = boot_configuration(load_quirks("generic-ocpp16"), meter_interval_s=30, heartbeat_s=300)
    values = {c.key: c.value for c in changes}
    assert values == {
        "MeterValueSampleInterval": "30",
        "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import,Current.Import",
        "StopTxnSampledData": "Energy.Active.Import.Register",
        "HeartbeatInterval": "300",
        "WebSocketPingInterval": "30",
        "LocalAuthorizeOffline": "true",
        "LocalAuthListEnabled": "true",
        "AllowOfflineTxForUnknownId": "false",
        "StopTransactionOnInvalidId": "true",
    }
    assert all(c.why for c in changes)
    for change in changes:
        _valid("ChangeConfiguration", change.payload())
    with pytest.raises(ValueError, match="meter_interval_s"):
        boot_configuration(load_quirks("zaptec-go"), meter_interval_s=0, heartbeat_s=300)


def test_zaptec_gets_its_meter_interval_set_because_its_default_is_0() -> None:
    zaptec = load_quirks("zaptec-go")
    current: dict[str, str | None] = {c.key: c.value for c in boot_configuration(zaptec, meter_interval_s=30, heartbeat_s=300)}
    current.update(zaptec.factory_defaults)
    plan = plan_configuration(zaptec, current, set(), meter_interval_s=30, heartbeat_s=300)
    assert [(c.key, c.value) for c in plan.changes] == [("MeterValueSampleInterval", "30"), ("HeartbeatInterval", "300")]
    assert "LocalAuthListEnabled" in plan.unchanged and not plan.read_only and not plan.unknown


def test_plan_skips_equal_values_and_reports_read_only_and_unknown_keys() -> None:
    current: dict[str, str | None] = {
        "metervaluesampleinterval": "30.0",  # keys compare without case, integers by value
        "MeterValuesSampledData": "Energy.Active.Import.Register, Power.Active.Import, Current.Import",
        "HeartbeatInterval": "300",
        "WebSocketPingInterval": None,  # known to the charger, no value: set it
        "LocalAuthorizeOffline": "True",
        "LocalAuthListEnabled": "false",
        "AllowOfflineTxForUnknownId": "true",
        "StopTransactionOnInvalidId": "true",
    }
    plan = plan_configuration(load_quirks("easee-home"), current, {"AllowOfflineTxForUnknownId"},
                              meter_interval_s=30, heartbeat_s=300)
    assert [c.key for c in plan.changes] == ["WebSocketPingInterval", "LocalAuthListEnabled"]
    assert plan.unchanged == ("MeterValueSampleInterval", "MeterValuesSampledData", "HeartbeatInterval",
                              "LocalAuthorizeOffline", "StopTransactionOnInvalidId")
    assert [(s.key, s.wanted, s.current) for s in plan.read_only] == [("AllowOfflineTxForUnknownId", "false", "true")]
    assert [c.key for c in plan.unknown] == ["StopTxnSampledData"]


def test_a_model_overrides_and_forbids_keys() -> None:
    quirks = _map(configuration={"heartbeatinterval": {"value": 900, "why": "x"},
                                 "FreeCharging": {"value": False, "why": "the tap decides"}},
                  read_only={"WebSocketPingInterval": "reconnect loop"})
    changes = boot_configuration(quirks, meter_interval_s=60, heartbeat_s=300)
    keys = [c.key for c in changes]
    assert "WebSocketPingInterval" not in keys and keys[-1] == "FreeCharging"
    assert {c.key: c.value for c in changes}["heartbeatinterval"] == "900"
    plan = plan_configuration(quirks, {"WebSocketPingInterval": "10", "FreeCharging": "true"}, set(),
                              meter_interval_s=60, heartbeat_s=300)
    assert [(s.key, s.why) for s in plan.read_only] == [("WebSocketPingInterval", "reconnect loop")]
    assert [(c.key, c.value) for c in plan.changes] == [("FreeCharging", "false")]


# -- the local list --


def _users(*tags: str, status: AuthStatus = AuthStatus.ACCEPTED) -> dict[str, IdTagStatus]:
    return {tag: IdTagStatus(status) for tag in tags}


def _wire(message: Any) -> dict[str, Any]:
    rows = [{"idTag": e.id_tag} if e.status is None else {"idTag": e.id_tag, "idTagInfo": {"status": e.status.status.value}}
            for e in message.entries]
    return {"listVersion": message.version, "updateType": message.update_type, "localAuthorizationList": rows}


def test_local_list_full_on_first_boot_then_differential() -> None:
    users = _users("04A1", "04A2", "04A3")
    first = local_list_plan(charger_version=0, recorded=None, users=users, max_length=48)
    assert first.update_type == "Full" and len(first.messages) == 1
    assert first.messages[0].version == 1 and [e.id_tag for e in first.messages[0].entries] == ["04A1", "04A2", "04A3"]
    assert first.result == LocalListState(1, users)
    _valid("SendLocalList", _wire(first.messages[0]))
    same = local_list_plan(charger_version=1, recorded=first.result, users=users, max_length=48)
    assert same.update_type == "none" and not same.messages and same.result == first.result
    changed = {"04A2": IdTagStatus(AuthStatus.BLOCKED), "04A3": users["04A3"], "04A4": users["04A1"]}
    delta = local_list_plan(charger_version=1, recorded=first.result, users=changed, max_length=48)
    assert delta.update_type == "Differential"
    (message,) = delta.messages
    assert message.version == 2
    assert [(e.id_tag, e.status) for e in message.entries] == [
        ("04A1", None), ("04A4", IdTagStatus(AuthStatus.ACCEPTED)), ("04A2", IdTagStatus(AuthStatus.BLOCKED))
    ]  # the delete first, without idTagInfo; Accepted tags before the others
    _valid("SendLocalList", _wire(message))
    assert delta.result == LocalListState(2, changed)


def test_local_list_full_again_on_a_version_mismatch() -> None:
    recorded = LocalListState(7, _users("04A1"))
    plan = local_list_plan(charger_version=3, recorded=recorded, users=_users("04A1"), max_length=48)
    assert plan.update_type == "Full" and plan.messages[0].version == 8
    assert local_list_plan(charger_version=-1, recorded=None, users=_users("04A1"), max_length=48).update_type == "NotSupported"
    empty = local_list_plan(charger_version=5, recorded=None, users={}, max_length=48)
    assert [(m.update_type, m.entries) for m in empty.messages] == [("Full", ())]  # clears the list


def test_local_list_within_max_length_and_chunked() -> None:
    users = {**_users("B1", "B2", status=AuthStatus.BLOCKED), **_users(*(f"A{i}" for i in range(10)))}
    plan = local_list_plan(charger_version=0, recorded=None, users=users, max_length=11, per_message=4)
    assert [(m.version, m.update_type, len(m.entries)) for m in plan.messages] == [
        (1, "Full", 4), (2, "Differential", 4), (3, "Differential", 3)
    ]
    assert plan.dropped == ("B2",)  # Accepted tags first, the rest in the order given
    assert plan.result is not None and plan.result.version == 3 and len(plan.result.entries) == 11
    assert local_list_limits(load_quirks("generic-ocpp16"), {}) == (48, 48)
    assert local_list_limits(load_quirks("generic-ocpp16"),
                             {"LocalAuthListMaxLength": "200", "SendLocalListMaxLength": "20"}) == (200, 20)


# -- charging profiles --


def test_whole_amps_0_or_at_least_6() -> None:
    assert [whole_amps(a) for a in (5.0, 5.99, 6.0, 15.9, 16.0, 32, -3)] == [0, 0, 6, 15, 16, 32, 0]


def test_zaptec_live_share_is_a_tx_profile() -> None:
    payload = charging_profile(load_quirks("zaptec-go"), purpose="live", amps=15.7, phases=3, connector=1,
                               now=NOW, transaction_id=42)
    profile = payload["csChargingProfiles"]
    assert payload["connectorId"] == 1 and profile["chargingProfilePurpose"] == "TxProfile"
    assert profile["transactionId"] == 42 and profile["chargingProfileKind"] == "Absolute"
    schedule = profile["chargingSchedule"]
    assert schedule["startSchedule"] == "2026-09-01T11:59:00Z" and schedule["chargingRateUnit"] == "A"
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 15, "numberPhases": 3}]
    _valid("SetChargingProfile", payload)
    with pytest.raises(ValueError, match="transaction_id"):
        charging_profile(load_quirks("zaptec-go"), purpose="live", amps=16, phases=3, connector=1, now=NOW)
    with pytest.raises(ValueError, match="connector 2"):
        charging_profile(load_quirks("zaptec-go"), purpose="live", amps=16, phases=3, connector=2, now=NOW,
                         transaction_id=1)


def test_easee_never_gets_a_tx_profile() -> None:
    easee = load_quirks("easee-home")
    live = charging_profile(easee, purpose="live", amps=10, phases=1, connector=1, now=NOW, transaction_id=7)
    failsafe = charging_profile(easee, purpose="failsafe", amps=5, phases=1, connector=1, now=NOW)
    for payload in (live, failsafe):
        assert payload["csChargingProfiles"]["chargingProfilePurpose"] == "TxDefaultProfile"
        assert "transactionId" not in payload["csChargingProfiles"]
        _valid("SetChargingProfile", payload)
    assert live["csChargingProfiles"]["stackLevel"] == 1 and failsafe["csChargingProfiles"]["stackLevel"] == 0
    assert failsafe["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 0  # 5 A -> 0
    with pytest.raises(ValueError, match="ChargeProfileMaxStackLevel 0"):
        charging_profile(easee, purpose="live", amps=10, phases=1, connector=1, now=NOW, max_stack_level=0)
    change = live_current_change(easee, 16.4)
    assert (change.key, change.value) == ("DynamicChargerCurrent", "16")
    assert live_current_change(easee, 4).value == "0"
    with pytest.raises(ValueError, match="no live_current_key"):
        live_current_change(load_quirks("zaptec-go"), 16)


def test_failsafe_in_watts_and_relative() -> None:
    w_map = _map(smart_charging={"rate_unit": {"value": "W", "why": "test"}})
    payload = charging_profile(w_map, purpose="failsafe", amps=16, phases=3, connector=0, now=NOW)
    schedule = payload["csChargingProfiles"]["chargingSchedule"]
    assert schedule["chargingRateUnit"] == "W" and schedule["chargingSchedulePeriod"][0]["limit"] == 11040
    assert payload["connectorId"] == 0 and payload["csChargingProfiles"]["stackLevel"] == 0
    one_phase = charging_profile(w_map, purpose="failsafe", amps=6, phases=1, connector=1, now=NOW)
    assert one_phase["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 1380
    wallbox = charging_profile(load_quirks("wallbox-pulsar"), purpose="live", amps=32, phases=3, connector=1,
                               now=NOW, transaction_id=5, duration_s=600)
    assert wallbox["csChargingProfiles"]["chargingProfileKind"] == "Relative"
    assert "startSchedule" not in wallbox["csChargingProfiles"]["chargingSchedule"]
    assert wallbox["csChargingProfiles"]["chargingSchedule"]["duration"] == 600
    _valid("SetChargingProfile", wallbox)
    generic = load_quirks("generic-ocpp16")
    assert rate_unit_for(generic, {}) == "A"
    assert rate_unit_for(generic, {"ChargingScheduleAllowedChargingRateUnit": "Power"}) == "W"
    assert rate_unit_for(generic, {"ChargingScheduleAllowedChargingRateUnit": "Current,Power"}) == "A"
    assert rate_unit_for(w_map, {"ChargingScheduleAllowedChargingRateUnit": "Current"}) == "W"


def test_easee_profile_writes_are_limited_to_its_budget() -> None:
    budget = ProfileWriteBudget(load_quirks("easee-home"))
    start = 1_800_000_000.0
    budget.record(start)
    assert not budget.may_write(start + 1000) and budget.wait_s(start + 1000) == pytest.approx(2456)  # 3456 s apart
    budget = ProfileWriteBudget(load_quirks("easee-home"))
    now, written = start, 0
    while now < start + DAY:
        if budget.may_write(now):
            budget.record(now)
            written += 1
        now += 60
    assert written == 25
    last = budget.history[-1]
    restored = ProfileWriteBudget(load_quirks("easee-home"), budget.history)
    assert not restored.may_write(last + 3455)
    assert restored.may_write(last + 3456)  # and the first write of the 25 has left the window by then
    assert last + 3456 > start + DAY
    burst = ProfileWriteBudget(_map(smart_charging={"profile_writes_per_day": {"value": 2, "why": "test"}}))
    burst.record(start)
    burst.record(start + 1)
    assert burst.wait_s(start + 2) == pytest.approx(DAY - 2)
    unlimited = ProfileWriteBudget(load_quirks("zaptec-go"))
    for i in range(1000):
        assert unlimited.may_write(start + i)
        unlimited.record(start + i)
