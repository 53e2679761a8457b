"""Keyboard-type (HID) readers: raw input_event records parsed from the device file.

No /dev/uinput on this machine (a container without input devices), so the events come through
a FIFO (hardware_sim.hid_keyboard) in the kernel's struct layout, parsed by the same code that
reads /dev/input/eventN. The EVIOCGRAB ioctl is only tried on character devices.
"""
from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path

import pytest

from drivers.api import Tap
from drivers.readers import HidReader, create_reader
from drivers.readers.hid import EV_KEY, EVENT
from hardware_sim.hid_keyboard import SimHidReader
from helpers import wait_for


def test_event_layout_is_the_kernels() -> None:
    # struct input_event on this machine: struct timeval (2 longs) + u16 type + u16 code + s32 value
    assert EVENT.size == 2 * struct.calcsize("l") + 8


def test_typed_cards_become_taps(tmp_path: Path) -> None:
    taps: list[Tap] = []
    path = tmp_path / "event7"
    with SimHidReader(path) as kbd:
        reader = create_reader(driver="hid", device=str(path), evse_id="3", on_tap=taps.append, debounce_s=0.5)
        assert isinstance(reader, HidReader)
        with reader:
            assert wait_for(lambda: reader.healthy)
            kbd.type_card("04a2b3c4")  # hex
            assert wait_for(lambda: len(taps) == 1)
            kbd.type_card("04a2b3c4")  # the reader repeats while the card is held: folded
            time.sleep(0.3)
            assert len(taps) == 1
            time.sleep(0.6)
            kbd.type_card("0077771716")  # decimal output of the same 4-byte UID, after debounce_s
            assert wait_for(lambda: len(taps) == 2)
            kbd.type_card("04:A2:B3:C4:D5:E6:F7", split=True)  # 7 bytes, records cut into pieces
            kbd.type_card("0102030405060708090A")  # 10 bytes
            assert wait_for(lambda: len(taps) == 4)
            kbd.send([(EV_KEY, 30, 1), (EV_KEY, 30, 0)])  # a stray key, then nothing: a stale half line
            time.sleep(1.2)
            kbd.type_card("12345678")
            assert wait_for(lambda: len(taps) == 5)
    assert [t.token for t in taps] == ["04A2B3C4", "04A2B3C4", "04A2B3C4D5E6F7", "0102030405060708090A", "12345678"]
    assert all(t.evse_id == "3" for t in taps)


def test_device_that_goes_away_is_reopened_when_it_returns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="drivers.readers")
    taps: list[Tap] = []
    path = tmp_path / "by-id-usb-reader-event-kbd"
    kbd = SimHidReader(path)
    reader = HidReader(device=str(path), evse_id="1", on_tap=taps.append, debounce_s=0)
    with reader:
        assert wait_for(lambda: "No such file" in str(reader.last_error))  # not plugged in yet
        kbd.plug()
        assert wait_for(lambda: reader.healthy, timeout=10)
        kbd.type_card("0102030405060708090A")
        assert wait_for(lambda: len(taps) == 1)
        for _ in range(2):
            kbd.unplug()
            assert wait_for(lambda: not reader.healthy)
            time.sleep(0.5)
            kbd.plug()
            assert wait_for(lambda: reader.healthy, timeout=10)
            kbd.type_card("04A2B3C4")
            assert wait_for(lambda: taps[-1].token == "04A2B3C4")
    kbd.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "drivers.readers.hid"]
    assert sum("unavailable" in m for m in messages) == 3, messages  # once per outage
    assert sum(m.endswith(" back") for m in messages) == 3, messages
    assert reader.opens == 3


def test_little_endian_decimal_readers(tmp_path: Path) -> None:
    taps: list[Tap] = []
    path = tmp_path / "event3"
    with SimHidReader(path) as kbd, HidReader(device=str(path), evse_id=None, on_tap=taps.append,
                                              decimal_byte_order="little"):
        kbd.type_card(str(0xC4B3A204))  # 0xC4B3A204: UID0 = 0x04 sent as the least significant byte
        assert wait_for(lambda: len(taps) == 1)
    assert taps[0].token == "04A2B3C4"


def test_a_character_device_that_cannot_be_grabbed_is_reported(tmp_path: Path) -> None:
    taps: list[Tap] = []
    # /dev/null is a character device but not an input device: the grab ioctl fails, and says so
    reader = HidReader(device=os.devnull, evse_id="1", on_tap=taps.append)
    with reader:
        assert wait_for(lambda: reader.last_error is not None)
    assert "cannot grab /dev/null" in str(reader.last_error)
    with pytest.raises(ValueError, match="needs a device"):
        create_reader(driver="hid", evse_id="1", on_tap=taps.append)
