"""systemd's watchdog, fed only while the agent is healthy.

With `WatchdogSec=` systemd sets WATCHDOG_USEC; unless "WATCHDOG=1" arrives on NOTIFY_SOCKET within
that time it kills the agent and starts it again (Restart=always). A ping is sent at half the
interval and only if every health check passes:

- the event loop is not blocked: the probe's own sleep came back on time (a blocked loop sends
  nothing at all, so systemd notices even a hard hang);
- the agent's tasks (clock, outbox, one poll loop per charger) are alive;
- the clock loop ticked recently, and each charger's poll loop made progress (a reading, or a
  failed poll: a dead charger is not an unhealthy agent, a hung poll loop is);
- the data directory's file system is not read-only (an SD card remounted read-only after errors).

A cloud that is down is not a problem: charging goes on offline. Health changes are logged once
each way, and `edge-agent status` shows the current problems.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .runtime_status import writer_for

__all__ = ["Health", "HealthCheck", "Watchdog", "sd_notify", "watch", "watchdog_interval_s"]

log = logging.getLogger("edge_agent.watchdog")

# A check gets the monotonic time and returns a problem, or None when all is well.
HealthCheck = Callable[[float], "str | None"]

# Test-only: with this set to N, SIGUSR2 makes the event loop sleep N seconds (a hung loop on
# purpose). Never set by the unit or the installer.
BLOCK_LOOP_ENV = "EDGE_AGENT_TEST_BLOCK_LOOP_ON_SIGUSR2"

TICK_STALL_S = 30.0


def sd_notify(message: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """One sd_notify(3) datagram; False when there is no NOTIFY_SOCKET or it cannot be sent.

    Never blocks: it is sent from the event loop, and a receiver that does not read (its buffer
    full) must not stop charging; a message that cannot go at once is dropped."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """WatchdogSec as seconds, or None when systemd does not watch this process."""
    env = environ if environ is not None else os.environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or not env.get("NOTIFY_SOCKET"):
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we are a child of the watched one)
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


@dataclass(frozen=True, slots=True)
class Health:
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


class Watchdog:
    """Probes the loop every `probe_every_s`, runs the checks, pings systemd while healthy."""

    def __init__(self, *, checks: Sequence[HealthCheck], interval_s: float | None,
                 notify: Callable[[str], bool] = sd_notify, clock: Callable[[], float] = time.monotonic,
                 status_line: Callable[[], str] | None = None) -> None:
        self.checks = list(checks)
        self.interval_s = interval_s
        self.probe_every_s = min(1.0, interval_s / 4) if interval_s else 1.0
        # A loop this late is too sluggish to drive chargers (a one-off stall recovers at the next probe).
        self.lag_limit_s = max(1.0, min(5.0, interval_s / 6)) if interval_s else 5.0
        self._notify = notify
        self._clock = clock
        self._status_line = status_line
        self.health = Health(())
        self.pings = 0
        self.last_ping: float | None = None
        self._sent_status: str | None = None

    def evaluate(self, now: float, lag_s: float) -> Health:
        problems = []
        if lag_s > self.lag_limit_s:
            problems.append(f"event loop blocked or overloaded: {lag_s:.1f} s late (limit {self.lag_limit_s:g} s)")
        for check in self.checks:
            try:
                problem = check(now)
            except Exception as exc:  # noqa: BLE001 - a broken check is a problem, not a crash
                problem = f"health check {getattr(check, '__name__', check)!r} failed: {exc!r}"
            if problem:
                problems.append(problem)
        return Health(tuple(problems))

    def step(self, now: float, lag_s: float) -> Health:
        """One probe: evaluate, log a change of health once, ping when healthy and due."""
        health = self.evaluate(now, lag_s)
        if health.problems != self.health.problems:
            if health.problems:
                log.warning("unhealthy%s: %s", " (not feeding the systemd watchdog)" if self.interval_s else "",
                            "; ".join(health.problems))
            elif self.health.problems:
                log.info("healthy again")
        self.health = health
        if self.interval_s and health.ok and (self.last_ping is None or now - self.last_ping >= self.interval_s / 2):
            if self._notify("WATCHDOG=1"):
                self.pings += 1
            self.last_ping = now
        if self._status_line is not None:
            line = self._status_line() if health.ok else "unhealthy: " + "; ".join(health.problems)
            if line != self._sent_status:
                self._notify(f"STATUS={line}")
                self._sent_status = line
        return health

    async def run(self) -> None:
        while True:
            expected = self._clock() + self.probe_every_s
            await asyncio.sleep(self.probe_every_s)
            now = self._clock()
            self.step(now, max(0.0, now - expected))

    def section(self) -> dict[str, Any]:
        """For the runtime status file."""
        return {"ok": self.health.ok, "problems": list(self.health.problems),
                "watchdog_s": self.interval_s, "pings": self.pings}


# -- the checks for a Site ----------------------------------------------------------------------


def _tasks_alive(names: Callable[[str], bool]) -> HealthCheck:
    watched: list[asyncio.Task[Any]] = []

    def tasks_alive(now: float) -> str | None:
        if not watched:
            watched.extend(t for t in asyncio.all_tasks() if names(t.get_name()))
        dead = [t.get_name() for t in watched if t.done()]
        return f"task(s) ended: {', '.join(sorted(dead))}" if dead else None

    return tasks_alive


def _clock_loop_ticks(site: Any, started: float) -> HealthCheck:
    def clock_loop_ticks(now: float) -> str | None:
        last = writer_for(site).last_tick
        since = now - (last if last is not None else started)
        return f"the clock loop has not run for {since:.0f} s" if since > TICK_STALL_S else None

    return clock_loop_ticks


def _poll_stall_limit_s(charger_cfg: Any, poll_interval_s: float) -> float:
    # A dead charger's poll is a few timed-out requests with retries; far beyond that is a hang.
    one_poll: float = poll_interval_s + 4 * charger_cfg.timeout_s * (charger_cfg.retries + 1)
    return max(60.0, 20 * one_poll)


def _polls_progress(site: Any, started: float) -> HealthCheck:
    limits = {c.evse_id: _poll_stall_limit_s(c, site.config.sessions.poll_interval_s) for c in site.config.chargers}
    # The last reading object itself is kept (not its id()), so a new reading is never mistaken
    # for the old one; failed_polls grows with every failed poll of a dead charger.
    seen: dict[str, tuple[Any, int, float]] = {}

    def polls_progress(now: float) -> str | None:
        stalled = []
        for evse_id, evse in site.evses.items():
            mark = (evse.machine.reading, evse.failed_polls)
            previous = seen.get(evse_id)
            if previous is None or previous[0] is not mark[0] or previous[1] != mark[1]:
                seen[evse_id] = (*mark, now)
                continue
            since = now - max(previous[2], started)
            if since > limits.get(evse_id, 60.0):
                stalled.append(f"EVSE {evse_id} ({since:.0f} s)")
        return f"poll loop made no progress: {', '.join(stalled)}" if stalled else None

    return polls_progress


def _data_dir_writable(site: Any) -> HealthCheck:
    def data_dir_writable(now: float) -> str | None:
        path = site.store.path.parent
        try:
            flags = os.statvfs(path).f_flag
        except OSError as exc:
            return f"data directory {path}: {exc.strerror}"
        if flags & os.ST_RDONLY:
            return f"data directory {path} is on a read-only file system"
        return None

    return data_dir_writable


def site_checks(site: Any, *, started: float) -> list[HealthCheck]:
    return [
        _tasks_alive(lambda name: name in ("tick", "outbox") or name.startswith("poll-")),
        _clock_loop_ticks(site, started),
        _polls_progress(site, started),
        _data_dir_writable(site),
    ]


def _status_line(site: Any) -> Callable[[], str]:
    def line() -> str:
        evses = ", ".join(f"EVSE {e.evse_id} {e.machine.status()}" for e in site.evses.values())
        return f"cloud {'online' if site.link.connected else 'offline'}; {evses}"

    return line


def _arm_test_hook(loop: asyncio.AbstractEventLoop) -> None:
    value = os.environ.get(BLOCK_LOOP_ENV)
    if not value:
        return
    seconds = float(value)
    log.warning("test hook armed: SIGUSR2 blocks the event loop for %g s (%s is set)", seconds, BLOCK_LOOP_ENV)

    def block() -> None:
        log.warning("test hook: blocking the event loop for %g s", seconds)
        time.sleep(seconds)  # on purpose: this is the hang the watchdog must notice

    loop.add_signal_handler(signal.SIGUSR2, block)


async def watch(site: Any) -> None:
    """The watchdog task of Site.run: never returns, never raises (but for cancellation)."""
    interval = watchdog_interval_s()
    dog = Watchdog(checks=site_checks(site, started=time.monotonic()), interval_s=interval,
                   status_line=_status_line(site))
    writer = writer_for(site)
    writer.sections["health"] = dog.section
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        _arm_test_hook(asyncio.get_running_loop())
    if interval:
        log.info("systemd watchdog: %g s; fed every %g s while healthy", interval, interval / 2)
    try:
        while True:
            try:
                await dog.run()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watchdog must not take the agent down itself
                log.exception("watchdog probe failed; probing on")
                await asyncio.sleep(1.0)
    finally:
        sd_notify("STOPPING=1")
        writer.remove()
