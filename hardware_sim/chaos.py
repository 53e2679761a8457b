"""Fault injection on a whole simulated site: the agent SIGKILLed at random moments while
residents tap, plug, charge and unplug, lists arrive and the cloud acknowledges.

    python -m hardware_sim.chaos --kills 1000 [--seed 7]      # the soak run

After the last kill the cars are unplugged, the agent runs to the end, and every guarantee is
checked (see check_invariants). tests/test_reliability.py runs it with fewer kills.
"""
from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .site import RESIDENTS, SimulatedSite

RESIDENT_TOKENS = [u["tokens"][0] for u in RESIDENTS if not u.get("blocked")]
BLOCKED_TOKEN = next(u["tokens"][0] for u in RESIDENTS if u.get("blocked"))


@dataclass
class ChaosReport:
    kills: int = 0
    kill_delays_s: list[float] = field(default_factory=list)
    kills_while_starting: int = 0
    taps: int = 0
    plugs: int = 0
    unplugs: int = 0
    list_pushes: int = 0
    sessions: int = 0
    events: int = 0
    duplicates: int = 0
    integrity_checks: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.kills} kills ({self.kills_while_starting} while starting), {self.sessions} sessions, {self.events} events "
                f"({self.duplicates} duplicates by id), {self.taps} taps, {self.plugs} plugs, "
                f"{self.list_pushes} user lists, {self.integrity_checks} integrity checks, "
                f"{len(self.problems)} problems")


class Residents(threading.Thread):
    """Drives the garage at random: taps, plugs, charging, stops by card or by unplugging."""

    def __init__(self, site: SimulatedSite, rng: random.Random, report: ChaosReport) -> None:
        super().__init__(daemon=True, name="residents")
        self.site, self.rng, self.report = site, rng, report
        self.stop_event = threading.Event()
        self.users_version = 1

    def run(self) -> None:
        holder: dict[str, str | None] = {"1": None, "2": None}
        while not self.stop_event.wait(self.rng.uniform(0.05, 0.3)):
            evse = self.rng.choice(["1", "2"])
            charger = self.site.chargers[evse]
            roll = self.rng.random()
            if roll < 0.03:
                self.users_version += 1
                self.site.publish_lists(users_version=self.users_version, users=_users(self.users_version))
                self.report.list_pushes += 1
            elif roll < 0.06:
                self._tap(evse, BLOCKED_TOKEN)
            elif charger.state == "A":
                if roll < 0.5:
                    holder[evse] = self.rng.choice(RESIDENT_TOKENS)
                    self._tap(evse, holder[evse])
                charger.plug()
                charger.set_ev_requesting(True)
                self.report.plugs += 1
            elif roll < 0.35:
                self._tap(evse, holder[evse] or self.rng.choice(RESIDENT_TOKENS))
            elif roll < 0.55:
                charger.unplug()
                holder[evse] = None
                self.report.unplugs += 1

    def _tap(self, evse: str, token: str) -> None:
        try:
            self.site.readers[evse].present(token, repeats=1, interval_s=0.0)
            self.report.taps += 1
        except OSError:
            pass


def _users(version: int) -> list[dict[str, Any]]:
    """The residents plus enough others that applying the list takes a moment."""
    return [*RESIDENTS, *({"id": f"v{version}-{i}", "name": f"Neighbour {i}", "group": "residents",
                           "tokens": [f"{version % 256:02X}{i:08X}"]} for i in range(3000))]


def run_chaos(workdir: Path, *, kills: int, seed: int, max_alive_s: float = 1.2,
              log: Any = None) -> ChaosReport:
    """A third of the kills fall at a random moment after the agent's start (mostly while it
    imports, opens the store and reaches the chargers); the rest at a random moment within
    max_alive_s of its READY=1, so that sessions start and end between kills however long the
    machine takes to start the agent."""
    rng = random.Random(seed)
    report = ChaosReport()
    with SimulatedSite(workdir, speed=60, poll_interval_s=0.2, ack_timeout_s=3,
                       meter_values_interval_s=5, connect_timeout_s=10) as site:
        site.publish_lists(users=_users(1))
        site.cloud.wait_for(lambda: (site.cloud.state or {}).get("users_version") == 1, 15)
        residents = Residents(site, rng, report)
        residents.start()
        try:
            for n in range(kills):
                while_starting = rng.random() < 1 / 3
                if not while_starting and not site.wait_agent_ready(30):
                    report.problems.append(f"no READY=1 from the agent after kill {n}:\n"
                                           + site.agent_log_tail())
                    break
                delay = rng.uniform(0.02, max_alive_s)
                time.sleep(delay)
                report.kills_while_starting += while_starting
                site.kill_agent()
                report.kills += 1
                report.kill_delays_s.append(delay)
                _check_database(site.data_dir, report)
                site.start_agent()
                if log and (n + 1) % 50 == 0:
                    print(f"  {n + 1} kills", file=log, flush=True)
        finally:
            residents.stop_event.set()
            residents.join()
        for evse in site.chargers:
            site.chargers[evse].unplug()
        ok = site.wait(lambda: _active_sessions(site.data_dir) == 0, 30)
        if not ok:
            report.problems.append("sessions still active after the final run:\n" + site.agent_log_tail())
        site.cloud.wait_for(lambda: (site.cloud.state or {}).get("outbox_pending") == 0
                            and _outbox(site.data_dir) == 0, 60)
        time.sleep(1.0)
        site.stop_agent()
        check_invariants(site, report)
    return report


