"""A contactless card in the field of a simulated NFC reader: nfcpy's UDP wire protocol, tag side.

    with SimNfcField() as field:            # field.port: the reader opens f"udp:127.0.0.1:{field.port}"
        field.present("04A2B3C4D5E6F7")     # a 7-byte Type A UID
        ...
        field.remove()

nfcpy's own udp listener cannot select a 10-byte UID (its cascade level 3 compares against the
level 2 command), so this emulator speaks ISO/IEC 14443-3 anticollision itself: SENS_REQ,
SDD_REQ and SEL_REQ on cascade levels 1-3, for 4, 7 and 10-byte UIDs. Nothing beyond
activation: a reader that only wants the UID needs no more.
"""
from __future__ import annotations

import binascii
import socket
import threading
from functools import reduce
from operator import xor
from types import TracebackType


def _bcc(data: bytes) -> bytes:
    return bytes([reduce(xor, data, 0)])


class SimNfcField:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.1)
        self.host, self.port = self._sock.getsockname()[:2]
        self._uid: bytes | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sim-nfc-field", daemon=True)
        self.requests = 0

    @property
    def device(self) -> str:
        """The nfcpy device path of a reader looking at this field."""
        return f"udp:{self.host}:{self.port}"

    def present(self, uid_hex: str) -> None:
        uid = bytes.fromhex(uid_hex)
        if len(uid) not in (4, 7, 10):
            raise ValueError(f"a Type A UID has 4, 7 or 10 bytes, got {len(uid)}")
        with self._lock:
            self._uid = uid

    def remove(self) -> None:
        with self._lock:
            self._uid = None

    def start(self) -> SimNfcField:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self._sock.close()

    def __enter__(self) -> SimNfcField:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _levels(self, uid: bytes) -> list[bytes]:
        """The 4-byte SDD payload of each cascade level (0x88 = cascade tag)."""
        if len(uid) == 4:
            return [uid]
        if len(uid) == 7:
            return [b"\x88" + uid[0:3], uid[3:7]]
        return [b"\x88" + uid[0:3], b"\x88" + uid[3:6], uid[6:10]]

    def _answer(self, data: bytes) -> bytes | None:
        with self._lock:
            uid = self._uid
        if uid is None:
            return None  # no card: silence
        levels = self._levels(uid)
        if data in (b"\x26", b"\x52"):  # SENS_REQ / ALL_REQ
            size_bits = {4: 0x00, 7: 0x40, 10: 0x80}[len(uid)]
            return bytes([size_bits | 0x04, 0x00])
        for level, command in enumerate(b"\x93\x95\x97"):
            if level >= len(levels):
                break
            payload = levels[level] + _bcc(levels[level])
            if data == bytes([command, 0x20]):  # SDD_REQ
                return payload
            if data == bytes([command, 0x70]) + payload:  # SEL_REQ
                more = level + 1 < len(levels)
                return bytes([0x04 if more else 0x00])  # SEL_RES: cascade bit while the UID is incomplete
        return None

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                message, addr = self._sock.recvfrom(1024)
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests += 1
            if message.startswith(b"RFOFF"):
                continue
            try:
                brty, payload = message.split()
                data = binascii.unhexlify(payload)
            except ValueError:
                continue
            if brty != b"106A":
                continue
            answer = self._answer(data)
            if answer is not None:
                self._sock.sendto(b"106A " + binascii.hexlify(answer), addr)
