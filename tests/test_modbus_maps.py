"""Every packaged register map validates against the schema; the maps carry the documented
registers; a broken map names its file and key."""
from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import pytest
import yaml

from drivers.api import IEC61851_STATES, Charger, FailsafeReporter, Identifier, KeepAlive, Meter, OwnEnergyCounter
from drivers.modbus import (
    BusRegistry,
    ConditionalState,
    MapError,
    available_meter_models,
    available_models,
    create_charger,
    decode,
    encode,
    load_any_map,
    load_map,
    load_meter_map,
    parse_map,
)

MAPS = Path(str(resources.files("drivers.modbus").joinpath("maps")))
METERS = Path(str(resources.files("drivers.modbus").joinpath("meters")))


def _text(model: str, folder: Path = MAPS) -> str:
    return (folder / f"{model}.yaml").read_text(encoding="utf-8")


def _broken(model: str, edit, folder: Path = MAPS) -> str:
    data = yaml.safe_load(_text(model, folder))
    edit(data)
    return yaml.safe_dump(data)


def test_every_map_file_validates() -> None:
    charger_files = sorted(p.stem for p in MAPS.glob("*.yaml"))
    meter_files = sorted(p.stem for p in METERS.glob("*.yaml"))
    assert charger_files == available_models() and meter_files == available_meter_models()
    assert set(charger_files) == {
        "bender-cc613", "heidelberg-energy-control", "abb-terra-ac", "alfen-ng9xx", "schneider-evlink-pro-ac",
        "phoenix-charx", "etrel-inch", "peblar",
    }
    assert set(meter_files) == {"eastron-sdm630", "eastron-sdm120", "eastron-sdm72", "carlo-gavazzi-em340", "abb-b23"}
    for model in charger_files:
        regmap = parse_map(_text(model), source=f"{model}.yaml", kind="charger")
        assert regmap.model == model and regmap.kind == "charger"
        letters = {s if isinstance(s, str) else s.set for s in regmap.states.values()}
        assert letters <= set(IEC61851_STATES) and {"A", "B", "C"} <= letters
        assert regmap.control is not None and regmap.control.min_current_a == 6
        assert "energy" in regmap.registers or "session_energy" in regmap.registers, model
        for role in ("state", "power", "current_l1", "current_l2", "current_l3", "setpoint"):
            assert role in regmap.registers, (model, role)
        for block in regmap.read_blocks:
            assert block.count <= min(125, regmap.transport.max_read)
            covered = [r for r in regmap.registers.values() if block.covers(r)]
            assert covered, (model, block)  # a block that covers nothing is a typo
        if regmap.connectors:
            for n in range(1, regmap.connectors.max + 1):
                regmap.for_connector(n)
    for model in meter_files:
        regmap = parse_map(_text(model, METERS), source=f"{model}.yaml", kind="meter")
        assert regmap.kind == "meter" and regmap.registers["energy"].unit == "Wh"
        assert regmap.control is None and not regmap.states


