"""Readers built into a charger (Bender register 720, CHARX base+275), polled from the charger's
loop, against the simulators over Modbus TCP."""
from __future__ import annotations

import asyncio
import logging

import pytest

from drivers.api import Identifier, Tap
from drivers.modbus import BusRegistry, create_charger
from drivers.readers import ChargerReader, identifier_of
from hardware_sim.chargers import SimCharger, SimChargerThread


@pytest.mark.parametrize("model", ["bender-cc613", "phoenix-charx"])
def test_uid_register_becomes_taps(model: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="drivers.readers")
    with SimChargerThread() as sims:
        sim = SimCharger(model)
        server = sims.serve_tcp([sim])
        taps: list[Tap] = []

        async def scenario() -> None:
            async with BusRegistry() as registry:
                cp = create_charger(model=model, name="evse 4", registry=registry, host="127.0.0.1",
                                    port=server.port, timeout_s=0.3, recheck_s=0)
                ident = identifier_of(cp)
                assert isinstance(ident, Identifier)
                reader = ChargerReader(ident, evse_id="4", on_tap=taps.append, debounce_s=0.5)
                assert await reader.poll() is None
                sim.present_card("04:a2:b3:c4")
                tap = await reader.poll()
                assert tap is not None and (tap.token, tap.evse_id, tap.reader) == ("04A2B3C4", "4", "evse 4 reader")
                assert await reader.poll() is None  # still there (the whole session): one tap
                sim.present_card(None)
                await reader.poll()
                sim.present_card("04a2b3c4")
                assert await reader.poll() is None  # back within debounce_s: the same tap
                sim.present_card("0102030405060708090a")
                assert (await reader.poll()).token == "0102030405060708090A"  # type: ignore[union-attr]
                sim.present_card(None)
                await reader.poll()
                await asyncio.sleep(0.6)
                sim.present_card("04A2B3C4")
                assert (await reader.poll()).token == "04A2B3C4"  # type: ignore[union-attr]
                sim.set_silent(True)
                assert await reader.poll() is None and await reader.poll() is None
                sim.set_silent(False)
                assert await reader.poll() is None  # back; the same card is still there

        asyncio.run(scenario())
    assert [t.token for t in taps] == ["04A2B3C4", "0102030405060708090A", "04A2B3C4"]
    messages = [r.getMessage() for r in caplog.records if r.name == "drivers.readers.builtin"]
    assert sum("unavailable" in m for m in messages) == 1 and sum(m.endswith(" back") for m in messages) == 1


def test_chargers_without_a_reader_are_not_identifiers() -> None:
    registry = BusRegistry()
    cp = create_charger(model="peblar", name="x", registry=registry, host="127.0.0.1")
    assert identifier_of(cp) is None
    assert identifier_of(create_charger(model="bender-cc613", name="y", registry=registry, host="127.0.0.1")) is not None
