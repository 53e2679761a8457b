"""Hostile input at the seam: every topic the agent reads, fed to the InboundRouter of a real Agent
(real store on disk, chargers pointing at a closed port, the MQTT link not started; its
publish() replaced by a recorder, the one fake here).

For every message: the agent keeps running (no unexpected exception anywhere), counts a rejection
at most once, logs it exactly once, answers every command exactly once (error for a rejected
one), and a rejected message leaves the stored lists, sessions and outbox exactly as they were.
Messages invalid by construction must be rejected; "versions going backwards" must be ignored
(not rejected, not applied).

Run with --hypothesis-show-statistics to see the number of inputs tried per test.
"""
from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.agent import Agent
from edge_agent.cloud import Inbound, RejectionLog, events
from edge_agent.cloud._payloads import MAX_PAYLOAD_BYTES
from edge_agent.config import parse_config_text
from edge_agent.store import SessionRecord

GATEWAY = "gw-fuzz"
ROOT = f"edge/v1/{GATEWAY}"
FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "400")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# -- valid templates ---------------------------------------------------------------------------------

USERS = [
    {"id": "u-1", "name": "Kari Nordmann", "phone": "+4791234567", "group": "residents",
     "tokens": ["04A2B3C4D5E6F7"], "blocked": False, "valid_until": None},
    {"id": "u-2", "name": "Ola", "group": "guests", "tokens": ["0A1B2C3D4E", "0A1B2C3D4F"]},
    {"id": "u-3", "name": "Åse Ødegård 🚗", "tokens": ["DEADBEEF01"], "blocked": True,
     "valid_until": "2030-01-01T00:00:00Z"},
]
TARIFF = {"id": "T-RES", "currency": "NOK", "country_code": "NO", "party_id": "COO",
          "last_updated": "2026-01-01T00:00:00Z",
          "elements": [{"price_components": [{"type": "ENERGY", "price": 2.0, "vat": 25.0, "step_size": 1}],
                        "restrictions": {"start_time": "06:00", "end_time": "22:00"}},
                       {"price_components": [{"type": "PARKING_TIME", "price": 60.0, "vat": 25.0,
                                              "step_size": 60}]}]}
TARIFFS = {"groups": {"residents": "T-RES"}, "default": "T-RES", "tariffs": [TARIFF]}
COMMANDS = {
    "start": {"evse_id": "1", "user_id": "u-1"},
    "stop": {"evse_id": "2"},
    "set_availability": {"evse_id": "1", "available": True},
    "resync": {"what": "tariffs"},
    "set_site_limit": {"max_current_a": 32},
}
_request_ids = itertools.count(1)


def fresh_request_id() -> str:
    return f"req-{next(_request_ids)}"


# -- the Agent at the seam ------------------------------------------------------------------------------

class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Seam:
    site: Agent
    loop: asyncio.AbstractEventLoop
    published: list[tuple[str, bytes | str, bool]] = field(default_factory=list)
    log: Recorder = field(default_factory=Recorder)
    loop_errors: list[dict[str, Any]] = field(default_factory=list)
    tried: int = 0

    def snapshot(self) -> tuple[Any, ...]:
        db = self.site.store.db
        return tuple(db.execute(sql).fetchall() for sql in (
            'SELECT id, name, phone, "group", blocked, valid_until FROM users ORDER BY id',
            "SELECT uid, user_id FROM tokens ORDER BY uid",
            "SELECT name, version FROM list_versions ORDER BY name",
            "SELECT version, body FROM tariff_lists ORDER BY version",
            "SELECT * FROM sessions ORDER BY id",
            "SELECT * FROM samples ORDER BY rowid",
            "SELECT seq, id, body FROM outbox ORDER BY seq",
            "SELECT * FROM evse_settings ORDER BY evse_id"))

    def deliver(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.tried += 1

        async def go() -> None:
            self.site.inbound.on_message(Inbound(topic, payload, retain))
            for _ in range(200):
                await asyncio.sleep(0)
                others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                          and not t.get_name().startswith("keep")]
                if not others and not self.site.user_lists.busy:
                    break
                await asyncio.sleep(0.001)
            await asyncio.wait_for(self.site.user_lists.join(), 30)

        self.loop.run_until_complete(go())

    def local(self, name: str) -> int:
        return self.site.store.list_version(name)

    def unexpected(self) -> list[str]:
        bad = [r.getMessage() for r in self.log.records if r.levelno >= logging.ERROR and r.exc_info]
        return bad + [str(e.get("message")) + str(e.get("exception")) for e in self.loop_errors]

    def rejection_lines(self) -> int:
        return sum(1 for r in self.log.records if r.getMessage().startswith("rejected message on"))

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in self.published if t == f"{ROOT}/result"]


