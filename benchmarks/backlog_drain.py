"""Backlog drain: 10,000 events queued during an outage, delivered and acknowledged, in events/s,
beside the rate at which mosquitto itself accepts QoS 1 messages of the same bytes from
mosquitto_pub, measured in the same run on the same broker.

The outbox is filled with Store.append_event in the agent's data_dir while the agent is down (the
gateway coming back after an outage); then the agent starts with the broker up and a cloud
acknowledging. The drain is timed from the cloud link coming up (the agent's retained state
saying online reaches the cloud) until the outbox table is empty: every event delivered, and
every acknowledgement processed.

Two clouds acknowledge: a pipe of the mosquitto C clients (the consumer is not the limit), and
hardware_sim's SimCloud (paho in Python, as in the tests).

    python -m benchmarks.backlog_drain [--quick] [--events 10000] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from edge_agent.cloud import Event
from edge_agent.store import Store
from hardware_sim.broker import MosquittoBroker
from hardware_sim.chargers import SimCharger, SimChargerThread
from hardware_sim.cloud import SimCloud

from . import _common as c
from ._data import seed_store, session_ended_data
from ._rig import PipeCloud, agent_yaml, bender_tcp

GOAL_RATIO = 0.5
CLOUD_ACK_BATCH_S = 0.002  # both clouds acknowledge what arrived within 2 ms in one message


def fill_outbox(data_dir: Path, count: int, first: int) -> list[str]:
    with Store(data_dir) as store, store.transaction():
        envelopes = [store.append_event(Event("session_ended", session_ended_data(first + i),
                                              "2026-01-05T19:45:40Z", True)) for i in range(count)]
    return [e.body for e in envelopes]


def mosquitto_pub(broker: MosquittoBroker, topic: str, bodies_path: Path) -> float:
    """mosquitto_pub -l: one connection, one QoS 1 message per line, 20 in flight (as the agent).
    Returns the wall time of the whole run, connect included."""
    started = time.perf_counter()
    with open(bodies_path, "rb") as stdin:
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", "5",
                        "-q", "1", "-M", "20", "-t", topic, "-l"], stdin=stdin, check=True, timeout=120)
    return time.perf_counter() - started


def paho_pub(broker: MosquittoBroker, topic: str, bodies_path: Path) -> float:
    out = subprocess.run([sys.executable, "-m", "benchmarks._paho_pub", broker.host, str(broker.port), topic,
                          str(bodies_path)], capture_output=True, text=True, check=True, timeout=180, cwd=c.REPO)
    return float(out.stdout.strip())


def sim_cloud(broker: MosquittoBroker, gateway_id: str) -> SimCloud:
    """SimCloud acknowledging within 2 ms, with Nagle off on its socket: with its defaults (acks
    batched over 50 ms, Nagle on) the simulator's own stalls would be measured: Nagle holding its
    small PUBACK and ack packets until the broker's delayed ACK, 40 ms on Linux."""
    cloud = SimCloud(broker.host, broker.port, gateway_id=gateway_id, ack_batch_s=CLOUD_ACK_BATCH_S)
    sock = cloud._client.socket()  # noqa: SLF001
    if sock is None:
        raise c.BenchError("the simulated cloud has no socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return cloud


class Gateway:
    """One agent configuration (its own gateway id and data_dir) and the cloud that acknowledges it."""

    def __init__(self, work: Path, broker: MosquittoBroker, gateway_id: str, charger_port: int,
                 cloud: str) -> None:
        self.broker = broker
        self.gateway_id = gateway_id
        self.data_dir = work / gateway_id
        self.data_dir.mkdir(parents=True)
        config = work / f"{gateway_id}.yaml"
        config.write_text(agent_yaml(gateway_id=gateway_id, data_dir=self.data_dir, broker=broker,
                                     chargers=[bender_tcp("1", charger_port)]), encoding="utf-8")
        self.agent = c.AgentProcess(config, work / f"{gateway_id}.log")
        seed_store(self.data_dir, user_count=1000)
        self.kind = cloud
        self.pipe = PipeCloud(broker, gateway_id, batch_s=CLOUD_ACK_BATCH_S) if cloud == "pipe" else None
        self.sim = sim_cloud(broker, gateway_id) if cloud == "sim" else None

    def online_times(self) -> list[float]:
        if self.pipe is not None:
            return list(self.pipe.online_at)
        assert self.sim is not None
        return [s["received_at"] for s in self.sim.state_history if s.get("online")]

    def received(self) -> int:
        if self.pipe is not None:
            return len(self.pipe.arrivals)
        assert self.sim is not None
        return len(self.sim.events_by_id) + self.sim.duplicate_count

    def first_arrival(self, skip: int) -> float:
        if self.pipe is not None:
            return self.pipe.arrivals[skip]
        assert self.sim is not None
        return min(e["received_at"] for e in self.sim.events[skip:])

    def drain(self, count: int) -> dict[str, float]:
        online_before, received_before = len(self.online_times()), self.received()
        started = time.time()
        self.agent.start()
        agent, broker = c.ProcStats(self.agent.pid), c.ProcStats(self.broker.pid)  # type: ignore[arg-type]
        me = c.ProcStats(os.getpid())
        if not c.wait_until(lambda: len(self.online_times()) > online_before, 30):
            raise c.BenchError(f"the agent did not come online:\n{self.agent.log_text()[-3000:]}")
        link_up = self.online_times()[online_before]
        cpu0 = (agent.cpu_s(), broker.cpu_s(), me.cpu_s())
        written0 = agent.write_bytes()
        db = sqlite3.connect(f"file:{self.data_dir / 'edge-agent.db'}?mode=ro", uri=True)
        try:
            left = lambda: int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])  # noqa: E731
            if not c.wait_until(lambda: left() == 0, 120, 0.005):
                raise c.BenchError(f"outbox not empty after 120 s ({left()} left):\n{self.agent.log_text()[-3000:]}")
            emptied = time.time()
        finally:
            db.close()
        cpu1 = (agent.cpu_s(), broker.cpu_s(), me.cpu_s())
        written = agent.write_bytes() - written0
        self.agent.stop()
        got = self.received() - received_before
        if got < count:
            raise c.BenchError(f"the cloud got {got} of {count} events")
        span = emptied - link_up
        return {"from_link_up": count / span, "from_first": count / (emptied - self.first_arrival(received_before)),
                "from_start": count / (emptied - started), "link_up_s": link_up - started,
                "agent_cpu": (cpu1[0] - cpu0[0]) / span, "broker_cpu": (cpu1[1] - cpu0[1]) / span,
                "bench_cpu": (cpu1[2] - cpu0[2]) / span, "duplicates": got - count,
                "written_per_event": written / count}

    def consumer_rate(self, bodies_path: Path, count: int) -> float:
        """The cloud's own rate: mosquitto_pub publishes the events on the events topic, as a gateway
        that costs nothing would, until the cloud has received them all (and acknowledged them)."""
        before = self.received()
        started = time.perf_counter()
        mosquitto_pub(self.broker, f"edge/v1/{self.gateway_id}/events", bodies_path)
        if not c.wait_until(lambda: self.received() - before >= count, 60, 0.002):
            raise c.BenchError(f"the {self.kind} cloud got {self.received() - before} of {count} events")
        return count / (time.perf_counter() - started)

    def close(self) -> None:
        self.agent.stop()
        if self.pipe is not None:
            self.pipe.close()
        if self.sim is not None:
            self.sim.close()


