"""User lists (full, streamed, deltas) and tariff lists applied to a real SQLite store on disk."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edge_agent.cloud._userstream as userstream
from edge_agent.cloud import PayloadError, check_user_list
from edge_agent.lists import (
    StagedUserList,
    apply_user_delta,
    apply_user_list,
    apply_user_list_stream,
    stage_user_list,
    swap_in_user_list,
)
from edge_agent.store import Store

KARI = {"id": "u-1", "name": "Kari", "group": "residents", "tokens": ["04:a2:b3"], "blocked": False,
        "valid_until": None}
OLA = {"id": "u-2", "name": "Ola", "group": "guests", "tokens": ["0A1B2C"]}
PER = {"id": "u-3", "name": "Per", "tokens": ["DEADBEEF", "CAFE01"], "blocked": True}


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "data") as s:
        yield s


def snapshot(store: Store) -> tuple[Any, ...]:
    db = store.db
    return (db.execute('SELECT id, name, phone, "group", blocked, valid_until FROM users ORDER BY id').fetchall(),
            db.execute("SELECT uid, user_id FROM tokens ORDER BY uid").fetchall(),
            db.execute("SELECT name, version FROM list_versions ORDER BY name").fetchall())


def full(version: int, *users: dict[str, Any]) -> dict[str, Any]:
    return {"version": version, "users": list(users)}


def stream_apply(store: Store, obj: Any, tmp_path: Path, **kw: Any):
    return apply_user_list_stream(store, io.BytesIO(json.dumps(obj).encode()), work_dir=tmp_path / "lists", **kw)


# -- full lists ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["dict", "stream"])
def test_full_list_replaces_and_versions_only_go_up(store, tmp_path, path):
    apply = (lambda obj: apply_user_list(store, obj)) if path == "dict" else \
        (lambda obj: stream_apply(store, obj, tmp_path))
    assert apply(full(3, KARI, OLA)).applied
    assert store.find_token("04A2B3").id == "u-1"  # compared without separators, case-insensitively
    before = snapshot(store)
    assert not apply(full(3, PER)).applied
    assert not apply(full(2, PER)).applied
    assert snapshot(store) == before
    assert apply(full(4, PER)).applied
    assert store.find_token("04A2B3") is None and store.find_token("CAFE01").id == "u-3"
    assert store.list_version("users") == 4 and store.user_count() == 1


@pytest.mark.parametrize("path", ["dict", "stream"])
@pytest.mark.parametrize("bad, field", [
    (full(5, KARI, {**OLA, "tokens": ["04A2B3"]}), "users[1].tokens"),     # a token of two users
    (full(5, KARI, {**OLA, "id": "u-1"}), "users[1].id"),                   # a user twice
    (full(5, KARI, {**OLA, "tokens": ["not hex"]}), "users[1].tokens[0]"),
    (full(5, KARI, {**OLA, "blocked": "no"}), "users[1].blocked"),
    (full(5, KARI, {**OLA, "valid_until": "tomorrow"}), "users[1].valid_until"),
    (full(5, KARI, {"name": "no id", "tokens": []}), "users[1].id"),
    ({"version": 0, "users": []}, "version"),
    ({"version": -3, "users": []}, "version"),
    ({"version": 2**63, "users": []}, "version"),
    ({"version": "5", "users": []}, "version"),
    ({"version": 5.0, "users": []}, "version"),
    ({"version": 5}, "users"),
    ({"users": []}, "version"),
    ({"version": 5, "users": {"u-1": KARI}}, "users"),
])
def test_a_list_with_one_bad_entry_is_rejected_whole(store, tmp_path, path, bad, field):
    apply_user_list(store, full(1, PER))
    before = snapshot(store)
    with pytest.raises(PayloadError) as caught:
        if path == "dict":
            apply_user_list(store, bad)
        else:
            stream_apply(store, bad, tmp_path)
    assert caught.value.field.startswith(field), str(caught.value)
    assert snapshot(store) == before
    assert not list((tmp_path / "lists").glob("*")) if (tmp_path / "lists").exists() else True


def test_streamed_list_with_an_old_version_first_is_not_read_to_the_end(store, tmp_path):
    apply_user_list(store, full(7, KARI))
    # Invalid after the version: never looked at, because version 6 is ignored anyway.
    text = b'{"version": 6, "users": [{"id": "x", "tokens": ["zz"]}, garbage'
    outcome = apply_user_list_stream(store, io.BytesIO(text), work_dir=tmp_path / "lists")
    assert not outcome.applied and store.list_version("users") == 7


def test_a_list_by_url_must_carry_its_own_version_if_any(store, tmp_path):
    with pytest.raises(PayloadError, match="version"):
        stream_apply(store, full(8, KARI), tmp_path, expected_version=9)
    assert stream_apply(store, {"users": [KARI]}, tmp_path, expected_version=9).applied
    assert store.list_version("users") == 9


def test_the_swap_rechecks_the_version_inside_its_transaction(store, tmp_path):
    staged = stage_user_list(io.BytesIO(json.dumps(full(5, KARI)).encode()), tmp_path / "a.staging.db")
    assert isinstance(staged, StagedUserList)
    apply_user_list(store, full(6, OLA))  # a newer list got in first
    assert not swap_in_user_list(store, staged).applied
    assert store.find_user("u-2") is not None and store.find_user("u-1") is None


# -- the streaming reader agrees with the in-memory checks -----------------------------------------

hex_token = st.text("0123456789abcdefABCDEF:", min_size=1, max_size=8)
user_strategy = st.fixed_dictionaries(
    {"id": st.sampled_from(["u-1", "u-2", "u-3", "u-4", "", "ü-5"]),
     "tokens": st.lists(st.one_of(hex_token, st.sampled_from(["zz", "", "04:A2"]), st.integers()), max_size=3)},
    optional={"name": st.one_of(st.none(), st.text(max_size=5), st.integers()),
              "blocked": st.one_of(st.booleans(), st.just("no")),
              "valid_until": st.sampled_from([None, "2030-01-01T00:00:00Z", "never"]),
              "extra": st.recursive(st.none() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                                    | st.text(max_size=3),
                                    lambda inner: st.lists(inner, max_size=2), max_leaves=4)})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(users=st.lists(user_strategy, max_size=6),
       version=st.one_of(st.integers(-1, 3), st.floats(allow_nan=False, allow_infinity=False), st.just(10**19)),
       chunk=st.integers(1, 64), order=st.booleans(),
       top=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.booleans()))
def test_stream_and_dict_paths_agree(tmp_path, users, version, chunk, order, top):
    obj = {"version": version, "users": users} if order else {"users": users, "version": version}
    if top is not None:  # an unknown top-level field: a number that a chunk boundary may cut
        obj = {"x": top, **obj, "y": top}
    try:
        expected = check_user_list(obj)
    except PayloadError:
        expected = None
    original, userstream.CHUNK_CHARS = userstream.CHUNK_CHARS, chunk
    try:
        staged = stage_user_list(io.BytesIO(json.dumps(obj).encode()), tmp_path / "p.staging.db")
    except PayloadError:
        staged = None
    finally:
        userstream.CHUNK_CHARS = original
    assert (staged is None) == (expected is None)
    if staged is not None and expected is not None:
        import sqlite3
        with sqlite3.connect(staged.path) as conn:
            rows = conn.execute("SELECT id FROM users ORDER BY seq").fetchall()
        assert [r[0] for r in rows] == [u["id"] for u in expected.users]
        assert staged.version == expected.version
        staged.path.unlink()


def test_100k_users_apply_in_seconds_and_in_bounded_memory(tmp_path):
    """A fresh process that only stages and swaps a 100,000-user list file of about 16 MB."""
    users = [{"id": f"u-{i:06d}", "name": f"Resident {i} Nordmann", "phone": f"+47{90000000 + i}",
              "group": "residents" if i % 3 else "guests", "tokens": [f"04{i:08X}A1"],
              "blocked": i % 97 == 0, "valid_until": None} for i in range(100_000)]
    (tmp_path / "list.json").write_text(json.dumps({"version": 2, "users": users}))
    del users
    script = textwrap.dedent("""
        import json, sys, time
        from pathlib import Path
        from edge_agent.store import Store
        from edge_agent.lists import stage_user_list, swap_in_user_list

        def peak_kb():  # VmHWM: this process's own peak (ru_maxrss survives exec from a big parent)
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

        store = Store(sys.argv[2])
        base = peak_kb()
        t0 = time.monotonic()
        with open(sys.argv[1], "rb") as f:
            staged = stage_user_list(f, Path(sys.argv[2]) / "s.staging.db")
        t1 = time.monotonic()
        assert swap_in_user_list(store, staged).applied
        t2 = time.monotonic()
        print(json.dumps({"stage_s": t1 - t0, "swap_s": t2 - t1, "users": store.user_count(),
                          "base_kb": base, "peak_kb": peak_kb()}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "list.json"), str(tmp_path / "db")],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    print(result)
    assert result["users"] == 100_000
    assert result["stage_s"] + result["swap_s"] < 15, result  # about 1.1 s on the 2-core dev box
    assert result["swap_s"] < 2, result  # the only part on the agent's loop; about 0.13 s here
    # json.loads of the same file alone takes about 130 MB more; the streamed path about 25 MB.
    assert result["peak_kb"] - result["base_kb"] < 50_000, result


