#!/usr/bin/env bash
# Sets up (see setup.sh) and runs the whole test suite on real parts:
# mosquitto brokers, pymodbus servers over TCP, Modbus RTU and RFID readers over socat ptys.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
