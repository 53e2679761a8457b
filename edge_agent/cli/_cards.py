"""`edge-agent tap-test` and `edge-agent users find`: who a card is, and whether they may charge.

Neither gets in the way of charging: the database is opened read-only, and tap-test never opens a
card reader the running agent owns (it checks the live status and which processes hold the port).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import queue
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import (
    data_dir_of,
    db_path,
    fail,
    load_config,
    open_existing_store_read_only,
    open_store_read_only,
    print_json,
)
from ._exit_codes import ExitCode

if TYPE_CHECKING:
    from ..authorization import Decision, OnlineAnswer


# -- users find -----------------------------------------------------------------------------------


def _find_users(store: Any, text: str) -> list[dict[str, Any]]:
    from drivers.tokens import InvalidToken, normalize_uid

    digits = "".join(c for c in text if c.isdigit() or c == "+")
    try:
        token_part: str | None = normalize_uid(text)
    except InvalidToken:
        token_part = None
    found = store.search_users(text, phone_digits=digits if len(digits) >= 3 else None, token_part=token_part)
    return [{"id": user.id, "name": user.name, "phone": user.phone, "group": user.group, "blocked": user.blocked,
             "valid_until": user.valid_until, "tokens": tokens} for user, tokens in found]


def cmd_users_find(args: argparse.Namespace) -> int:
    with open_existing_store_read_only(data_dir_of(args)) as store:
        users = _find_users(store, args.text)
        version = store.list_version("users")
    if args.json:
        print_json({"query": args.text, "users_version": version, "users": users})
        return ExitCode.OK if users else ExitCode.NO
    if not users:
        print(f"nobody matches {args.text!r} in the local user list (version {version})")
        return ExitCode.NO
    print(f"{'id':12} {'name':24} {'group':12} {'phone':16} {'state':9} tokens")
    for u in users:
        state = "BLOCKED" if u["blocked"] else ("until " + u["valid_until"][:10] if u["valid_until"] else "ok")
        print(f"{u['id']:12} {(u['name'] or '-')[:24]:24} {(u['group'] or '-')[:12]:12} {(u['phone'] or '-'):16} "
              f"{state:9} {', '.join(u['tokens']) or '-'}")
    print(f"{len(users)} user(s), local user list version {version}")
    return ExitCode.OK


# -- tap-test --------------------------------------------------------------------------------------


def _agent_holding(port: str) -> list[int]:
    """edge-agent processes (not us) that have `port` open: best effort, needs /proc access."""
    try:
        target = os.path.realpath(port)
    except OSError:
        return []
    holders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            if b"edge-agent" not in cmdline and b"edge_agent" not in cmdline:
                continue
            if any(os.path.realpath(fd) == target for fd in (entry / "fd").iterdir()):
                holders.append(int(entry.name))
        except OSError:
            continue
    return holders


def _read_one_card(reader_cfg: Any, *, timeout_s: float, debounce_s: float) -> str | None:
    from drivers.readers import create_reader

    taps: queue.Queue[str] = queue.Queue()
    reader = create_reader(driver=reader_cfg.driver, port=reader_cfg.port, device=reader_cfg.device,
                           evse_id=reader_cfg.evse_id, on_tap=lambda tap: taps.put(tap.token),
                           debounce_s=debounce_s)
    reader.start()
    try:
        deadline = time.monotonic() + timeout_s
        told_error = None
        while time.monotonic() < deadline:
            try:
                return taps.get(timeout=0.2)
            except queue.Empty:
                pass
            error = getattr(reader, "last_error", None)
            if error and not getattr(reader, "healthy", True) and error != told_error:
                print(f"reader {reader_cfg.port or reader_cfg.device}: {error} (retrying)", file=sys.stderr)
                told_error = error
        return None
    finally:
        reader.stop()


def _judge_token(config: Any, token: str, store: Any, *, evse_id: str | None) -> dict[str, Any]:
    from ..authorization import Authorizer

    async def never_online(token: str, evse_id: str | None) -> OnlineAnswer | None:
        return None

    authorizer = Authorizer(store=store, offline_unknown=config.authorization.offline_unknown,
                            ask_online=never_online, is_online=lambda: False)
    local = authorizer.check_local(token)
    offline = asyncio.run(authorizer.authorize(token, evse_id=evse_id or "-"))
    user = local.user if local is not None else None
    tariff = None
    tariffs = store.tariff_list()
    if tariffs is not None:
        group = user.group if user else None
        tariff_id = (tariffs.get("groups") or {}).get(group) if group else None
        tariff = {"id": tariff_id or tariffs.get("default"), "list_version": tariffs.get("version"),
                  "by": f"group {group}" if tariff_id else "the default"}

    def decision(d: Decision) -> dict[str, Any]:
        return {"accepted": d.accepted, "method": d.method, "reason": d.reason}

    if local is not None:
        online = "not asked: the local list decides"
    else:
        online = "the agent asks the cloud while it is connected; the cloud's answer decides"
    return {"token": token, "evse_id": evse_id, "users_version": store.list_version("users"),
            "user": None if user is None else {"id": user.id, "name": user.name, "phone": user.phone,
                                               "group": user.group, "blocked": user.blocked,
                                               "valid_until": user.valid_until},
            "local": decision(local) if local is not None else None,
            "offline": decision(offline), "online": online,
            "offline_unknown": config.authorization.offline_unknown, "tariff": tariff,
            "may_charge": local.accepted if local is not None else None}


def _render_judgement(j: dict[str, Any]) -> str:
    lines = [f"card      {j['token']}" + (f"  (reader of EVSE {j['evse_id']})" if j.get("evse_id") else "")]
    user = j["user"]
    if user:
        extra = ", ".join(x for x in (f"group {user['group']}" if user["group"] else None,
                                      user["phone"], f"valid until {user['valid_until']}" if user["valid_until"] else None)
                          if x)
        lines.append(f"user      {user['name'] or '(no name)'} ({user['id']})" + (f", {extra}" if extra else ""))
    else:
        lines.append(f"user      not on the local user list (version {j['users_version']})")
    local = j["local"]
    if local is None:
        lines.append("local     unknown card")
    elif local["accepted"]:
        lines.append("local     MAY CHARGE (local list)")
    else:
        lines.append(f"local     MAY NOT CHARGE: {local['reason']}")
    lines.append(f"online    {j['online']}")
    offline = j["offline"]
    if offline["accepted"]:
        why = "the local list" if offline["method"] == "local_list" else "authorization.offline_unknown: accept"
        lines.append(f"offline   MAY CHARGE ({why})")
    else:
        why = {"offline_unknown": "unknown cards are refused offline (authorization.offline_unknown: reject)"}.get(
            offline["reason"], offline["reason"])
        lines.append(f"offline   MAY NOT CHARGE: {why}")
    tariff = j["tariff"]
    lines.append(f"tariff    {tariff['id']} ({tariff['by']}, tariff list v{tariff['list_version']})" if tariff
                 else "tariff    no tariff list yet: sessions would be free until one arrives")
    lines.append("(nothing was started: tap-test only looks)")
    return "\n".join(lines)


def cmd_tap_test(args: argparse.Namespace) -> int:
    from drivers.tokens import InvalidToken, normalize_uid

    from ..runtime_status import read_agent_status

    config = load_config(args.config)
    data_dir = Path(args.data_dir or config.data_dir)
    evse_id = args.evse
    if args.token:
        try:
            token = normalize_uid(args.token)
        except InvalidToken as exc:
            return fail(f"--token: {exc}", ExitCode.USAGE)
    else:
        readers = list(config.readers)
        if evse_id is not None:
            readers = [r for r in readers if r.evse_id == evse_id]
        if args.reader:
            readers = [r for r in readers if args.reader in (r.port, r.device)]
        if not readers:
            return fail(f"{args.config}: no reader matches (readers: "
                        f"{', '.join(str(r.port or r.device) for r in config.readers) or 'none'})", ExitCode.USAGE)
        reader_cfg = readers[0]
        live = read_agent_status(data_dir)
        holders = _agent_holding(reader_cfg.port) if reader_cfg.port else []
        if (live is not None and live.running) or holders:
            who = f"pid {live.content.get('pid')}" if live is not None and live.running else f"pid {holders[0]}"
            return fail(f"the agent is running ({who}) and reads {reader_cfg.port or reader_cfg.device} itself; "
                        "tap-test does not take the reader from it.\n"
                        "  use --token UID to judge a card number, or watch the agent: "
                        "journalctl -fu edge-agent (each tap is logged),\n"
                        "  or stop it first: systemctl stop edge-agent (charging pauses meanwhile)", ExitCode.BUSY)
        evse_id = evse_id or reader_cfg.evse_id
        print(f"hold the card to the reader on {reader_cfg.port or reader_cfg.device}"
              f"{f' (EVSE {reader_cfg.evse_id})' if reader_cfg.evse_id else ''} ... "
              f"(waiting {args.timeout:g} s)", file=sys.stderr, flush=True)
        try:
            found = _read_one_card(reader_cfg, timeout_s=args.timeout, debounce_s=config.authorization.debounce_s)
        except ValueError as exc:
            return fail(f"reader: {exc}", ExitCode.USAGE)
        if found is None:
            return fail(f"no card read within {args.timeout:g} s", ExitCode.TIMEOUT)
        token = found
    if not db_path(data_dir).exists():
        return fail(f"no database in {data_dir}: the agent has not run yet, no lists to judge by", ExitCode.NO)
    with open_store_read_only(data_dir) as store:
        judgement = _judge_token(config, token, store, evse_id=evse_id)
    if args.json:
        print_json(judgement)
    else:
        print(_render_judgement(judgement))
    return ExitCode.OK if judgement["may_charge"] else ExitCode.NO

