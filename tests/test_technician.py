"""`edge-agent probe` and `edge-agent scan` through the real entry point (a subprocess), against
simulated devices on a socat pty bus and on Modbus TCP. Parity N on the pty: a pty refuses E."""
from __future__ import annotations

import json
from functools import partial

import pytest

from hardware_sim.chargers import SimCharger, SimChargerThread
from hardware_sim.meters import SimMeter
from hardware_sim.pty import SocatPair
from helpers import cli

edge_agent = partial(cli, timeout=120)  # the installed command; a scan of many units takes a while


def test_scan_finds_the_devices_on_a_pty_bus_and_names_them(pair: SocatPair, sims: SimChargerThread) -> None:
    devices = [
        SimCharger("heidelberg-energy-control", unit=1),
        SimMeter("eastron-sdm630", unit=3),
        SimCharger("abb-terra-ac", unit=5),
        SimMeter("carlo-gavazzi-em340", unit=7),
        SimMeter("abb-b23", unit=8),
    ]
    sims.serve_rtu(devices, pair.b, 19200)
    done = edge_agent("scan", "--serial", pair.a, "--baudrates", "19200", "--parities", "N,E", "--units", "1-9",
                      "--timeout", "0.1", "--gap", "0.01", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    found = {f["unit"]: f for f in result["found"]}
    assert sorted(found) == [1, 3, 5, 7, 8]
    assert all((f["baudrate"], f["parity"]) == (19200, "N") for f in found.values())
    assert found[1]["models"] == ["heidelberg-energy-control"]
    assert found[3]["models"] == ["eastron-sdm630"]
    assert found[5]["models"] == ["abb-terra-ac"]
    assert found[7]["models"] == ["carlo-gavazzi-em340"]
    assert found[8]["models"] == ["abb-b23"] and found[8]["identity"]["model_name"] == "B23"
    # parity E on a pty is refused by the port: said so, not mistaken for "nobody there"
    assert [(s["baudrate"], s["parity"]) for s in result["skipped"]] == [(19200, "E")]
    assert "parity=E" in result["skipped"][0]["reason"]
    assert all(d.writes == [] for d in devices)  # scanning only reads

    text = edge_agent("scan", "--serial", pair.a, "--baudrates", "19200", "--parities", "N", "--units", "1-3",
                      "--timeout", "0.1", "--gap", "0.01")
    assert text.returncode == 0
    assert f"{pair.a} 19200 8N1 unit 1: heidelberg-energy-control" in text.stdout
    assert f"{pair.a} 19200 8N1 unit 3: eastron-sdm630" in text.stdout


def test_scan_of_an_empty_bus_and_of_a_missing_port(pair: SocatPair) -> None:
    empty = edge_agent("scan", "--serial", pair.a, "--baudrates", "9600", "--parities", "N", "--units", "1-3",
                       "--timeout", "0.05")
    assert empty.returncode == 1 and "no Modbus unit answered" in empty.stdout
    missing = edge_agent("scan", "--serial", "/dev/ttyNOSUCH0", "--baudrates", "9600", "--parities", "N", "--units", "1")
    assert missing.returncode == 4 and "/dev/ttyNOSUCH0" in missing.stderr
    bad = edge_agent("scan", "--serial", pair.a, "--units", "0-300")
    assert bad.returncode == 2 and "unit ids are 1..247" in bad.stderr


def test_probe_a_charger_on_modbus_tcp(sims: SimChargerThread) -> None:
    alfen = SimCharger("alfen-ng9xx", energy_wh=4_321_000)
    alfen.plug()
    server = sims.serve_tcp([alfen])
    done = edge_agent("probe", "--model", "alfen-ng9xx", "--host", "127.0.0.1", "--port", str(server.port), "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["identity"]["platform"] == "NG910" and r["firmware"] == "6.4.0-4210"
    assert r["state"] == {"iec61851": "B", "raw": "B1"}
    assert r["energy_wh"] == pytest.approx(4_321_000)
    assert r["failsafe"]["configured"] is True and r["failsafe"]["current_a"] == 6 and r["failsafe"]["set_by"] == "device"
    text = edge_agent("probe", "--model", "alfen-ng9xx", "--host", "127.0.0.1", "--port", str(server.port))
    assert text.returncode == 0
    assert "fail-safe configured   yes" in text.stdout and "6.4.0-4210" in text.stdout
    assert alfen.writes == []  # probing only reads


def test_probe_shows_a_missing_fail_safe_and_a_missing_lifetime_counter(sims: SimChargerThread) -> None:
    abb = SimCharger("abb-terra-ac")
    server = sims.serve_tcp([abb])
    done = edge_agent("probe", "--model", "abb-terra-ac", "--host", "127.0.0.1", "--port", str(server.port))
    assert done.returncode == 0, done.stderr
    assert "fail-safe configured   NO" in done.stdout
    assert "no lifetime energy register" in done.stdout
    assert "firmware               17368320 (0x1090500)" in done.stdout
    assert abb.writes == []


def test_probe_a_charger_and_a_meter_on_a_pty_bus(pair: SocatPair, sims: SimChargerThread) -> None:
    box = SimCharger("heidelberg-energy-control", unit=2, energy_wh=777_000)
    meter = SimMeter("eastron-sdm630", unit=3, energy_wh=123_456)
    meter.set_load(currents_a=(5.0, 6.0, 7.0))
    sims.serve_rtu([box, meter], pair.b, 19200)
    done = edge_agent("probe", "--model", "heidelberg-energy-control", "--serial", pair.a, "--parity", "N",
                      "--unit", "2", "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["state"]["iec61851"] == "A" and r["energy_wh"] == 777_000 and r["firmware"] == "4242 (0x1092)"
    assert r["failsafe"] == {"set_by": "gateway", "current_a": 0, "timeout_s": 15, "configured": True}
    m = edge_agent("probe", "--model", "eastron-sdm630", "--serial", pair.a, "--baudrate", "19200", "--unit", "3",
                   "--json")
    assert m.returncode == 0, m.stderr
    r = json.loads(m.stdout)
    assert r["kind"] == "meter" and r["energy_wh"] == pytest.approx(123_456, abs=8)  # float32 kWh
    assert [r["current_l1"], r["current_l2"], r["current_l3"]] == [5.0, 6.0, 7.0]
    nobody = edge_agent("probe", "--model", "eastron-sdm630", "--serial", pair.a, "--baudrate", "19200",
                        "--unit", "9", "--timeout", "0.2")
    assert nobody.returncode == 1 and "no answer" in nobody.stdout
    refused = edge_agent("probe", "--model", "heidelberg-energy-control", "--serial", pair.a, "--unit", "2")
    assert refused.returncode == 4 and "parity=E" in refused.stdout  # the model's 8E1, on a pty
    unknown = edge_agent("probe", "--model", "tesla-wall-connector", "--host", "127.0.0.1")
    assert unknown.returncode == 2 and "unknown model 'tesla-wall-connector'" in unknown.stderr
    assert box.writes == [] and meter.writes == []
