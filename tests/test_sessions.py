"""The per-EVSE state machine, fed events directly (no I/O)."""
from datetime import datetime, timezone

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

AT = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
KARI = UserRecord("u-1", "Kari", None, "residents", False, None)
ACCEPTED = Decision(True, "04A2B3", KARI, method="local_list")


def reading(state: str, energy: int | None = 1000) -> ChargerReading:
    return ChargerReading(state, Measurement(energy, 0, (0.0, 0.0, 0.0)))


def machine() -> EvseSessionMachine:
    return EvseSessionMachine(evse_id="1", max_current_a=16, connect_timeout_s=60, sample_interval_s=60)


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
    assert len(actions) == 1 and actions[0].reason == "power_loss"
    assert actions[0].reading.measurement.energy_wh == 1800


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
