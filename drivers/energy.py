"""A lifetime energy counter for chargers whose map has only a per-session counter (ABB Terra AC, Etrel INCH).

The cloud contract wants ``energy_wh`` to be a lifetime register that never decreases. Such a
charger's session register starts again at 0 for every session, so the agent adds it up:

    counter = SessionEnergyLifetime(path=data_dir / "energy-evse-1.json")
    lifetime_wh = counter.update(session_wh)      # after every reading of the session register

A reading at or above the previous one adds the difference; a reading below it means the
charger started a new session, and the whole new reading is added. The state that makes this
work is the pair (lifetime, last session reading); it is written to `path` atomically (temp file,
fsync, rename, fsync of the folder), at most every `save_every_s` while it grows and at once
when a new session starts. After a restart the same pair is read back, so the next reading
continues exactly where the saved one left off: a save that came a few seconds before a crash
loses nothing as long as the charger's session register did not start again meanwhile.

Drivers never import the store: the file is the counter's own. A lead that prefers the store
can leave `path` None and persist `state()` / `restore()` instead.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("drivers.energy")

_FORMAT = 1


class CounterFileError(ValueError):
    """The counter's file exists but cannot be used; names the file."""


class SessionEnergyLifetime:
    """Never-decreasing lifetime Wh built from a charger's session energy register."""

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        start_wh: float = 0.0,
        save_every_s: float = 10.0,
        name: str = "",
    ) -> None:
        if start_wh < 0 or not math.isfinite(start_wh):
            raise ValueError(f"{name}: start_wh must be a finite number >= 0, got {start_wh}")
        self.path = Path(path) if path is not None else None
        self.name = name or (str(self.path) if self.path else "lifetime counter")
        self.save_every_s = save_every_s
        self._lifetime = float(start_wh)
        self._session: float | None = None
        self._saved: tuple[float, float | None] | None = None
        self._saved_at = 0.0
        self.sessions_seen = 0
        if self.path is not None and self.path.exists():
            self.restore(self._read_file(self.path))
            self._saved = (self._lifetime, self._session)

    @property
    def value_wh(self) -> int:
        """The lifetime counter in whole Wh (rounded down: never more than measured)."""
        return math.floor(self._lifetime + 1e-9)

    def update(self, session_wh: float, *, now: float | None = None) -> int:
        """Feed one reading of the session register; returns the lifetime counter in Wh."""
        if not math.isfinite(session_wh) or session_wh < 0:
            raise ValueError(f"{self.name}: session energy {session_wh!r} is not a reading")
        new_session = False
        if self._session is None:
            # The first reading ever: what this session delivered before we looked is unknown.
            pass
        elif session_wh >= self._session:
            self._lifetime += session_wh - self._session
        else:
            self._lifetime += session_wh
            new_session = True
            self.sessions_seen += 1
        self._session = float(session_wh)
        now = time.monotonic() if now is None else now
        if self.path is not None and (new_session or self._saved is None or now - self._saved_at >= self.save_every_s):
            self.flush(now=now)
        return self.value_wh

    def state(self) -> dict[str, Any]:
        """What must survive a restart, as JSON-able data."""
        return {"format": _FORMAT, "lifetime_wh": self._lifetime, "session_wh": self._session}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a saved `state()`. Never lowers the counter."""
        try:
            if state.get("format") != _FORMAT:
                raise ValueError(f"format {state.get('format')!r}, expected {_FORMAT}")
            lifetime = float(state["lifetime_wh"])
            session = state["session_wh"]
            session = None if session is None else float(session)
            if not math.isfinite(lifetime) or lifetime < 0 or (session is not None and (not math.isfinite(session) or session < 0)):
                raise ValueError("negative or non-finite numbers")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CounterFileError(f"{self.name}: saved counter state is unusable: {exc}") from None
        if lifetime < self._lifetime:
            log.warning("%s: saved lifetime %.0f Wh is below %.0f Wh; keeping the higher", self.name, lifetime, self._lifetime)
            return
        self._lifetime, self._session = lifetime, session

    def flush(self, *, now: float | None = None) -> None:
        """Write the state to `path` now (atomically), if it changed since the last write."""
        if self.path is None:
            return
        current = (self._lifetime, self._session)
        if current == self._saved:
            return
        data = json.dumps(self.state()).encode()
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._saved = current
        self._saved_at = time.monotonic() if now is None else now

    @staticmethod
    def _read_file(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CounterFileError(f"{path}: cannot read the lifetime counter: {exc}") from None
        if not isinstance(data, dict):
            raise CounterFileError(f"{path}: not a lifetime counter (expected a JSON object)")
        return data
