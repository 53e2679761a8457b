"""The exit codes of every `edge-agent` command, for scripts: this one table (docs/operations.md,
"Exit codes").

4 is "busy" for the commands that would take what the running agent owns (run, tap-test, migrate,
import) and "the serial port cannot be used" for the Modbus tools (probe, scan), which never ask
the agent for anything: scripts and tests rely on both, so they share the number.
"""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # yes / done
    NO = 1  # no: not running, may not charge, nothing found, no answer, refused, failed
    USAGE = 2  # bad arguments (argparse uses 2 as well)
    CONFIG = 3  # the configuration is invalid or cannot be read
    BUSY = 4  # the running agent owns what was asked for (run, tap-test, migrate, import)
    PORT = 4  # probe, scan: the serial port cannot be opened, or refuses every setting
    DOWNGRADE = 5  # the data comes from a newer release
    TIMEOUT = 6  # tap-test: no card was read


# The --help epilogs: the codes each group of commands can end with.
TECHNICIAN_EXIT_CODES = ("exit codes: 0 yes/done, 1 no (not running / may not charge / nothing found / refused), "
                         "2 usage, 3 invalid configuration, 4 busy (the running agent owns it), "
                         "5 downgrade (data from a newer release), 6 timed out")

MODBUS_EXIT_CODES = """exit codes:
  0  the device answered (probe) / at least one device was found (scan)
  1  no answer (probe) / nothing found (scan)
  2  bad arguments (unknown model, a unit outside 1..247, ...)
  4  the serial port cannot be opened, or refuses the settings"""