# (table, address, type, word order, scale, unit) per role, from charger-registers.md
DOCUMENTED = {
    "bender-cc613": {
        "state": ("holding", 122, "uint16", "BE", 1, None), "energy": ("holding", 218, "uint32", "BE", 1, "Wh"),
        "current_l1": ("holding", 212, "uint32", "BE", 0.001, "A"), "setpoint": ("holding", 1000, "uint16", "BE", 1, "A"),
        "failsafe_current": ("holding", 131, "uint16", "BE", 1, "A"), "failsafe_timeout": ("holding", 132, "uint16", "BE", 1, "s"),
        "rfid_uid": ("holding", 720, "ascii", "BE", 1, None),
    },
    "heidelberg-energy-control": {
        "state": ("input", 5, "uint16", "BE", 1, None), "energy": ("input", 17, "uint32", "BE", 1, "VAh"),
        "current_l1": ("input", 6, "uint16", "BE", 0.1, "A"), "power": ("input", 14, "uint16", "BE", 1, "VA"),
        "setpoint": ("holding", 261, "uint16", "BE", 0.1, "A"), "failsafe_current": ("holding", 262, "uint16", "BE", 0.1, "A"),
        "failsafe_timeout": ("holding", 257, "uint16", "BE", 0.001, "s"),
    },
    "abb-terra-ac": {
        "state": ("holding", 0x400D, "uint16", "BE", 1, None), "session_energy": ("holding", 0x401E, "uint32", "BE", 1, "Wh"),
        "current_l1": ("holding", 0x4010, "uint32", "BE", 0.001, "A"), "power": ("holding", 0x401C, "uint32", "BE", 1, "W"),
        "setpoint": ("holding", 0x4100, "uint32", "BE", 0.001, "A"), "setpoint_readback": ("holding", 0x4022, "uint32", "BE", 0.001, "A"),
        "failsafe_timeout": ("holding", 0x4106, "uint16", "BE", 1, "s"), "failsafe_current": ("holding", 0x4109, "uint16", "BE", 1, "A"),
    },
    "alfen-ng9xx": {
        "state": ("holding", 1201, "ascii", "BE", 1, None), "energy": ("holding", 374, "float64", "BE", 1, "Wh"),
        "current_l1": ("holding", 320, "float32", "BE", 1, "A"), "power": ("holding", 344, "float32", "BE", 1, "W"),
        "setpoint": ("holding", 1210, "float32", "BE", 1, "A"), "failsafe_current": ("holding", 1212, "float32", "BE", 1, "A"),
        "firmware": ("holding", 123, "ascii", "BE", 1, None),
    },
    "schneider-evlink-pro-ac": {
        "state": ("holding", 1, "uint16", "BE", 1, None), "energy": ("holding", 3203, "uint64", "LSW", 1, "Wh"),
        "current_l1": ("holding", 2999, "float32", "LSW", 1, "A"), "power": ("holding", 3059, "float32", "LSW", 1000, "W"),
        "setpoint": ("holding", 4004, "uint16", "BE", 1, "A"), "life_bit": ("holding", 4000, "uint16", "BE", 1, None),
        "failsafe_current": ("holding", 4006, "uint16", "BE", 1, "A"), "failsafe_current_1p": ("holding", 4005, "uint16", "BE", 1, "A"),
    },
    "phoenix-charx": {
        "state": ("holding", 1299, "uint16", "BE", 1, None), "energy": ("holding", 1250, "int64", "BE", 1, "Wh"),
        "current_l1": ("holding", 1238, "int32", "BE", 0.001, "A"), "power": ("holding", 1244, "int32", "BE", 0.001, "W"),
        "setpoint": ("holding", 1301, "uint16", "BE", 1, "A"), "rfid_uid": ("holding", 1275, "ascii", "BE", 1, None),
    },
    "etrel-inch": {
        "state": ("input", 0, "int16", "BE", 1, None), "session_energy": ("input", 30, "float32", "BE", 1000, "Wh"),
        "current_l1": ("input", 14, "float32", "BE", 1, "A"), "power": ("input", 26, "float32", "BE", 1000, "W"),
        "setpoint": ("holding", 8, "float32", "BE", 1, "A"), "setpoint_readback": ("input", 4, "float32", "BE", 1, "A"),
    },
    "peblar": {
        "state": ("input", 30110, "uint16", "BE", 1, None), "energy": ("input", 30000, "int64", "BE", 1, "Wh"),
        "current_l1": ("input", 30022, "uint32", "BE", 0.001, "A"), "power": ("input", 30014, "uint32", "BE", 1, "W"),
        "setpoint": ("holding", 40000, "uint32", "BE", 0.001, "A"),
    },
    "eastron-sdm630": {
        "energy": ("input", 72, "float32", "BE", 1000, "Wh"), "power": ("input", 52, "float32", "BE", 1, "W"),
        "current_l1": ("input", 6, "float32", "BE", 1, "A"), "current_l3": ("input", 10, "float32", "BE", 1, "A"),
    },
    "eastron-sdm120": {
        "energy": ("input", 72, "float32", "BE", 1000, "Wh"), "power": ("input", 12, "float32", "BE", 1, "W"),
        "current_l1": ("input", 6, "float32", "BE", 1, "A"),
    },
    "eastron-sdm72": {"energy": ("input", 72, "float32", "BE", 1000, "Wh"), "power": ("input", 52, "float32", "BE", 1, "W")},
    "carlo-gavazzi-em340": {
        "energy": ("input", 52, "int32", "LSW", 100, "Wh"), "power": ("input", 40, "int32", "LSW", 0.1, "W"),
        "current_l1": ("input", 12, "int32", "LSW", 0.001, "A"),
    },
    "abb-b23": {
        "energy": ("holding", 0x5000, "uint64", "BE", 10, "Wh"), "power": ("holding", 0x5B14, "int32", "BE", 0.01, "W"),
        "current_l1": ("holding", 0x5B0C, "uint32", "BE", 0.01, "A"),
    },
}