@pytest.fixture(scope="module")
def seam(tmp_path_factory) -> Any:
    data = tmp_path_factory.mktemp("seam") / "data"
    config = parse_config_text(f"""\
gateway_id: {GATEWAY}
timezone: Europe/Oslo
data_dir: {data}
cloud:
  host: 127.0.0.1
  port: 1
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 127.0.0.1
    port: 1
    timeout_s: 0.2
    retries: 0
  - evse_id: "2"
    model: bender-cc613
    host: 127.0.0.1
    port: 1
    unit: 2
    timeout_s: 0.2
    retries: 0
""")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    site = Agent(config)
    s = Seam(site, loop)
    loop.set_exception_handler(lambda _loop, context: s.loop_errors.append(context))
    site.link.publish = lambda topic, payload, qos=1, retain=False: s.published.append((topic, payload, retain)) or 1
    site.rejected.log = RejectionLog(logger=logging.getLogger("edge_agent.agent"), burst=10**9)
    for name in ("edge_agent", "asyncio"):
        logging.getLogger(name).addHandler(s.log)
        logging.getLogger(name).setLevel(logging.INFO)
    # Lists and sessions worth protecting.
    site.user_lists.offer_full(f"{ROOT}/config/users", json.dumps({"version": 5, "users": USERS}).encode())
    from edge_agent.lists import apply_tariff_list
    apply_tariff_list(site.store, {"version": 3, **TARIFFS})
    record = SessionRecord(id="s-ended", evse_id="9", status="active", token="04A2B3C4D5E6F7", user_id="u-1",
                           group="residents", user_name="Kari", auth="local_list", started_at="2026-03-01T10:00:00Z",
                           meter_start_wh=1000, tariff_id="T-RES", tariffs_version=3, offline_start=False,
                           clock_synced=True)
    site.store.start_session(record, event=events.session_started(record, ts=record.started_at, offline=False))
    site.store.add_sample("s-ended", ts="2026-03-01T10:01:00Z", energy_wh=1200, power_w=7000,
                          current_a=[10.0, 10.0, 10.0], charging=True)
    yield s
    print(f"\nseam fuzz: {s.tried} messages delivered to the agent's InboundRouter")
    loop.run_until_complete(site.user_lists.aclose())
    for name in ("edge_agent", "asyncio"):
        logging.getLogger(name).removeHandler(s.log)
    site.store.close()
    loop.close()
    asyncio.set_event_loop(None)


def check(seam: Seam, topic: str, payload: bytes, *, must_reject: bool | None = None,
          retain: bool = False) -> int:
    """Delivers one message and checks every rule; returns 1 if it was rejected."""
    before, counted = seam.snapshot(), seam.site.rejected.count
    lines, answers = seam.rejection_lines(), len(seam.results())
    seam.deliver(topic, payload, retain=retain)
    assert seam.unexpected() == []
    rejected = seam.site.rejected.count - counted
    assert rejected in (0, 1)
    seam.site.rejected.save()  # what the tick loop does once a minute
    assert seam.site.store.counter("rejected_messages") == seam.site.rejected.count
    assert seam.rejection_lines() - lines == rejected  # logged once
    if rejected:
        assert seam.snapshot() == before, f"rejected message on {topic} changed stored data"
    if must_reject is not None:
        assert rejected == int(must_reject), (topic, payload[:300])
    is_command = topic.startswith(f"{ROOT}/cmd/") and "/" not in topic[len(ROOT) + 5:]
    new_answers = seam.results()[answers:]
    if is_command and not retain:
        assert len(new_answers) == 1, new_answers
        assert new_answers[0]["status"] in ("accepted", "rejected", "expired", "error")
        if rejected:
            assert new_answers[0]["status"] == "error"
    else:
        assert new_answers == []
        if retain and is_command:
            assert seam.snapshot() == before
    return rejected


# -- strategies ----------------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=20))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                           max_leaves=10)
# Values of the wrong type for nearly any field, hostile ones included.
hostile_values = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30), st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=3),
    st.sampled_from([0, -1, 2**63, 10**30, -0.0, 1e308, "", " ", "\u0000", "𝓤𝓷𝓲𝓬𝓸𝓭𝓮", "Z" * 10_000]),
    st.sampled_from(["\ud800", "x\udfff", "\udbff\udbff"]))  # lone surrogates: valid JSON, not text

RAW_GARBAGE = [b"", b"{", b"}", b"[]", b"null", b"42", b'"text"', b"\xff\xfe\xfd", b"{'single': 1}",
               b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"version": 1' + b"0" * 5000 + b"}",
               b"[" * 50_000 + b"]" * 50_000, b'{"x": "\\ud800"}', b'{"\\udfff": 1}', b'{"a": 1} trailing',
               b'{"a": 1,}', "{\"name\": \"caf\u00e9\"}".encode("latin-1"), b"\x00" * 64]


