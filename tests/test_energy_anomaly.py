"""A charger's energy counter that jumps implausibly: held back, never billed, and told (issue 12).

The session keeps how many Wh it did not bill and why (on disk, through a SIGKILL), session_ended
carries them, an evse_fault names the jump and clears with the session, and `edge-agent sessions`
shows them. A spike that comes back is ignored as before: nothing un-billed, no fault."""
import json
import math
import sqlite3
import time
from datetime import UTC, datetime

from drivers.api import ChargerReading, Measurement
from edge_agent.cloud import Event, events
from edge_agent.sessions import ActiveSession, EndSession, EnergyCounterRebased, EvseSessionMachine
from edge_agent.store import SessionRecord, Store
from edge_agent.store._schema import MIGRATIONS
from hardware_sim.chargers import SimCharger
from hardware_sim.site import SimulatedSite
from helpers import cli

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KARI = "04A2B3C4D5"
JUMP_WH = 50_000


# -- the session machine --------------------------------------------------------------------------

def reading(state: str, energy: int) -> ChargerReading:
    return ChargerReading(state, Measurement(energy, 0, (0.0, 0.0, 0.0)))


def charging_machine(start_wh: int) -> EvseSessionMachine:
    m = EvseSessionMachine(evse_id="1", max_current_a=16, connect_timeout_s=60, sample_interval_s=1,
                           max_plausible_w=22_000)
    m.on_reading(reading("C", start_wh), now=0, at=AT)
    m.session_started(ActiveSession("s-1", KARI, "local_list", start_wh, 0.0, 0.0, True))
    return m


def rebased(actions) -> list[EnergyCounterRebased]:
    return [a for a in actions if isinstance(a, EnergyCounterRebased)]


def test_lasting_jumps_are_summed_as_unbilled_with_when_how_much_and_the_limit():
    m = charging_machine(5000)
    m.on_reading(reading("C", 5010), now=2, at=AT)
    for t in (4, 6):  # held back
        assert rebased(m.on_reading(reading("C", 900_000), now=t, at=AT)) == []
    [first] = rebased(m.on_reading(reading("C", 900_000), now=8, at=AT))
    assert first.jump_wh == 900_000 - 5010 == first.unbilled_wh == m.session.unbilled_wh
    assert first.offset_wh == 5010 - 900_000
    assert first.unbilled_reason == ("counter jumped by 894990 Wh at 2026-03-01T12:00:00Z, faster than 22 kW "
                                     "(sessions.max_plausible_power_kw); not billed")
    m.on_reading(reading("C", 900_010), now=10, at=AT)
    for t in (12, 14, 16):
        actions = m.on_reading(reading("C", 1_000_010), now=t, at=AT)
    [second] = rebased(actions)
    assert second.jump_wh == 100_000 and second.unbilled_wh == 894_990 + 100_000
    assert second.unbilled_reason.count("counter jumped by") == 2
    end = m.on_reading(reading("A", 1_000_030), now=18, at=AT)
    [stop] = [a.reading.measurement.energy_wh for a in end if isinstance(a, EndSession)]
    # billed (stop - start) + un-billed = the register's difference
    assert (stop - 5000) + m.session.unbilled_wh == 1_000_030 - 5000


def test_a_jump_confirmed_by_the_stop_reading_is_in_the_session_too():
    m = charging_machine(5000)
    m.on_reading(reading("C", 5010), now=2, at=AT)
    m.on_reading(reading("C", 80_000), now=4, at=AT)
    m.on_reading(reading("C", 80_000), now=6, at=AT)
    stop = m.corrected(reading("B", 80_000), now=8)
    assert stop.measurement.energy_wh == 5010 and m.session.unbilled_wh == 80_000 - 5010


def test_a_jump_still_held_back_when_the_session_ends_is_counted_as_unbilled():
    m = charging_machine(5000)
    m.on_reading(reading("C", 5010), now=2, at=AT)
    m.on_reading(reading("C", 80_000), now=4, at=AT)  # held back, unconfirmed
    stop = m.corrected(reading("B", 80_000), now=6)  # the stop reading: held back too
    assert stop.measurement.energy_wh == 5010
    assert m.session.unbilled_wh == 80_000 - 5010
    assert "unconfirmed when the session ended" in m.session.unbilled_reason
    # billed + un-billed = the register's difference
    assert (stop.measurement.energy_wh - 5000) + m.session.unbilled_wh == 80_000 - 5000


