"""The per-EVSE state machine, fed events directly (no I/O)."""
from datetime import UTC, datetime

from drivers.api import ChargerReading, Measurement
from edge_agent.authorization import Decision
from edge_agent.sessions import (
    ActiveSession,
    AuthorizationTimedOut,
    EndSession,
    EvseSessionMachine,
    Offer,
    RecordSample,
    StartSession,
)
from edge_agent.store import UserRecord

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KARI = UserRecord("u-1", "Kari", None, "residents", False, None)
ACCEPTED = Decision(True, "04A2B3", KARI, method="local_list")


def reading(state: str, energy: int | None = 1000) -> ChargerReading:
    return ChargerReading(state, Measurement(energy, 0, (0.0, 0.0, 0.0)))


def machine() -> EvseSessionMachine:
    return EvseSessionMachine(evse_id="1", max_current_a=16, connect_timeout_s=60, sample_interval_s=60,
                              max_plausible_w=1e9)


def started(m: EvseSessionMachine, now: float = 0.0) -> None:
    m.session_started(ActiveSession("s-1", "04A2B3", "local_list", 1000, now, now, False))


def test_tap_then_plug_starts_a_session_at_the_plug_reading():
    m = machine()
    m.on_reading(reading("A", 1000), now=0, at=AT)
    assert m.on_authorized(ACCEPTED, now=1, at=AT) == []
    assert m.status() == "Preparing"
    actions = m.on_reading(reading("B", 1000), now=5, at=AT)
    assert len(actions) == 1 and isinstance(actions[0], StartSession)
    assert actions[0].reading.measurement.energy_wh == 1000
    assert m.session_started(ActiveSession("s-1", "04A2B3", "local_list", 1000, 5)) == [Offer(16)]


def test_plug_then_tap_starts_at_once():
    m = machine()
    m.on_reading(reading("B", 2000), now=0, at=AT)
    assert m.status() == "Preparing"
    actions = m.on_authorized(ACCEPTED, now=1, at=AT)
    assert isinstance(actions[0], StartSession) and actions[0].reading.measurement.energy_wh == 2000


def test_tap_without_plug_expires_after_connect_timeout():
    m = machine()
    m.on_reading(reading("A"), now=0, at=AT)
    m.on_authorized(ACCEPTED, now=10, at=AT)
    assert m.on_tick(now=69) == []
    assert isinstance(m.on_tick(now=70)[0], AuthorizationTimedOut)
    assert m.on_reading(reading("B"), now=71, at=AT) == []
    assert m.status() == "Preparing"


def test_rejected_decision_changes_nothing():
    m = machine()
    m.on_reading(reading("B"), now=0, at=AT)
    assert m.on_authorized(Decision(False, "X", None, reason="blocked"), now=1, at=AT) == []
    assert m.pending is None and m.session is None


def test_unplug_ends_with_the_unplug_reading():
    m = machine()
    m.on_reading(reading("B", 1000), now=0, at=AT)
    started(m)
    m.on_reading(reading("C", 1500), now=1, at=AT)
    assert m.status() == "Charging"
    actions = m.on_reading(reading("A", 2500), now=2, at=AT)
    end = [a for a in actions if isinstance(a, EndSession)]
    assert end and end[0].reason == "ev_disconnected" and end[0].reading.measurement.energy_wh == 2500
    assert actions[0] == Offer(0.0), "paused before the end is recorded, for the next car"


def test_stop_pauses_the_charger_then_ends_with_a_fresh_reading():
    m = machine()
    m.on_reading(reading("C", 1000), now=0, at=AT)
    started(m)
    actions = m.on_stop("local", at=AT)
    assert actions[0] == Offer(0.0)
    assert isinstance(actions[1], EndSession) and actions[1].reading is None and actions[1].reason == "local"
    m.session_ended()
    assert m.status() == "Finishing"
    m.on_reading(reading("A"), now=3, at=AT)
    assert m.status() == "Available"


def test_samples_on_state_change_and_interval():
    m = machine()
    m.on_reading(reading("B", 1000), now=0, at=AT)
    started(m)
    first = m.on_reading(reading("C", 1100), now=1, at=AT)
    assert [type(a) for a in first] == [RecordSample] and first[0].charging
    assert m.on_reading(reading("C", 1200), now=30, at=AT) == []
    assert isinstance(m.on_reading(reading("C", 1300), now=61.5, at=AT)[0], RecordSample)
    parked = m.on_reading(reading("B", 1300), now=62, at=AT)
    assert isinstance(parked[0], RecordSample) and not parked[0].charging


def test_recovered_session_goes_on_when_the_vehicle_is_still_plugged():
    m = machine()
    m.session = ActiveSession("s-1", "04A2B3", "local_list", 1000, 0, recovering=True)
    actions = m.on_reading(reading("C", 1800), now=1, at=AT)
    assert Offer(16) in actions and not any(isinstance(a, EndSession) for a in actions)


def test_recovered_session_ends_with_power_loss_and_the_startup_reading():
    m = machine()
    m.session = ActiveSession("s-1", "04A2B3", "local_list", 1000, 0, recovering=True)
    actions = m.on_reading(reading("A", 1800), now=1, at=AT)
    assert len(actions) == 2 and actions[0] == Offer(0.0) and actions[1].reason == "power_loss"
    assert actions[1].reading.measurement.energy_wh == 1800