@st.composite
def garbage(draw: st.DrawFn) -> bytes:
    """Payloads that are not a JSON object at all: rejected on every topic."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.sampled_from(RAW_GARBAGE))
    if choice == 1:
        return draw(json_values.filter(lambda v: not isinstance(v, dict))).__repr__().encode() \
            if draw(st.booleans()) else json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    if choice == 2:  # a valid object cut short
        text = json.dumps(draw(st.dictionaries(st.text(max_size=5), json_values, min_size=1, max_size=4)))
        return text[: draw(st.integers(1, max(1, len(text) - 1)))].encode()
    if choice == 3:
        raw = draw(st.binary(min_size=1, max_size=300))
        return raw if not raw.lstrip().startswith(b"{") else b"\xff" + raw
    return draw(st.text(min_size=1, max_size=300)).encode("utf-8", "surrogatepass").replace(b"{", b"(")


def is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_object(payload: bytes) -> bool:
    try:
        return isinstance(json.loads(payload), dict)
    except (ValueError, RecursionError):
        return False


# Paths into the templates and what makes each of them invalid.
def set_path(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    obj = copy.deepcopy(obj)
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


_DELETE = object()
NOT_INT = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=5), st.lists(st.integers(), max_size=2))
BAD_VERSION = st.one_of(NOT_INT, st.integers(max_value=0), st.integers(min_value=2**63, max_value=2**200))
NOT_STR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.lists(st.text(max_size=3), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
BAD_TOKEN = st.one_of(st.integers(), st.none(), st.sampled_from(["", "xyz", "04 A2 ZZ", "0x04", "--", "Ω"]),
                      st.text(max_size=8).filter(lambda t: not t or any(c not in "0123456789abcdefABCDEF: -." for c in t)))


def user_breakers(prefix: tuple[Any, ...]) -> list[st.SearchStrategy[tuple[tuple[Any, ...], Any]]]:
    return [
        st.tuples(st.just((*prefix, "id")), st.one_of(NOT_STR, st.just(""), st.just(_DELETE))),
        st.tuples(st.just((*prefix, "tokens")), st.one_of(st.just(_DELETE), st.none(), st.text(max_size=4), st.integers())),
        st.tuples(st.just((*prefix, "tokens", 0)), BAD_TOKEN),
        st.tuples(st.just((*prefix, "blocked")), st.one_of(st.integers(), st.text(max_size=3), st.lists(st.booleans(), max_size=1))),
        st.tuples(st.just((*prefix, "valid_until")), st.one_of(st.integers(), st.sampled_from(
            ["never", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00", "9999-12-31T23:59:59-23:59", "0000-01-01"]))),
        st.tuples(st.just((*prefix, "name")), st.one_of(st.integers(), st.lists(st.text(max_size=2), max_size=2), st.booleans())),
        st.tuples(st.just((*prefix, "group")), st.one_of(st.integers(), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))),
    ]


def with_noise(obj: Any, draw: st.DrawFn) -> Any:
    """Unknown fields are ignored: add some at the top and in entries."""
    if draw(st.booleans()):
        obj = dict(obj)
        obj[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in obj))] = draw(json_values)
    return obj


SEPARATED = st.sampled_from([lambda t: t.lower(), lambda t: ":".join(t[i:i + 2] for i in range(0, len(t), 2)),
                             lambda t: "-".join(t[i:i + 2] for i in range(0, len(t), 2)).lower(), lambda t: t])


@st.composite
def invalid_full_lists(draw: st.DrawFn, local: int) -> dict[str, Any]:
    doc = {"version": local + draw(st.integers(1, 5)), "users": copy.deepcopy(USERS)}
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return set_path(doc, ("version",), draw(st.one_of(BAD_VERSION, st.just(_DELETE))))
    if kind == 1:
        return set_path(doc, ("users",), draw(st.one_of(st.just(_DELETE), NOT_STR.filter(lambda v: not isinstance(v, list)),
                                                       st.text(max_size=3))))
    if kind == 2:  # a token of two users, spelled differently
        i, j = draw(st.permutations(range(len(USERS))))[:2]
        token = draw(st.sampled_from(doc["users"][i]["tokens"]))
        doc["users"][j]["tokens"].append(draw(SEPARATED)(token))
        return doc
    if kind == 3:
        doc["users"].append({**copy.deepcopy(USERS[draw(st.integers(0, 2))]), "tokens": ["ABCDEF9876"]})
        return doc  # a user id twice
    if kind == 4:
        doc["users"].insert(draw(st.integers(0, 3)), draw(NOT_STR.filter(lambda v: not isinstance(v, dict))))
        return doc
    index = draw(st.integers(0, len(USERS) - 1))
    path, value = draw(st.one_of(*user_breakers(("users", index))))
    return set_path(doc, path, value)


@st.composite
def valid_full_lists(draw: st.DrawFn, version: int) -> dict[str, Any]:
    users = []
    for _n, user in enumerate(draw(st.lists(st.sampled_from(USERS), max_size=3, unique_by=lambda u: u["id"]))):
        users.append(with_noise({**user, "name": draw(st.text(max_size=40))}, draw))
    return with_noise({"version": version, "users": users}, draw)


# Amounts no session can be priced with (issue 12): VAT 1e308 %, a price of 1e308, a float step_size.
UNPRICEABLE = st.sampled_from([1e308, 1.7976931348623157e308, 1e7, 1_000_000.5])
TARIFF_BREAKERS = [
    (("tariffs", 0, "elements", 0, "price_components", 0, "price"),
     st.one_of(st.floats(max_value=-1e-9, allow_infinity=False), st.integers(max_value=-1), st.text(max_size=3), st.none(),
               UNPRICEABLE, st.integers(min_value=1_000_001))),
    (("tariffs", 0, "elements", 0, "price_components", 0, "step_size"),
     st.one_of(st.integers(max_value=0), st.floats(0.1, 0.9), st.text(max_size=2), st.sampled_from([1e308, 1.0, 60.0, True]),
               st.integers(min_value=1_000_001))),
    (("tariffs", 0, "elements", 0, "price_components", 0, "vat"),
     st.one_of(st.floats(max_value=-0.01, allow_infinity=False), st.text(min_size=1, max_size=2),
               st.floats(min_value=100.001, allow_infinity=False), st.just(1e308))),
    (("tariffs", 0, "min_price"), st.fixed_dictionaries({"excl_vat": UNPRICEABLE})),
    (("tariffs", 0, "max_price"), st.fixed_dictionaries({"excl_vat": st.just(1), "incl_vat": UNPRICEABLE})),
    (("tariffs", 0, "elements", 1, "price_components", 0, "price"), UNPRICEABLE),
    (("tariffs", 0, "elements", 0, "restrictions", "min_duration"), st.sampled_from([1e308, 10**12, 1.5, -1])),
    (("tariffs", 0, "elements", 0, "price_components", 0, "type"), st.text(max_size=8).filter(
        lambda t: t not in ("ENERGY", "FLAT", "TIME", "PARKING_TIME"))),
    (("tariffs", 0, "elements"), st.one_of(st.just([]), st.just(_DELETE), st.text(max_size=3), st.integers())),
    (("tariffs", 0, "id"), st.one_of(NOT_STR, st.just(_DELETE))),
    (("tariffs", 0, "currency"), st.one_of(st.integers(), st.just(""), st.just(_DELETE), st.none())),
    (("tariffs", 0, "elements", 0, "restrictions", "start_time"), st.sampled_from(["25:00", "6", 600, "", "06:61"])),
    (("tariffs", 0, "elements", 0, "restrictions", "day_of_week"),
     st.one_of(st.just(["FUNDAY"]), st.text(max_size=3), st.lists(st.integers(), min_size=1, max_size=2))),
    (("groups", "residents"), st.one_of(st.just("T-NONE"), st.integers(), st.lists(st.text(max_size=2), max_size=2), st.none().map(lambda _: {}))),
    (("default",), st.one_of(st.just("T-NONE"), st.integers(), st.lists(st.integers(), max_size=1))),
    (("groups",), st.one_of(st.lists(st.text(max_size=2), min_size=1, max_size=2), st.text(min_size=1, max_size=3), st.integers(1))),
    (("tariffs",), st.one_of(st.just(_DELETE), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2), st.text(max_size=2))),
    (("version",), st.one_of(BAD_VERSION, st.just(_DELETE))),
    (("tariffs", 0, "start_date_time"), st.sampled_from(["9999-12-31T23:59:59-23:00", "not a date", 5, ""])),
]


@st.composite
def invalid_tariff_lists(draw: st.DrawFn, local: int) -> dict[str, Any]:
    doc = {"version": local + draw(st.integers(1, 4)), **copy.deepcopy(TARIFFS)}
    if draw(st.integers(0, 6)) == 0:  # the same tariff id twice
        doc["tariffs"].append(copy.deepcopy(TARIFF))
        return doc
    path, values = draw(st.sampled_from(TARIFF_BREAKERS))
    return set_path(doc, path, draw(values))


# -- the tests ------------------------------------------------------------------------------------------

TOPICS = ["ack", "config/users", "config/users/delta", "config/tariffs", "auth/response",
          "cmd/start", "cmd/stop", "cmd/set_availability", "cmd/resync", "cmd/set_site_limit", "cmd/reboot"]


@FUZZ
@given(data=st.data())
def test_payloads_that_are_not_json_objects_are_rejected_on_every_topic(seam, data):
    topic = f"{ROOT}/{data.draw(st.sampled_from(TOPICS))}"
    payload = data.draw(garbage())
    if is_object(payload):
        return
    check(seam, topic, payload, must_reject=True)


@FUZZ
@given(data=st.data())
def test_arbitrary_json_objects_on_every_topic(seam, data):
    topic = f"{ROOT}/{data.draw(st.sampled_from(TOPICS))}"
    obj = data.draw(st.dictionaries(st.sampled_from(["version", "users", "ids", "request_id", "status", "user",
                                                     "tariffs", "groups", "default", "base_version", "upsert",
                                                     "remove", "evse_id", "user_id", "what", "available",
                                                     "max_current_a", "expires_at", "url", "sha256"])
                                    | st.text(max_size=6), hostile_values, max_size=6))
    if "request_id" in obj and isinstance(obj["request_id"], str):
        obj["request_id"] += fresh_request_id()  # a used request_id would be answered as before
    check(seam, topic, json.dumps(obj).encode())


@FUZZ
@given(data=st.data())
def test_invalid_full_user_lists_are_rejected_whole(seam, data):
    doc = data.draw(invalid_full_lists(seam.local("users")))
    check(seam, f"{ROOT}/config/users", json.dumps(doc).encode(), must_reject=True)


@FUZZ
@given(data=st.data())
def test_user_lists_going_backwards_are_ignored_and_newer_ones_applied(seam, data):
    local = seam.local("users")
    older = max(1, local - data.draw(st.integers(0, 4)))  # draws never depend on the store's state
    doc = data.draw(valid_full_lists(older))
    before = seam.snapshot()
    check(seam, f"{ROOT}/config/users", json.dumps(doc).encode(), must_reject=False)
    if older <= local:
        assert seam.snapshot() == before
    newer = data.draw(valid_full_lists(local + data.draw(st.integers(1, 3))))
    check(seam, f"{ROOT}/config/users", json.dumps(newer).encode(), must_reject=False)
    assert seam.local("users") == newer["version"]
    assert seam.site.store.user_count() == len(newer["users"])


@FUZZ
@given(data=st.data())
def test_invalid_deltas_are_rejected_and_stale_ones_ignored(seam, data):
    local = seam.local("users")
    if sorted(r[0] for r in seam.site.store.db.execute("SELECT id FROM users")) != [u["id"] for u in USERS]:
        # Other tests left another list: the delta needs the known users (whose tokens it takes).
        check(seam, f"{ROOT}/config/users", json.dumps({"version": local + 1, "users": USERS}).encode(),
              must_reject=False)
        local += 1
    stale = data.draw(st.booleans())
    base = local + data.draw(st.integers(1, 10**6)) if stale else local
    doc = {"version": base + data.draw(st.integers(1, 3)), "base_version": base,
           "upsert": [copy.deepcopy(data.draw(st.sampled_from(USERS)))], "remove": ["u-404"]}
    kind = data.draw(st.integers(0, 4))
    if kind == 0:
        bad = data.draw(st.one_of(BAD_VERSION, st.integers(0, 10**6).map(lambda back: ("back", back))))
        doc = set_path(doc, ("version",), max(1, base - bad[1]) if isinstance(bad, tuple) else bad)
    elif kind == 1:
        doc = set_path(doc, ("base_version",), data.draw(st.one_of(BAD_VERSION, st.just(_DELETE))))
    elif kind == 2:
        path, value = data.draw(st.one_of(*user_breakers(("upsert", 0))))
        doc = set_path(doc, path, value)
    elif kind == 3:
        doc = set_path(doc, ("remove",), data.draw(st.one_of(st.text(min_size=1, max_size=3), st.integers(),
                                                             st.lists(st.one_of(st.integers(), st.none(), st.just("")),
                                                                      min_size=1, max_size=2))))
    else:  # takes a token that belongs to another user on the list
        other = next(u for u in USERS if u["id"] != doc["upsert"][0]["id"])
        doc["upsert"][0]["tokens"] = [data.draw(SEPARATED)(other["tokens"][0])]
        if stale:
            before = seam.snapshot()
            check(seam, f"{ROOT}/config/users/delta", json.dumps(doc).encode(), must_reject=False)
            assert seam.snapshot() == before  # ignored: not its base version
            return
    check(seam, f"{ROOT}/config/users/delta", json.dumps(doc).encode(), must_reject=True)


@FUZZ
@given(data=st.data())
def test_invalid_tariff_lists_are_rejected_whole(seam, data):
    doc = data.draw(invalid_tariff_lists(seam.local("tariffs")))
    check(seam, f"{ROOT}/config/tariffs", json.dumps(doc).encode(), must_reject=True)


@st.composite
def invalid_commands(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A command with one field wrong: (name, payload object)."""
    name = draw(st.sampled_from(sorted(COMMANDS)))
    doc = {"request_id": fresh_request_id(), **COMMANDS[name]}
    field_name = draw(st.sampled_from(["request_id", *COMMANDS[name], "expires_at"]))
    if field_name == "request_id":
        value = draw(st.one_of(NOT_STR, st.just(""), st.just("r" * 201), st.just(_DELETE)))
    elif field_name == "expires_at":
        value = draw(st.one_of(st.integers(), st.sampled_from(["soon", "2026-02-30T00:00:00Z", "9999-12-31T23:59:59-23:59", ""])))
    elif field_name == "max_current_a":
        value = draw(st.one_of(st.floats(max_value=-0.001, allow_infinity=False), st.text(max_size=3), st.none(),
                               st.booleans(), st.just(_DELETE)))
    elif field_name == "available":
        value = draw(st.one_of(st.integers(), st.text(max_size=3), st.none(), st.just(_DELETE)))
    elif field_name == "what":
        value = draw(st.one_of(st.text(max_size=6).filter(lambda w: w not in ("users", "tariffs", "all")), NOT_STR))
    elif name == "stop":
        value = draw(st.one_of(st.integers(), st.lists(st.text(max_size=2), min_size=1, max_size=2),
                               st.just(_DELETE), st.booleans()))
    else:
        value = draw(st.one_of(NOT_STR.filter(lambda v: v is not None), st.just(_DELETE)))
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from(["reboot", "START", "stop ", "ünknown"]))  # no such command
        value = doc.get(field_name, _DELETE) if field_name in doc else _DELETE
    return name, set_path(doc, (field_name,), value) if field_name in doc or value is not _DELETE else doc