def test_spikes_that_come_back_unbill_nothing():
    m = charging_machine(5000)
    m.on_reading(reading("C", 5010), now=2, at=AT)
    for t in (4, 6):  # two readings far too high, then the truth again
        m.on_reading(reading("C", 4_000_000), now=t, at=AT)
    assert rebased(m.on_reading(reading("C", 5030), now=8, at=AT)) == []
    assert (m.session.unbilled_wh, m.session.unbilled_reason, m.session.energy_offset_wh) == (0, None, 0)


# -- the store ------------------------------------------------------------------------------------------

def record(sid: str = "s-1") -> SessionRecord:
    return SessionRecord(id=sid, evse_id="1", status="active", token=KARI, user_id="u-1", group="residents",
                         user_name="Kari", auth="local_list", started_at="2026-03-01T12:00:00Z",
                         meter_start_wh=1000, tariff_id=None, tariffs_version=None, offline_start=False,
                         clock_synced=True)


def test_offset_unbilled_and_fault_land_together_and_an_older_database_migrates(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    conn = sqlite3.connect(old / "edge-agent.db")
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO sessions(id, evse_id, status, auth, started_at, meter_start_wh, offline_start) "
                 "VALUES ('s-old', '1', 'ended', 'local_list', '2026-01-01T00:00:00Z', 100, 0)")
    conn.commit()
    conn.close()
    with Store(old, read_only=True) as store:  # `edge-agent sessions` before the agent migrated it
        assert [(s.id, s.unbilled_wh, s.unbilled_reason) for s in store.sessions()] == [("s-old", 0, None)]
    with Store(old) as store:
        store.start_session(record(), event=events.session_started(record(), ts="2026-03-01T12:00:00Z", offline=False))
        store.set_unbilled_energy("s-1", offset_wh=-4990, unbilled_wh=4990, reason="counter jumped by 4990 Wh",
                                  fault=Event("evse_fault", {"evse_id": "1", "error": "EVSE 1 energy counter: ...",
                                                             "ts": "x"}, "2026-03-01T12:01:00Z", True))
    with Store(old) as store:
        [active] = store.active_sessions()
        assert (active.energy_offset_wh, active.unbilled_wh, active.unbilled_reason) == (
            -4990, 4990, "counter jumped by 4990 Wh")
        assert [e.type for e in store.pending_events()] == ["session_started", "evse_fault"]
        ended = {"ended_at": "2026-03-01T13:00:00Z", "meter_stop_wh": 2000, "energy_wh": 1000,
                 "unbilled_wh": 4990, "unbilled_reason": "counter jumped by 4990 Wh"}
        store.end_session("s-1", ended=ended, event=Event("session_ended", ended, "2026-03-01T13:00:00Z", False),
                          then=[events.evse_fault("1", None, ts="2026-03-01T13:00:00Z", offline=False)])
        bodies = [json.loads(e.body) for e in store.pending_events()]
        assert [b["type"] for b in bodies] == ["session_started", "evse_fault", "session_ended", "evse_fault"]
        assert bodies[-1]["data"]["error"] is None and bodies[-2]["data"]["unbilled_wh"] == 4990


# -- on real parts: mosquitto, a Bender on a pymodbus server, the agent as its own process ----------------