def run(result: c.Result, args: argparse.Namespace) -> None:
    count = 2000 if args.quick else args.events
    runs = 2 if args.quick else args.runs
    work = c.scratch_dir("drain")
    broker = MosquittoBroker(workdir=work / "broker")
    sims = SimChargerThread()
    gateways: list[Gateway] = []
    result.settings = {"events": count, "runs": runs, "ack_batch_s": CLOUD_ACK_BATCH_S,
                       "agent_window": 200, "paho_inflight": 20, "broker_max_inflight": 20}
    try:
        broker.start()
        sims.start()
        port = sims.serve_tcp([SimCharger("bender-cc613")]).port
        assert port is not None
        gateways = [Gateway(work, broker, "gw-pipe", port, "pipe"), Gateway(work, broker, "gw-sim", port, "sim")]
        broker_s: list[float] = []
        paho_s: list[float] = []
        drains: dict[str, list[dict[str, float]]] = {g.kind: [] for g in gateways}
        bodies_path = work / "bodies.txt"
        for i in range(runs):
            for gateway in gateways:
                bodies = fill_outbox(gateway.data_dir, count, first=i * count)
                bodies_path.write_text("\n".join(bodies) + "\n", encoding="utf-8")
                broker_s.append(mosquitto_pub(broker, "bench/reference", bodies_path))
                paho_s.append(paho_pub(broker, "bench/reference", bodies_path))
                drains[gateway.kind].append(gateway.drain(count))
        size = sum(len(b) for b in bodies) / len(bodies)
        # Last: these acks are kept by the broker for the agent's session, and would reach its next run.
        consumers = {g.kind: [g.consumer_rate(bodies_path, count) for _ in range(runs)] for g in gateways}
    except BaseException:
        for gateway in gateways:
            print(f"{gateway.gateway_id} log tail:\n{gateway.agent.log_text()[-2000:]}")
        raise
    finally:
        for gateway in gateways:
            gateway.close()
        sims.stop()
        broker.close()

    per_s = lambda v: c.num(v, "ev/s")  # noqa: E731
    pct = lambda v: f"{v * 100:.0f} %"  # noqa: E731
    broker_rate = c.Stats.of([count / s for s in broker_s])
    limit_text = f"mosquitto_pub QoS 1: {per_s(broker_rate.median)}"

    def stat(kind: str, key: str) -> c.Stats:
        return c.Stats.of([d[key] for d in drains[kind]])

    pipe, sim = stat("pipe", "from_link_up"), stat("sim", "from_link_up")
    result.add(f"{count:,} events drained (C-client cloud), link up -> outbox empty", per_s(pipe.median),
               c.spread(pipe, per_s, p99=False), limit_text, f"{pipe.median / broker_rate.median:.2f}",
               f">= {GOAL_RATIO:.1f} of the broker", pipe.median / broker_rate.median >= GOAL_RATIO)
    result.add(f"{count:,} events drained (SimCloud, Python), link up -> outbox empty", per_s(sim.median),
               c.spread(sim, per_s, p99=False), limit_text, f"{sim.median / broker_rate.median:.2f}",
               f">= {GOAL_RATIO:.1f} of the broker", sim.median / broker_rate.median >= GOAL_RATIO)
    whole = stat("pipe", "from_start")
    result.add("  C-client cloud, from agent process start", per_s(whole.median), c.spread(whole, per_s, p99=False))
    result.add("mosquitto_pub -l -q 1 -> broker (the broker's own rate)", per_s(broker_rate.median),
               c.spread(broker_rate, per_s, p99=False))
    paho_rate = c.Stats.of([count / s for s in paho_s])
    result.add("paho alone -> broker, same bytes (the MQTT library's own rate)", per_s(paho_rate.median),
               c.spread(paho_rate, per_s, p99=False), "", f"{paho_rate.median / broker_rate.median:.2f} of the broker")
    for kind, label in (("pipe", "C-client cloud"), ("sim", "SimCloud")):
        own = c.Stats.of(consumers[kind])
        drained = stat(kind, "from_link_up").median
        result.add(f"mosquitto_pub -> {label}, acked (that consumer's own rate)", per_s(own.median),
                   c.spread(own, per_s, p99=False), "", f"drain / this {drained / own.median:.2f}")
    for key, label in (("agent_cpu", "agent"), ("broker_cpu", "mosquitto"),
                       ("bench_cpu", "benchmark process (simulators, SimCloud)")):
        for kind in ("pipe", "sim"):
            s = stat(kind, key)
            result.add(f"CPU of {label} during the drain ({kind})", f"{pct(s.median)} of a core",
                       c.spread(s, pct, p99=False))
    for kind in ("pipe", "sim"):
        s = stat(kind, "written_per_event")
        result.add(f"agent disk writes per drained event ({kind})", f"{s.median / 1024:.1f} KiB",
                   c.spread(s, lambda v: f"{v / 1024:.1f} KiB", p99=False), f"event size {size:.0f} B",
                   f"{s.median / size:.0f}x")
    result.raw = {"drains": drains, "broker_s": broker_s, "paho_s": paho_s, "consumers": consumers, "event_bytes": size}
    result.note(f"Events are session_ended envelopes of {size:.0f} bytes. mosquitto_pub sends the very same bytes "
                f"(one line each; MQTT 5, QoS 1, 20 in flight) to a topic nobody subscribes to, "
                f"{len(broker_s)} times, interleaved with the drains; its time includes connecting.")
    result.note(f"Both clouds acknowledge what arrived within {CLOUD_ACK_BATCH_S * 1000:.0f} ms in one message. "
                "The agent keeps at most 200 events unacknowledged, paho at most 20 in flight. Everything "
                "(agent, broker, cloud) shares this machine's cores.")
    link = c.Stats.of([d["link_up_s"] for k in drains for d in drains[k]])
    result.note(f"Agent start to link up: {link.median:.2f} s median (interpreter, imports, database, MQTT "
                f"connect). Duplicates received: {sum(d['duplicates'] for k in drains for d in drains[k]):.0f}.")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result.note(f"scratch kept in {work}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)


if __name__ == "__main__":
    raise SystemExit(c.main("backlog_drain", "2. Backlog drain after an outage", run, add_arguments=add_arguments))