@FUZZ
@given(command=invalid_commands())
def test_invalid_commands_are_answered_error(seam, command):
    name, doc = command
    check(seam, f"{ROOT}/cmd/{name}", json.dumps(doc).encode(), must_reject=True)
    answer = seam.results()[-1]
    if isinstance(doc.get("request_id"), str) and 0 < len(doc["request_id"]) <= 200 and is_text(doc["request_id"]):
        assert answer["request_id"] == doc["request_id"]
    else:
        assert answer["request_id"] is None


LONE_SURROGATES = st.sampled_from(["\ud800", "caf\udfff", "\udbff\udbff", "\udc00\ud800"])


@FUZZ
@given(data=st.data())
def test_lone_surrogates_in_any_string_are_rejected(seam, data):
    """Valid JSON (an escaped lone UTF-16 surrogate) that is not text: SQLite could not store it."""
    bad = data.draw(LONE_SURROGATES)
    local = seam.local("users")
    cases = {
        "config/users": set_path({"version": local + 1, "users": copy.deepcopy(USERS)},
                                 ("users", data.draw(st.integers(0, 2)), data.draw(st.sampled_from(["name", "id", "group"]))), bad),
        "config/users/delta": {"version": local + 1, "base_version": max(local, 1), "upsert": [],
                               "remove": [bad]},
        "config/tariffs": set_path({"version": seam.local("tariffs") + 1, **copy.deepcopy(TARIFFS)},
                                   ("tariffs", 0, "currency"), bad),
        "ack": {"ids": ["x", bad]},
        "auth/response": {"request_id": bad, "status": "accepted", "user": None},
        "cmd/stop": {"request_id": fresh_request_id(), "evse_id": bad},
        "cmd/start": {"request_id": bad, "evse_id": "1", "user_id": "u-1"},
        "cmd/resync": {"request_id": fresh_request_id(), "what": "all", bad: 1},
    }
    topic = data.draw(st.sampled_from(sorted(cases)))
    check(seam, f"{ROOT}/{topic}", json.dumps(cases[topic]).encode(), must_reject=True)
    if topic.startswith("cmd/"):
        answer = seam.results()[-1]
        # The answer carries the request_id when that field is text, null when it is the broken one;
        # its detail names the field, and is text itself (a strict JSON parser takes it).
        request_id = cases[topic]["request_id"]
        assert answer["request_id"] == (request_id if is_text(request_id) else None)
        assert is_text(answer["detail"]) and answer["detail"].split(":")[0] in ("request_id", "evse_id", repr(bad)[1:-1])


