"""The systemd watchdog: fed by the agent only while it is healthy.

The proof runs the real agent process against a simulated site with NOTIFY_SOCKET pointing at a
socket this test reads (as systemd would), blocks the agent's event loop on purpose through the
test-only SIGUSR2 hook, and sees the WATCHDOG=1 pings stop for exactly that long.
"""
import asyncio
import itertools
import logging
import os
import re
import signal
import socket
import threading
import time

import pytest

from edge_agent.watchdog import BLOCK_LOOP_ENV, Watchdog, _polls_progress, sd_notify, watchdog_interval_s
from hardware_sim.site import SimulatedSite


class NotifySocket:
    """What systemd listens on: a datagram socket; keeps (monotonic time, message) pairs."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def pings(self, after=0.0, before=float("inf")):
        return [t for t, m in self.messages if m == "WATCHDOG=1" and after <= t < before]

    def wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self):
        self._stop.set()
        self.sock.close()
        self._thread.join(2)


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_a_blocked_event_loop_stops_the_watchdog_pings(tmp_path, notify, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")  # WatchdogSec=3: a ping every 1.5 s while healthy
    monkeypatch.setenv(BLOCK_LOOP_ENV, "6")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with SimulatedSite(tmp_path / "site") as site:
        assert notify.wait(lambda: any(m == "READY=1" for _, m in notify.messages), 20), site.agent_log_tail()
        assert notify.wait(lambda: len(notify.pings()) >= 3, 15), site.agent_log_tail()
        steady = notify.pings()
        gaps = [b - a for a, b in itertools.pairwise(steady)]
        assert all(0.7 < g < 3.0 for g in gaps), gaps  # never as late as WatchdogSec
        assert any(m.startswith("STATUS=cloud ") for _, m in notify.messages)

        blocked_at = time.monotonic()
        os.kill(site.agent.pid, signal.SIGUSR2)
        assert notify.wait(lambda: len(notify.pings(after=blocked_at + 6.0)) >= 3, 20), site.agent_log_tail()
        during = notify.pings(after=blocked_at + 0.3, before=blocked_at + 5.8)
        assert during == [], f"pinged while the loop was blocked: {[round(t - blocked_at, 2) for t in during]}"
        around = notify.pings(after=blocked_at - 3)
        assert max(b - a for a, b in itertools.pairwise(around)) > 5.5
        assert site.agent.poll() is None, "the agent itself goes on; systemd would have restarted it"
        log = site.agent_log.read_text()
    assert log.count("test hook: blocking the event loop") == 1
    # The first probe after the block measures it (about 6 s late); the next one is healthy again.
    assert re.search(r"unhealthy \(not feeding the systemd watchdog\): event loop blocked or overloaded: "
                     r"[5-9]\.\d s late", log), log[-3000:]
    assert "healthy again" in log
    assert any(m == "STOPPING=1" for _, m in notify.messages), "a clean stop says so"


# -- the decision logic, at its seam (a fake clock and fake checks) ----------------------------------


def run_steps(dog, steps):
    return [dog.step(now, lag) for now, lag in steps]


def test_pings_at_half_the_interval_only_while_every_check_passes(caplog):
    caplog.set_level(logging.INFO, logger="edge_agent.watchdog")
    sent = []
    broken = {"now": False}
    dog = Watchdog(checks=[lambda now: "the clock loop has not run for 40 s" if broken["now"] else None],
                   interval_s=10.0, notify=lambda m: sent.append(m) or True)
    assert dog.probe_every_s == 1.0
    for now in range(0, 12):
        dog.step(float(now), 0.0)
    assert sent.count("WATCHDOG=1") == 3  # at 0, 5 and 10 s
    broken["now"] = True
    for now in range(12, 30):
        dog.step(float(now), 0.0)
    assert sent.count("WATCHDOG=1") == 3, "no ping while a check fails"
    broken["now"] = False
    dog.step(30.0, 0.0)
    assert sent.count("WATCHDOG=1") == 4, "pings resume at once when healthy again"
    assert caplog.text.count("unhealthy") == 1 and caplog.text.count("healthy again") == 1


def test_a_late_loop_is_unhealthy_and_a_failing_check_does_not_crash_it():
    sent = []

    def exploding(now):
        raise RuntimeError("boom")

    dog = Watchdog(checks=[exploding], interval_s=30.0, notify=lambda m: sent.append(m) or True)
    health = dog.step(0.0, 0.0)
    assert not health.ok and "boom" in health.problems[0]
    dog = Watchdog(checks=[], interval_s=30.0, notify=lambda m: sent.append(m) or True)
    assert dog.lag_limit_s == 5.0
    assert not dog.step(0.0, 7.5).ok
    assert dog.step(1.0, 0.01).ok


def test_the_watchdog_interval_comes_from_systemd_only_for_this_process():
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert watchdog_interval_s(env) == 30.0
    assert watchdog_interval_s({**env, "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval_s({**env, "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) is None
    assert watchdog_interval_s({**env, "WATCHDOG_USEC": "0"}) is None


class _Machine:
    def __init__(self):
        self.reading = object()


class _Evse:
    def __init__(self):
        self.machine = _Machine()
        self.failed_polls = 0


class _Charger:
    evse_id, timeout_s, retries = "1", 1.0, 1


class _Site:
    def __init__(self):
        self.evses = {"1": _Evse()}
        self.config = type("C", (), {"chargers": [_Charger()],
                                     "sessions": type("S", (), {"poll_interval_s": 1.0})()})()


def test_a_poll_loop_without_progress_is_a_problem_but_a_dead_charger_is_not():
    site = _Site()
    check = _polls_progress(site, started=0.0)
    limit = max(60.0, 20 * (1.0 + 4 * 1.0 * 2))
    assert check(1.0) is None
    for t in range(2, 400, 5):  # a dead charger: every poll fails, failed_polls grows
        site.evses["1"].failed_polls += 1
        assert check(float(t)) is None
    site.evses["1"].machine.reading = object()  # a good reading again
    assert check(400.0) is None
    assert check(400.0 + limit - 1) is None
    problem = check(400.0 + limit + 1)
    assert problem and "EVSE 1" in problem


def test_the_tasks_check_notices_a_dead_task():
    from edge_agent.watchdog import _tasks_alive

    async def scenario():
        async def forever():
            await asyncio.sleep(3600)

        async def dies():
            raise RuntimeError("poll loop crashed")

        alive = asyncio.create_task(forever(), name="tick")
        doomed = asyncio.create_task(dies(), name="poll-1")
        check = _tasks_alive(lambda name: name == "tick" or name.startswith("poll-"))
        first = check(0.0)
        await asyncio.sleep(0.05)
        second = check(1.0)
        alive.cancel()
        doomed.exception()
        return first, second

    first, second = asyncio.run(scenario())
    assert first is None and second == "task(s) ended: poll-1"


def test_a_notify_socket_nobody_reads_never_blocks_the_sender(tmp_path):
    # A full receive buffer (systemd busy, or a listener that stopped reading) once hung the
    # agent's event loop inside sendto(); the message is dropped instead.
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unread:
        unread.bind(path)
        sent: list[bool] = []
        sender = threading.Thread(target=lambda: sent.extend(
            sd_notify(f"STATUS=message {n}", environ={"NOTIFY_SOCKET": path}) for n in range(5000)), daemon=True)
        sender.start()
        sender.join(10)
        assert not sender.is_alive(), f"sd_notify blocked after {len(sent)} messages"
        assert sent[0] is True and sent[-1] is False, (sent.count(True), sent.count(False))
