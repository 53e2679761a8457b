"""`edge-agent run` (what systemd starts) and `edge-agent config check` (what run would refuse)."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from ._common import load_config
from ._exit_codes import ExitCode


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    from ..instance_lock import DataDirBusy, lock_data_dir

    # Before the store, a bus, a reader or the broker: a second agent must not touch any of them.
    try:
        lock = lock_data_dir(config.data_dir)
    except DataDirBusy as exc:
        print(f"{args.config}: cannot start: {exc}", file=sys.stderr)
        return ExitCode.BUSY
    except OSError as exc:
        print(f"{args.config}: cannot start: cannot lock the data directory {config.data_dir}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return ExitCode.NO
    with lock:
        from ..logging_setup import configure_logging

        configure_logging(args.log_level or config.log_level)  # journald levels under systemd
        # pymodbus logs every failed connect of a dead charger; the drivers log the transition once.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        from ..agent import Agent
        from ..config import ConfigError
        from ..startup_checks import check_startup

        try:
            check_startup(config)  # the same checks as `config check`
            agent = Agent(config)
        except ConfigError as exc:  # e.g. a TLS key that others may read
            print(f"{args.config}: cannot start:\n{exc}", file=sys.stderr)
            return ExitCode.CONFIG
        asyncio.run(agent.run())
    return ExitCode.OK


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    from ..startup_checks import startup_issues

    issues = startup_issues(config)  # what `run` would refuse beyond the file's own rules
    if issues:
        if args.json:
            print(json.dumps({"ok": False, "errors": [{"path": i.path, "line": i.line, "message": i.message}
                                                      for i in issues]}))
        print(f"{args.file}: invalid configuration:\n" + "\n".join(str(i) for i in issues), file=sys.stderr)
        return ExitCode.CONFIG
    from ..failsafe_warnings import failsafe_config_warnings

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
    return ExitCode.OK
