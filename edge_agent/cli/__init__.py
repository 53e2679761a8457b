"""The technician's command line: `edge-agent --help`.

One parser (._parser) registers every sub-command; what each does is in the module named for its
kind. Every command ends with a code of the one table in ._exit_codes (ExitCode).
"""
from __future__ import annotations

from ._exit_codes import ExitCode
from ._parser import build_parser
from ._records import Period, quarter_of

__all__ = ["ExitCode", "Period", "main", "quarter_of"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return ExitCode.NO

