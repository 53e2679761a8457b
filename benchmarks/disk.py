"""Disk: bytes the agent writes per charging session and per idle hour, from /proc/<pid>/io
write_bytes of the agent process (SQLite in WAL mode with synchronous=FULL, and its log).

Measured briefly and extrapolated: an idle stretch of wall time scaled to an hour; short sessions
and longer ones (with meter samples every meter_values_interval_s) to separate the fixed cost
of a session from the cost of each sample, then priced at the default interval of 60 s.

write_bytes counts pages the process dirtied (4 KiB each, counted once while dirty), not the
bytes it passed to write(); the file system's journal is not in it. SQLite writes a page to the
WAL and later once more into the database file at a checkpoint (every 1000 WAL pages): the
benchmark runs that checkpoint itself at the end of each stretch and counts its writes too, so
the figure is what the card sees in the long run.

    python -m benchmarks.disk [--quick]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import time
from pathlib import Path

from hardware_sim.site import SimulatedSite

from . import _common as c

KARI, OLA = "04A2B3C4D5", "0A1B2C3D4E"
POLL_S = 0.5
SAMPLE_S = 5.0  # the configuration minimum, so longer sessions have samples in seconds
DEFAULT_SAMPLE_S = 60.0
RUNTIME_DIR_ENV = "EDGE_AGENT_RUNTIME_DIR"  # edge_agent.runtime_status: where the live status file goes
TMPFS = "/dev/shm"


class DiskWatch:
    """write_bytes of the agent, its log's growth, and the checkpoint of what it left in the WAL."""

    def __init__(self, site: SimulatedSite) -> None:
        assert site.agent is not None
        self.site = site
        self.agent = c.ProcStats(site.agent.pid)
        self.me = c.ProcStats(os.getpid())
        self.db_path = site.data_dir / "edge-agent.db"

    def checkpoint(self) -> int:
        """Bytes this process wrote to checkpoint the agent's WAL into its database file."""
        before = self.me.write_bytes()
        with sqlite3.connect(self.db_path, timeout=10) as db:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy:
                db.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        db.close()
        return self.me.write_bytes() - before

    def start(self) -> None:
        self.checkpoint()
        # The checkpoint changed the WAL index (the mmapped -shm file); the agent's next read
        # transaction writes to that page once, which would count against the stretch.
        time.sleep(1.5)
        self.t0 = time.monotonic()
        self.w0 = self.agent.write_bytes()
        self.log0 = self.site.agent_log.stat().st_size

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.t0
        agent = self.agent.write_bytes() - self.w0
        log = self.site.agent_log.stat().st_size - self.log0
        work = self.checkpoint()
        idle = self.checkpoint()  # what a checkpoint with nothing to copy costs by itself (WAL index, headers)
        # Nothing written by the agent, nothing of its to copy: what is left is this process's own.
        checkpoint = max(0, work - idle) if agent > log else 0
        return {"seconds": elapsed, "agent": agent, "log": log, "checkpoint": checkpoint}