@pytest.mark.parametrize("model", sorted(DOCUMENTED))
def test_maps_carry_the_documented_registers(model: str) -> None:
    regmap = load_any_map(model)
    for role, (table, address, dtype, order, scale, unit) in DOCUMENTED[model].items():
        reg = regmap.registers[role]
        assert (reg.table, reg.address, reg.type, reg.word_order, reg.scale, reg.unit) == (
            table, address, dtype, order, scale, unit), (model, role)


def test_maps_carry_the_documented_quirks() -> None:
    hec = load_map("heidelberg-energy-control")
    assert (hec.transport.kind, hec.transport.baudrate, hec.transport.parity, hec.transport.unit) == ("rtu", 19200, "E", 1)
    assert hec.transport.frame_gap_s >= 0.1 and hec.setup_writes == ((258, 4),)
    assert hec.keepalive is not None and (hec.keepalive.kind, hec.keepalive.every) == ("traffic", 0.25)
    bender = load_map("bender-cc613")
    assert (bender.transport.kind, bender.transport.port, bender.transport.unit) == ("tcp", 502, 255)
    assert 0xFFFFFFFF in bender.registers["energy"].no_value
    assert bender.keepalive is not None and bender.keepalive.kind == "rewrite_setpoint"
    abb = load_map("abb-terra-ac")
    assert set(abb.forbidden()) == {0x4105, 0x4103} and "energy" not in abb.registers
    assert (abb.registers["state"].shift, abb.registers["state"].mask) == (8, 0x7F)
    assert abb.registers["setpoint"].access == "w" and abb.registers["setpoint"].readback == "setpoint_readback"
    assert abb.states[5] == ConditionalState("socket_state", 0x100, "B", "A")
    assert abb.transport.kinds == ("tcp", "rtu") and abb.transport.baudrate is None
    alfen = load_map("alfen-ng9xx")
    assert alfen.transport.station_unit == 200 and alfen.registers["firmware"].station
    assert alfen.failsafe is not None and alfen.failsafe.set_by == "device"
    assert alfen.keepalive is not None and alfen.keepalive.kind == "rewrite_setpoint"
    assert alfen.keepalive.period_s(60) == pytest.approx(24)  # evcc re-writes every 25 s
    schneider = load_map("schneider-evlink-pro-ac")
    assert schneider.keepalive is not None
    assert (schneider.keepalive.kind, schneider.keepalive.every_s, schneider.keepalive.register) == ("write", 2, "life_bit")
    assert schneider.registers["setpoint"].no_value == frozenset({99})
    charx = load_map("phoenix-charx")
    assert charx.connectors is not None and charx.connectors.stride == 1000
    assert charx.for_connector(2).registers["state"].address == 2299
    assert charx.for_connector(2).registers["firmware"].address == 110  # the station's, not shifted
    etrel = load_map("etrel-inch")
    assert etrel.transport.write_multiple and etrel.control is not None and etrel.control.pause == (2, 1)
    assert etrel.for_connector(2).control.pause == (102, 1)  # type: ignore[union-attr]
    assert etrel.for_connector(2).forbidden() == {101: etrel.forbidden()[1], 1004: etrel.forbidden()[1004]}
    for model in ("phoenix-charx", "etrel-inch", "peblar"):
        assert load_map(model).failsafe is None and load_map(model).keepalive is None
    assert load_meter_map("eastron-sdm630").transport.frame_gap_s == 0.1
    assert load_meter_map("carlo-gavazzi-em340").transport.max_read == 50


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d["registers"]["state"].update(type="uint17"), "registers.state.type"),
        (lambda d: d["registers"]["energy"].update(unit="kW"), "registers.energy.unit"),
        (lambda d: d["registers"]["power"].update(colour="red"), "registers.power.colour"),
        (lambda d: d["registers"]["current_l1"].pop("address"), "registers.current_l1.address"),
        (lambda d: d["control"].update(register="nonexistent"), "control.register"),
        (lambda d: d["transport"].update(parity="X"), "transport.parity"),
        (lambda d: d["states"].update({12: "Z"}), "states.12"),
        (lambda d: d["identity"].append("serial_number"), "identity[4]"),
        (lambda d: d["read_blocks"][0].update(count=200), "read_blocks[0].count"),
        (lambda d: d["setup"]["writes"][0].update(value=70000), "setup.writes[0].value"),
        (lambda d: d.update(model="other-box"), "model"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["registers"]["energy"].update(shift=40), "registers.energy.shift"),
        (lambda d: d["registers"]["power"].update(shift=2, type="int16"), "registers.power.shift"),
        (lambda d: d["registers"]["energy"].update(readback="power"), "registers.energy.readback"),
        (lambda d: d["registers"]["setpoint"].update(access="r"), "registers.setpoint.access"),
        (lambda d: d["registers"]["setpoint"].update(access="w"), "registers.setpoint.readback"),
        (lambda d: d["states"].update({12: {"role": "nope", "mask": 1, "set": "B", "clear": "A"}}), "states.12.role"),
        (lambda d: d["keepalive"].update(every_s=2), "keepalive"),
        (lambda d: d["keepalive"].update(every=0.5), "keepalive.every"),  # > 0.4 of the timeout
        (lambda d: d["keepalive"].update(kind="write"), "keepalive.register"),
        (lambda d: d.update(never_write=[{"address": 261, "why": "no"}]), "registers.setpoint.address"),
        (lambda d: d.update(never_write=[{"address": 258, "why": "no"}]), "setup.writes[0].address"),
        (lambda d: d.update(connectors={"max": 2, "stride": 65400}), "registers.failsafe_current.address"),
        (lambda d: d["transport"].update(kinds=["tcp"]), "transport.kinds"),
        (lambda d: d["failsafe"].update(set_by="nobody"), "failsafe.set_by"),
    ],
)
def test_broken_map_error_names_file_and_key(edit, key: str) -> None:
    text = _broken("heidelberg-energy-control", edit)
    with pytest.raises(MapError) as info:
        parse_map(text, source="heidelberg-energy-control.yaml")
    assert str(info.value).startswith(f"heidelberg-energy-control.yaml: {key}:"), str(info.value)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.update(states={1: "A"}), "states"),
        (lambda d: d["registers"].pop("energy"), "registers.energy"),
        (lambda d: d["read_blocks"][0].update(count=100), "read_blocks[0].count"),  # > max_read 80
        (lambda d: d["registers"]["energy"].update(unit="kWh"), "registers.energy.unit"),
    ],
)
def test_broken_meter_map_error_names_file_and_key(edit, key: str) -> None:
    text = _broken("eastron-sdm630", edit, METERS)
    with pytest.raises(MapError) as info:
        parse_map(text, source="eastron-sdm630.yaml", kind="meter")
    assert str(info.value).startswith(f"eastron-sdm630.yaml: {key}:"), str(info.value)


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(MapError, match="bender-cc613"):
        load_map("no-such-charger")
    with pytest.raises(MapError, match="eastron-sdm630"):
        load_meter_map("no-such-meter")
    with pytest.raises(MapError, match=r"bender-cc613.*eastron-sdm630"):
        load_any_map("../maps/bender-cc613")


