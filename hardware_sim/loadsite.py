"""A simulated garage for load management: many Bender chargers on one connection with a site meter.

    with LoadSite(default_chargers()) as site:          # 20 SimChargers, each its own Modbus TCP server,
        config = site.config()                          # and an Eastron SDM630 site meter on Modbus TCP
        checker = LoadChecker(site).start()
        site.arrive("3", ev_max_current_a=10)           # a car that takes at most 10 A
        site.set_other_load((8, 20, 8))                 # the building's other load
        site.meter.set_silent(True)
        report = checker.report(since=t0)               # limits, 6 A minimum, fairness, reaction times

The site meter answers like the eastron-sdm630 map says: its phase currents are the building's
other load plus what the simulated cars actually draw, on site phases after each charger's
rotation. The checker samples the sims and reconstructs every offer from `SimCharger.writes`.

`python -m hardware_sim.loadsite agent --config FILE` runs load management alone against such a
site (the agent's own integration is not there yet): a plugged vehicle counts as a session.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.api import ChargerReading, Measurement
from drivers.modbus import (
    BusRegistry,
    ModbusCharger,
    ModbusDevice,
    RegisterMap,
    create_charger,
    decode,
    encode,
    load_meter_map,
)
from edge_agent.config import SiteConfig, load_config, parse_config_text
from edge_agent.loadmanagement import LoadManagementLoop, LoadSettings, SitePlan, site_plan
from hardware_sim.chargers import SimCharger, SimChargerThread

Currents = tuple[float, float, float]
SETPOINT = 1000  # Bender HEMS current register
FAILSAFE_CURRENT = 131
PHASE_NAMES = ("L1", "L2", "L3")
METER_MODEL = "eastron-sdm630"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerSpec:
    evse_id: str
    phases: int = 3
    phase_l1: int = 0
    priority: int = 0
    max_current_a: float = 16

    def site_phases(self) -> tuple[int, ...]:
        return tuple((self.phase_l1 + k) % 3 for k in range(self.phases))


def default_chargers() -> list[ChargerSpec]:
    """Twenty: 1..16 three-phase with rotations L1, L2, L3 in turn (5 has priority 2), 17..20 single-phase."""
    specs = [ChargerSpec(evse_id=str(i), phase_l1=(i - 1) % 3, priority=2 if i == 5 else 0) for i in range(1, 17)]
    specs += [ChargerSpec(evse_id=str(i), phases=1, phase_l1=p) for i, p in zip(range(17, 21), (0, 1, 2, 1))]
    return specs


class SimSiteMeter:
    """The grid connection meter, served from the eastron-sdm630 map: other load + the cars' draws."""

    def __init__(self, draws: Callable[[], Currents], *, unit: int = 2, other_load_a: Currents = (0, 0, 0),
                 voltage_v: float = 230.0) -> None:
        self.regmap: RegisterMap = load_meter_map(METER_MODEL)
        self.unit = unit
        self.voltage_v = voltage_v
        self._draws = draws
        self._lock = threading.Lock()
        self._other: Currents = other_load_a
        self._silent = False
        self._energy_wh = 5_000_000.0
        self._t = time.monotonic()
        self.answers: list[tuple[float, Currents]] = []  # (time, phase currents) of every answered read

    def set_other_load(self, currents: Currents) -> None:
        with self._lock:
            self._other = currents

    @property
    def other_load(self) -> Currents:
        with self._lock:
            return self._other

    def set_silent(self, silent: bool) -> None:
        with self._lock:
            self._silent = silent

    def currents(self) -> Currents:
        draws = self._draws()
        other = self.other_load
        return (other[0] + draws[0], other[1] + draws[1], other[2] + draws[2])

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: Any) -> ExcCodes | None:
        with self._lock:
            if self._silent:
                raise NoSuchIdException("silent")
        if set_values:
            return ExcCodes.ILLEGAL_FUNCTION
        now = time.monotonic()
        currents = self.currents()
        power = sum(currents) * self.voltage_v
        self._energy_wh += power * (now - self._t) / 3600
        self._t = now
        values: dict[str, float] = {"power": power, "energy": self._energy_wh, "energy_export": 0.0}
        for p in range(3):
            values[f"current_l{p + 1}"] = currents[p]
            values[f"voltage_l{p + 1}"] = self.voltage_v
        table = "input" if function_code == 4 else "holding"
        for role, reg in self.regmap.registers.items():
            if reg.table != table:
                continue
            value = values.get(role, 12345678 if role == "serial_number" else 0)
            for i, word in enumerate(encode(reg, value)):
                if 0 <= reg.address + i - start_address < len(registers):
                    registers[reg.address + i - start_address] = word
        if table == "input":
            self.answers.append((now, currents))
        return None

    def simdevice(self) -> SimDevice:
        block = self.regmap.read_blocks[0]
        serial = self.regmap.registers["serial_number"]
        return SimDevice(id=self.unit, action=self._action, simdata=(
            [SimData(address=0xFFF0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(address=0xFFF0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(address=serial.address, count=serial.words, values=0, datatype=DataType.REGISTERS)],
            [SimData(address=block.address, count=block.count, values=0, datatype=DataType.REGISTERS)],
        ))

    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        with self._lock:
            return b"" if sending and self._silent else data


async def serve_meter_tcp(meter: SimSiteMeter, host: str = "127.0.0.1") -> tuple[ModbusTcpServer, int]:
    server = ModbusTcpServer([meter.simdevice()], address=(host, 0), ignore_missing_devices=True,
                             trace_packet=meter.trace_packet)
    await server.serve_forever(background=True)
    return server, server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]


class SiteMeterClient:
    """drivers.api.Meter for the eastron-sdm630 map over Modbus TCP, until drivers.modbus has create_meter:
    one read of the phase currents and the total power."""

    def __init__(self, *, registry: BusRegistry, host: str, port: int, unit: int, timeout_s: float = 0.5) -> None:
        self.regmap = load_meter_map(METER_MODEL)
        self.device = ModbusDevice(registry.tcp(host, port), unit=unit, name="site meter", timeout_s=timeout_s,
                                   retries=0)
        regs = [self.regmap.registers[r] for r in ("current_l1", "current_l2", "current_l3", "power")]
        self._regs = regs
        self._start = min(r.address for r in regs)
        self._count = max(r.end for r in regs) - self._start

    async def measure(self) -> Measurement:
        words = await self.device.read_input(self._start, self._count)
        values = [float(decode(r, words[r.address - self._start:r.end - self._start])) for r in self._regs]  # type: ignore[arg-type]
        return Measurement(energy_wh=None, power_w=round(values[3]), currents_a=(values[0], values[1], values[2]))


@dataclass(slots=True)
class SiteEvent:
    t: float
    kind: str  # arrive, leave, other_load, limit, meter_silent
    evse_id: str | None = None
    value: Any = None


class LoadSite:
    """The simulated chargers and site meter, each on its own Modbus TCP port, in a background loop."""

    def __init__(self, chargers: Sequence[ChargerSpec], *, max_current_a: float = 63, safe_current_a: float = 32,
                 meter_timeout_s: float = 5, other_load_a: Currents = (8, 8, 8)) -> None:
        self.specs = {s.evse_id: s for s in chargers}
        self.max_current_a = max_current_a
        self.safe_current_a = safe_current_a
        self.meter_timeout_s = meter_timeout_s
        self.sims = {s.evse_id: SimCharger("bender-cc613", phases=s.phases, ev_max_current_a=32) for s in chargers}
        self.meter = SimSiteMeter(self.draws, other_load_a=other_load_a)
        self.ports: dict[str, int] = {}
        self.meter_port = 0
        self.events: list[SiteEvent] = [SiteEvent(time.monotonic(), "other_load", value=other_load_a)]
        self._thread = SimChargerThread()
        self._meter_server: ModbusTcpServer | None = None

    # -- lifetime --

    def start(self) -> LoadSite:
        self._thread.start()
        for evse_id, sim in self.sims.items():
            self.ports[evse_id] = self._thread.serve_tcp([sim]).port or 0
        self._meter_server, self.meter_port = self._thread.call(serve_meter_tcp(self.meter))
        return self

    def stop(self) -> None:
        if self._meter_server is not None:
            self._thread.call(self._meter_server.shutdown())  # type: ignore[no-untyped-call]
            self._meter_server = None
        self._thread.stop()

    def __enter__(self) -> LoadSite:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- configuration the agent reads --

    def config_text(self, *, data_dir: str = "/tmp/loadsite") -> str:
        lines = [
            "gateway_id: loadsite",
            "timezone: Europe/Oslo",
            f"data_dir: {data_dir}",
            "cloud: {host: 127.0.0.1, port: 1}",
            "site:",
            f"  max_current_a: {self.max_current_a:g}",
            "  phases: 3",
            f"  safe_current_a: {self.safe_current_a:g}",
            f"  meter: {{model: {METER_MODEL}, host: 127.0.0.1, port: {self.meter_port}, unit: {self.meter.unit}}}",
            f"  meter_timeout_s: {self.meter_timeout_s:g}",
            "chargers:",
        ]
        for s in self.specs.values():
            lines.append(f'  - {{evse_id: "{s.evse_id}", model: bender-cc613, host: 127.0.0.1, '
                         f"port: {self.ports[s.evse_id]}, max_current_a: {s.max_current_a:g}, phases: {s.phases}, "
                         f"phase_l1: {PHASE_NAMES[s.phase_l1]}, priority: {s.priority}}}")
        return "\n".join(lines) + "\n"

    def config(self) -> SiteConfig:
        return parse_config_text(self.config_text(), source="loadsite.yaml")

    # -- the world --

    def arrive(self, evse_id: str, *, ev_max_current_a: float = 32) -> None:
        sim = self.sims[evse_id]
        sim.ev_max_current_a = ev_max_current_a
        sim.plug()
        sim.set_ev_requesting(True)
        self.events.append(SiteEvent(time.monotonic(), "arrive", evse_id))

    def leave(self, evse_id: str) -> None:
        self.sims[evse_id].unplug()
        self.events.append(SiteEvent(time.monotonic(), "leave", evse_id))

    def set_other_load(self, currents: Currents) -> None:
        self.meter.set_other_load(currents)
        self.events.append(SiteEvent(time.monotonic(), "other_load", value=currents))

    def note_limit(self, amps: float | None, *, until: float | None = None) -> None:
        """Record that the cloud's limit (per phase) is now `amps` (None: the configured one again),
        until `until` (monotonic) if given."""
        self.events.append(SiteEvent(time.monotonic(), "limit", value=amps))
        if until is not None:
            self.events.append(SiteEvent(until, "limit", value=None))

    def set_meter_silent(self, silent: bool) -> None:
        self.meter.set_silent(silent)
        self.events.append(SiteEvent(time.monotonic(), "meter_silent", value=silent))

    def draw_of(self, evse_id: str) -> float:
        sim = self.sims[evse_id]
        return min(sim.setpoint_a, sim.ev_max_current_a) if sim.state == "C" else 0.0

    def draws(self) -> Currents:
        return self._on_phases({e: self.draw_of(e) for e in self.sims})

    def offered(self, setpoints: dict[str, float] | None = None) -> Currents:
        """Site-phase sum of the chargers' setpoints (what is offered, used or not)."""
        return self._on_phases(setpoints if setpoints is not None else {e: s.setpoint_a for e, s in self.sims.items()})

    def _on_phases(self, amps: dict[str, float]) -> Currents:
        out = [0.0, 0.0, 0.0]
        for evse_id, a in amps.items():
            for p in self.specs[evse_id].site_phases():
                out[p] += a
        return (out[0], out[1], out[2])


# -- the checker --------------------------------------------------------------------------------

@dataclass(slots=True)
class Sample:
    t: float
    offered: Currents
    measured: Currents
    setpoints: dict[str, float]
    draws: dict[str, float]
    states: dict[str, str]
    failsafe: dict[str, bool]


@dataclass(slots=True)
class Reaction:
    cause: str
    at: float
    seconds: float | None  # None: never reached


@dataclass(slots=True)
class Report:
    violations: list[str] = field(default_factory=list)
    reactions: list[Reaction] = field(default_factory=list)
    writes: int = 0
    samples: int = 0
    fairness_checks: int = 0
    max_offered: Currents = (0.0, 0.0, 0.0)
    max_measured: Currents = (0.0, 0.0, 0.0)

    def summary(self) -> str:
        lines = [f"{self.writes} setpoint writes, {self.samples} samples, {self.fairness_checks} fairness checks; "
                 f"peak offered {_fmt(self.max_offered)}, peak measured {_fmt(self.max_measured)}"]
        lines += [f"reaction to {r.cause} at +{r.at:.2f}s: "
                  + ("never" if r.seconds is None else f"{r.seconds:.3f} s") for r in self.reactions]
        lines += [f"VIOLATION {v}" for v in self.violations[:30]]
        return "\n".join(lines)


def _fmt(c: Iterable[float]) -> str:
    return "/".join(f"{a:.1f}" for a in c) + " A"


class LoadChecker:
    """Samples the site every `interval_s` and checks it against every register write afterwards."""

    def __init__(self, site: LoadSite, *, interval_s: float = 0.05) -> None:
        self.site = site
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LoadChecker:
        self._thread = threading.Thread(target=self._run, name="load-checker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def sample(self) -> Sample:
        site = self.site
        setpoints = {e: s.setpoint_a for e, s in site.sims.items()}
        states = {e: s.state for e, s in site.sims.items()}
        draws = {e: site.draw_of(e) for e in site.sims}
        return Sample(time.monotonic(), site.offered(setpoints), site.meter.currents(), setpoints, draws, states,
                      {e: s.failsafe_active for e, s in site.sims.items()})

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self.sample())

    # -- analysis --

    def setpoint_writes(self, since: float) -> list[tuple[float, str, float]]:
        out = []
        for evse_id, sim in self.site.sims.items():
            scale = sim.regmap.registers["setpoint"].scale
            out += [(t, evse_id, value * scale) for t, register, value in list(sim.writes)
                    if register == SETPOINT and t >= since]
        return sorted(out)

    def report(self, *, since: float, initial: dict[str, float] | None = None, hold_s: float = 3.0,
               quiet_s: float = 2.5, max_reaction_s: float = 5.0) -> Report:
        """Check everything from `since` on: every write, every sample, the fairness of every steady state.

        Rules: offers + other load <= the limit in force (63 A or the cloud's) on every site phase
        after every write; while the site meter is silent, offers <= safe_current_a from
        meter_timeout_s after it fell silent; the meter's readings <= the limit; every write is 0
        or >= 6 A. After a change that tightens a rule there is a reaction time (reported, and
        at most `max_reaction_s`); within it only the older rule applies.
        """
        site = self.site
        report = Report()
        writes = self.setpoint_writes(since)
        report.writes = len(writes)
        for t, evse_id, amps in writes:
            if amps and not 6 <= amps <= site.specs[evse_id].max_current_a:
                report.violations.append(f"+{t - since:.2f}s EVSE {evse_id} written {amps:g} A")
        setpoints = dict(initial) if initial is not None else self._setpoints_at(since)
        events = [e for e in site.events if e.t >= since]
        state = self._world_at(since)
        points: list[tuple[float, int, Any]] = [(e.t, 0, e) for e in events] + [(t, 1, (ev, a)) for t, ev, a in writes]
        points.sort(key=lambda p: (p[0], p[1]))
        pending: list[Reaction] = []
        for t, kind, item in points:
            if kind == 0:
                event: SiteEvent = item
                tighter = self._apply_event(state, event)
                if tighter is not None:
                    reaction = Reaction(tighter, event.t - since, None)
                    report.reactions.append(reaction)
                    pending.append(reaction)
            else:
                evse_id, amps = item
                setpoints[evse_id] = amps
            ok, why = self._rule_holds(state, setpoints)
            if ok:
                for reaction in pending:
                    reaction.seconds = t - since - reaction.at
                pending.clear()
                continue
            older_ok, _ = self._rule_holds(state, setpoints, older=True)
            if pending and older_ok:
                continue
            report.violations.append(f"+{t - since:.2f}s {why}")
        for reaction in report.reactions:
            if reaction.seconds is None or reaction.seconds > max_reaction_s:
                report.violations.append(f"reaction to {reaction.cause} at +{reaction.at:.2f}s took "
                                         f"{'forever' if reaction.seconds is None else f'{reaction.seconds:.2f} s'}")
        self._check_samples(report, since, events, writes, hold_s=hold_s, quiet_s=quiet_s)
        return report

    def _setpoints_at(self, t: float) -> dict[str, float]:
        """Each charger's setpoint at `t`: its last write before then, else as first sampled."""
        first = self.samples[0].setpoints if self.samples else {e: s.setpoint_a for e, s in self.site.sims.items()}
        out = dict(first)
        for when, evse_id, amps in self.setpoint_writes(0.0):
            if when < t:
                out[evse_id] = amps
        return out

    def _world_at(self, t: float) -> dict[str, Any]:
        world: dict[str, Any] = {"other": (0.0, 0.0, 0.0), "limit": self.site.max_current_a, "silent_since": None,
                                 "older": None}
        for event in sorted(self.site.events, key=lambda e: e.t):
            if event.t < t:
                self._apply_event(world, event)
        world["older"] = None
        return world

    def _apply_event(self, world: dict[str, Any], event: SiteEvent) -> str | None:
        """Apply an event; the name of the change if it tightens the rule (older rule kept in `older`)."""
        before = dict(world)
        before.pop("older", None)
        tighter = None
        if event.kind == "other_load":
            if any(event.value[p] > world["other"][p] + 1e-9 for p in range(3)):
                tighter = f"other load {_fmt(event.value)}"
            world["other"] = event.value
        elif event.kind == "limit":
            amps = self.site.max_current_a if event.value is None else min(event.value, self.site.max_current_a)
            if amps < world["limit"]:
                tighter = f"cloud limit {amps:g} A"
            world["limit"] = amps
        elif event.kind == "meter_silent":
            if event.value and world["silent_since"] is None:
                world["silent_since"] = event.t
                tighter = "site meter silent"
            elif not event.value:
                world["silent_since"] = None
        world["older"] = before if tighter else world.get("older")
        return tighter

    def _rule_holds(self, world: dict[str, Any], setpoints: dict[str, float], *, older: bool = False) -> tuple[bool, str]:
        w = world["older"] if older and world.get("older") else world
        offered = self.site.offered(setpoints)
        limit = w["limit"]
        if w["silent_since"] is not None:
            safe = min(self.site.safe_current_a, limit)
            for p in range(3):
                if offered[p] > safe + 1e-6:
                    return False, f"meter silent: {PHASE_NAMES[p]} offered {offered[p]:g} A > safe {safe:g} A"
            return True, ""
        for p in range(3):
            if offered[p] + w["other"][p] > limit + 1e-6:
                return False, (f"{PHASE_NAMES[p]} offered {offered[p]:g} A + other {w['other'][p]:g} A "
                               f"> limit {limit:g} A")
        return True, ""

    def _check_samples(self, report: Report, since: float, events: list[SiteEvent],
                       writes: list[tuple[float, str, float]], *, hold_s: float, quiet_s: float) -> None:
        site = self.site
        samples = [s for s in self.samples if s.t >= since]
        report.samples = len(samples)
        graces = [(since + r.at, since + r.at + (r.seconds if r.seconds is not None else math.inf))
                  for r in report.reactions]
        changes = self._changes(writes, since)
        peak_o, peak_m = [0.0] * 3, [0.0] * 3
        for s in samples:
            for p in range(3):
                peak_o[p] = max(peak_o[p], s.offered[p])
                peak_m[p] = max(peak_m[p], s.measured[p])
            in_grace = any(a <= s.t <= b + 0.2 for a, b in graces)
            world = self._world_at(s.t)
            if not in_grace:
                for p in range(3):
                    if s.measured[p] > world["limit"] + 1e-6:
                        report.violations.append(f"+{s.t - since:.2f}s meter reads {s.measured[p]:.2f} A on "
                                                 f"{PHASE_NAMES[p]} > {world['limit']:g} A")
                # Setpoints also change without writes (a charger falling back to its fail-safe current).
                ok, why = self._rule_holds(world, s.setpoints)
                if not ok:
                    report.violations.append(f"+{s.t - since:.2f}s sampled: {why}")
            for evse_id, state in s.states.items():
                if state == "C" and s.setpoints[evse_id] < 6:
                    report.violations.append(f"+{s.t - since:.2f}s EVSE {evse_id} charging at "
                                             f"{s.setpoints[evse_id]:g} A")
            steady = (world["silent_since"] is None and not any(s.failsafe.values())
                      and not any(s.t - quiet_s <= t <= s.t for t in changes)
                      and not any(s.t - (quiet_s if e.kind in ("arrive", "leave") else hold_s + quiet_s) <= e.t <= s.t
                                  for e in site.events))
            if steady:
                report.fairness_checks += 1
                report.violations += [f"+{s.t - since:.2f}s {v}" for v in self._unfair(s, world)]
        report.max_offered = (peak_o[0], peak_o[1], peak_o[2])
        report.max_measured = (peak_m[0], peak_m[1], peak_m[2])

    @staticmethod
    def _changes(writes: list[tuple[float, str, float]], since: float) -> list[float]:
        last: dict[str, float] = {}
        out = []
        for t, evse_id, amps in writes:
            if last.get(evse_id) != amps:
                out.append(t)
            last[evse_id] = amps
        return out

    def _unfair(self, s: Sample, world: dict[str, Any]) -> list[str]:
        """Max-min fairness within 1 A among those charging: nobody below its own limits could get
        1 A more, nor take 1 A from anyone of no higher priority who has more than 1 A more."""
        site = self.site
        free = [world["limit"] - world["other"][p] - s.offered[p] for p in range(3)]
        charging = [e for e, st in s.states.items() if st == "C"]
        out = []
        for e in charging:
            spec = site.specs[e]
            offer = s.setpoints[e]
            if s.draws[e] < offer - 1e-6 or offer + 1 > spec.max_current_a:
                continue  # it takes less than offered (gives back) or is at its maximum
            if all(free[p] >= 1 - 1e-6 for p in spec.site_phases()):
                out.append(f"EVSE {e} at {offer:g} A could have 1 A more (free {_fmt(free)})")
                continue
            for f in charging:
                other = site.specs[f]
                if f == e or other.priority > spec.priority or s.setpoints[f] - offer <= 1 + 1e-6:
                    continue
                gain = [free[p] + (1 if p in other.site_phases() else 0) for p in range(3)]
                if all(gain[p] >= 1 - 1e-6 for p in spec.site_phases()):
                    out.append(f"EVSE {e} at {offer:g} A could take 1 A from EVSE {f} at {s.setpoints[f]:g} A")
        return out


# -- load management against the simulated site (standalone; the agent integrates it later) --------

def harness_settings(**changes: float) -> LoadSettings:
    """Settings for a quick simulated site; cars in the simulator follow a new offer at once."""
    options = {"giveback_after_s": 2.0, "other_load_hold_s": 3.0, "min_pause_s": 2.0, "control_interval_s": 0.25,
               "ramp_s": 2.0}
    options.update(changes)
    return LoadSettings(**options)


def create_chargers(config: SiteConfig, plan: SitePlan, registry: BusRegistry, *,
                    failsafe_timeout_s: float | None = None, timeout_s: float = 0.5) -> dict[str, ModbusCharger]:
    return {c.evse_id: create_charger(
        model=c.model, name=f"evse {c.evse_id}", registry=registry, host=c.host, port=c.port, unit=c.unit,
        timeout_s=timeout_s, retries=0, max_current_a=c.max_current_a,
        failsafe_current_a=plan.failsafe_a[c.evse_id], failsafe_timeout_s=failsafe_timeout_s)
        for c in config.chargers}


def create_site_meter(config: SiteConfig, registry: BusRegistry) -> SiteMeterClient | None:
    meter = config.site.meter if config.site else None
    if meter is None or meter.host is None:
        return None
    return SiteMeterClient(registry=registry, host=meter.host, port=meter.port or 502, unit=meter.unit or 1)


class _PluggedIsSession:
    """A free-charging site: a plugged vehicle is a session (stands in for authorization)."""

    def __init__(self, evse_id: str, charger: ModbusCharger) -> None:
        self.evse_id = evse_id
        self.charger = charger
        self.loop: LoadManagementLoop | None = None

    async def setup(self) -> None:
        await self.charger.setup()

    async def keepalive(self) -> None:
        await self.charger.keepalive()

    async def set_max_current(self, amps: float) -> None:
        await self.charger.set_max_current(amps)

    async def enable(self, on: bool) -> None:
        await self.charger.enable(on)

    async def poll(self) -> ChargerReading:
        reading = await self.charger.poll()
        assert self.loop is not None
        has = self.loop.controller.has_session(self.evse_id)
        if reading.iec61851 in "BCD" and not has:
            self.loop.session_started(self.evse_id)
        elif reading.iec61851 == "A" and has:
            self.loop.session_ended(self.evse_id)
        return reading


async def run_agent(config: SiteConfig, *, failsafe_timeout_s: float, settings: LoadSettings,
                    ready: Callable[[], None] | None = None) -> None:
    plan = site_plan(config)
    async with BusRegistry() as registry:
        chargers = create_chargers(config, plan, registry, failsafe_timeout_s=failsafe_timeout_s)
        wrapped = {e: _PluggedIsSession(e, c) for e, c in chargers.items()}
        loop = LoadManagementLoop(plan=plan, chargers=wrapped, meter=create_site_meter(config, registry),
                                  settings=settings)
        for w in wrapped.values():
            w.loop = loop
        if ready is not None:
            ready()
        await loop.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hardware_sim.loadsite")
    sub = parser.add_subparsers(dest="command", required=True)
    agent = sub.add_parser("agent", help="run load management alone against a (simulated) site")
    agent.add_argument("--config", required=True)
    agent.add_argument("--failsafe-timeout", type=float, default=None, help="chargers' fail-safe timeout, s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    config = load_config(args.config)
    asyncio.run(run_agent(config, failsafe_timeout_s=args.failsafe_timeout, settings=harness_settings(),
                          ready=lambda: print("ready", flush=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
