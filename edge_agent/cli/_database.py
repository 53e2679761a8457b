"""The database as a whole: `edge-agent db-check`, `migrate`, `export` and `import`.

db-check and export only read (export through SQLite's online backup, safe while the agent runs);
migrate and import write, and only under the data directory's lock, so an agent starting meanwhile
is refused until they are done.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._common import data_dir_of, db_path, fail, load_config, open_store_for_writing, print_json, schema_version_of
from ._exit_codes import ExitCode

# -- db-check, migrate -----------------------------------------------------------------------------


def cmd_db_check(args: argparse.Namespace) -> int:
    from ..store import SCHEMA_VERSION

    data_dir = data_dir_of(args)
    db = db_path(data_dir)
    result: dict[str, Any] = {"data_dir": str(data_dir), "release_schema": SCHEMA_VERSION}
    if not db.exists():
        result |= {"database": None, "ok": True, "action": "none: the agent creates the database"}
        code = ExitCode.OK
        text = f"{data_dir}: no database yet; this release creates schema {SCHEMA_VERSION}"
    else:
        found = schema_version_of(db)
        result |= {"database": str(db), "schema": found}
        if found > SCHEMA_VERSION:
            result |= {"ok": False, "action": "refuse: downgrade"}
            code = ExitCode.DOWNGRADE
            text = (f"{db}: schema version {found} is newer than this release knows ({SCHEMA_VERSION}). "
                    "This release is older than the one that wrote the data: refusing (downgrade). "
                    "Install the same or a newer release.")
        elif found < SCHEMA_VERSION:
            result |= {"ok": True, "action": f"migrate {found} -> {SCHEMA_VERSION}"}
            code = ExitCode.OK
            text = f"{db}: schema {found}; this release migrates it to {SCHEMA_VERSION} (data kept)"
        else:
            result |= {"ok": True, "action": "none: up to date"}
            code = ExitCode.OK
            text = f"{db}: schema {found}, up to date"
    if args.json:
        print_json(result)
    else:
        print(text, file=sys.stdout if code == ExitCode.OK else sys.stderr)
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..instance_lock import DataDirBusy, data_dir_locked
    from ..store import SCHEMA_VERSION, SchemaTooNew

    data_dir = data_dir_of(args)
    db = db_path(data_dir)
    before = schema_version_of(db) if db.exists() else 0
    try:
        with data_dir_locked(data_dir), open_store_for_writing(data_dir):
            pass
    except DataDirBusy as exc:
        return fail(f"{exc}; stop it first: systemctl stop edge-agent (it migrates the database when it "
                    "starts)", ExitCode.BUSY)
    except SchemaTooNew as exc:
        return fail(str(exc), ExitCode.DOWNGRADE)
    if args.json:
        print_json({"database": str(db), "from": before, "to": SCHEMA_VERSION})
    else:
        print(f"{db}: schema {before} -> {SCHEMA_VERSION}" if before != SCHEMA_VERSION
              else f"{db}: schema {SCHEMA_VERSION}, up to date")
    return ExitCode.OK


# -- export, import -------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from ..backup import ArchiveError, export_state

    config = load_config(args.config)
    try:
        result = export_state(config, out=Path(args.out), data_dir=Path(args.data_dir) if args.data_dir else None,
                              with_secrets=args.with_secrets)
    except (ArchiveError, OSError) as exc:
        return fail(f"export failed: {exc}", ExitCode.NO)
    m = result.manifest
    if args.json:
        print_json({"archive": str(result.path), "size": result.size, "manifest": m})
    else:
        c = m["counts"]
        print(f"{result.path}: gateway {m['gateway_id']}, {c['sessions']} session(s) ({c['active_sessions']} "
              f"running), {c['outbox_pending']} event(s) not yet acknowledged by the cloud, {c['users']} user(s), "
              f"schema {m['schema_version']}, {result.size / 1024:.0f} KiB"
              + (", with secrets" if m["secrets"] else ""))
    return ExitCode.OK


def cmd_import(args: argparse.Namespace) -> int:
    from ..backup import ArchiveError, ImportRefused, SchemaTooNewError, import_state, read_manifest
    from ..config import parse_config_text
    from ..instance_lock import DataDirBusy, data_dir_locked
    from ..runtime_status import read_agent_status

    archive = Path(args.archive)
    try:
        manifest = read_manifest(archive)
    except ArchiveError as exc:
        return fail(str(exc), ExitCode.NO)
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
            return fail(f"{archive}: its configuration names no usable data_dir ({exc}); give --data-dir",
                        ExitCode.USAGE)
    live = read_agent_status(data_dir)
    if live is not None and live.running:
        return fail(f"an agent is running on {data_dir} (pid {live.content.get('pid')}); "
                    "stop it first: systemctl stop edge-agent", ExitCode.BUSY)
    try:
        with data_dir_locked(data_dir):  # an agent starting meanwhile is refused until this is done
            result = import_state(archive, data_dir=data_dir, force=args.force,
                                  config_out=Path(args.config_out) if args.config_out else None,
                                  restore_secrets=args.restore_secrets)
    except DataDirBusy as exc:
        return fail(f"{exc}; stop it first: systemctl stop edge-agent", ExitCode.BUSY)
    except SchemaTooNewError as exc:
        return fail(str(exc), ExitCode.DOWNGRADE)
    except (ArchiveError, ImportRefused, OSError) as exc:
        return fail(f"import refused: {exc}", ExitCode.NO)
    c = manifest["counts"]
    if args.json:
        print_json({"data_dir": str(result.data_dir), "manifest": manifest,
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
    return ExitCode.OK

