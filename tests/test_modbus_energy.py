"""The agent's own lifetime counter for chargers with only a session energy register (ABB, Etrel)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.energy import CounterFileError, SessionEnergyLifetime
from drivers.errors import EnergyCounterError
from drivers.modbus import BusRegistry, create_charger
from hardware_sim.chargers import SimCharger, SimChargerThread


def test_sessions_add_up_and_never_decrease(tmp_path: Path) -> None:
    counter = SessionEnergyLifetime(path=tmp_path / "e.json", start_wh=0)
    readings = [120, 130, 500, 500, 0, 10, 250, 3, 3, 7]  # two new sessions (500 -> 0, 250 -> 3)
    values = [counter.update(r, now=i) for i, r in enumerate(readings)]
    assert values == [0, 10, 380, 380, 380, 390, 630, 633, 633, 637]
    assert counter.sessions_seen == 2
    with pytest.raises(ValueError, match="not a reading"):
        counter.update(-1)
    with pytest.raises(ValueError, match="not a reading"):
        counter.update(float("nan"))


def test_saved_state_continues_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "energy-evse-1.json"
    counter = SessionEnergyLifetime(path=path, save_every_s=10)
    counter.update(100, now=0)   # first reading: saved
    counter.update(150, now=1)   # not saved yet (throttled)
    counter.update(180, now=2)
    assert json.loads(path.read_text())["session_wh"] == 100
    again = SessionEnergyLifetime(path=path)  # a crash: the last save was at 100
    assert again.update(200) == 100  # 200 - 100 since the saved reading: nothing lost, nothing counted twice
    counter.flush()
    assert json.loads(path.read_text())["lifetime_wh"] == 80


def test_a_broken_file_is_named_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "energy.json"
    path.write_text("{not json")
    with pytest.raises(CounterFileError, match=str(path)):
        SessionEnergyLifetime(path=path)
    path.write_text(json.dumps({"format": 1, "lifetime_wh": -5, "session_wh": 0}))
    with pytest.raises(CounterFileError, match="unusable"):
        SessionEnergyLifetime(path=path)


def test_a_charger_with_a_broken_counter_file_faults_alone(tmp_path: Path) -> None:
    path = tmp_path / "energy.json"
    path.write_text("garbage")
    with SimChargerThread() as sims:
        abb, bender = SimCharger("abb-terra-ac"), SimCharger("bender-cc613")
        s1, s2 = sims.serve_tcp([abb]), sims.serve_tcp([bender])

        async def scenario() -> None:
            async with BusRegistry() as registry:
                bad = create_charger(model="abb-terra-ac", name="evse 1", registry=registry, host="127.0.0.1",
                                     port=s1.port, energy_counter_path=path, timeout_s=0.5)
                good = create_charger(model="bender-cc613", name="evse 2", registry=registry, host="127.0.0.1",
                                      port=s2.port, timeout_s=0.5)
                with pytest.raises(EnergyCounterError, match=str(path)) as info:
                    await bad.poll()
                assert not info.value.retryable and info.value.device == "evse 1"
                assert (await good.poll()).measurement.energy_wh == 1_000_000
                assert await bad.status() == "A"  # the charger itself still answers

        asyncio.run(scenario())
    assert path.read_text() == "garbage"  # left for a person to look at


def test_a_session_register_stuck_at_zero_is_reported(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import drivers.modbus._chargerreading as charger_module

    monkeypatch.setattr(charger_module, "SESSION_STUCK_AFTER_S", 0.3)
    with SimChargerThread() as sims:
        etrel = SimCharger("etrel-inch", session_register_works=False)
        server = sims.serve_tcp([etrel])

        async def scenario() -> None:
            async with BusRegistry() as registry:
                cp = create_charger(model="etrel-inch", name="evse 5", registry=registry, host="127.0.0.1",
                                    port=server.port, timeout_s=0.5)
                etrel.plug()
                etrel.set_ev_requesting(True)
                await cp.set_max_current(16)
                for _ in range(6):
                    assert (await cp.poll()).measurement.energy_wh == 0
                    await asyncio.sleep(0.1)

        asyncio.run(scenario())
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "configure a billing meter" in errors[0] and "evse 5" in errors[0]


@settings(max_examples=200, deadline=None)
@given(
    readings=st.lists(st.integers(min_value=0, max_value=100_000), min_size=1, max_size=40),
    restart_at=st.integers(min_value=0, max_value=40),
)
def test_restarting_anywhere_changes_nothing(readings: list[int], restart_at: int) -> None:
    straight = SessionEnergyLifetime()
    previous = 0
    for r in readings:
        value = straight.update(r)
        assert value >= previous
        previous = value
    first = SessionEnergyLifetime()
    for r in readings[:restart_at]:
        first.update(r)
    second = SessionEnergyLifetime()
    second.restore(first.state())
    for r in readings[restart_at:]:
        second.update(r)
    assert second.value_wh == straight.value_wh


WRITER = textwrap.dedent("""
    import sys, time
    from drivers.energy import SessionEnergyLifetime
    counter = SessionEnergyLifetime(path=sys.argv[1], save_every_s=0)
    session = 0
    print("ready", flush=True)
    while True:
        session += 7
        counter.update(session)
""")


def test_sigkill_while_saving_leaves_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "energy.json"
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                                cwd=Path(__file__).resolve().parents[1])
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        state = json.loads(path.read_text())  # never torn: a whole, valid state
        restored = SessionEnergyLifetime(path=path)
        assert restored.value_wh == state["lifetime_wh"] and state["lifetime_wh"] % 7 == 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "energy.json"]
    assert len(leftovers) <= 3, leftovers  # at most a temp file per kill, never a half-written counter