def test_codec_round_trips_types_and_word_orders() -> None:
    text = _broken(
        "bender-cc613",
        lambda d: d["registers"].update(
            big={"address": 300, "table": "holding", "type": "uint64", "word_order": "LSW"},
            neg={"address": 310, "table": "input", "type": "int32", "scale": 0.1, "unit": "A"},
            flt={"address": 320, "table": "holding", "type": "float32", "word_order": "LSW", "unit": "V"},
            dbl={"address": 330, "table": "holding", "type": "float64", "unit": "Wh"},
            i64={"address": 340, "table": "holding", "type": "int64", "unit": "Wh"},
            hb={"address": 350, "table": "holding", "type": "uint16", "shift": 8, "mask": 0x7F},
        ),
    )
    regmap = parse_map(text, source="bender-cc613.yaml")
    r = regmap.registers
    assert encode(r["big"], 0x0001000200030004) == [4, 3, 2, 1]
    assert decode(r["big"], [4, 3, 2, 1]) == 0x0001000200030004
    assert encode(r["big"], 0x5422040049200025) == [0x0025, 0x4920, 0x0400, 0x5422]  # exact beyond 2**53
    assert decode(r["neg"], encode(r["neg"], -12.5)) == pytest.approx(-12.5)
    assert decode(r["flt"], encode(r["flt"], 230.5)) == pytest.approx(230.5)
    assert encode(r["flt"], 16.0) == [0x0000, 0x4180]
    assert decode(r["dbl"], encode(r["dbl"], 1_234_567.25)) == 1_234_567.25
    assert decode(r["i64"], encode(r["i64"], -5)) == -5
    assert decode(r["hb"], [0x84FF]) == 4  # the high byte, bit 7 masked off
    assert encode(r["hb"], 4) == [0x0400]
    assert decode(regmap.registers["firmware"], encode(regmap.registers["firmware"], "5.3")) == "5.3"
    with pytest.raises(ValueError):
        encode(regmap.registers["setpoint"], 70000)