def string_places(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], bool]]:
    """Every string in a JSON document: (path, True) for a key, (path, False) for a value."""
    places: list[tuple[tuple[Any, ...], bool]] = []
    if isinstance(obj, str):
        places.append((path, False))
    elif isinstance(obj, dict):
        for key, child in obj.items():
            places.append(((*path, key), True))
            places.extend(string_places(child, (*path, key)))
    elif isinstance(obj, list):
        for i, child in enumerate(obj):
            places.extend(string_places(child, (*path, i)))
    return places


def inbound_templates(users_version: int, tariffs_version: int) -> dict[str, dict[str, Any]]:
    """A valid message for every topic the agent reads (lists newer than the local ones)."""
    templates = {
        "config/users": {"version": users_version + 1, "users": copy.deepcopy(USERS)},
        "config/users/delta": {"version": users_version + 1, "base_version": max(users_version, 1),
                               "upsert": [copy.deepcopy(USERS[1])], "remove": ["u-404"]},
        "config/tariffs": {"version": tariffs_version + 1, **copy.deepcopy(TARIFFS)},
        "ack": {"ids": ["e-1", "e-2"]},
        "auth/response": {"request_id": "q-1", "status": "accepted", "user": copy.deepcopy(USERS[0])},
    }
    for name, fields in COMMANDS.items():
        templates[f"cmd/{name}"] = {"request_id": "", **fields, "expires_at": "2099-01-01T00:00:00Z",
                                    **({"until": "2099-01-01T00:00:00Z"} if name == "set_site_limit" else {})}
    return templates


