"""RDM6300 reader: frame decoding, and end to end over real socat pseudo-terminals."""
from __future__ import annotations

import logging
import os
import queue
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from drivers.api import Tap
from drivers.readers import Rdm6300Reader, create_reader, decode_frames
from hardware_sim.rdm6300 import SimRdm6300, encode_frame

TOKEN = "62E3086CED"  # a widely published RDM6300 sample: checksum 08
FRAME = b"\x0262E3086CED08\x03"
OTHER_TOKEN = "0A1B2C3D4E"


# -- decoding ---------------------------------------------------------------------------------

def test_encode_frame_matches_published_sample() -> None:
    assert encode_frame(TOKEN) == FRAME
    assert encode_frame("62e3086ced") == FRAME


def test_encode_frame_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        encode_frame("62E3086C")


def test_decode_good_frame() -> None:
    assert decode_frames(FRAME) == ([TOKEN], b"", 0)


def test_decode_normalises_lower_case_hex() -> None:
    assert decode_frames(b"\x0262e3086ced08\x03") == ([TOKEN], b"", 0)


def test_decode_bad_checksum_is_dropped_and_counted() -> None:
    assert decode_frames(b"\x0262E3086CED09\x03") == ([], b"", 1)


def test_decode_missing_etx_is_dropped() -> None:
    assert decode_frames(b"\x0262E3086CED08\x04") == ([], b"", 1)


def test_decode_garbage_before_stx() -> None:
    assert decode_frames(b"\xff\x00noise\r\n" + FRAME) == ([TOKEN], b"", 1)


def test_decode_garbage_without_stx() -> None:
    assert decode_frames(b"noise only") == ([], b"", 1)


def test_decode_two_frames_in_one_read() -> None:
    other = encode_frame(OTHER_TOKEN)
    assert decode_frames(FRAME + other) == ([TOKEN, OTHER_TOKEN], b"", 0)


def test_decode_frame_split_across_reads() -> None:
    tokens, rest, bad = decode_frames(FRAME[:6])
    assert (tokens, rest, bad) == ([], FRAME[:6], 0)
    assert decode_frames(rest + FRAME[6:]) == ([TOKEN], b"", 0)


def test_decode_keeps_only_the_incomplete_tail() -> None:
    assert decode_frames(FRAME + FRAME[:13]) == ([TOKEN], FRAME[:13], 0)


def test_decode_frame_cut_off_by_next_stx_resyncs() -> None:
    assert decode_frames(FRAME[:7] + FRAME) == ([TOKEN], b"", 1)


def test_decode_bad_frame_then_good_frame_counts_one_bad() -> None:
    assert decode_frames(b"\x0262E3086CED09\x03" + FRAME) == ([TOKEN], b"", 1)


def test_decode_partial_that_cannot_be_a_frame_is_dropped_early() -> None:
    assert decode_frames(b"\x0262E3x") == ([], b"", 1)


# -- debounce logic with the default 2 s window, on synthetic times ------------------------------

def test_default_window_is_measured_from_the_last_frame() -> None:
    taps: list[Tap] = []
    reader = Rdm6300Reader(port="/nonexistent", evse_id="1", on_tap=taps.append)
    assert reader.debounce_s == 2.0
    for at in (100.0, 101.9, 103.8, 105.7):  # card held for 5.7 s, frames 1.9 s apart
        reader._sighting(TOKEN, at)  # noqa: SLF001
    assert [t.monotonic for t in taps] == [100.0]
    reader._sighting(TOKEN, 107.8)  # 2.1 s after the last frame: a new tap  # noqa: SLF001
    reader._sighting(OTHER_TOKEN, 107.9)  # another card is its own tap at once  # noqa: SLF001
    assert [(t.token, t.monotonic) for t in taps] == [(TOKEN, 100.0), (TOKEN, 107.8), (OTHER_TOKEN, 107.9)]


# -- factory -----------------------------------------------------------------------------------

def test_create_reader_rdm6300() -> None:
    reader = create_reader(driver="rdm6300", port="/dev/ttyAMA0", evse_id="1", on_tap=lambda tap: None)
    assert isinstance(reader, Rdm6300Reader)
    assert (reader.port, reader.evse_id, reader.name) == ("/dev/ttyAMA0", "1", "/dev/ttyAMA0")


