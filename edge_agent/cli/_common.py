"""What the commands share: the site configuration, the data directory, the store, and output.

The commands that only read open the database through `open_store_read_only`: read-only
(`query_only`) with a short busy timeout, so that the CLI waits, never the agent (SQLite in WAL mode:
readers never block the agent's writes). The few that write it hold the data directory's lock and
open it through `open_store_for_writing`.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._exit_codes import ExitCode

if TYPE_CHECKING:
    from ..config import SiteConfig
    from ..store import Store

DEFAULT_CONFIG = "/etc/edge-agent/site.yaml"
CLI_BUSY_TIMEOUT_MS = 500


def load_config(path: str) -> SiteConfig:
    """The site configuration; exit 3 with every error named (or why the file cannot be read)."""
    from ..config import ConfigError
    from ..config import load_config as load

    try:
        return load(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None


def data_dir_of(args: argparse.Namespace) -> Path:
    """--data-dir, else the data_dir of --config."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    return Path(load_config(args.config).data_dir)


def db_path(data_dir: Path) -> Path:
    from ..store import DB_FILE

    return data_dir / DB_FILE


def schema_version_of(db: Path) -> int:
    from ..store import schema_version

    return schema_version(db, timeout_s=CLI_BUSY_TIMEOUT_MS / 1000)


def open_store_read_only(data_dir: Path) -> Store:
    """Read-only, with a short busy timeout: the CLI waits, never the agent."""
    from ..store import Store

    try:
        return Store.open_read_only(data_dir, busy_timeout_ms=CLI_BUSY_TIMEOUT_MS)
    except sqlite3.Error as exc:
        hint = " (run it with sudo, or as a member of the edge-agent group)" if not os.access(data_dir, os.R_OK) \
            or not os.access(db_path(data_dir), os.R_OK) else ""
        print(f"cannot read the database in {data_dir}: {exc}{hint}", file=sys.stderr)
        raise SystemExit(ExitCode.NO) from None


def open_existing_store_read_only(data_dir: Path) -> Store:
    """As open_store_read_only; exit 1 when the agent has not made a database there yet."""
    if not db_path(data_dir).exists():
        print(f"no database in {data_dir}", file=sys.stderr)
        raise SystemExit(ExitCode.NO)
    return open_store_read_only(data_dir)


def open_store_for_writing(data_dir: Path) -> Store:
    """Creates or migrates the database, as the agent does when it starts: only under the data
    directory's lock (instance_lock.data_dir_locked)."""
    from ..store import Store

    return Store(data_dir)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code
