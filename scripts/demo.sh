#!/usr/bin/env bash
# Sets up (see setup.sh) and runs the demo: a simulated garage with two chargers, card readers,
# a cloud, an outage and the sync afterwards, shown live in the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m hardware_sim.demo "$@"
