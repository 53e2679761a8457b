"""Backup and move: the whole state of a gateway as one tar.gz, for replacing a broken one.

The archive holds a consistent snapshot of the database (SQLite's online backup, taken while the
agent runs: unsynced sessions and events not yet acknowledged by the cloud come along), the site
configuration, optionally the secret files it names, and `manifest.json` with the sha256 of every
file. Import checks every checksum and the schema version before it touches anything, refuses to
overwrite a database that holds data unless forced (and then keeps the old one beside it).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .clock import rfc3339, utc_now
from .config import SiteConfig
from .store import DB_FILE, SCHEMA_VERSION, Store, check_file, fold_wal

__all__ = ["ArchiveError", "ExportResult", "ImportRefused", "ImportResult", "SchemaTooNewError",
           "export_state", "import_state", "read_manifest"]

FORMAT = "edge-agent-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG_MEMBER = "site.yaml"
DB_MEMBER = DB_FILE


class ArchiveError(RuntimeError):
    """The archive is damaged, not ours, or from a newer format: nothing was changed."""


class ImportRefused(RuntimeError):
    """Importing would overwrite data or run under a live agent: nothing was changed."""


class SchemaTooNewError(ArchiveError):
    """The archive's database comes from a newer release than this one."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path
    manifest: dict[str, Any]
    size: int


@dataclass(frozen=True, slots=True)
class ImportResult:
    data_dir: Path
    manifest: dict[str, Any]
    kept_previous: Path | None
    config_written: Path | None
    secrets_written: tuple[Path, ...]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _secret_files(config: SiteConfig) -> dict[str, Path]:
    """The files the configuration names that are not in the database, by config key."""
    cloud = config.cloud
    found = {"cloud.password_file": cloud.password_file}
    if cloud.tls is not None:
        found |= {"cloud.tls.ca_file": cloud.tls.ca_file, "cloud.tls.cert_file": cloud.tls.cert_file,
                  "cloud.tls.key_file": cloud.tls.key_file}
    return {key: Path(path) for key, path in found.items() if path is not None}


def _counts(db_path: Path) -> dict[str, int]:
    with Store(db_path.parent, read_only=True) as store:
        return {"sessions": store.session_count(), "active_sessions": store.session_count(active=True),
                "outbox_pending": store.outbox_pending(), "users": store.user_count(),
                "last_seq": store.counter("seq")}


def export_state(config: SiteConfig, *, out: Path, data_dir: Path | None = None,
                 with_secrets: bool = False) -> ExportResult:
    """Writes the archive to `out` (mode 0600: it holds personal data). Safe while the agent runs."""
    data_dir = Path(data_dir or config.data_dir)
    if not (data_dir / DB_FILE).exists():
        raise ArchiveError(f"no database in {data_dir}: nothing to export")
    if config.path is None:
        raise ArchiveError("the configuration must come from a file")
    config_bytes = Path(config.path).read_bytes()
    with tempfile.TemporaryDirectory(prefix="edge-agent-export-") as tmp:
        snapshot = Path(tmp) / DB_FILE
        with Store.open_read_only(data_dir) as store:  # beside the running agent
            schema = store.backup_to(snapshot)
        verdict, _ = check_file(snapshot)
        if verdict != "ok":
            raise ArchiveError(f"the database snapshot fails its integrity check: {verdict}")
        members: dict[str, bytes] = {DB_MEMBER: snapshot.read_bytes(), CONFIG_MEMBER: config_bytes}
        secrets: dict[str, dict[str, str]] = {}
        if with_secrets:
            for key, path in _secret_files(config).items():
                name = f"secrets/{key}"
                members[name] = path.read_bytes()
                secrets[key] = {"member": name, "path": str(path)}
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "created_at": rfc3339(utc_now()),
            "gateway_id": config.gateway_id, "agent_version": __version__, "schema_version": schema,
            "source_data_dir": str(data_dir), "counts": _counts(snapshot), "secrets": secrets,
            "files": {name: {"sha256": _sha256(data), "size": len(data)} for name, data in members.items()},
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, data in [(MANIFEST, json.dumps(manifest, indent=2).encode()), *members.items()]:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
                tar.addfile(info, io.BytesIO(data))
        os.replace(partial, out)
    return ExportResult(out, manifest, out.stat().st_size)


