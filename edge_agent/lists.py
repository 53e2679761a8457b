"""The cloud's lists applied to the store: full user lists, user deltas, tariff lists.

Each function checks the whole payload first (a list with one bad entry is rejected whole,
raising PayloadError) and then applies it in one transaction, or not at all.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .cloud import PayloadError, check_tariff_list, check_user_list
from .cloud._payloads import check_user
from .store import Store

log = logging.getLogger("edge_agent.lists")


@dataclass(frozen=True, slots=True)
class Outcome:
    applied: bool
    detail: str


def apply_user_list(store: Store, obj: dict[str, Any]) -> Outcome:
    users = check_user_list(obj)
    local = store.list_version("users")
    if users.version <= local:
        return _said(Outcome(False, f"user list version {users.version} ignored (local version {local})"))
    store.replace_users(users.version, users.users)
    return _said(Outcome(True, f"user list version {users.version} applied: {len(users.users)} users"))


def apply_user_delta(store: Store, obj: dict[str, Any]) -> Outcome:
    version, base = _int(obj, "version", minimum=1), _int(obj, "base_version", minimum=0)
    upsert, remove = obj.get("upsert") or [], obj.get("remove") or []
    if not isinstance(upsert, list):
        raise PayloadError("upsert", "must be a list of users")
    if not isinstance(remove, list) or any(not isinstance(r, str) for r in remove):
        raise PayloadError("remove", "must be a list of user ids")
    users = [check_user(u, f"upsert[{i}]") for i, u in enumerate(upsert)]
    local = store.list_version("users")
    if base != local or version <= local:
        return _said(Outcome(False, f"user delta {version} (base {base}) ignored: local version is {local}"))
    with store.transaction():
        db = store.db
        for user_id in [*remove, *(u["id"] for u in users)]:
            db.execute("DELETE FROM tokens WHERE user_id = ?", [user_id])
            db.execute("DELETE FROM users WHERE id = ?", [user_id])
        for u in users:
            for uid in u["tokens"]:
                owner = db.execute("SELECT user_id FROM tokens WHERE uid = ?", [uid]).fetchone()
                if owner is not None:  # raising inside the transaction rolls the whole delta back
                    raise PayloadError("upsert", f"token {uid} already belongs to {owner[0]!r}")
            db.execute('INSERT INTO users(id, name, phone, "group", blocked, valid_until) VALUES (?,?,?,?,?,?)',
                       [u["id"], u["name"], u["phone"], u["group"], int(u["blocked"]), u["valid_until"]])
            db.conn.executemany("INSERT INTO tokens(uid, user_id) VALUES (?, ?)",
                                [(uid, u["id"]) for uid in u["tokens"]])
        store.set_list_version("users", version)
    return _said(Outcome(True, f"user delta {version} applied: {len(users)} upserted, {len(remove)} removed"))


def apply_tariff_list(store: Store, obj: dict[str, Any]) -> Outcome:
    tariffs = check_tariff_list(obj)
    local = store.list_version("tariffs")
    if tariffs.version <= local:
        return _said(Outcome(False, f"tariff list version {tariffs.version} ignored (local version {local})"))
    store.replace_tariffs(tariffs.version, tariffs.body)
    return _said(Outcome(True, f"tariff list version {tariffs.version} applied: "
                               f"{len(tariffs.body['tariffs'])} tariffs"))


def _int(obj: dict[str, Any], key: str, *, minimum: int) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PayloadError(key, f"must be an integer >= {minimum}")
    return value


def _said(outcome: Outcome) -> Outcome:
    log.info(outcome.detail)
    return outcome