# -- deltas ---------------------------------------------------------------------------------------

def delta(version: int, base: int, *, upsert: list[dict[str, Any]] = (), remove: list[str] = ()) -> dict[str, Any]:
    return {"version": version, "base_version": base, "upsert": list(upsert), "remove": list(remove)}


def test_delta_applies_only_on_its_base_version(store):
    apply_user_list(store, full(17, KARI, OLA))
    assert apply_user_delta(store, delta(18, 17, upsert=[{**OLA, "tokens": ["0A1B2D"]}, PER], remove=["u-1"])).applied
    assert store.list_version("users") == 18
    assert store.find_token("04A2B3") is None
    assert store.find_token("0A1B2C") is None and store.find_token("0A1B2D").id == "u-2"
    assert store.find_token("CAFE01").id == "u-3"
    before = snapshot(store)
    for stale in (delta(18, 17, remove=["u-2"]), delta(19, 16, remove=["u-2"]), delta(20, 19, remove=["u-2"])):
        assert not apply_user_delta(store, stale).applied
    assert snapshot(store) == before  # the cloud sees users_version 18 in ~/state and sends a full list


def test_delta_removing_an_unknown_user_and_upserting_a_removed_one(store):
    apply_user_list(store, full(1, KARI))
    assert apply_user_delta(store, delta(2, 1, upsert=[{**KARI, "name": "Kari N."}], remove=["u-1", "u-404"])).applied
    assert store.find_user("u-1").name == "Kari N." and store.find_token("04A2B3").id == "u-1"


