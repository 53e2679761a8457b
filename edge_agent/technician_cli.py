"""The technician's commands: status, tap-test, users find, config init, export/import, db-check, migrate.

None of them gets in the way of charging: the database is opened read-only with a short busy
timeout (SQLite in WAL mode: readers never block the agent's writes), the live view comes from the
agent's status file on tmpfs, and nothing opens a card reader the running agent owns.

Exit codes (for scripts): 0 yes/done, 1 no (not running, may not charge, nothing found, refused),
2 usage, 3 configuration invalid, 4 busy (the running agent owns what was asked for),
5 downgrade (data from a newer release), 6 timed out (no card was read).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_NO, EXIT_USAGE, EXIT_CONFIG, EXIT_BUSY, EXIT_DOWNGRADE, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5, 6
DEFAULT_CONFIG = "/etc/edge-agent/site.yaml"
CLI_BUSY_TIMEOUT_MS = 500

EXIT_CODES_HELP = ("exit codes: 0 yes/done, 1 no (not running / may not charge / nothing found / refused), "
                   "2 usage, 3 invalid configuration, 4 busy (the running agent owns it), "
                   "5 downgrade (data from a newer release), 6 timed out")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


def _load_config(path: str):  # noqa: ANN202
    from .cli import _load_config as load

    return load(path)


def _data_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    return Path(_load_config(args.config).data_dir)


def _open_store_ro(data_dir: Path):  # noqa: ANN202
    """Read-only, with a short busy timeout: the CLI waits, never the agent."""
    import sqlite3

    from .store import Store

    try:
        store = Store(data_dir, read_only=True, busy_timeout_ms=CLI_BUSY_TIMEOUT_MS, query_only=True)
    except sqlite3.Error as exc:
        hint = " (run it with sudo, or as a member of the edge-agent group)" if not os.access(data_dir, os.R_OK) \
            or not os.access(_db_path(data_dir), os.R_OK) else ""
        print(f"cannot read the database in {data_dir}: {exc}{hint}", file=sys.stderr)
        raise SystemExit(EXIT_NO) from None
    return store


def _db_path(data_dir: Path) -> Path:
    from .store import DB_FILE

    return data_dir / DB_FILE


def _schema_version(db: Path) -> int:
    from .store import schema_version

    return schema_version(db, timeout_s=CLI_BUSY_TIMEOUT_MS / 1000)


def _where(parser: argparse.ArgumentParser, *, config_default: bool = True) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", default=DEFAULT_CONFIG if config_default else None,
                       help=f"site configuration; its data_dir is used (default {DEFAULT_CONFIG})")
    where.add_argument("--data-dir", help="the agent's data directory, instead of --config")


# -- status ---------------------------------------------------------------------------------------


def _database_summary(data_dir: Path) -> dict[str, Any] | None:
    db = _db_path(data_dir)
    if not db.exists():
        return None
    with _open_store_ro(data_dir) as store:
        active = store.session_count(active=True)
        return {"path": str(db), "schema_version": _schema_version(db), "outbox_pending": store.outbox_pending(),
                "last_seq": store.counter("seq"), "users_version": store.list_version("users"),
                "users": store.user_count(), "tariffs_version": store.list_version("tariffs"),
                "active_sessions": int(active)}


def _status_once(data_dir: Path, *, as_json: bool) -> tuple[int, str]:
    from .runtime_status import read_agent_status, status_file_candidates
    from .status_view import render_running, render_stopped

    live = read_agent_status(data_dir)
    if live is None:
        hidden = [p for p in status_file_candidates(data_dir) if p.exists() and not os.access(p, os.R_OK)]
        if hidden:
            return EXIT_NO, (f"cannot read {hidden[0]}: permission denied; run it with sudo, or as a member "
                             "of the edge-agent group")
    if live is not None and live.running:
        health_ok = (live.content.get("health") or {}).get("ok", True)
        code = EXIT_OK if health_ok else EXIT_NO
        if as_json:
            return code, json.dumps({"running": True, "healthy": health_ok, "age_s": round(live.age_s, 2),
                                     "status_file": str(live.path), "agent": live.content}, indent=2)
        return code, render_running(live.content, age_s=live.age_s)
    database = _database_summary(data_dir)
    age = live.age_s if live is not None else None
    if as_json:
        return EXIT_NO, json.dumps({"running": False, "healthy": False, "status_age_s": age,
                                    "data_dir": str(data_dir), "database": database}, indent=2)
    return EXIT_NO, render_stopped(database, status_age_s=age, data_dir=str(data_dir))


def cmd_status(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if not args.watch or args.json:
        code, text = _status_once(data_dir, as_json=args.json)
        print(text)
        return code
    try:
        while True:
            code, text = _status_once(data_dir, as_json=False)
            # Home, draw, clear what is left: no flicker on a slow serial console.
            sys.stdout.write("\x1b[H" + "\n".join(line + "\x1b[K" for line in text.splitlines()) + "\n\x1b[J")
            sys.stdout.write(f"\x1b[2m{time.strftime('%H:%M:%S')} · refreshing every {args.interval:g} s · "
                             "Ctrl-C to quit\x1b[0m\x1b[K\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print()
        return EXIT_OK


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
    data_dir = _data_dir(args)
    if not _db_path(data_dir).exists():
        return _fail(f"no database in {data_dir}", EXIT_NO)
    with _open_store_ro(data_dir) as store:
        users = _find_users(store, args.text)
        version = store.list_version("users")
    if args.json:
        _print_json({"query": args.text, "users_version": version, "users": users})
        return EXIT_OK if users else EXIT_NO
    if not users:
        print(f"nobody matches {args.text!r} in the local user list (version {version})")
        return EXIT_NO
    print(f"{'id':12} {'name':24} {'group':12} {'phone':16} {'state':9} tokens")
    for u in users:
        state = "BLOCKED" if u["blocked"] else ("until " + u["valid_until"][:10] if u["valid_until"] else "ok")
        print(f"{u['id']:12} {(u['name'] or '-')[:24]:24} {(u['group'] or '-')[:12]:12} {(u['phone'] or '-'):16} "
              f"{state:9} {', '.join(u['tokens']) or '-'}")
    print(f"{len(users)} user(s), local user list version {version}")
    return EXIT_OK


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
    from .authorization import Authorizer

    async def never_online(token: str, evse_id: str) -> None:
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
    decision = lambda d: {"accepted": d.accepted, "method": d.method, "reason": d.reason}  # noqa: E731
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

    from .runtime_status import read_agent_status

    config = _load_config(args.config)
    data_dir = Path(args.data_dir or config.data_dir)
    evse_id = args.evse
    if args.token:
        try:
            token = normalize_uid(args.token)
        except InvalidToken as exc:
            return _fail(f"--token: {exc}", EXIT_USAGE)
    else:
        readers = list(config.readers)
        if evse_id is not None:
            readers = [r for r in readers if r.evse_id == evse_id]
        if args.reader:
            readers = [r for r in readers if args.reader in (r.port, r.device)]
        if not readers:
            return _fail(f"{args.config}: no reader matches (readers: "
                         f"{', '.join(str(r.port or r.device) for r in config.readers) or 'none'})", EXIT_USAGE)
        reader_cfg = readers[0]
        live = read_agent_status(data_dir)
        holders = _agent_holding(reader_cfg.port) if reader_cfg.port else []
        if (live is not None and live.running) or holders:
            who = f"pid {live.content.get('pid')}" if live is not None and live.running else f"pid {holders[0]}"
            return _fail(f"the agent is running ({who}) and reads {reader_cfg.port or reader_cfg.device} itself; "
                         "tap-test does not take the reader from it.\n"
                         "  use --token UID to judge a card number, or watch the agent: "
                         "journalctl -fu edge-agent (each tap is logged),\n"
                         "  or stop it first: systemctl stop edge-agent (charging pauses meanwhile)", EXIT_BUSY)
        evse_id = evse_id or reader_cfg.evse_id
        print(f"hold the card to the reader on {reader_cfg.port or reader_cfg.device}"
              f"{f' (EVSE {reader_cfg.evse_id})' if reader_cfg.evse_id else ''} ... "
              f"(waiting {args.timeout:g} s)", file=sys.stderr, flush=True)
        try:
            found = _read_one_card(reader_cfg, timeout_s=args.timeout, debounce_s=config.authorization.debounce_s)
        except ValueError as exc:
            return _fail(f"reader: {exc}", EXIT_USAGE)
        if found is None:
            return _fail(f"no card read within {args.timeout:g} s", EXIT_TIMEOUT)
        token = found
    if not _db_path(data_dir).exists():
        return _fail(f"no database in {data_dir}: the agent has not run yet, no lists to judge by", EXIT_NO)
    with _open_store_ro(data_dir) as store:
        judgement = _judge_token(config, token, store, evse_id=evse_id)
    if args.json:
        _print_json(judgement)
    else:
        print(_render_judgement(judgement))
    return EXIT_OK if judgement["may_charge"] else EXIT_NO


# -- config init -----------------------------------------------------------------------------------


def _ask(prompt: str, default: str | None = None, *, required: bool = True) -> str:
    suffix = f" [{default}]" if default else ""
    while True:
        answer = input(f"{prompt}{suffix}: ").strip()
        if answer:
            return answer
        if default is not None:
            return default
        if not required:
            return ""
        print("  (an answer is needed)")


def _interactive(found: dict[str, Any], *, scan: bool) -> dict[str, Any]:
    from .config_init import parse_spec, scan_serial_bus

    say = lambda text: print(f"  {text}")  # noqa: E731
    answers = dict(found)
    if "gateway_id" not in answers:
        answers["gateway_id"] = _ask("gateway id (the cloud's name for this gateway)")
    if "timezone" not in answers:
        answers["timezone"] = _ask("site time zone", "Europe/Oslo")
    cloud = dict(answers.get("cloud") or {})
    if "host" not in cloud:
        cloud["host"] = _ask("MQTT broker host")
    if "port" not in cloud:
        tls = _ask("TLS to the broker? (yes/no)", "yes").lower().startswith("y")
        cloud["port"] = int(_ask("MQTT broker port", "8883" if tls else "1883"))
        if tls and "tls" not in cloud:
            cloud["tls"] = {k: v for k, v in (
                ("ca_file", _ask("  CA file (empty: the system's)", "", required=False)),
                ("cert_file", _ask("  client certificate", "/etc/edge-agent/gw.pem")),
                ("key_file", _ask("  client key", "/etc/edge-agent/gw.key"))) if v}
    answers["cloud"] = cloud
    if "offline_unknown" not in answers:
        answers["offline_unknown"] = _ask("unknown cards while the cloud is unreachable: reject or accept", "reject")
    if not answers.get("chargers"):
        chargers: list[dict[str, Any]] = []
        port = _ask("RS-485 adapter to scan for chargers (empty: no scan)", "/dev/ttyUSB0" if scan else "",
                    required=False)
        if port and scan:
            found_chargers = scan_serial_bus(port, say=say) or []
            for entry in found_chargers:
                use = _ask(f"  found {entry['model']} unit {entry.get('unit')} on {port}: add it? (yes/no)", "yes")
                if use.lower().startswith("y"):
                    entry["evse_id"] = _ask("    its EVSE id", str(len(chargers) + 1))
                    chargers.append(entry)
        print("chargers as key=value lists, e.g. evse_id=1,model=bender-cc613,host=192.168.10.21 "
              "or evse_id=2,model=heidelberg-energy-control,serial=/dev/ttyUSB0,unit=1 (empty line: done)")
        while True:
            spec = _ask(f"  charger {len(chargers) + 1}", "" if chargers else None, required=not chargers)
            if not spec:
                break
            chargers.append(parse_spec(spec, what="charger"))
        answers["chargers"] = chargers
    if "readers" not in answers:
        readers = []
        print("card readers as key=value lists, e.g. driver=rdm6300,port=/dev/ttyAMA0,evse_id=1 (empty line: done)")
        while True:
            spec = _ask(f"  reader {len(readers) + 1}", "", required=False)
            if not spec:
                break
            readers.append(parse_spec(spec, what="reader"))
        answers["readers"] = readers
    return answers


def cmd_config_init(args: argparse.Namespace) -> int:
    import yaml

    from .config_init import Answers, AnswersError, answers_from_mapping, parse_spec, render_config, scan_serial_bus

    out = Path(args.out)
    if out.exists() and not args.force:
        return _fail(f"{out} exists; --force replaces it", EXIT_NO)
    try:
        found: dict[str, Any] = {}
        if args.answers:
            try:
                loaded = yaml.safe_load(Path(args.answers).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                return _fail(f"{args.answers}: cannot read answers: {exc}", EXIT_USAGE)
            found = answers_from_mapping(loaded, source=args.answers)
        for key, value in (("gateway_id", args.gateway_id), ("timezone", args.timezone),
                           ("offline_unknown", args.offline_unknown), ("data_dir", args.data_dir_answer)):
            if value is not None:
                found[key] = value
        cloud = dict(found.get("cloud") or {})
        for key, value in (("host", args.cloud_host), ("port", args.cloud_port), ("username", args.username),
                           ("password_file", args.password_file)):
            if value is not None:
                cloud[key] = value
        if cloud:
            found["cloud"] = cloud
        if args.charger:
            found["chargers"] = [parse_spec(s, what="--charger") for s in args.charger]
        if args.reader:
            found["readers"] = [parse_spec(s, what="--reader") for s in args.reader]
        notes: list[str] = []
        if args.scan:
            entries = scan_serial_bus(args.scan, say=lambda text: print(text, file=sys.stderr),
                                      units=args.scan_units, baudrates=args.scan_baudrates)
            if entries is not None:
                notes.append(f"serial bus scan of {args.scan}: {len(entries)} charger(s) found")
                start = len(found.get("chargers") or [])
                for index, entry in enumerate(entries):
                    entry.setdefault("evse_id", str(start + index + 1))
                found["chargers"] = [*(found.get("chargers") or []), *entries]
        interactive = not args.non_interactive and sys.stdin.isatty()
        if interactive:
            found = _interactive(found, scan=args.scan is None)
        missing = [k for k in ("gateway_id", "timezone", "chargers") if not found.get(k)]
        if not (found.get("cloud") or {}).get("host"):
            missing.append("cloud.host")
        if missing:
            return _fail(f"missing answers: {', '.join(missing)} (give them in --answers FILE or as flags, "
                         "or run on a terminal to be asked)", EXIT_USAGE)
        answers = Answers(gateway_id=str(found["gateway_id"]), timezone=str(found["timezone"]),
                          cloud=dict(found["cloud"]), chargers=tuple(found["chargers"]),
                          readers=tuple(found.get("readers") or ()),
                          offline_unknown=str(found.get("offline_unknown") or "reject"),
                          data_dir=found.get("data_dir"), log_level=found.get("log_level"), notes=tuple(notes))
        text = render_config(answers)
    except AnswersError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, out)
    if args.json:
        _print_json({"written": str(out), "chargers": len(answers.chargers), "readers": len(answers.readers)})
    else:
        print(f"{out}: written ({len(answers.chargers)} charger(s), {len(answers.readers)} reader(s)); "
              f"check it any time with: edge-agent config check {out}")
    return EXIT_OK


# -- db-check, migrate -----------------------------------------------------------------------------


def cmd_db_check(args: argparse.Namespace) -> int:
    from .store import SCHEMA_VERSION

    data_dir = _data_dir(args)
    db = _db_path(data_dir)
    result: dict[str, Any] = {"data_dir": str(data_dir), "release_schema": SCHEMA_VERSION}
    if not db.exists():
        result |= {"database": None, "ok": True, "action": "none: the agent creates the database"}
        code = EXIT_OK
        text = f"{data_dir}: no database yet; this release creates schema {SCHEMA_VERSION}"
    else:
        found = _schema_version(db)
        result |= {"database": str(db), "schema": found}
        if found > SCHEMA_VERSION:
            result |= {"ok": False, "action": "refuse: downgrade"}
            code = EXIT_DOWNGRADE
            text = (f"{db}: schema version {found} is newer than this release knows ({SCHEMA_VERSION}). "
                    "This release is older than the one that wrote the data: refusing (downgrade). "
                    "Install the same or a newer release.")
        elif found < SCHEMA_VERSION:
            result |= {"ok": True, "action": f"migrate {found} -> {SCHEMA_VERSION}"}
            code = EXIT_OK
            text = f"{db}: schema {found}; this release migrates it to {SCHEMA_VERSION} (data kept)"
        else:
            result |= {"ok": True, "action": "none: up to date"}
            code = EXIT_OK
            text = f"{db}: schema {found}, up to date"
    if args.json:
        _print_json(result)
    else:
        print(text, file=sys.stdout if code == EXIT_OK else sys.stderr)
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    from .instance_lock import DataDirBusy, data_dir_locked
    from .store import SCHEMA_VERSION, SchemaTooNew, Store

    data_dir = _data_dir(args)
    db = _db_path(data_dir)
    before = _schema_version(db) if db.exists() else 0
    try:
        with data_dir_locked(data_dir), Store(data_dir):
            pass
    except DataDirBusy as exc:
        return _fail(f"{exc}; stop it first: systemctl stop edge-agent (it migrates the database when it "
                     "starts)", EXIT_BUSY)
    except SchemaTooNew as exc:
        return _fail(str(exc), EXIT_DOWNGRADE)
    if args.json:
        _print_json({"database": str(db), "from": before, "to": SCHEMA_VERSION})
    else:
        print(f"{db}: schema {before} -> {SCHEMA_VERSION}" if before != SCHEMA_VERSION
              else f"{db}: schema {SCHEMA_VERSION}, up to date")
    return EXIT_OK


# -- export, import -------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from .backup import ArchiveError, export_state

    config = _load_config(args.config)
    try:
        result = export_state(config, out=Path(args.out), data_dir=Path(args.data_dir) if args.data_dir else None,
                              with_secrets=args.with_secrets)
    except (ArchiveError, OSError) as exc:
        return _fail(f"export failed: {exc}", EXIT_NO)
    m = result.manifest
    if args.json:
        _print_json({"archive": str(result.path), "size": result.size, "manifest": m})
    else:
        c = m["counts"]
        print(f"{result.path}: gateway {m['gateway_id']}, {c['sessions']} session(s) ({c['active_sessions']} "
              f"running), {c['outbox_pending']} event(s) not yet acknowledged by the cloud, {c['users']} user(s), "
              f"schema {m['schema_version']}, {result.size / 1024:.0f} KiB"
              + (", with secrets" if m["secrets"] else ""))
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from .backup import ArchiveError, ImportRefused, SchemaTooNewError, import_state, read_manifest
    from .config import parse_config_text
    from .instance_lock import DataDirBusy, data_dir_locked
    from .runtime_status import read_agent_status

    archive = Path(args.archive)
    try:
        manifest = read_manifest(archive)
    except ArchiveError as exc:
        return _fail(str(exc), EXIT_NO)
    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        import tarfile

        with tarfile.open(archive, "r:gz") as tar:
            handle = tar.extractfile("site.yaml")
            text = handle.read().decode("utf-8-sig") if handle else ""
        try:
            data_dir = Path(parse_config_text(text, source=f"{archive}:site.yaml").data_dir)
        except Exception as exc:  # noqa: BLE001 - any config problem: ask for the directory instead
            return _fail(f"{archive}: its configuration names no usable data_dir ({exc}); give --data-dir",
                         EXIT_USAGE)
    live = read_agent_status(data_dir)
    if live is not None and live.running:
        return _fail(f"an agent is running on {data_dir} (pid {live.content.get('pid')}); "
                     "stop it first: systemctl stop edge-agent", EXIT_BUSY)
    try:
        with data_dir_locked(data_dir):  # an agent starting meanwhile is refused until this is done
            result = import_state(archive, data_dir=data_dir, force=args.force,
                                  config_out=Path(args.config_out) if args.config_out else None,
                                  restore_secrets=args.restore_secrets)
    except DataDirBusy as exc:
        return _fail(f"{exc}; stop it first: systemctl stop edge-agent", EXIT_BUSY)
    except SchemaTooNewError as exc:
        return _fail(str(exc), EXIT_DOWNGRADE)
    except (ArchiveError, ImportRefused, OSError) as exc:
        return _fail(f"import refused: {exc}", EXIT_NO)
    c = manifest["counts"]
    if args.json:
        _print_json({"data_dir": str(result.data_dir), "manifest": manifest,
                     "kept_previous": str(result.kept_previous) if result.kept_previous else None,
                     "config_written": str(result.config_written) if result.config_written else None,
                     "secrets_written": [str(p) for p in result.secrets_written]})
    else:
        print(f"{result.data_dir}: imported gateway {manifest['gateway_id']} from {manifest['created_at']}: "
              f"{c['sessions']} session(s), {c['outbox_pending']} event(s) still to send to the cloud")
        if result.kept_previous:
            print(f"  the database that was there is kept as {result.kept_previous}")
        if result.config_written:
            print(f"  configuration written to {result.config_written}")
        for path in result.secrets_written:
            print(f"  secret restored: {path}")
        print("  start the agent: systemctl start edge-agent")
    return EXIT_OK


# -- wiring ----------------------------------------------------------------------------------------


def _config_actions(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction | None:
    parser = subparsers.choices.get("config")
    if parser is None:
        return None
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)  # noqa: SLF001


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter

    p = subparsers.add_parser(
        "status", help="live view: cloud link, EVSEs, sessions, readers, outbox, lists", formatter_class=fmt,
        description="What the running agent is doing now (from its status file on tmpfs; the database is "
                    "only read when the agent is not running).", epilog=EXIT_CODES_HELP)
    _where(p)
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes with --watch")
    p.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser(
        "tap-test", help="read one card (or --token) and say who it is and whether they may charge",
        formatter_class=fmt, epilog=EXIT_CODES_HELP,
        description="Judges a card the way the agent would: the local user list, the online step and the "
                    "offline decision, and the tariff it would get. Never starts charging. While the agent "
                    "runs it owns the readers: use --token then.")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"site configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--data-dir", help="the agent's data directory (default: the config's)")
    p.add_argument("--token", help="judge this card number (hex) instead of reading a card")
    p.add_argument("--evse", help="the reader of this EVSE (default: the first reader)")
    p.add_argument("--reader", help="the reader on this port or device")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a card (default 30)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tap_test)

    users = subparsers.add_parser("users", help="the local user list")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    p = users_sub.add_parser("find", help="find users by name, id, phone or card number", formatter_class=fmt,
                             epilog=EXIT_CODES_HELP)
    p.add_argument("text", help="part of a name, phone number or card number, or a whole user id")
    _where(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_users_find)

    config_actions = _config_actions(subparsers)
    if config_actions is not None:
        p = config_actions.add_parser(
            "init", help="write a commented configuration from answers (prompts, --answers FILE or flags)",
            formatter_class=fmt, epilog="charger/reader SPEC: key=value pairs, e.g. "
            "evse_id=1,model=bender-cc613,host=192.168.10.21\n" + EXIT_CODES_HELP)
        p.add_argument("--out", default=DEFAULT_CONFIG, help=f"file to write (default {DEFAULT_CONFIG})")
        p.add_argument("--answers", help="YAML file with the answers (gateway_id, timezone, cloud, chargers, readers)")
        p.add_argument("--gateway-id")
        p.add_argument("--timezone")
        p.add_argument("--cloud-host")
        p.add_argument("--cloud-port", type=int)
        p.add_argument("--username")
        p.add_argument("--password-file")
        p.add_argument("--offline-unknown", choices=["reject", "accept"])
        p.add_argument("--data-dir", dest="data_dir_answer", help="data_dir of the new configuration")
        p.add_argument("--charger", action="append", metavar="SPEC", help="a charger (repeat for more)")
        p.add_argument("--reader", action="append", metavar="SPEC", help="a card reader (repeat for more)")
        p.add_argument("--scan", metavar="PORT", help="scan this RS-485 port for chargers (edge-agent scan)")
        p.add_argument("--scan-units", default="1-32", help="unit ids to scan (default 1-32)")
        p.add_argument("--scan-baudrates", default="19200,9600,38400", help="baud rates to scan")
        p.add_argument("--non-interactive", action="store_true", help="never prompt, even on a terminal")
        p.add_argument("--force", action="store_true", help="replace an existing file")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_config_init)

    p = subparsers.add_parser("db-check", help="can this release run on that database? (exit 5: downgrade)",
                              epilog=EXIT_CODES_HELP)
    _where(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_check)

    p = subparsers.add_parser("migrate", help="bring the database to this release's schema (the agent also does "
                              "this when it starts)", epilog=EXIT_CODES_HELP)
    _where(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_migrate)

    p = subparsers.add_parser(
        "export", help="the whole state (database snapshot + config) as one tar.gz; safe while the agent runs",
        formatter_class=fmt, epilog=EXIT_CODES_HELP)
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"site configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--data-dir", help="data directory (default: the config's)")
    p.add_argument("--out", required=True, help="archive to write (mode 0600: it holds personal data)")
    p.add_argument("--with-secrets", action="store_true",
                   help="include the files the config names (MQTT password, TLS key and certificates)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "import", help="put an exported state on this gateway (replacing a broken one)", formatter_class=fmt,
        epilog=EXIT_CODES_HELP, description="Checks the archive's sha256 sums and schema first. Refuses a "
        "data directory that holds data unless --force (the old database is then kept beside it), and refuses "
        "while an agent runs on it.")
    p.add_argument("archive")
    p.add_argument("--data-dir", help="where the database goes (default: the archived config's data_dir)")
    p.add_argument("--config-out", help="write the archived configuration here (e.g. /etc/edge-agent/site.yaml)")
    p.add_argument("--restore-secrets", action="store_true", help="write the archived secrets to their paths")
    p.add_argument("--force", action="store_true", help="replace existing data (kept beside it) and files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import)
