"""SD card care: what the agent writes to disk, measured from /proc/<pid>/io write_bytes of the
real agent process on a simulated site (mosquitto, Modbus TCP and RTU chargers, RDM6300 readers).

As in production, the live status file goes to tmpfs (EDGE_AGENT_RUNTIME_DIR on /dev/shm, as
/run/edge-agent under systemd) and the log goes to a pipe (journald under systemd); the pipe's bytes
are counted separately as what journald receives. write_bytes counts the pages a process dirties on
block storage (4 KiB each, again after every fsync), so it is what reaches the SD card before the
card's own write amplification.

Run it alone for the figures in docs/operations.md (longer idle time, more sessions):
    .venv/bin/python tests/test_write_budget.py --idle 600 --sessions 10 --charging 120
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hardware_sim.site import SimulatedSite

KARI = "04A2B3C4D5"
SAMPLE_INTERVAL_S = 5.0  # the smallest meter_values_interval_s; production uses 60

# The budget (docs/operations.md): what the design promises to stay inside.
BUDGET_IDLE_BYTES_PER_HOUR = 1 << 20  # 1 MiB: an idle gateway writes (next to) nothing
BUDGET_BYTES_PER_SESSION = 256 << 10  # 256 KiB fixed cost of one session (start, end, events, acks)
BUDGET_BYTES_PER_SAMPLE = 56 << 10  # one meter sample + its meter_values event + the ack
BUDGET_LOG_BYTES_PER_SESSION = 2048  # INFO lines to journald per session
BUDGET_LOG_BYTES_PER_IDLE_HOUR = 16 << 10


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


class LogPipe:
    """Reads the agent's stdout/stderr like journald would, counting bytes and keeping lines."""

    def __init__(self, stream) -> None:
        self.bytes = 0
        self.lines: list[str] = []
        self._stream = stream
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for raw in iter(self._stream.readline, b""):
            self.bytes += len(raw)
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))


