"""The saved results of the benchmarks as Markdown: the machine, then one table per benchmark.

    python -m benchmarks.report --machine          # note the machine (before a run: load average)
    python -m benchmarks.report                     # print the tables
    python -m benchmarks.report --write docs/performance.md
        # replace what stands between the markers <!-- bench:begin --> and <!-- bench:end -->
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from . import _common as c

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ORDER = ["tap_to_charge", "backlog_drain", "bus_use", "scale", "disk"]


def machine_path() -> Path:
    return c.results_dir() / "machine.json"


def save_machine() -> dict[str, str]:
    info = c.machine()
    info["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine_path().write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    info = json.loads(machine_path().read_text()) if machine_path().exists() else {**c.machine(), "date": "?"}
    results = sorted(c.load_results(), key=lambda r: ORDER.index(r.name) if r.name in ORDER else 99)
    lines = [f"Measured {info.pop('date')} with `./scripts/bench.sh` "
             f"(total {sum(r.seconds for r in results) / 60:.1f} min of benchmarks).", "",
             "| machine | |", "|---|---|"]
    info["load after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    lines += [f"| {key} | {cell(value)} |" for key, value in info.items()]
    for result in results:
        lines += ["", f"### {result.title}", "",
                  f"`python -m benchmarks.{result.name}` ({result.seconds:.0f} s, started {result.started_at})", "",
                  "| figure | median | spread | limit | ratio | goal | met? |", "|---|---|---|---|---|---|---|"]
        for row in result.rows:
            met = {True: "yes", False: "**no**", None: ""}[row.met]
            lines.append("| " + " | ".join(cell(x) for x in (row.figure.strip(), row.median, row.spread, row.limit,
                                                              row.ratio, row.goal, met)) + " |")
        if result.notes:
            lines.append("")
            lines += [f"- {cell(note)}" for note in result.notes]
    missing = [name for name in ORDER if name not in {r.name for r in results}]
    if missing:
        lines += ["", f"Not measured in this run: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def write_into(path: Path, text: str) -> None:
    block = f"{BEGIN}\n{text}{END}"
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if BEGIN in old and END in old:
            head, rest = old.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            path.write_text(head + block + tail, encoding="utf-8")
            return
        path.write_text(old.rstrip("\n") + "\n\n" + block + "\n", encoding="utf-8")
        return
    path.write_text(f"# Performance\n\n{block}\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report")
    parser.add_argument("--machine", action="store_true", help="note the machine's description and load now")
    parser.add_argument("--write", type=Path, help="put the tables between the bench markers of this file")
    args = parser.parse_args()
    if args.machine:
        save_machine()
        return 0
    text = render()
    if args.write:
        write_into(args.write, text)
        print(f"results written into {args.write}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
