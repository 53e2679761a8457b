"""NFC readers through nfcpy, against a card emulator over nfcpy's UDP driver (two real sockets;
the reader side is nfcpy's own udp driver code, the card side hardware_sim.nfc_tag)."""
from __future__ import annotations

import errno
import logging
import time
from typing import Any

import nfc
import pytest

from drivers.api import Tap
from drivers.readers import NfcReader, create_reader
from hardware_sim.nfc_tag import SimNfcField
from helpers import wait_for


@pytest.mark.parametrize("uid", ["04A2B3C4", "04a2b3c4d5e6f7", "0102030405060708090A"])
def test_cards_of_every_uid_size_tap_once_while_held(uid: str) -> None:
    taps: list[Tap] = []
    with SimNfcField() as field:
        reader = create_reader(driver="pn532", device=field.device, evse_id="2", on_tap=taps.append, debounce_s=1.0)
        assert isinstance(reader, NfcReader)
        with reader:
            assert wait_for(lambda: reader.healthy)
            field.present(uid)
            presented = time.monotonic()
            assert wait_for(lambda: len(taps) == 1)
            latency = taps[0].monotonic - presented
            time.sleep(1.5)  # held on the reader: sensed again and again, still one tap
            assert len(taps) == 1 and reader.reads >= 3
            field.remove()
            time.sleep(1.5)  # away for longer than debounce_s ...
            field.present(uid)
            assert wait_for(lambda: len(taps) == 2)  # ... so presenting it again is a new tap
    assert {t.token for t in taps} == {uid.upper()}
    assert taps[0].evse_id == "2" and taps[0].reader == field.device
    assert latency < 2.0, latency  # the first sense after presenting, at most one 1 s udp receive timeout


def test_two_cards_one_after_the_other() -> None:
    taps: list[Tap] = []
    with SimNfcField() as field, NfcReader(device=field.device, evse_id=None, on_tap=taps.append, debounce_s=5):
        field.present("04A2B3C4")
        assert wait_for(lambda: len(taps) == 1)
        field.present("04112233445566")  # another card, within the first one's debounce time
        assert wait_for(lambda: len(taps) == 2)
    assert [t.token for t in taps] == ["04A2B3C4", "04112233445566"]
    assert taps[0].evse_id is None  # a site-wide reader


class FlakyOpener:
    """The nfcpy seam: the USB reader is unplugged for the first opens, then it is back (a real udp frontend)."""

    def __init__(self, missing: int) -> None:
        self.missing = missing
        self.calls = 0

    def __call__(self, device: str) -> Any:
        self.calls += 1
        if self.calls <= self.missing:
            raise OSError(errno.ENODEV, "No such device")
        return nfc.ContactlessFrontend(device)


def test_reader_that_is_missing_is_opened_when_it_returns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="drivers.readers")
    taps: list[Tap] = []
    opener = FlakyOpener(missing=3)
    with SimNfcField() as field:
        reader = NfcReader(device=field.device, evse_id="1", on_tap=taps.append, open_frontend=opener)
        with reader:
            assert wait_for(lambda: reader.healthy, timeout=10)
            assert "No such device" in str(reader.last_error)
            field.present("04A2B3C4")
            assert wait_for(lambda: len(taps) == 1)
    assert opener.calls == 4
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("drivers.readers")]
    assert sum("unavailable" in m for m in messages) == 1, messages  # logged once, not per attempt
    assert sum(m.endswith(" back") for m in messages) == 1, messages


def test_a_reader_that_breaks_while_reading_is_reopened(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="drivers.readers")
    taps: list[Tap] = []

    class Breaking:
        """A frontend whose sense() fails once with ENODEV (the USB cable pulled), like nfcpy's usb driver."""

        def __init__(self, real: Any, fail: bool) -> None:
            self.real, self.fail = real, fail

        def sense(self, *targets: Any, **options: Any) -> Any:
            if self.fail:
                self.fail = False
                raise OSError(errno.ENODEV, "No such device")
            return self.real.sense(*targets, **options)

        def close(self) -> None:
            self.real.close()

    opens: list[int] = []

    def opener(device: str) -> Any:
        opens.append(1)
        return Breaking(nfc.ContactlessFrontend(device), fail=len(opens) == 1)

    with SimNfcField() as field:
        field.present("04A2B3C4D5E6F7")
        with NfcReader(device=field.device, evse_id="1", on_tap=taps.append, open_frontend=opener):
            assert wait_for(lambda: len(taps) == 1, timeout=10)
    assert len(opens) == 2
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("drivers.readers")]
    assert sum("unavailable" in m for m in messages) == 1 and sum(m.endswith(" back") for m in messages) == 1


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="needs a device"):
        create_reader(driver="pn532", evse_id="1", on_tap=lambda t: None)
    with pytest.raises(ValueError, match="not a port"):
        create_reader(driver="pn532", device="usb", port="/dev/ttyS0", evse_id="1", on_tap=lambda t: None)
    with pytest.raises(ValueError, match="unknown target"):
        NfcReader(device="usb", evse_id="1", on_tap=lambda t: None, targets=("106X",))
    with pytest.raises(ValueError, match="unknown reader driver 'mifare'"):
        create_reader(driver="mifare", device="usb", evse_id="1", on_tap=lambda t: None)