@st.composite
def surrogate_messages(draw: st.DrawFn, users_version: int, tariffs_version: int) -> tuple[str, dict[str, Any]]:
    """(topic, document): a valid message for any inbound topic with a lone surrogate put into one
    of its strings, key or value. The whole message must be rejected."""
    templates = inbound_templates(users_version, tariffs_version)
    topic = draw(st.sampled_from(sorted(templates)))
    doc = templates[topic]
    if topic.startswith("cmd/"):
        doc["request_id"] = fresh_request_id()
    path, is_key = draw(st.sampled_from(string_places(doc)))
    bad = draw(LONE_SURROGATES)
    if is_key:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        spoiled = draw(st.sampled_from([bad, path[-1] + bad, bad + path[-1]]))
        parent[spoiled] = parent.pop(path[-1])
    else:
        original = doc
        for key in path:
            original = original[key]
        doc = set_path(doc, path, draw(st.sampled_from([bad, original + bad, bad + original])))
    return topic, doc


def expected_request_id(doc: dict[str, Any]) -> str | None:
    """What the answer to a rejected command carries: its request_id if that field is usable."""
    request_id = doc.get("request_id")
    return request_id if isinstance(request_id, str) and 0 < len(request_id) <= 200 and is_text(request_id) else None


@FUZZ
@given(data=st.data())
def test_a_lone_surrogate_in_any_string_of_any_topic_rejects_the_message(seam, data):
    topic, doc = data.draw(surrogate_messages(seam.local("users"), seam.local("tariffs")))
    check(seam, f"{ROOT}/{topic}", json.dumps(doc).encode(), must_reject=True)
    if topic.startswith("cmd/"):
        answer = seam.results()[-1]
        assert answer["status"] == "error" and answer["request_id"] == expected_request_id(doc)
        assert is_text(answer["detail"])