@contextmanager
def _open_archive(path: Path) -> Iterator[tuple[dict[str, Any], dict[str, bytes]]]:
    """The manifest and every file it lists, checked against their sha256; nothing else is read."""
    try:
        tar = tarfile.open(path, mode="r:gz")  # noqa: SIM115 - closed by the `with tar:` below
    except (OSError, tarfile.TarError) as exc:
        raise ArchiveError(f"{path}: not a readable edge-agent backup ({exc})") from None
    with tar:
        def member(name: str) -> bytes:
            try:
                handle = tar.extractfile(name)
            except KeyError:
                handle = None
            if handle is None:
                raise ArchiveError(f"{path}: {name} is missing")
            return handle.read()

        try:
            manifest = json.loads(member(MANIFEST))
        except ValueError as exc:
            raise ArchiveError(f"{path}: {MANIFEST} is not JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArchiveError(f"{path}: not an edge-agent backup (no {FORMAT} manifest)")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ArchiveError(f"{path}: backup format {manifest.get('format_version')}; this release "
                               f"reads format {FORMAT_VERSION}")
        files: dict[str, bytes] = {}
        for name, meta in (manifest.get("files") or {}).items():
            data = member(name)
            if _sha256(data) != meta.get("sha256") or len(data) != meta.get("size"):
                raise ArchiveError(f"{path}: {name} is damaged (sha256 does not match the manifest)")
            files[name] = data
        for needed in (DB_MEMBER, CONFIG_MEMBER):
            if needed not in files:
                raise ArchiveError(f"{path}: the manifest lists no {needed}")
        yield manifest, files


def read_manifest(path: Path) -> dict[str, Any]:
    with _open_archive(path) as (manifest, _):
        return manifest


def _holds_data(db_path: Path) -> bool:
    if not db_path.exists():
        return False
    with Store(db_path.parent, read_only=True) as store:
        return store.holds_data()


def _set_aside(db_path: Path) -> Path:
    """Folds the WAL into the database file, then renames it: billing data is never deleted."""
    fold_wal(db_path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = db_path.with_name(f"{db_path.name}.before-import-{stamp}")
    os.replace(db_path, kept)
    return kept


def _own_like(path: Path, model: Path) -> None:
    """Run as root, files take the owner of their directory (the agent's user)."""
    if os.geteuid() != 0:
        return
    st = model.stat()
    os.chown(path, st.st_uid, st.st_gid)


def _write_new(path: Path, data: bytes, *, mode: int, force: bool) -> bool:
    if path.exists():
        if path.read_bytes() == data:
            return False
        if not force:
            raise ImportRefused(f"{path} exists and differs from the archive's; --force replaces it")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return True


def import_state(archive: Path, *, data_dir: Path, force: bool = False, config_out: Path | None = None,
                 restore_secrets: bool = False) -> ImportResult:
    """Puts the archive's database into `data_dir` (and its config at `config_out`).

    Refuses (ArchiveError / SchemaTooNewError / ImportRefused) before changing anything when the
    archive is damaged, its schema is newer than this release, or `data_dir` already holds data
    and `force` is not given. The caller makes sure no agent runs on `data_dir`.
    """
    with _open_archive(archive) as (manifest, files):
        schema = manifest.get("schema_version")
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"{archive}: its database has schema version {schema}, newer than this release knows "
                f"({SCHEMA_VERSION}); install the edge-agent release the backup came from "
                f"({manifest.get('agent_version')}) or a newer one, then import again")
        db_path = data_dir / DB_FILE
        if _holds_data(db_path) and not force:
            raise ImportRefused(f"{data_dir} already holds a database with data; --force keeps it as "
                                f"{DB_FILE}.before-import-<time> and imports anyway")
        if config_out is not None and config_out.exists() and config_out.read_bytes() != files[CONFIG_MEMBER] \
                and not force:
            raise ImportRefused(f"{config_out} exists and differs from the archive's; --force replaces it")
        if restore_secrets and not force:
            for entry in (manifest.get("secrets") or {}).values():
                target = Path(entry["path"])
                if target.exists() and target.read_bytes() != files[entry["member"]]:
                    raise ImportRefused(f"{target} exists and differs from the archive's; --force replaces it")
        with tempfile.TemporaryDirectory(prefix=".import-", dir=_existing_parent(data_dir)) as tmp:
            staged = Path(tmp) / DB_FILE
            staged.write_bytes(files[DB_MEMBER])
            verdict, found_schema = check_file(staged)
            if verdict != "ok" or found_schema != schema:
                raise ArchiveError(f"{archive}: the database fails its checks ({verdict}, schema {found_schema})")
            data_dir.mkdir(parents=True, exist_ok=True)
            kept = _set_aside(db_path) if db_path.exists() else None
            for suffix in ("-wal", "-shm"):
                Path(f"{db_path}{suffix}").unlink(missing_ok=True)
            with open(staged, "rb+") as handle:
                os.fsync(handle.fileno())
            shutil.move(str(staged), db_path)
            os.chmod(db_path, 0o640)
            _own_like(db_path, data_dir)
        config_written = None
        if config_out is not None and _write_new(config_out, files[CONFIG_MEMBER], mode=0o640, force=True):
            config_written = config_out
        written: list[Path] = []
        if restore_secrets:
            for key, entry in (manifest.get("secrets") or {}).items():
                target = Path(entry["path"])
                mode = 0o644 if key.endswith("ca_file") else 0o600
                if _write_new(target, files[entry["member"]], mode=mode, force=force):
                    _own_like(target, data_dir)
                    written.append(target)
    return ImportResult(data_dir, manifest, kept, config_written, tuple(written))


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path
