"""NFC readers through nfcpy: PN532 (serial, e.g. ``tty:AMA0:pn532`` or ``tty:USB0:pn532``),
ACR122U-class and other USB readers (``usb``, ``usb:072f:2200``), and nfcpy's UDP simulation
(``udp:host:port``, used by the tests with hardware_sim.nfc_tag).

The reader senses for cards (Type A by default, plus B and F if asked) and turns the card's
identifier into a token: the UID of a Type A card (4, 7 or 10 bytes), the PUPI of a Type B
card, the IDm of a FeliCa card. It never reads or writes the card's memory. While a card stays
in the field it is sensed again every `poll_interval_s`; those repeats fold into one tap.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from drivers.api import Tap

from ._base import ThreadedReader
from ._uid import uid_from_bytes

DEFAULT_TARGETS = ("106A",)


def token_of(target: Any) -> str | None:
    """The identifier of a sensed nfcpy RemoteTarget as a token, or None if it has none."""
    brty = str(getattr(target, "brty", ""))
    if brty.endswith("A") and getattr(target, "sdd_res", None):
        return uid_from_bytes(target.sdd_res)
    if brty.endswith("B") and getattr(target, "sensb_res", None):
        return uid_from_bytes(target.sensb_res[1:5])
    if brty.endswith("F") and getattr(target, "sensf_res", None):
        return uid_from_bytes(target.sensf_res[1:9])
    return None


def _nfcpy_frontend(device: str) -> Any:
    import nfc  # imported here: the agent runs without nfcpy's USB stack when no NFC reader is configured

    return nfc.ContactlessFrontend(device)  # raises IOError (ENODEV) when no reader answers at `device`


class NfcReader(ThreadedReader):
    """Reads taps from one nfcpy device on a daemon thread; re-opens it when it comes back.

    on_tap is called from the reader thread; bridge to asyncio with loop.call_soon_threadsafe.
    `open_frontend` is the seam to nfcpy (tests replace it to make the device disappear).
    """

    kind = "nfc"

    def __init__(
        self,
        *,
        device: str,
        evse_id: str | None,
        on_tap: Callable[[Tap], None],
        debounce_s: float = 2.0,
        name: str | None = None,
        targets: Sequence[str] = DEFAULT_TARGETS,
        poll_interval_s: float = 0.1,
        open_frontend: Callable[[str], Any] = _nfcpy_frontend,
    ) -> None:
        if not device:
            raise ValueError("an NFC reader needs a device (usb, tty:AMA0:pn532, udp:host:port)")
        for brty in targets:
            if brty not in ("106A", "106B", "212F", "424F"):
                raise ValueError(f"reader {device}: unknown target technology {brty!r} (106A, 106B, 212F, 424F)")
        super().__init__(name=name or device, evse_id=evse_id, on_tap=on_tap, debounce_s=debounce_s)
        self.device = device
        self.targets = tuple(targets)
        self.poll_interval_s = poll_interval_s
        self._open_frontend = open_frontend

    def _open(self) -> Any:
        return self._open_frontend(self.device)

    def _read(self, clf: Any) -> None:
        import nfc.clf

        remote = [nfc.clf.RemoteTarget(brty) for brty in self.targets]
        while not self._stop.is_set():
            try:
                target = clf.sense(*remote, iterations=1, interval=self.poll_interval_s)
            except nfc.clf.CommunicationError:
                continue  # a garbled exchange with a card, not a broken reader
            if target is None:
                continue
            token = token_of(target)
            if token is not None:
                self._sighting(token, time.monotonic())
            self._stop.wait(self.poll_interval_s)

    def _close(self, clf: Any) -> None:
        clf.close()