def db_count(path: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        value = int(db.execute(sql).fetchone()[0])
    db.close()
    return value


def one_session(site: SimulatedSite, token: str, charge_s: float) -> None:
    db = site.data_dir / "edge-agent.db"
    site.plug_and_charge("1")
    time.sleep(POLL_S * 2 + 0.1)
    site.readers["1"].present(token, repeats=1)
    if not site.wait(lambda: site.chargers["1"].state == "C", 10, 0.02):
        raise c.BenchError(f"no charging after the tap:\n{site.agent_log_tail()}")
    time.sleep(charge_s)
    site.unplug("1")
    if not c.wait_until(lambda: db_count(db, "SELECT count(*) FROM sessions WHERE status = 'active'") == 0, 10, 0.05):
        raise c.BenchError(f"the session did not end:\n{site.agent_log_tail()}")
    if not c.wait_until(lambda: db_count(db, "SELECT count(*) FROM outbox") == 0, 20, 0.05):
        raise c.BenchError(f"the cloud did not acknowledge the session:\n{site.agent_log_tail()}")


def sessions(site: SimulatedSite, watch: DiskWatch, count: int, charge_s: float) -> dict[str, float]:
    watch.start()
    samples0 = db_count(watch.db_path, "SELECT count(*) FROM samples")
    for i in range(count):
        one_session(site, KARI if i % 2 == 0 else OLA, charge_s)
    out = watch.stop()
    out["samples"] = (db_count(watch.db_path, "SELECT count(*) FROM samples") - samples0) / count
    out["count"] = count
    return out


def run(result: c.Result, args: argparse.Namespace) -> None:
    idle_s, short_n, long_n, long_s = (10.0, 2, 1, 11.0) if args.quick else (60.0, 6, 2, 21.0)
    work = c.scratch_dir("disk")
    runtime_dir = Path(TMPFS) / f"edge-agent-bench-{os.getpid()}"
    site = SimulatedSite(work / "site", gateway_id="gw-disk", speed=1, poll_interval_s=POLL_S,
                         meter_values_interval_s=SAMPLE_S, ack_timeout_s=60, log_level="INFO")
    # As deployed: the live status file, rewritten every second, on a tmpfs (systemd's RuntimeDirectory).
    os.environ[RUNTIME_DIR_ENV] = str(runtime_dir)
    try:
        site.start()
        assert site.cloud is not None
        site.publish_lists()
        if not site.cloud.wait_for(lambda: (site.cloud.state or {}).get("tariffs_version") == 1, 20):
            raise c.BenchError(f"the agent did not take the lists:\n{site.agent_log_tail()}")
        time.sleep(5)  # past start-up: lists applied, first status messages
        watch = DiskWatch(site)
        watch.start()
        time.sleep(idle_s)
        idle = watch.stop()
        short = sessions(site, watch, short_n, 0.5)
        long = sessions(site, watch, long_n, long_s)
    except BaseException:
        print(f"agent log tail:\n{site.agent_log_tail(20)}")
        raise
    finally:
        site.close()
        del os.environ[RUNTIME_DIR_ENV]
        shutil.rmtree(runtime_dir, ignore_errors=True)

    def total(d: dict[str, float]) -> float:
        return d["agent"] + d["checkpoint"]

    kib = lambda v: f"{v / 1024:,.1f} KiB"  # noqa: E731
    per_hour = 3600 / idle["seconds"]
    pages = total(idle) / 4096
    result.add("idle hour (extrapolated), database + log", kib(total(idle) * per_hour),
               f"{kib(total(idle))} ({pages:.0f} pages) in {idle['seconds']:.0f} s; log {kib(idle['log'])}"
               + ("; under one page: the hour is below " + kib(4096 * per_hour) if pages < 1 else ""))
    result.add("  of which database (WAL + checkpoint)", kib((total(idle) - idle["log"]) * per_hour), "")
    short_each = total(short) / short["count"]
    result.add("short session (tap, 0.5 s charging, unplug, events acknowledged)", kib(short_each),
               f"mean of {short['count']}; {short['samples']:.1f} samples each; log {kib(short['log'] / short['count'])}")
    long_each = total(long) / long["count"]
    extra_samples = long["samples"] - short["samples"]
    per_sample = (long_each - short_each) / extra_samples if extra_samples > 0 else float("nan")
    result.add(f"session charging {long_s:.0f} s (a sample and a meter_values event every {SAMPLE_S:.0f} s)",
               kib(long_each), f"mean of {long['count']}; {long['samples']:.1f} samples each")
    result.add("  each further sample (sample row + meter_values event, sent and acknowledged)", kib(per_sample),
               "(long - short) / extra samples")
    hour = short_each + per_sample * 3600 / DEFAULT_SAMPLE_S
    result.add(f"a one-hour session at the default {DEFAULT_SAMPLE_S:.0f} s interval (extrapolated)", kib(hour),
               f"= short session + {3600 / DEFAULT_SAMPLE_S:.0f} samples")
    result.raw = {"idle": idle, "short": short, "long": long}
    result.settings = {"poll_interval_s": POLL_S, "meter_values_interval_s": SAMPLE_S, "idle_s": idle_s,
                       "short_sessions": short_n, "long_sessions": long_n, "long_charge_s": long_s}
    result.note("As deployed, the agent's live status file (rewritten every second) is on a tmpfs (systemd's "
                f"RuntimeDirectory; here {RUNTIME_DIR_ENV} on {TMPFS}).")
    result.note("Everything the agent process dirtied on disk: its SQLite database (WAL, synchronous=FULL) and its "
                "log (stdout to a file here; under systemd the log goes to journald, which writes it instead). "
                "Checkpoints of the WAL, run by the benchmark at the end of each stretch, are counted in.")
    result.note(f"Extrapolations are linear: an idle hour from {idle['seconds']:.0f} s; a session hour from the "
                f"cost of a sample measured at the {SAMPLE_S:.0f} s configuration minimum, at {DEFAULT_SAMPLE_S:.0f} "
                "samples per hour. Page-granular: a figure below 4 KiB per event means pages were shared.")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result.note(f"scratch kept in {work}")


if __name__ == "__main__":
    raise SystemExit(c.main("disk", "5. Disk writes per session and per idle hour", run))
