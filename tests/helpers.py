"""Plain helpers the test files share: `from helpers import run, wait_for, edge_agent, cli, ...`.

The shared fixtures (simulated devices that must be shut down: SimChargerThread, SocatPair) are in
conftest.py, which pytest loads by itself; test files do not import it. Both live in tests/, which
pytest puts on sys.path for the test files.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from hardware_sim.site import SimulatedSite

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
ENTRY = Path(sys.executable).with_name("edge-agent")  # the venv's console script
# The installed `edge-agent` command (the real entry point), or `python -m edge_agent` without one.
CLI = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "edge_agent"]


def run(coro: Coroutine[Any, Any, T], limit: float = 60) -> T:
    """Runs `coro` on a fresh event loop; a test that hangs fails after `limit` seconds instead."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


def wait_for(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Polls `check` until it is true or `timeout` seconds have passed; its last answer as a bool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


def edge_agent(*args: Any, timeout: float | None = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`python -m edge_agent ARGS` as its own process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "edge_agent", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def cli(*args: Any, timeout: float | None = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`edge-agent ARGS` through CLI as its own process, output captured as text."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def lists_applied(site: SimulatedSite) -> bool:
    """The agent reports version 1 of the user and tariff lists that site.publish_lists() sent."""
    return site.cloud.wait_for(lambda: (site.cloud.state or {}).get("users_version") == 1
                               and site.cloud.state.get("tariffs_version") == 1, 15)