@pytest.mark.parametrize("bad, field", [
    (delta(2, 2), "version"),                                             # not above its base
    (delta(1, 2), "version"),
    (delta(2, 0), "base_version"),                                        # versions are >= 1
    ({"version": 2, "upsert": []}, "base_version"),
    ({"version": True, "base_version": 1}, "version"),
    ({**delta(2, 1), "upsert": {"id": "u-9"}}, "upsert"),
    ({**delta(2, 1), "remove": [5]}, "remove[0]"),
    (delta(2, 1, upsert=[{**OLA, "tokens": ["04A2B3"]}]), "upsert[0].tokens[0]"),   # Kari's token
    (delta(2, 1, upsert=[OLA, {**PER, "tokens": ["0a:1b:2c"]}]), "upsert[1].tokens[0]"),
    (delta(2, 1, upsert=[OLA, {**OLA, "name": "again"}]), "upsert[1].id"),
    (delta(2, 1, upsert=[{**OLA, "tokens": [1234]}]), "upsert[0].tokens[0]"),
])
def test_invalid_delta_is_rejected_and_changes_nothing(store, bad, field):
    apply_user_list(store, full(1, KARI))
    before = snapshot(store)
    with pytest.raises(PayloadError) as caught:
        apply_user_delta(store, bad)
    assert caught.value.field == field, str(caught.value)
    assert snapshot(store) == before


def test_delta_taking_a_token_from_a_user_it_also_upserts_is_fine(store):
    apply_user_list(store, full(1, KARI, OLA))
    moved = delta(2, 1, upsert=[{**KARI, "tokens": []}, {**OLA, "tokens": ["04A2B3"]}])
    assert apply_user_delta(store, moved).applied
    assert store.find_token("04A2B3").id == "u-2"
