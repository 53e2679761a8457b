"""RFID readers: each turns card reads into de-bounced, normalised `Tap`s for a callback.

* ``rdm6300``: 125 kHz EM4100 reader on a serial port (Rdm6300Reader)
* ``pn532`` (also ``nfc``, ``acr122u``): NFC readers through nfcpy, `device` is nfcpy's path:
  ``tty:AMA0:pn532``, ``usb``, ``usb:072f:2200`` (ACR122U), ``udp:host:port`` (simulation)
* ``hid``: keyboard-type USB readers, `device` is /dev/input/by-id/...-event-kbd (HidReader)
* readers built into a charger are not made here: see drivers.readers.builtin.ChargerReader,
  polled from the charger's loop.

Every reader thread re-opens its device when it comes back, logging the outage and the
recovery once each. Tokens: upper-case hex, no separators (drivers.readers._uid explains how
4, 7 and 10-byte UIDs and decimal HID output are turned into one).
"""
from __future__ import annotations

from collections.abc import Callable

from drivers.api import Tap
from drivers.readers._uid import uid_from_bytes, uid_from_decimal, uid_from_typed
from drivers.readers.builtin import ChargerReader, identifier_of
from drivers.readers.hid import HidReader
from drivers.readers.nfc import NfcReader
from drivers.readers.rdm6300 import Rdm6300Reader, decode_frames

__all__ = [
    "DRIVERS",
    "ChargerReader",
    "HidReader",
    "NfcReader",
    "Rdm6300Reader",
    "create_reader",
    "decode_frames",
    "identifier_of",
    "uid_from_bytes",
    "uid_from_decimal",
    "uid_from_typed",
]

DRIVERS = ("rdm6300", "pn532", "nfc", "acr122u", "hid")

Reader = Rdm6300Reader | NfcReader | HidReader


def create_reader(
    *,
    driver: str,
    port: str | None = None,
    device: str | None = None,
    evse_id: str | None,
    on_tap: Callable[[Tap], None],
    debounce_s: float = 2.0,
    decimal_byte_order: str = "big",
) -> Reader:
    """The reader for one `readers:` entry of the site config (not started yet: call start())."""
    if driver == "rdm6300":
        if not port:
            raise ValueError("reader driver rdm6300 needs a port")
        if device:
            raise ValueError("reader driver rdm6300 takes a port, not a device")
        return Rdm6300Reader(port=port, evse_id=evse_id, on_tap=on_tap, debounce_s=debounce_s)
    if driver in ("pn532", "nfc", "acr122u"):
        if not device:
            raise ValueError(f"reader driver {driver} needs a device (usb, tty:AMA0:pn532, udp:host:port)")
        if port:
            raise ValueError(f"reader driver {driver} takes an nfcpy device, not a port")
        return NfcReader(device=device, evse_id=evse_id, on_tap=on_tap, debounce_s=debounce_s)
    if driver == "hid":
        if not device:
            raise ValueError("reader driver hid needs a device (/dev/input/by-id/...-event-kbd)")
        if port:
            raise ValueError("reader driver hid takes an input device, not a port")
        return HidReader(device=device, evse_id=evse_id, on_tap=on_tap, debounce_s=debounce_s,
                         decimal_byte_order=decimal_byte_order)  # type: ignore[arg-type]
    raise ValueError(f"unknown reader driver {driver!r} (supported: {', '.join(DRIVERS)})")
