"""`edge-agent price`: one OCPI CDR priced with one OCPI tariff, as the agent prices a session."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._exit_codes import ExitCode


def cmd_price(args: argparse.Namespace) -> int:
    from ..pricing import TariffError, price_cdr

    try:
        tariff = _read_json(args.tariff)
        cdr = _read_json(args.cdr)
    except ValueError as exc:
        print(f"cannot read input: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        result = price_cdr(tariff, cdr, tz=args.tz).to_json()
    except (TariffError, ValueError, KeyError) as exc:
        print(f"cannot price: {exc}", file=sys.stderr)
        return ExitCode.NO
    except Exception as exc:  # noqa: BLE001 - a clear error for any input, never a traceback
        print(f"cannot price: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ExitCode.NO
    print(json.dumps({"currency": result["currency"], "excl_vat": result["excl_vat"],
                      "incl_vat": result["incl_vat"]}))
    return ExitCode.OK


def _read_json(path: str) -> Any:
    """A JSON file's content (whatever it holds: price_cdr judges it); ValueError naming the file
    for anything unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep
        raise ValueError(f"{path}: not valid UTF-8 JSON ({exc})") from None