def test_create_reader_rejects_unknown_drivers_and_missing_ports_by_name() -> None:
    with pytest.raises(ValueError, match="unknown reader driver 'wiegand'"):
        create_reader(driver="wiegand", device="usb", evse_id="2", on_tap=lambda tap: None)
    with pytest.raises(ValueError, match="rdm6300 takes a port, not a device"):
        create_reader(driver="rdm6300", port="/dev/ttyAMA0", device="usb", evse_id="2", on_tap=lambda tap: None)
    with pytest.raises(ValueError, match="rdm6300 needs a port"):
        create_reader(driver="rdm6300", evse_id=None, on_tap=lambda tap: None)


# -- end to end over socat ptys ------------------------------------------------------------------

class _SocatPair:
    """Two linked ptys at paths a and b (socat removes the links when it stops)."""

    def __init__(self, directory: Path) -> None:
        self.a = str(directory / "reader")
        self.b = str(directory / "sim")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for(lambda: os.path.exists(self.a) and os.path.exists(self.b), 5.0, "socat links")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(2.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


class _TapLog:
    """on_tap target that also records when it was called."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Tap, float]] = queue.Queue()

    def __call__(self, tap: Tap) -> None:
        self.calls.put((tap, time.monotonic()))

    def next(self, timeout_s: float = 2.0) -> tuple[Tap, float]:
        try:
            return self.calls.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no tap within {timeout_s} s") from None

    def assert_none(self, within_s: float) -> None:
        try:
            tap, _ = self.calls.get(timeout=within_s)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected tap {tap}")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[_SocatPair]:
    assert shutil.which("socat"), "socat is required for these tests"
    socat = _SocatPair(tmp_path)
    socat.start()
    yield socat
    socat.stop()


@pytest.fixture
def taps() -> _TapLog:
    return _TapLog()


@contextmanager
def _started_reader(pair: _SocatPair, taps: _TapLog, debounce_s: float = 2.0) -> Iterator[Rdm6300Reader]:
    with Rdm6300Reader(port=pair.a, evse_id="1", on_tap=taps, debounce_s=debounce_s, name="door") as reader:
        # Opening the port flushes its input, so the sim may only write once the reader is open.
        _wait_for(lambda: reader.healthy, 2.0, "reader open")
        yield reader


def test_held_card_is_one_tap_with_normalised_token(pair: _SocatPair, taps: _TapLog) -> None:
    with _started_reader(pair, taps) as reader, SimRdm6300(pair.b) as sim:
        before = time.monotonic()
        for _ in range(5):
            sim.send_raw(b"\x0262e3086ced08\x03")  # lower case on the wire
            time.sleep(0.05)
        tap, _ = taps.next()
        assert tap.token == TOKEN
        assert (tap.reader, tap.evse_id) == ("door", "1")
        assert before < tap.monotonic < time.monotonic()
        taps.assert_none(within_s=0.3)
        assert (reader.frames_ok, reader.frames_bad) == (5, 0)


def test_card_held_longer_than_window_is_still_one_tap(pair: _SocatPair, taps: _TapLog) -> None:
    with _started_reader(pair, taps, debounce_s=0.3), SimRdm6300(pair.b) as sim:
        sim.present(TOKEN, repeats=10, interval_s=0.1)  # held 0.9 s, three windows long
        assert taps.next()[0].token == TOKEN
        taps.assert_none(within_s=0.2)


def test_same_card_after_window_is_second_tap(pair: _SocatPair, taps: _TapLog) -> None:
    with _started_reader(pair, taps, debounce_s=0.3), SimRdm6300(pair.b) as sim:
        sim.present(TOKEN, repeats=3, interval_s=0.05)
        first, _ = taps.next()
        time.sleep(0.4)
        sim.present(TOKEN, repeats=3, interval_s=0.05)
        second, _ = taps.next()
        assert (first.token, second.token) == (TOKEN, TOKEN)
        assert second.monotonic - first.monotonic > 0.3
        taps.assert_none(within_s=0.2)


def test_other_card_within_window_is_its_own_tap(pair: _SocatPair, taps: _TapLog) -> None:
    with _started_reader(pair, taps), SimRdm6300(pair.b) as sim:
        sim.present(TOKEN, repeats=2, interval_s=0.05)
        sim.present(OTHER_TOKEN, repeats=2, interval_s=0.05)
        assert [taps.next()[0].token for _ in range(2)] == [TOKEN, OTHER_TOKEN]
        taps.assert_none(within_s=0.2)


def test_bad_frames_make_no_tap_and_reader_keeps_going(pair: _SocatPair, taps: _TapLog) -> None:
    with _started_reader(pair, taps) as reader, SimRdm6300(pair.b) as sim:
        for _ in range(3):
            sim.send_raw(b"\x0262E3086CED09\x03")  # checksum off by one
            time.sleep(0.02)
        sim.send_raw(b"\r\n\xffgarbage")
        taps.assert_none(within_s=0.3)
        assert reader.frames_bad == 4
        assert reader.frames_ok == 0
        sim.present(TOKEN, repeats=1)
        assert taps.next()[0].token == TOKEN
        assert reader.frames_ok == 1


def test_frame_split_across_writes(pair: _SocatPair, taps: _TapLog) -> None:
    with _started_reader(pair, taps) as reader, SimRdm6300(pair.b) as sim:
        sim.send_raw(FRAME[:5])
        time.sleep(0.1)  # longer than the read timeout: the halves arrive in different reads
        sim.send_raw(FRAME[5:])
        assert taps.next()[0].token == TOKEN
        assert reader.frames_bad == 0


def test_reader_reopens_after_port_disappears(
    pair: _SocatPair, taps: _TapLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.readers.rdm6300")
    with _started_reader(pair, taps) as reader:
        assert reader.last_error is None
        pair.stop()
        _wait_for(lambda: not reader.healthy, 2.0, "reader to notice the port is gone")
        assert reader.last_error
        time.sleep(1.0)  # several reopen attempts fail meanwhile
        assert not reader.healthy
        pair.start()
        _wait_for(lambda: reader.healthy, 3.0, "reader to reopen")
        with SimRdm6300(pair.b) as sim:
            sim.present(TOKEN, repeats=2, interval_s=0.05)
            assert taps.next()[0].token == TOKEN
    messages = [r.getMessage() for r in caplog.records]
    assert sum("reader door unavailable: " in m for m in messages) == 1, messages
    assert sum(m == "reader door back" for m in messages) == 1, messages


def test_reader_started_before_port_exists(
    tmp_path: Path, taps: _TapLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.readers.rdm6300")
    socat = _SocatPair(tmp_path)
    try:
        with Rdm6300Reader(port=socat.a, evse_id=None, on_tap=taps, name="lobby") as reader:
            time.sleep(0.5)
            assert not reader.healthy
            assert reader.last_error and "No such file" in reader.last_error
            socat.start()
            _wait_for(lambda: reader.healthy, 3.0, "reader to open the new port")
            with SimRdm6300(socat.b) as sim:
                sim.present(TOKEN, repeats=1)
                tap, _ = taps.next()
            assert (tap.token, tap.evse_id) == (TOKEN, None)
    finally:
        socat.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("reader lobby unavailable: " in m for m in messages) == 1, messages
    assert sum(m == "reader lobby back" for m in messages) == 1, messages


def test_stop_is_quick_while_reading(pair: _SocatPair, taps: _TapLog) -> None:
    with _started_reader(pair, taps) as reader:
        time.sleep(0.2)
        started = time.monotonic()
        reader.stop()
        assert time.monotonic() - started < 1.0
        assert not reader.healthy


def test_stop_is_quick_while_waiting_to_reopen(tmp_path: Path, taps: _TapLog) -> None:
    reader = Rdm6300Reader(port=str(tmp_path / "absent"), evse_id="1", on_tap=taps)
    reader.start()
    time.sleep(1.5)  # backoff has grown past the first steps
    started = time.monotonic()
    reader.stop()
    assert time.monotonic() - started < 1.0


def test_tap_latency_from_etx_written_to_on_tap(pair: _SocatPair, taps: _TapLog) -> None:
    latencies: list[float] = []
    stamp_lags: list[float] = []
    with _started_reader(pair, taps), SimRdm6300(pair.b) as sim:
        for i in range(20):
            (written_at,) = sim.present(f"00000000{i:02X}", repeats=1)
            tap, called_at = taps.next()
            assert tap.token == f"00000000{i:02X}"
            latencies.append(called_at - written_at)
            stamp_lags.append(tap.monotonic - written_at)
            time.sleep(0.01)
    median = statistics.median(latencies)
    print(f"ETX written -> on_tap: median {median * 1e3:.3f} ms, max {max(latencies) * 1e3:.3f} ms; "
          f"ETX written -> Tap.monotonic: median {statistics.median(stamp_lags) * 1e3:.3f} ms")
    assert median < 0.05
