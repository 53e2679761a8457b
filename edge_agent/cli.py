"""The technician's command line: `edge-agent --help`."""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
from pathlib import Path

from . import __version__

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3
EXIT_BUSY = 4  # run: another agent holds the data directory (the technician's commands' "busy" too)

# Modules that add their own sub-commands: each has add_commands(subparsers).
COMMAND_MODULES: list[str] = ["edge_agent.technician_cli", "edge_agent.reports", "edge_agent.technician"]


def _load_config(path: str):  # noqa: ANN202
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    from .instance_lock import DataDirBusy, lock_data_dir

    # Before the store, a bus, a reader or the broker: a second agent must not touch any of them.
    try:
        lock = lock_data_dir(config.data_dir)
    except DataDirBusy as exc:
        print(f"{args.config}: cannot start: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except OSError as exc:
        print(f"{args.config}: cannot start: cannot lock the data directory {config.data_dir}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    with lock:
        from .logging_setup import configure_logging

        configure_logging(args.log_level or config.log_level)  # journald levels under systemd
        # pymodbus logs every failed connect of a dead charger; the drivers log the transition once.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        from .config import ConfigError
        from .site import Site
        from .startup_checks import check_startup

        try:
            check_startup(config)  # the same checks as `config check`
            site = Site(config)
        except ConfigError as exc:  # e.g. a TLS key that others may read
            print(f"{args.config}: cannot start:\n{exc}", file=sys.stderr)
            return EXIT_CONFIG
        asyncio.run(site.run())
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load_config(args.file)
    from .startup_checks import startup_issues

    issues = startup_issues(config)  # what `run` would refuse beyond the file's own rules
    if issues:
        if args.json:
            print(json.dumps({"ok": False, "errors": [{"path": i.path, "line": i.line, "message": i.message}
                                                      for i in issues]}))
        print(f"{args.file}: invalid configuration:\n" + "\n".join(str(i) for i in issues), file=sys.stderr)
        return EXIT_CONFIG
    from .technician import failsafe_config_warnings

    warnings = failsafe_config_warnings(config)  # valid, but worth knowing before it costs money
    if args.json:
        print(json.dumps({"ok": True, "gateway_id": config.gateway_id,
                          "chargers": [c.evse_id for c in config.chargers],
                          "readers": len(config.readers), **({"warnings": warnings} if warnings else {})}))
    else:
        print(f"{args.file}: OK (gateway {config.gateway_id}, {len(config.chargers)} charger(s), "
              f"{len(config.readers)} reader(s))")
        for warning in warnings:
            print(f"  warning: {warning}")
    return EXIT_OK


def cmd_price(args: argparse.Namespace) -> int:
    from .pricing import TariffError, price_cdr

    try:
        tariff = _read_json(args.tariff)
        cdr = _read_json(args.cdr)
    except ValueError as exc:
        print(f"cannot read input: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = price_cdr(tariff, cdr, tz=args.tz).to_json()
    except (TariffError, ValueError, KeyError) as exc:
        print(f"cannot price: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - a clear error for any input, never a traceback
        print(f"cannot price: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps({"currency": result["currency"], "excl_vat": result["excl_vat"],
                      "incl_vat": result["incl_vat"]}))
    return EXIT_OK


def _read_json(path: str) -> object:
    """A JSON file's content; ValueError naming the file for anything unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep
        raise ValueError(f"{path}: not valid UTF-8 JSON ({exc})") from None


def _open_store(args: argparse.Namespace):  # noqa: ANN202
    from .store import Store

    data_dir = args.data_dir or _load_config(args.config).data_dir
    if not (Path(data_dir) / "edge-agent.db").exists():
        print(f"no database in {data_dir}", file=sys.stderr)
        raise SystemExit(EXIT_FAILURE)
    return Store(data_dir, read_only=True)


def cmd_outbox(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        events = store.pending_events(limit=args.limit)
        pending = store.outbox_pending()
        seq = store.counter("seq")
    if args.json:
        print(json.dumps({"pending": pending, "last_seq": seq, "events": [json.loads(e.body) for e in events]}))
        return EXIT_OK
    print(f"{pending} event(s) waiting for the cloud's acknowledgement; last seq {seq}")
    for e in events:
        body = json.loads(e.body)
        print(f"  #{e.seq:<6} {e.type:16} {body['ts']}  offline={body['offline']}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=(
        "EV charging site gateway: reads RFID cards, drives chargers over Modbus, prices and "
        "records every session, and syncs with the cloud over MQTT."))
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent in the foreground (systemd runs this)")
    run.add_argument("--config", required=True, help="site configuration file (YAML)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=cmd_run)

    config = sub.add_parser("config", help="check a site configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate FILE; exit 3 with every error named by key and line")
    check.add_argument("file")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_config_check)

    price = sub.add_parser("price", help="price one OCPI CDR with one OCPI tariff")
    price.add_argument("--tariff", required=True, help="OCPI 2.2.1 Tariff JSON file")
    price.add_argument("--cdr", required=True, help="OCPI CDR JSON file")
    price.add_argument("--tz", default="UTC", help="site time zone for time restrictions (default UTC)")
    price.set_defaults(func=cmd_price)

    # `sessions` and `report` live in edge_agent.reports.
    for name, func, text in (("outbox", cmd_outbox, "show events not yet acknowledged by the cloud"),):
        p = sub.add_parser(name, help=text)
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", help="site configuration (its data_dir is read)")
        where.add_argument("--data-dir", help="the agent's data directory")
        p.add_argument("--limit", type=int, default=50)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
