#!/usr/bin/env bash
# Sets up (see setup.sh) and runs every benchmark on this machine, about 8 minutes, printing each
# figure beside the limit it is measured against; scratch data and results go to
# /var/tmp/edge-agent-bench (on disk: SQLite's fsync means nothing on tmpfs).
#
#   ./scripts/bench.sh            run them all, print the tables
#   ./scripts/bench.sh --record   also write the tables into docs/performance.md
#   ./scripts/bench.sh --quick    a smoke run with few repetitions (not a measurement)
#
# One alone: .venv/bin/python -m benchmarks.tap_to_charge (backlog_drain, bus_use, scale, disk).
# Run it on an otherwise quiet machine: other load shows up in every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
record=0
extra=()
for arg in "$@"; do
  case "$arg" in
    --record) record=1 ;;
    --quick) extra+=(--quick) ;;
    *) echo "usage: $0 [--record] [--quick]" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh
command -v mosquitto_pub >/dev/null 2>&1 || { echo "mosquitto_pub is missing: apt-get install mosquitto-clients" >&2; exit 1; }

results="${BENCH_ROOT:-/var/tmp/edge-agent-bench}/results"
mkdir -p "$results"
rm -f "$results"/*.json
.venv/bin/python -m benchmarks.report --machine
failed=()
for name in tap_to_charge backlog_drain bus_use scale disk; do
  if ! .venv/bin/python -m "benchmarks.$name" "${extra[@]}"; then
    failed+=("$name")
  fi
done
echo
.venv/bin/python -m benchmarks.report >"$results/report.md"
echo "all tables in Markdown: $results/report.md"
if [ "$record" = 1 ]; then
  .venv/bin/python -m benchmarks.report --write docs/performance.md
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