def test_public_surface_is_explicit() -> None:
    import drivers.modbus as modbus

    # The word codec and MapIO are public for the technician's probe/scan and the simulators.
    assert sorted(modbus.__all__) == sorted([
        "BusRegistry", "ConditionalState", "MapError", "MapIO", "ModbusCharger", "ModbusDevice", "ModbusMeter",
        "Register", "RegisterMap", "TRANSPORTS", "available_meter_models", "available_models", "create_charger",
        "create_meter", "decode", "encode", "field_value", "load_any_map", "load_map", "load_meter_map",
        "parse_map", "raw_value", "raw_words", "unbilled_fallback_warning",
    ])
    assert all(hasattr(modbus, name) for name in modbus.__all__)


def test_every_charger_map_gives_a_charger_with_every_ability() -> None:
    abilities: tuple[type, ...] = (Charger, Meter, Identifier, KeepAlive, OwnEnergyCounter, FailsafeReporter)

    async def scenario() -> None:
        async with BusRegistry() as registry:  # nothing is opened: links connect on first use
            for model in available_models():
                cp = create_charger(model=model, name=model, registry=registry, host="127.0.0.1", port=1502)
                for ability in abilities:
                    assert isinstance(cp, ability), (model, ability.__name__)

    asyncio.run(scenario())
