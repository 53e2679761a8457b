"""One token form for every reader: 4, 7 and 10-byte UIDs, separators, case, decimal HID output."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.readers import uid_from_bytes, uid_from_decimal, uid_from_typed
from drivers.tokens import InvalidToken, normalize_uid

UIDS = {4: "04A2B3C4", 7: "04A2B3C4D5E6F7", 10: "0102030405060708090A"}


@pytest.mark.parametrize("size", [4, 7, 10])
def test_every_path_gives_the_same_token(size: int) -> None:
    token = UIDS[size]
    raw = bytes.fromhex(token)
    spelled = [token.lower(), ":".join(f"{b:02x}" for b in raw), "-".join(f"{b:02X}" for b in raw), " ".join(f"{b:02X}" for b in raw)]
    assert uid_from_bytes(raw) == token  # nfcpy
    assert {normalize_uid(s) for s in spelled} == {token}  # built-in readers' text
    assert {uid_from_typed(s) for s in spelled} == {token}  # a HID reader typing hex
    assert uid_from_typed(str(int.from_bytes(raw, "big")).zfill(10)) == token  # typing decimal, big-endian


def test_decimal_conventions() -> None:
    assert uid_from_typed("0077771716") == "04A2B3C4"  # the 10-digit decimal of 0x04A2B3C4
    assert uid_from_typed("0077771716", byte_order="little") == "C4B3A204"
    assert uid_from_decimal("1") == "00000001"
    assert uid_from_decimal(str(2**32)) == "00000100000000"  # 5 bytes do not exist: the next size, 7
    assert uid_from_typed("12345678") == "12345678"  # 8 digits: a 4-byte UID in hex
    assert uid_from_typed("0046791E") == "0046791E"
    assert uid_from_typed("9999999999") == "9999999999"  # above 2**32: only hex (an EM4100 id) fits
    for bad in ("", "---", "04G2", "1" * 30):
        with pytest.raises(InvalidToken):
            uid_from_typed(bad)


@given(st.sampled_from([4, 7, 10]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_decimal_round_trips_every_uid_size(raw: bytes) -> None:
    number = int.from_bytes(raw, "big")
    token = uid_from_decimal(str(number))
    assert int(token, 16) == number and len(token) in (8, 14, 20) and len(token) <= 2 * len(raw)
