"""The running agent's live state as a small JSON file on tmpfs, for `edge-agent status`.

The agent rewrites it once a second (a temporary file renamed over the old one, so a reader never
sees half a file) in its runtime directory: `$EDGE_AGENT_RUNTIME_DIR`, else systemd's
`$RUNTIME_DIRECTORY` (/run/edge-agent, a tmpfs), else a directory per data directory under
/dev/shm (the agent run by hand), else `<data_dir>/run`. Never the SD card if it can be helped: the
same file there costs about 26 MB of writes an idle hour (measured, tests/test_write_budget.py).
The CLI looks in all those places and keeps the file that belongs to the data directory it was
asked about.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

__all__ = [
    "STALE_AFTER_S",
    "AgentStatus",
    "RuntimeStatusWriter",
    "agent_runtime_dir",
    "publish_runtime_status",
    "read_agent_status",
    "status_file_candidates",
    "writer_for",
]

log = logging.getLogger("edge_agent.runtime_status")

STATUS_FILE = "status.json"
RUNTIME_DIR_ENV = "EDGE_AGENT_RUNTIME_DIR"
SYSTEM_RUNTIME_DIR = Path("/run/edge-agent")  # RuntimeDirectory=edge-agent in the unit
SHM = Path("/dev/shm")
STALE_AFTER_S = 5.0  # a file not rewritten for this long: the agent is gone or stuck
WRITE_EVERY_S = 1.0


def agent_runtime_dir(data_dir: str | Path) -> Path:
    """Where the agent writes its status file."""
    explicit = os.environ.get(RUNTIME_DIR_ENV)
    if explicit:
        return Path(explicit)
    systemd = os.environ.get("RUNTIME_DIRECTORY")  # may list several, colon-separated
    if systemd:
        return Path(systemd.split(":")[0])
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        return _shm_dir(data_dir)
    return Path(data_dir) / "run"


def _shm_dir(data_dir: str | Path) -> Path:
    key = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
    return SHM / f"edge-agent-{os.getuid()}" / key


def status_file_candidates(data_dir: str | Path) -> list[Path]:
    """Where the CLI looks, most specific first (its environment is not the service's)."""
    paths = []
    if os.environ.get(RUNTIME_DIR_ENV):
        paths.append(Path(os.environ[RUNTIME_DIR_ENV]) / STATUS_FILE)
    paths.append(SYSTEM_RUNTIME_DIR / STATUS_FILE)
    key = _shm_dir(data_dir).name
    with contextlib.suppress(OSError):
        paths += sorted(SHM.glob(f"edge-agent-*/{key}/{STATUS_FILE}"))  # any user's agent
    paths.append(Path(data_dir) / "run" / STATUS_FILE)
    return list(dict.fromkeys(paths))


class RuntimeStatusWriter:
    """Called on every tick of the agent's clock; writes at most once per `interval_s`.

    Never raises: a full or missing runtime directory costs the live view, not charging. A
    failure is logged once and its recovery once.
    """

    def __init__(self, path: Path, *, data_dir: Path, interval_s: float = WRITE_EVERY_S) -> None:
        self.path = path
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.last_tick: float | None = None  # monotonic; the watchdog checks the clock loop runs
        self.written: int = 0
        self.sections: dict[str, Callable[[], Any]] = {}  # extra top-level keys, e.g. health
        self._written_at: float | None = None
        self._failing = False

    def tick(self, now: float, produce: Callable[[], dict[str, Any]]) -> None:
        self.last_tick = now
        if self._written_at is not None and now - self._written_at < self.interval_s:
            return
        self._written_at = now
        try:
            content = dict(produce())
            for key, section in self.sections.items():
                content[key] = section()
            self.write(content)
        except OSError as exc:
            if not self._failing:
                log.warning("runtime status %s cannot be written (edge-agent status shows nothing live): %s",
                            self.path, exc)
            self._failing = True
            return
        except Exception:  # the live view must never stop the clock loop
            if not self._failing:
                log.exception("runtime status could not be produced")
            self._failing = True
            return
        if self._failing:
            log.info("runtime status %s written again", self.path)
            self._failing = False

    def write(self, content: dict[str, Any]) -> None:
        body = {**content, "pid": os.getpid(), "data_dir": str(self.data_dir), "written_at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(body, separators=(",", ":"), default=str), encoding="utf-8")
        os.replace(temporary, self.path)
        self.written += 1

    def remove(self) -> None:
        """At a clean stop: nobody should read a dead agent's state as live."""
        try:
            self.path.unlink()
        except OSError:
            pass


_writers: WeakKeyDictionary[Any, RuntimeStatusWriter] = WeakKeyDictionary()


def writer_for(site: Any) -> RuntimeStatusWriter:
    """The one writer of a Site (made on first use)."""
    writer = _writers.get(site)
    if writer is None:
        data_dir = Path(site.config.data_dir).resolve()
        writer = RuntimeStatusWriter(agent_runtime_dir(data_dir) / STATUS_FILE, data_dir=data_dir)
        _writers[site] = writer
    return writer


def publish_runtime_status(site: Any, now: float) -> None:
    """The call in Site._tick_loop: the file is rewritten once a second from site.runtime_status()."""
    writer_for(site).tick(now, site.runtime_status)


# -- the reading side (the CLI) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentStatus:
    path: Path
    content: dict[str, Any]
    age_s: float  # seconds since the agent last wrote it
    running: bool  # fresh, and its process exists


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process (the service's), alive
    return True


def _same_dir(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def read_agent_status(data_dir: str | Path, *, stale_after_s: float = STALE_AFTER_S) -> AgentStatus | None:
    """The newest status file written by an agent on `data_dir`, or None if there is none."""
    best: AgentStatus | None = None
    for path in status_file_candidates(data_dir):
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(content, dict) or not _same_dir(content.get("data_dir", ""), data_dir):
            continue
        written = content.get("written_at")
        age = time.time() - float(written) if isinstance(written, (int, float)) else float("inf")
        status = AgentStatus(path, content, age, age <= stale_after_s and _pid_alive(content.get("pid")))
        if best is None or status.age_s < best.age_s:
            best = status
    return best
