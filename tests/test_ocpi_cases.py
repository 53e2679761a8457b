"""The external OCPI tariff cases (../shared/external/ocpi-cases/, beside the checkout as in CI),
each priced through `edge-agent price` as its own process: real CDRs and public calculators'
figures, written by neither this project nor its contract. They are read where they are, never
copied here; the rules they exercise have their own tests in test_pricing.py.

A case whose gate is "upstream" must match `expected`, one gated "spec" `spec_expected`, within
the case's tolerance (incl_vat is not compared where the expected figure has none: OCPI 2.1.1).
A case gated "none" is not usable OCPI: the right answer is a clear refusal (exit 1, one line
saying what is wrong), not a price and not a traceback.
"""
from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import edge_agent

CASES_DIR = Path(__file__).resolve().parents[1].parent / "shared/external/ocpi-cases"
# Its README says cases/NN-<id>.json; the folder holds them at its top: either is read.
CASE_FILES = sorted([*CASES_DIR.glob("[0-9][0-9]-*.json"), *CASES_DIR.glob("cases/[0-9][0-9]-*.json")])
pytestmark = pytest.mark.skipif(not CASES_DIR.is_dir(), reason=f"no OCPI cases folder at {CASES_DIR}")


def case_id(path: Path) -> str:
    return path.stem


def price(case: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "tariff.json").write_text(json.dumps(case["tariff"]), encoding="utf-8")
    (tmp_path / "cdr.json").write_text(json.dumps(case["cdr"]), encoding="utf-8")
    return edge_agent("price", "--tariff", tmp_path / "tariff.json", "--cdr", tmp_path / "cdr.json", "--tz", case["tz"],
                      timeout=120)


def test_the_folder_holds_the_cases_its_readme_lists():
    gates = [json.loads(p.read_text(encoding="utf-8"))["gate"] for p in CASE_FILES]
    assert len(gates) == 19, CASE_FILES
    assert (gates.count("upstream"), gates.count("spec"), gates.count("none")) == (15, 1, 3)


@pytest.mark.parametrize("path", CASE_FILES, ids=case_id)
def test_case_through_edge_agent_price(path, tmp_path):
    case = json.loads(path.read_text(encoding="utf-8"))
    out = price(case, tmp_path)
    assert "Traceback" not in out.stderr, out.stderr
    if case["gate"] == "none":
        assert out.returncode == 1 and out.stdout == "", (out.stdout, out.stderr)
        assert out.stderr.startswith("cannot price: ") and out.stderr.count("\n") == 1, out.stderr
        return
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    expected = case["spec_expected"] if case["gate"] == "spec" else case["expected"]
    tolerance = Decimal(str(case["tolerance"]))
    assert got["currency"] == case["tariff"]["currency"]
    for key in ("excl_vat", "incl_vat"):
        if expected.get(key) is None:
            continue
        difference = abs(Decimal(str(got[key])) - Decimal(str(expected[key])))
        assert difference <= tolerance, f"{key}: {got[key]} against {expected[key]} (tolerance {tolerance})"
