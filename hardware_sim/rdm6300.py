"""A simulated RDM6300: writes EM4100 frames to the sim side of a pty pair."""
from __future__ import annotations

import time

import serial

from drivers.tokens import normalize_uid


def encode_frame(token10hex: str) -> bytes:
    """'0a1b2c3d4e' -> STX + '0A1B2C3D4E' + XOR checksum as 2 hex digits + ETX."""
    token = normalize_uid(token10hex)
    if len(token) != 10:
        raise ValueError(f"an EM4100 token has 10 hex digits, got {token10hex!r}")
    checksum = 0
    for b in bytes.fromhex(token):
        checksum ^= b
    return b"\x02" + token.encode("ascii") + f"{checksum:02X}".encode("ascii") + b"\x03"


class SimRdm6300:
    def __init__(self, port_path: str) -> None:
        self.port_path = port_path
        self._serial = serial.Serial(port_path, 9600, timeout=0.05)

    def present(self, token: str, repeats: int = 3, interval_s: float = 0.1) -> list[float]:
        """Hold a card on the reader: the frame `repeats` times, `interval_s` apart.

        Returns time.monotonic() right after each frame's ETX was written.
        """
        frame = encode_frame(token)
        written_at: list[float] = []
        for i in range(repeats):
            if i:
                time.sleep(interval_s)
            self._serial.write(frame)
            written_at.append(time.monotonic())
        return written_at

    def send_raw(self, data: bytes) -> float:
        """Write arbitrary bytes (garbage, bad checksums, split frames); returns the write time."""
        self._serial.write(data)
        return time.monotonic()

    def close(self) -> None:
        self._serial.close()

    def __enter__(self) -> SimRdm6300:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