def samples_per_session(db: Path) -> list[int]:
    """Meter samples of each session, oldest first (read-only: the agent is running)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [n for _, n in conn.execute(
            "SELECT s.started_at, count(m.rowid) FROM sessions s LEFT JOIN samples m ON m.session_id = s.id "
            "GROUP BY s.id ORDER BY s.started_at")]
    finally:
        conn.close()


def start_measured_agent(site: SimulatedSite) -> LogPipe:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    site.agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(site.config_path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return LogPipe(site.agent.stdout)


def one_session(site: SimulatedSite, seconds: float) -> None:
    ended_before = len([e for e in site.cloud.unique_events if e["type"] == "session_ended"])
    site.tap("1", KARI)
    time.sleep(0.3)
    site.plug_and_charge("1")
    assert site.wait(lambda: site.chargers["1"].state == "C", 10)
    time.sleep(seconds)
    site.unplug("1")
    assert site.cloud.wait_for(
        lambda: len([e for e in site.cloud.unique_events if e["type"] == "session_ended"]) == ended_before + 1, 15)
    time.sleep(2.5)  # the debounce window of the reader, and the acks of the last events


def settle(site: SimulatedSite) -> None:
    assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("outbox_pending") == 0, 20)
    time.sleep(2.0)


def measure(workdir: Path, *, idle_s: float, sessions: int, charging_s: float) -> dict[str, float]:
    runtime = Path(tempfile.mkdtemp(prefix="edge-agent-run-", dir="/dev/shm"))
    os.environ["EDGE_AGENT_RUNTIME_DIR"] = str(runtime)  # tmpfs, like /run/edge-agent
    try:
        site = SimulatedSite(workdir, speed=60, poll_interval_s=1.0, meter_values_interval_s=SAMPLE_INTERVAL_S,
                             ack_timeout_s=10)
        site.start(agent=False)
        try:
            log = start_measured_agent(site)
            pid = site.agent.pid
            site.publish_lists()
            assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("tariffs_version") == 1, 20)
            settle(site)
            figures: dict[str, float] = {"startup_bytes": write_bytes(pid)}

            # Idle: chargers polled every second, status heartbeats, the live status file on tmpfs.
            w0, l0, t0 = write_bytes(pid), log.bytes, time.monotonic()
            time.sleep(idle_s)
            idle_elapsed = time.monotonic() - t0
            figures["idle_bytes_per_hour"] = (write_bytes(pid) - w0) / idle_elapsed * 3600
            figures["idle_log_bytes_per_hour"] = (log.bytes - l0) / idle_elapsed * 3600

            # Short sessions: the fixed cost of one session (rows, events, their acks).
            w0, l0, t0 = write_bytes(pid), log.bytes, time.monotonic()
            for _ in range(sessions):
                one_session(site, 2.0)
            settle(site)
            idle_share = figures["idle_bytes_per_hour"] * (time.monotonic() - t0) / 3600
            figures["bytes_per_session"] = (write_bytes(pid) - w0 - idle_share) / sessions
            figures["log_bytes_per_session"] = (log.bytes - l0) / sessions

            # One long session: the cost of each meter sample (sample row + meter_values event + ack).
            w0, t0 = write_bytes(pid), time.monotonic()
            one_session(site, charging_s)
            settle(site)
            elapsed = time.monotonic() - t0
            counts = samples_per_session(site.data_dir / "edge-agent.db")
            short_avg = sum(counts[:-1]) / len(counts[:-1])
            extra_samples = counts[-1] - short_avg
            long_cost = write_bytes(pid) - w0 - figures["idle_bytes_per_hour"] * elapsed / 3600
            figures["samples_short_session"] = short_avg
            figures["samples_long_session"] = counts[-1]
            figures["bytes_per_sample"] = max(0.0, long_cost - figures["bytes_per_session"]) / extra_samples
            figures["bytes_per_charging_hour_at_60s"] = figures["bytes_per_sample"] * 60

            # Malformed cloud messages: each is counted in the database (a needless write per message).
            w0 = write_bytes(pid)
            for n in range(20):
                site.cloud.publish_raw("ack", b"not json %d" % n)
            assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("rejected_messages", 0) >= 20, 15)
            time.sleep(1.0)
            figures["bytes_per_rejected_message"] = (write_bytes(pid) - w0) / 20
            figures["log_lines_total"] = len(log.lines)
            site.stop_agent()
            return figures
        finally:
            site.close()
    finally:
        os.environ.pop("EDGE_AGENT_RUNTIME_DIR", None)
        for leftover in runtime.iterdir():
            leftover.unlink()
        runtime.rmdir()


def test_write_budget(tmp_path, capsys):
    figures = measure(tmp_path / "site", idle_s=30, sessions=3, charging_s=30)
    with capsys.disabled():
        print("\nwrite budget:", json.dumps({k: round(v) for k, v in figures.items()}, indent=2))
    assert figures["idle_bytes_per_hour"] <= BUDGET_IDLE_BYTES_PER_HOUR, figures
    assert figures["idle_log_bytes_per_hour"] <= BUDGET_LOG_BYTES_PER_IDLE_HOUR, figures
    assert 0 < figures["bytes_per_session"] <= BUDGET_BYTES_PER_SESSION, figures
    assert figures["samples_long_session"] >= figures["samples_short_session"] + 4, figures
    assert 0 < figures["bytes_per_sample"] <= BUDGET_BYTES_PER_SAMPLE, figures
    assert figures["log_bytes_per_session"] <= BUDGET_LOG_BYTES_PER_SESSION, figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=float, default=300)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--charging", type=float, default=120)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-agent-budget-") as tmp:
        result = measure(Path(tmp) / "site", idle_s=opts.idle, sessions=opts.sessions, charging_s=opts.charging)
    print(json.dumps({k: round(v) for k, v in result.items()}, indent=2))