def _connect(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'edge-agent.db'}?mode=ro", uri=True, timeout=5)


def _check_database(data_dir: Path, report: ChaosReport) -> None:
    if not (data_dir / "edge-agent.db").exists():
        return
    with _connect(data_dir) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        report.integrity_checks += 1
        if result != "ok":
            report.problems.append(f"integrity_check after kill {report.kills}: {result}")
        versions = {r[0].split("-")[0] for r in conn.execute("SELECT id FROM users WHERE id NOT LIKE 'u-%'")}
        if len(versions) > 1:
            report.problems.append(f"a mix of user lists after kill {report.kills}: {sorted(versions)}")


def _active_sessions(data_dir: Path) -> int:
    with _connect(data_dir) as conn:
        return conn.execute("SELECT count(*) FROM sessions WHERE status = 'active'").fetchone()[0]


def _outbox(data_dir: Path) -> int:
    with _connect(data_dir) as conn:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]


def check_invariants(site: SimulatedSite, report: ChaosReport) -> None:
    problems = report.problems
    cloud = site.cloud
    with _connect(site.data_dir) as conn:
        last_seq = conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0]
        sessions = conn.execute(
            "SELECT id, evse_id, status, meter_start_wh, meter_stop_wh, energy_wh, started_at "
            "FROM sessions ORDER BY started_at").fetchall()
        if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problems.append("final integrity_check failed")
    events = cloud.events
    by_seq: dict[int, set[str]] = {}
    for event in events:
        by_seq.setdefault(event["seq"], set()).add(event["id"])
    report.events = len(by_seq)
    report.duplicates = cloud.duplicate_count
    report.sessions = len(sessions)
    if sorted(by_seq) != list(range(1, last_seq + 1)):
        missing = sorted(set(range(1, last_seq + 1)) - set(by_seq))
        problems.append(f"seq not complete: {len(missing)} missing, e.g. {missing[:10]}")
    if any(len(ids) > 1 for ids in by_seq.values()):
        problems.append("one seq carried two different event ids")
    unique = {e["id"]: e for e in events}.values()
    started = [e["data"]["session_id"] for e in unique if e["type"] == "session_started"]
    ended = [e["data"]["session_id"] for e in unique if e["type"] == "session_ended"]
    if len(started) != len(set(started)) or len(ended) != len(set(ended)):
        problems.append("a session started or ended twice under different event ids")
    if sorted(started) != sorted(ended):
        problems.append(f"started without end: {set(started) - set(ended)}; ended without start: "
                        f"{set(ended) - set(started)}")
    db_ids = {s[0] for s in sessions}
    if set(started) != db_ids:
        problems.append("the cloud's sessions differ from the gateway's")
    last_stop: dict[str, int] = {}
    for sid, evse, status, start, stop, energy, _ in sessions:
        if status != "ended":
            problems.append(f"session {sid} not ended")
            continue
        if energy != stop - start or energy < 0:
            problems.append(f"session {sid}: energy {energy} != {stop} - {start}")
        if evse in last_stop and start < last_stop[evse]:
            problems.append(f"session {sid} on EVSE {evse} starts at {start} Wh, before the previous stop "
                            f"{last_stop[evse]} Wh")
        last_stop[evse] = stop
    ended_events = {e["data"]["session_id"]: e["data"] for e in unique if e["type"] == "session_ended"}
    for sid, *_ in sessions:
        data = ended_events.get(sid)
        row = next(s for s in sessions if s[0] == sid)
        if data and (data["meter_stop_wh"], data["energy_wh"]) != (row[4], row[5]):
            problems.append(f"session {sid}: the event and the database disagree")
    # No energy flows outside a session: what the sessions billed is what the register counted.
    for evse, charger in site.chargers.items():
        register_change = int(charger.energy_wh) - site.initial_energy_wh[evse]
        billed = sum(s[5] for s in sessions if s[1] == evse and s[5] is not None)
        if billed != register_change:
            problems.append(f"EVSE {evse}: sessions billed {billed} Wh, the register counted {register_change} Wh")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hardware_sim.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--max-alive", type=float, default=1.2, help="longest the agent lives between kills (s)")
    parser.add_argument("--keep", metavar="DIR")
    args = parser.parse_args(argv)
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="edge-agent-chaos-"))
    print(f"chaos: {args.kills} kills, seed {args.seed}, site in {workdir}", flush=True)
    started = time.monotonic()
    report = run_chaos(workdir, kills=args.kills, seed=args.seed, max_alive_s=args.max_alive, log=sys.stdout)
    print(report.summary())
    print(f"took {time.monotonic() - started:.0f} s")
    for problem in report.problems:
        print("PROBLEM:", problem)
    print(json.dumps({"kills": report.kills, "sessions": report.sessions, "events": report.events,
                      "duplicates": report.duplicates, "problems": len(report.problems)}))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
