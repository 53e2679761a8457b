"""Scale: the agent process's CPU (per second of wall time) and resident memory with 64 chargers on
Modbus TCP polled every second; the agent idle on the simulated garage; a 100,000-user list
applied (seconds, peak RSS). All from /proc/<pid>/stat and /proc/<pid>/status of the agent.

    python -m benchmarks.scale [--quick]
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from hardware_sim.broker import MosquittoBroker
from hardware_sim.chargers import SimCharger, SimChargerThread
from hardware_sim.site import SimulatedSite

from . import _common as c
from ._data import USERS, users
from ._rig import agent_yaml, bender_tcp

CHARGERS = 64
IDLE_RSS_GOAL_KIB = 60 * 1024
IDLE_CPU_GOAL = 0.01


def many_chargers(work: Path, *, windows: int, seconds: float) -> dict[str, list[float]]:
    broker = MosquittoBroker(workdir=work / "broker64")
    sims = SimChargerThread()
    agent: c.AgentProcess | None = None
    try:
        broker.start()
        sims.start()
        chargers = [SimCharger("bender-cc613", speed=1) for _ in range(CHARGERS)]
        ports = [sims.serve_tcp([charger]).port for charger in chargers]
        config = work / "site64.yaml"
        config.write_text(agent_yaml(gateway_id="gw-64", data_dir=work / "data64", broker=broker, poll_interval_s=1.0,
                                     chargers=[bender_tcp(str(i + 1), port) for i, port in enumerate(ports)]))  # type: ignore[arg-type]
        agent = c.AgentProcess(config, work / "agent64.log").start()
        if not c.wait_until(lambda: all(ch.writes for ch in chargers), 30, 0.1):
            raise c.BenchError(f"not every charger was set up within 30 s:\n{agent.log_text()[-2000:]}")
        time.sleep(3)  # past start-up: imports, setup writes, first status messages
        stats = c.ProcStats(agent.pid)
        seen = [ch._last_request for ch in chargers]  # noqa: SLF001
        cpu, rss = c.cpu_windows(stats, windows=windows, seconds=seconds)
        polled = all(ch._last_request > t for ch, t in zip(chargers, seen))  # noqa: SLF001
        if not polled:
            raise c.BenchError("some chargers were not polled during the measurement")
        return {"cpu": cpu, "rss": [float(r) for r in rss], "hwm": [float(stats.hwm_kib())]}
    finally:
        if agent is not None:
            agent.stop()
        sims.stop()
        broker.close()


def idle_and_user_list(work: Path, *, windows: int, seconds: float, runs: int) -> dict[str, list[float]]:
    site = SimulatedSite(work / "site", gateway_id="gw-scale", speed=1, poll_interval_s=1.0,
                         ack_timeout_s=60, log_level="INFO")
    out: dict[str, list[float]] = {"idle_cpu": [], "idle_rss": [], "idle_cpu_children": [], "apply_s": [], "apply_hwm": [],
                                   "apply_base_rss": [], "replace_s": [], "replace_hwm": [], "apply_cpu_s": []}
    try:
        site.start()
        assert site.cloud is not None and site.agent is not None
        site.publish_lists()
        cloud = site.cloud
        if not cloud.wait_for(lambda: (cloud.state or {}).get("users_version") == 1, 20):
            raise c.BenchError(f"the agent did not take the lists:\n{site.agent_log_tail()}")
        time.sleep(3)
        cpu, rss = c.cpu_windows(c.ProcStats(site.agent.pid), windows=windows, seconds=seconds)
        out["idle_cpu"], out["idle_rss"] = cpu, [float(r) for r in rss]
        out["idle_cpu_children"], _ = c.cpu_windows(c.ProcStats(site.agent.pid), windows=windows, seconds=seconds,
                                                    children=True)

        people = users(USERS)
        for run in range(runs):
            site.stop_agent()
            shutil.rmtree(site.data_dir, ignore_errors=True)
            cloud.publish_raw("config/users", b"", retain=True)  # the fresh agent starts with no list
            states = len(cloud.state_history)
            site.start_agent()
            assert site.agent is not None
            if not cloud.wait_for(lambda states=states: any(s.get("tariffs_version") == 1 for s in cloud.state_history[states:]), 20):
                raise c.BenchError(f"the agent did not come up:\n{site.agent_log_tail()}")
            time.sleep(1)
            stats = c.ProcStats(site.agent.pid)
            out["apply_base_rss"].append(float(stats.rss_kib()))
            for version, key in ((10 + run, "apply"), (100 + run, "replace")):
                line = f"user list version {version} applied"
                cloud.publish_users(version, people)
                cpu0, published = stats.cpu_s(), time.monotonic()
                if not c.wait_until(lambda line=line: line in site.agent_log.read_text(errors="replace"), 120, 0.01):
                    raise c.BenchError(f"{line!r} not logged in 120 s:\n{site.agent_log_tail()}")
                out[f"{key}_s"].append(time.monotonic() - published)
                out[f"{key}_hwm"].append(float(stats.hwm_kib()))
                if key == "apply":
                    out["apply_cpu_s"].append(stats.cpu_s() - cpu0)
        return out
    except BaseException:
        print(f"agent log tail:\n{site.agent_log_tail(20)}")
        raise
    finally:
        site.close()


def run(result: c.Result, args: argparse.Namespace) -> None:
    windows, seconds, runs = (2, 3.0, 1) if args.quick else (5, 6.0, 3)
    work = c.scratch_dir("scale")
    many = many_chargers(work, windows=windows, seconds=seconds)
    rest = idle_and_user_list(work, windows=windows, seconds=seconds, runs=runs)
    pct = lambda v: f"{v * 100:.1f} %"  # noqa: E731
    secs = lambda v: f"{v:.2f} s"  # noqa: E731

    s = c.Stats.of(many["cpu"])
    result.add(f"{CHARGERS} Bender chargers on Modbus TCP, polled every 1 s: CPU", f"{pct(s.median)} of a core",
               c.spread(s, pct, p99=False), f"{CHARGERS} polls/s, 3 requests each",
               f"{s.median / CHARGERS * 1000:.2f} ms CPU per poll")
    s = c.Stats.of(many["rss"])
    result.add(f"{CHARGERS} chargers: resident memory (VmRSS)", c.mib(s.median), c.spread(s, c.mib, p99=False))
    s = c.Stats.of(rest["idle_cpu"])
    result.add("idle (simulated garage: 2 chargers, 2 readers, online): CPU", f"{pct(s.median)} of a core",
               c.spread(s, pct, p99=False), "", "", "< 1 % of a core", s.median < IDLE_CPU_GOAL)
    s = c.Stats.of(rest["idle_cpu_children"])
    result.add("idle: CPU with the processes it spawns (cutime + cstime)", f"{pct(s.median)} of a core",
               c.spread(s, pct, p99=False), "", "", "< 1 % of a core", s.median < IDLE_CPU_GOAL)
    s = c.Stats.of(rest["idle_rss"])
    result.add("idle: resident memory (VmRSS)", c.mib(s.median), c.spread(s, c.mib, p99=False), "", "",
               "< 60 MB", s.median * 1024 < 60e6)
    s = c.Stats.of(rest["apply_s"])
    result.add(f"{USERS:,}-user list applied (first list), published -> applied", secs(s.median),
               c.spread(s, secs, p99=False))
    s = c.Stats.of(rest["replace_s"])
    result.add(f"{USERS:,}-user list replacing one of {USERS:,}", secs(s.median), c.spread(s, secs, p99=False))
    s = c.Stats.of(rest["replace_hwm"])
    base = c.Stats.of(rest["apply_base_rss"])
    result.add("peak resident memory with the list applied (VmHWM)", c.mib(s.median), c.spread(s, c.mib, p99=False),
               f"RSS before: {c.mib(base.median)}")
    s = c.Stats.of(rest["apply_cpu_s"])
    result.add("agent CPU time to apply the first list", secs(s.median), c.spread(s, secs, p99=False))
    result.raw = {"many": many, **rest}
    result.settings = {"chargers": CHARGERS, "windows": windows, "window_s": seconds, "runs": runs, "users": USERS}
    result.note(f"CPU is (utime + stime) of the agent process, all threads, over {windows} windows of {seconds:.0f} s "
                "of wall time; RSS is the largest VmRSS sampled every 0.5 s in each window.")
    result.note(f"{CHARGERS} chargers: each simulated Bender is its own pymodbus TCP server (its own address, as "
                "64 wallboxes would be); the simulators run in the benchmark process, not in the agent's figures.")
    result.note("Idle: the agent of the simulated garage (Bender over TCP, Heidelberg over RTU on a pty, two RDM6300 "
                "readers, connected to the broker) with the demo residents' lists, no session; default poll 1 s.")
    result.note("The user list is one retained MQTT message (~15 MB of JSON) published by the simulated cloud; timed "
                "from its PUBACK at the cloud to the agent logging it applied. Each run is a fresh agent on an empty "
                "database (first list), then a second list of as many users replacing it.")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result.note(f"scratch kept in {work}")


if __name__ == "__main__":
    raise SystemExit(c.main("scale", "4. Scale: 64 chargers, idle, 100,000 users", run))
