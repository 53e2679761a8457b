"""Every packaged register map validates; a broken map names its file and key."""
from __future__ import annotations

from importlib import resources

import pytest
import yaml

from drivers.api import IEC61851_STATES
from drivers.modbus import MapError, available_models, load_map
from drivers.modbus._registermap import decode, encode, parse_map


def _text(model: str) -> str:
    return resources.files("drivers.modbus").joinpath("maps", f"{model}.yaml").read_text(encoding="utf-8")


def _broken(model: str, edit) -> str:
    data = yaml.safe_load(_text(model))
    edit(data)
    return yaml.safe_dump(data)


def test_every_packaged_map_validates() -> None:
    models = available_models()
    assert {"bender-cc613", "heidelberg-energy-control"} <= set(models)
    for model in models:
        regmap = load_map(model)
        assert regmap.model == model
        assert set(regmap.states.values()) <= set(IEC61851_STATES)
        assert regmap.control.min_current_a == 6
        for role in ("state", "energy", "power", "current_l1", "current_l2", "current_l3", "setpoint"):
            assert role in regmap.registers, (model, role)
        for block in regmap.read_blocks:
            assert block.count <= 125


def test_maps_carry_the_documented_registers() -> None:
    hec = load_map("heidelberg-energy-control")
    assert (hec.transport.kind, hec.transport.baudrate, hec.transport.parity, hec.transport.unit) == ("rtu", 19200, "E", 1)
    assert hec.transport.frame_gap_s >= 0.1
    assert (hec.registers["state"].table, hec.registers["state"].address) == ("input", 5)
    assert (hec.registers["energy"].address, hec.registers["energy"].type, hec.registers["energy"].unit) == (17, "uint32", "VAh")
    assert (hec.registers["setpoint"].address, hec.registers["setpoint"].scale) == (261, 0.1)
    assert hec.setup_writes == ((258, 4),)
    assert hec.registers["failsafe_timeout"].address == 257 and hec.registers["failsafe_current"].address == 262
    assert [hec.states[v] for v in range(2, 12)] == list("AABBBCCEFF")
    assert hec.keepalive is not None and (hec.keepalive.kind, hec.keepalive.every) == ("traffic", 0.25)

    bender = load_map("bender-cc613")
    assert (bender.transport.kind, bender.transport.port, bender.transport.unit) == ("tcp", 502, 255)
    assert bender.registers["energy"].address == 218 and 0xFFFFFFFF in bender.registers["energy"].no_value
    assert bender.registers["setpoint"].address == 1000 and bender.control.stop_value == 0
    assert (bender.registers["failsafe_current"].address, bender.registers["failsafe_timeout"].address) == (131, 132)
    assert [bender.states[v] for v in range(1, 6)] == list("ABCDE")
    assert bender.keepalive is not None and (bender.keepalive.kind, bender.keepalive.every) == ("rewrite_setpoint", 0.5)


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
    ],
)
def test_broken_map_error_names_file_and_key(edit, key: str) -> None:
    text = _broken("heidelberg-energy-control", edit)
    with pytest.raises(MapError) as info:
        parse_map(text, source="heidelberg-energy-control.yaml")
    assert str(info.value).startswith(f"heidelberg-energy-control.yaml: {key}:"), str(info.value)


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(MapError, match="bender-cc613"):
        load_map("no-such-charger")


def test_codec_round_trips_types_and_word_orders() -> None:
    text = _broken(
        "bender-cc613",
        lambda d: d["registers"].update(
            big={"address": 300, "table": "holding", "type": "uint64", "word_order": "LSW"},
            neg={"address": 310, "table": "input", "type": "int32", "scale": 0.1, "unit": "A"},
            flt={"address": 320, "table": "holding", "type": "float32", "word_order": "LSW", "unit": "V"},
        ),
    )
    regmap = parse_map(text, source="bender-cc613.yaml")
    big, neg, flt = regmap.registers["big"], regmap.registers["neg"], regmap.registers["flt"]
    assert encode(big, 0x0001000200030004) == [4, 3, 2, 1]
    assert decode(big, [4, 3, 2, 1]) == 0x0001000200030004
    assert decode(neg, encode(neg, -12.5)) == pytest.approx(-12.5)
    assert decode(flt, encode(flt, 230.5)) == pytest.approx(230.5)
    assert decode(regmap.registers["firmware"], encode(regmap.registers["firmware"], "5.3")) == "5.3"
    with pytest.raises(ValueError):
        encode(regmap.registers["setpoint"], 70000)


def test_public_surface_is_explicit() -> None:
    import drivers.modbus as modbus

    assert sorted(modbus.__all__) == [
        "BusRegistry", "MapError", "ModbusCharger", "ModbusDevice", "RegisterMap",
        "available_models", "create_charger", "load_map",
    ]
    assert all(hasattr(modbus, name) for name in modbus.__all__)