class SpikingBender(SimCharger):
    """A Bender whose energy register reads `spike_wh` more for its next `spike_reads` reads, then the
    truth again (a glitch, not a jump of the counter)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("bender-cc613", **kwargs)
        self.spike_wh = 0
        self.spike_reads = 0

    def handle(self, function_code, table, address, count, set_values):
        energy = self.regmap.registers["energy"]
        spiked = 0
        with self._lock:
            if (self.spike_reads and not set_values and table == energy.table
                    and address <= energy.address < address + count):
                self.spike_reads -= 1
                spiked = self.spike_wh
                self._energy_wh += spiked
        try:
            return super().handle(function_code, table, address, count, set_values)
        finally:
            if spiked:
                with self._lock:
                    self._energy_wh -= spiked


def faults(site: SimulatedSite) -> list[dict]:
    return sorted((e for e in site.cloud.unique_events if e["type"] == "evse_fault" and e["data"]["evse_id"] == "1"),
                  key=lambda e: e["seq"])


def sessions_started(site: SimulatedSite) -> list[dict]:
    return [e["data"] for e in site.cloud.unique_events if e["type"] == "session_started"]


def charge(site: SimulatedSite) -> dict:
    before = len(sessions_started(site))
    site.tap("1", KARI)
    time.sleep(0.3)
    site.plug_and_charge("1")
    assert site.wait(lambda: len(sessions_started(site)) > before, 15), site.agent_log_tail()
    return sessions_started(site)[-1]


def register_wh(charger: SimCharger) -> int:
    return math.floor(charger.energy_wh + 1e-6)  # what register 218 reads (whole Wh)


def end(site: SimulatedSite, session_id: str) -> dict:
    site.unplug("1")
    return site.cloud.wait_event("session_ended", timeout=20, session_id=session_id)["data"]


def test_a_lasting_jump_reaches_the_cloud_and_billed_plus_unbilled_is_the_register_difference(tmp_path):
    site = SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2)
    charger = site.chargers["1"] = SpikingBender(speed=60, energy_wh=1_000_000)
    with site:
        site.publish_lists()
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("tariffs_version") == 1, 15)

        # A spike over two readings that comes back: ignored as before, nothing un-billed, no fault.
        spiked = charge(site)
        time.sleep(1.0)
        charger.spike_wh, charger.spike_reads = JUMP_WH, 2
        assert site.wait(lambda: charger.spike_reads == 0, 10), "the agent read the spiked register"
        time.sleep(1.0)
        quiet = end(site, spiked["session_id"])
        assert (quiet["unbilled_wh"], quiet["unbilled_reason"]) == (0, None)
        assert quiet["energy_wh"] == register_wh(charger) - quiet["meter_start_wh"]
        assert faults(site) == []

        # A lasting jump of the counter (a swapped meter), then the agent SIGKILLed and restarted mid-session.
        time.sleep(0.5)
        started = charge(site)
        time.sleep(1.0)
        with charger._lock:  # noqa: SLF001 - the fault: the register jumps and stays there
            charger._energy_wh += JUMP_WH  # noqa: SLF001
        assert site.wait(lambda: faults(site), 15), site.agent_log_tail()
        [raised] = faults(site)
        error = raised["data"]["error"]
        assert error.startswith("EVSE 1 energy counter: counter jumped by ") and "faster than 6000 kW" in error
        jumped_by = int(error.split("jumped by ")[1].split(" Wh")[0])
        assert JUMP_WH <= jumped_by < JUMP_WH + 2000, error
        # A charger error meanwhile: its clearing event names the jump that still stands, not null.
        charger.force_state(5)  # IEC 61851 state E
        assert site.wait(lambda: len(faults(site)) == 2, 10), faults(site)
        charger.force_state(None)
        assert site.wait(lambda: len(faults(site)) == 3, 10), faults(site)
        assert [f["data"]["error"] for f in faults(site)] == [
            error, "charger reports IEC 61851 state E (error)", error]

        site.kill_agent()
        site.start_agent()
        assert site.cloud.wait_for(lambda: "was running when the agent stopped" in site.agent_log.read_text(), 20)
        time.sleep(1.5)  # charging goes on, counted from where the session was
        ended = end(site, started["session_id"])
        register_difference = register_wh(charger) - started["meter_start_wh"]
        assert ended["unbilled_wh"] == jumped_by, "the un-billed amount survives the SIGKILL"
        assert ended["energy_wh"] + ended["unbilled_wh"] == register_difference, (ended, register_difference)
        assert ended["energy_wh"] == ended["meter_stop_wh"] - ended["meter_start_wh"] > 0
        assert ended["cost"]["energy"]["quantity"] == ended["energy_wh"], "only the billed energy is priced"
        assert ended["unbilled_reason"].startswith(f"counter jumped by {jumped_by} Wh at 20")

        # The fault clears with the session, after its session_ended; nothing stays standing.
        assert site.wait(lambda: len(faults(site)) == 4, 10), faults(site)
        cleared = faults(site)[-1]
        ended_seq = site.cloud.find_event("session_ended", session_id=started["session_id"])["seq"]
        assert raised["seq"] < ended_seq < cleared["seq"] and cleared["data"]["error"] is None

        out = cli("sessions", "--config", site.config_path, "--json")
        assert out.returncode == 0, out.stderr
        rows = {r["id"]: r for r in json.loads(out.stdout)}
        assert (rows[started["session_id"]]["unbilled_wh"], rows[started["session_id"]]["energy_wh"]) == (
            ended["unbilled_wh"], ended["energy_wh"])
        assert rows[started["session_id"]]["unbilled_reason"] == ended["unbilled_reason"]
        assert rows[spiked["session_id"]]["unbilled_wh"] == 0
        table = cli("sessions", "--config", site.config_path).stdout
        assert f"{jumped_by / 1000:.3f}" in table and f"not billed: counter jumped by {jumped_by} Wh" in table