@FUZZ
@given(data=st.data())
def test_retained_commands_are_never_carried_out(seam, data):
    name = data.draw(st.sampled_from(sorted(COMMANDS)))
    doc = with_noise({"request_id": fresh_request_id(), **COMMANDS[name]}, data.draw)
    payload = json.dumps(doc).encode() if data.draw(st.booleans()) else data.draw(garbage())
    check(seam, f"{ROOT}/cmd/{name}", payload, retain=True, must_reject=False)


@FUZZ
@given(data=st.data())
def test_commands_past_expires_at_answer_expired(seam, data):
    name = data.draw(st.sampled_from(sorted(COMMANDS)))
    when = data.draw(st.datetimes(max_value=__import__("datetime").datetime(2026, 1, 1),
                                  min_value=__import__("datetime").datetime(1970, 1, 2)))
    doc = {"request_id": fresh_request_id(), **COMMANDS[name], "expires_at": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
    before = seam.snapshot()
    check(seam, f"{ROOT}/cmd/{name}", json.dumps(doc).encode(), must_reject=False)
    assert seam.results()[-1] == {"request_id": doc["request_id"], "status": "expired",
                                  "detail": seam.results()[-1]["detail"]}
    assert seam.snapshot() == before


@FUZZ
@given(data=st.data())
def test_other_topics_are_not_acted_on(seam, data):
    topic = data.draw(st.one_of(
        st.sampled_from(["edge/v1/gw-other/cmd/stop", "edge/v1/gw-other/config/users", f"{ROOT}x/cmd/stop",
                         f"{ROOT}/cmd/stop/extra", f"{ROOT}/events", f"{ROOT}/state", f"{ROOT}/result",
                         f"{ROOT}/evse/1/status", "edge/v1", "", "#", f"{ROOT}/config/users/extra"]),
        st.text(max_size=40).filter(lambda t: not t.startswith(ROOT + "/"))))
    payload = json.dumps({"request_id": fresh_request_id(), **COMMANDS["resync"], "version": 99,
                          "users": [], "ids": []}).encode()
    before = seam.snapshot()
    check(seam, topic, payload, must_reject=False)
    assert seam.snapshot() == before


@FUZZ
@given(ids=st.lists(st.one_of(st.text(max_size=40), hostile_values), max_size=5), wrap=st.booleans())
def test_acks_of_anything(seam, ids, wrap):
    valid = all(isinstance(i, str) and is_text(i) for i in ids)
    before = seam.snapshot()
    check(seam, f"{ROOT}/ack", json.dumps({"ids": ids} if wrap else {"ids": ids, "x": 1}).encode(),
          must_reject=not valid)
    assert seam.snapshot() == before  # none of these ids is an event in the outbox


@FUZZ
@given(data=st.data())
def test_auth_responses_of_anything(seam, data):
    doc = {"request_id": data.draw(st.one_of(st.text(max_size=10), hostile_values)),
           "status": data.draw(st.one_of(st.sampled_from(["accepted", "blocked", "unknown"]), hostile_values)),
           "user": data.draw(st.one_of(st.none(), st.just(copy.deepcopy(USERS[0])), hostile_values,
                                       st.fixed_dictionaries({"id": hostile_values, "tokens": hostile_values})))}
    before = seam.snapshot()
    check(seam, f"{ROOT}/auth/response", json.dumps(doc).encode())
    assert seam.snapshot() == before  # nobody asked: nothing to do either way


def test_huge_payloads_and_numbers(seam):
    big_user = {**USERS[0], "name": "N" * (MAX_PAYLOAD_BYTES + 10)}
    check(seam, f"{ROOT}/config/users", json.dumps({"version": 99, "users": [big_user]}).encode(), must_reject=True)
    check(seam, f"{ROOT}/config/tariffs", b'{"version": 9, "tariffs": [], "x": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}',
          must_reject=True)
    check(seam, f"{ROOT}/cmd/stop", b'{"request_id": "' + b"r" * (MAX_PAYLOAD_BYTES + 1) + b'"}', must_reject=True)
    for number in (b"1e999", b"-1e999", b"1" + b"0" * 4400, b"123456789012345678901234567890"):
        check(seam, f"{ROOT}/cmd/set_site_limit", b'{"request_id": "' + fresh_request_id().encode()
              + b'", "max_current_a": ' + number + b"}", must_reject=number != b"123456789012345678901234567890")
        check(seam, f"{ROOT}/config/users", b'{"version": ' + number + b', "users": []}', must_reject=True)


def test_a_big_inline_list_with_one_bad_entry_at_the_end_is_rejected_whole(seam):
    users = [{"id": f"x-{i}", "tokens": [f"{i:08X}"]} for i in range(5000)] + [{"id": "x-0", "tokens": []}]
    check(seam, f"{ROOT}/config/users", json.dumps({"version": seam.local("users") + 1, "users": users}).encode(),
          must_reject=True)
    assert "users[5000].id" in seam.site.user_lists.error


def test_rejections_are_logged_once_each_and_a_flood_is_summarised():
    records: list[str] = []
    logger = logging.getLogger("test.rejections")
    handler = Recorder()
    logger.addHandler(handler)
    try:
        rejections = RejectionLog(logger=logger, burst=5, window_s=3600)
        for i in range(100):
            rejections.note("t", ValueError(f"bad {i}" + "x" * 1000))
        records = [r.getMessage() for r in handler.records]
    finally:
        logger.removeHandler(handler)
    assert len(records) == 6 and all(len(r) < 400 for r in records)
    assert "the next are only counted" in records[-1]


def test_a_command_is_answered_when_the_disk_refuses_to_store_the_answer(seam, monkeypatch):
    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(seam.site.store, "save_command_result", disk_full)
    for payload in ({"request_id": fresh_request_id(), **COMMANDS["stop"]},  # carried out: no session to stop
                    {"request_id": fresh_request_id(), "evse_id": "\ud800"}):  # rejected whole
        check(seam, f"{ROOT}/cmd/stop", json.dumps(payload).encode())
        assert seam.results()[-1]["request_id"] == payload["request_id"]
