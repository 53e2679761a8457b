"""The exit codes of every `edge-agent` command, for scripts: this one table (docs/operations.md,
"Exit codes").

Each code has one meaning. 4, BUSY: what the command needs is taken or cannot be used: the data
directory (another agent holds it), a reader the agent reads, a serial port that is in use or
cannot be opened (probe, scan).
"""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # yes / done
    NO = 1  # no: not running, may not charge, nothing found, no answer, refused, failed
    USAGE = 2  # bad arguments (argparse uses 2 as well)
    CONFIG = 3  # the configuration is invalid or cannot be read
    BUSY = 4  # what it needs is taken or unusable: the data directory, a reader, a serial port
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