def test_unavailable_and_faulted_evses_take_no_authorization():
    m = machine()
    m.on_reading(reading("B"), now=0, at=AT)
    m.available = False
    assert m.on_authorized(ACCEPTED, now=1, at=AT) == [] and m.status() == "Unavailable"
    m.available = True
    m.on_fault("charger not responding")
    assert m.on_authorized(ACCEPTED, now=1, at=AT) == [] and m.status() == "Faulted"
    m.on_reading(reading("B"), now=2, at=AT)
    assert m.fault is None and m.status() == "Preparing"


def test_no_start_without_an_energy_reading():
    m = machine()
    m.on_reading(reading("B", None), now=0, at=AT)
    assert m.on_authorized(ACCEPTED, now=1, at=AT) == []
    assert isinstance(m.on_reading(reading("B", 1234), now=2, at=AT)[0], StartSession)


def charging_machine(start: int = 1000) -> EvseSessionMachine:
    m = EvseSessionMachine(evse_id="1", max_current_a=16, connect_timeout_s=60, sample_interval_s=1,
                           max_plausible_w=50_000)
    m.on_reading(reading("C", start), now=0, at=AT)
    m.session_started(ActiveSession("s-1", "04A2B3", "local_list", start, 0))
    m.offered_a = 16
    return m


def energy_seen(actions) -> list[int]:
    return [a.reading.measurement.energy_wh for a in actions if isinstance(a, RecordSample)]


def test_counter_reset_to_zero_keeps_counting_from_where_the_session_was():
    from edge_agent.sessions import EnergyCounterRebased

    m = charging_machine(5000)
    assert energy_seen(m.on_reading(reading("C", 5010), now=2, at=AT)) == [5010]
    assert energy_seen(m.on_reading(reading("C", 3), now=4, at=AT)) == []  # suspect: held back
    actions = m.on_reading(reading("C", 8), now=6, at=AT)
    assert any(isinstance(a, EnergyCounterRebased) and a.offset_wh == 5010 for a in actions)
    assert energy_seen(actions) == [5018]
    end = m.on_reading(reading("A", 20), now=8, at=AT)
    assert [a.reading.measurement.energy_wh for a in end if isinstance(a, EndSession)] == [5030]


def test_one_low_glitch_reading_is_ignored_not_billed_as_a_reset():
    m = charging_machine(5000)
    m.on_reading(reading("C", 5010), now=2, at=AT)
    assert energy_seen(m.on_reading(reading("C", 0), now=4, at=AT)) == []
    assert energy_seen(m.on_reading(reading("C", 5020), now=6, at=AT)) == [5020]
    assert m.session.energy_offset_wh == 0


def test_an_implausible_jump_is_held_back_and_never_billed():
    m = charging_machine(5000)
    assert energy_seen(m.on_reading(reading("C", 5010), now=2, at=AT)) == [5010]
    # 4 GWh in two seconds: garbage (e.g. a "no value" pattern that slipped through)
    assert energy_seen(m.on_reading(reading("C", 4_294_967_295), now=4, at=AT)) == []
    assert energy_seen(m.on_reading(reading("C", 5030), now=6, at=AT)) == [5030]
    # A lasting jump (a swapped counter) is taken as the new base, the jump itself not billed.
    for t in (8, 10):
        assert energy_seen(m.on_reading(reading("C", 900_000), now=t, at=AT)) == []
    assert energy_seen(m.on_reading(reading("C", 900_000), now=12, at=AT)) == [5030]
    assert energy_seen(m.on_reading(reading("C", 900_010), now=14, at=AT)) == [5040]


def test_a_rebooted_charger_is_told_again_what_to_offer():
    m = charging_machine(5000)
    rebooted = ChargerReading("B", Measurement(5010, 0, None), offered_current_a=32.0)
    actions = m.on_reading(rebooted, now=10, at=AT)
    assert Offer(16, reassert=True) in actions
    assert not any(isinstance(a, Offer) for a in m.on_reading(rebooted, now=11, at=AT))  # rate-limited
    idle = EvseSessionMachine(evse_id="2", max_current_a=16, connect_timeout_s=60, sample_interval_s=60)
    assert idle.on_reading(ChargerReading("B", Measurement(1, 0, None), offered_current_a=32.0),
                           now=0, at=AT) == [Offer(0.0, reassert=True)]
    assert idle.on_reading(ChargerReading("B", Measurement(1, 0, None), offered_current_a=0.0),
                           now=10, at=AT) == []


def test_a_counter_that_comes_back_far_lower_but_large_is_a_different_counter_not_a_restart():
    from edge_agent.sessions import EnergyCounterRebased

    m = charging_machine(1_000_000)
    assert energy_seen(m.on_reading(reading("C", 1_005_898), now=3600, at=AT)) == [1_005_898]
    m.on_reading(reading("C", 1_000_091), now=3602, at=AT)  # another device answers (a swapped charger)
    actions = m.on_reading(reading("C", 1_000_095), now=3604, at=AT)
    assert energy_seen(actions) == [1_005_898], "the gap is not billed, nothing jumps"
    assert any(isinstance(a, EnergyCounterRebased) for a in actions)
    assert energy_seen(m.on_reading(reading("C", 1_000_115), now=3606, at=AT)) == [1_005_918]
