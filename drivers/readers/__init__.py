"""RFID readers: each turns card reads into de-bounced `Tap`s for a callback."""
from __future__ import annotations

from typing import Callable

from drivers.api import Tap
from drivers.readers.rdm6300 import Rdm6300Reader, decode_frames

__all__ = ["Rdm6300Reader", "create_reader", "decode_frames"]


def create_reader(
    *,
    driver: str,
    port: str | None = None,
    device: str | None = None,
    evse_id: str | None,
    on_tap: Callable[[Tap], None],
    debounce_s: float = 2.0,
) -> Rdm6300Reader:
    """The reader for one `readers:` entry of the site config (not started yet)."""
    if driver == "rdm6300":
        if not port:
            raise ValueError("reader driver rdm6300 needs a port")
        return Rdm6300Reader(port=port, evse_id=evse_id, on_tap=on_tap, debounce_s=debounce_s)
    raise ValueError(f"reader driver {driver} is not supported yet (supported: rdm6300)")
