"""One agent per data directory: an exclusive flock on `<data_dir>/edge-agent.lock`.

`edge-agent run` takes it before it opens the store, a bus, a reader or the broker, and holds it
for its lifetime; the kernel drops it when the process dies (SIGKILL and power cuts included), so
a lock is never stale. The holder writes its PID into the file so the refused one can name it.
Commands that write the store (migrate, import) take the same lock for their duration; read-only
ones (status, sessions, outbox) never touch it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "edge-agent.lock"


class DataDirBusy(RuntimeError):
    """Another process holds the data directory's lock."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.data_dir = data_dir
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process (PID not readable)"
        super().__init__(f"{data_dir} is in use by {holder}: another edge-agent runs on this data directory "
                         f"(lock {data_dir / LOCK_FILE})")


class DataDirLock:
    """An open, locked lock file; release() (or process exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_pid(fd: int) -> int | None:
    # The holder writes its PID right after it gets the lock: wait a moment for it.
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            text = os.pread(fd, 32, 0).decode("ascii").strip()
            if text:
                return int(text)
        time.sleep(0.05)
    return None


def lock_data_dir(data_dir: str | Path) -> DataDirLock:
    """Locks `data_dir` (created if missing) without waiting; raises DataDirBusy naming the
    holder's PID, or OSError when the lock file cannot be opened."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    created = not path.exists()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        # Made by root (an import run with sudo) and not writable for us: a read-only
        # descriptor still takes the lock, only the PID cannot be written.
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder_pid(fd)
        os.close(fd)
        raise DataDirBusy(data_dir, pid) from None
    except BaseException:
        os.close(fd)
        raise
    if created:
        _own_like_directory(path, data_dir)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return DataDirLock(path, fd)


@contextlib.contextmanager
def data_dir_locked(data_dir: str | Path) -> Iterator[DataDirLock | None]:
    """For the store-writing CLI commands: the lock while they work (None when `data_dir` does
    not exist yet: no agent can be running on it, and it is left for the command to create)."""
    if not Path(data_dir).is_dir():
        yield None
        return
    with lock_data_dir(data_dir) as lock:
        yield lock


def _own_like_directory(path: Path, data_dir: Path) -> None:
    """Root (an import or migrate with sudo) creating the lock file hands it to the data
    directory's owner, so that the agent, running as that user, can write its PID into it."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        info = data_dir.stat()
        os.chown(path, info.st_uid, info.st_gid)
