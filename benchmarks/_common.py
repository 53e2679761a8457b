"""What every benchmark shares: statistics, /proc readings, the agent as a process, the result
tables, and where results and scratch data go.

Scratch data (agent data_dir, broker persistence, logs) goes under /var/tmp, which is on disk on
Debian and Raspberry Pi OS: SQLite's fsync and /proc/<pid>/io write_bytes mean nothing on tmpfs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_ROOT = Path(os.environ.get("BENCH_ROOT", "/var/tmp/edge-agent-bench"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def results_dir() -> Path:
    path = BENCH_ROOT / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def scratch_dir(name: str) -> Path:
    root = BENCH_ROOT / "work"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))


# -- statistics ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Stats:
    n: int
    median: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("no values to summarise")
        ordered = sorted(values)
        return cls(n=len(ordered), median=statistics.median(ordered), p99=percentile(ordered, 99),
                   min=ordered[0], max=ordered[-1])

    def scaled(self, factor: float) -> Stats:
        return Stats(self.n, self.median * factor, self.p99 * factor, self.min * factor, self.max * factor)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (with 50 values, p99 is the largest)."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# -- result tables ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    median: str
    spread: str
    limit: str = ""
    ratio: str = ""
    goal: str = ""
    met: bool | None = None  # None: no goal for this figure


@dataclass(slots=True)
class Result:
    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    seconds: float = 0.0

    def add(self, *args: Any, **kwargs: Any) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)


def spread(stats: Stats, fmt: Callable[[float], str], *, p99: bool = True) -> str:
    parts = [f"p99 {fmt(stats.p99)}"] if p99 else []
    parts += [f"min {fmt(stats.min)}", f"max {fmt(stats.max)}", f"n={stats.n}"]
    return ", ".join(parts)


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def num(value: float, unit: str = "", digits: int = 3) -> str:
    text = f"{value:#,.{digits}g}".rstrip(".") if abs(value) < 10 ** digits else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def met_text(met: bool | None) -> str:
    return {True: "met", False: "NOT MET", None: ""}[met]


def print_result(result: Result, file: Any = None) -> None:
    out = file or sys.stdout
    print(f"\n== {result.title} ({result.seconds:.0f} s) ==", file=out)
    headers = ["figure", "median", "spread", "limit", "ratio", "goal", "met?"]
    table = [[r.figure, r.median, r.spread, r.limit, r.ratio, r.goal, met_text(r.met)] for r in result.rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line, file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)), file=out)
    for note in result.notes:
        print(f"  * {note}", file=out)
    out.flush()


def save_result(result: Result) -> Path:
    path = results_dir() / f"{result.name}.json"
    path.write_text(json.dumps(asdict(result), indent=2), encoding="utf-8")
    return path


def load_results() -> list[Result]:
    out = []
    for path in sorted(results_dir().glob("*.json")):
        if path.name == "machine.json":
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [Row(**r) for r in data.pop("rows")]
        out.append(Result(rows=rows, **data))
    return out


def main(name: str, title: str, run: Callable[[Result, argparse.Namespace], None], *,
         add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """The shared command line of every benchmark module."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=title)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, not a measurement)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, databases)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    result = Result(name=name, title=title)
    started = time.monotonic()
    run(result, args)
    result.seconds = time.monotonic() - started
    print_result(result)
    path = save_result(result)
    print(f"  (saved {path})")
    return 0


# -- the machine --------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(("model name", "Model", "Hardware")):
                cpu = line.split(":", 1)[1].strip()
                if line.startswith("model name"):
                    break
    mem_kib = 0
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    os_name = platform.platform()
    if Path("/etc/os-release").exists():
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        os_name = fields.get("PRETTY_NAME", os_name).strip('"')
    import paho.mqtt
    import pymodbus

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "os": f"{os_name}, Linux {platform.release()}",
        "python": platform.python_version(),
        "mosquitto": _version([_which("mosquitto"), "-h"], r"mosquitto version (\S+)"),
        "pymodbus": pymodbus.__version__,
        "paho-mqtt": paho.mqtt.__version__,
        "sqlite": __import__("sqlite3").sqlite_version,
        "socat": _version(["socat", "-V"], r"socat version (\S+)"),
        "disk": _disk_of(BENCH_ROOT),
        "load before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def _which(program: str) -> str:
    return shutil.which(program) or f"/usr/sbin/{program}"


def _version(command: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=5)
    except OSError:
        return "not installed"
    found = re.search(pattern, out.stdout + out.stderr)
    return found.group(1) if found else "unknown"


def _disk_of(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    best = ("", "", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, fstype = line.split()[:3]
        under = str(path.resolve()).startswith(mount.rstrip("/") + "/") or mount == "/"
        if under and len(mount) >= len(best[1]):
            best = (device, mount, fstype)
    return f"{best[2]} on {best[0]} (mounted at {best[1]})"


# -- a process seen through /proc -----------------------------------------------------------------

class ProcStats:
    """CPU, memory and disk writes of one process (all its threads) from /proc/<pid>."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self, *, children: bool = False) -> float:
        """utime + stime of all threads; with children, also of the child processes it has waited for."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14 to 17.
        ticks = int(fields[11]) + int(fields[12])
        if children:
            ticks += int(fields[13]) + int(fields[14])
        return ticks / CLK_TCK

    def status_kib(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def rss_kib(self) -> int:
        return self.status_kib("VmRSS")

    def hwm_kib(self) -> int:
        return self.status_kib("VmHWM")

    def io(self) -> dict[str, int]:
        with open(f"/proc/{self.pid}/io", encoding="ascii") as handle:
            return {k: int(v) for k, v in (line.split(": ") for line in handle)}

    def write_bytes(self) -> int:
        return self.io()["write_bytes"]


def cpu_windows(stats: ProcStats, *, windows: int, seconds: float, children: bool = False,
                during: Callable[[], None] | None = None) -> tuple[list[float], list[int]]:
    """CPU use (fraction of one core) and RSS (KiB) over consecutive windows of wall time."""
    cpu, rss = [], []
    for _ in range(windows):
        c0, t0 = stats.cpu_s(children=children), time.monotonic()
        deadline = t0 + seconds
        samples = []
        while (now := time.monotonic()) < deadline:
            samples.append(stats.rss_kib())
            if during is not None:
                during()
            time.sleep(min(0.5, deadline - now))
        c1, t1 = stats.cpu_s(children=children), time.monotonic()
        cpu.append((c1 - c0) / (t1 - t0))
        rss.append(max(samples) if samples else stats.rss_kib())
    return cpu, rss


# -- the agent as a process -----------------------------------------------------------------------

class AgentProcess:
    """`python -m edge_agent run` on a configuration file, as systemd would run it."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> AgentProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=REPO)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, needle: str, timeout: float) -> bool:
        return wait_until(lambda: needle in self.log_text() or not self.alive(), timeout) and needle in self.log_text()

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class BenchError(RuntimeError):
    """A benchmark could not measure what it should (the product misbehaved or a part is missing)."""
