"""The layout's rules (docs/architecture.md), checked on the source: they hold because this fails."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("edge_agent", "drivers")
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a product module."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])  # an __init__'s is its own
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_no_product_file_is_over_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_drivers_import_nothing_of_the_agent_and_the_product_nothing_of_the_simulators() -> None:
    wrong = [f"{_where(p, line)} imports {name}" for p in _modules() for line, name in _imports(p)
             if name.split(".")[0] == "hardware_sim"
             or (p.relative_to(ROOT).parts[0] == "drivers" and name.split(".")[0] == "edge_agent")]
    assert wrong == []


def test_a_private_module_is_imported_only_inside_its_own_package() -> None:
    wrong = []
    for path in _modules():
        here = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        for line, name in _imports(path):
            parts = name.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
            if not private or parts[0] not in PRODUCT:
                continue
            owner = ".".join(parts[:private[0]])  # the package the private module belongs to
            if here != owner and not here.startswith(owner + "."):
                wrong.append(f"{_where(path, line)} imports {name}")
    assert wrong == []


def test_the_rules_see_a_breach(tmp_path: Path) -> None:
    """The import reader resolves relative imports, so the checks above cannot pass by missing them."""
    module = tmp_path / "edge_agent" / "agent" / "_x.py"
    module.parent.mkdir(parents=True)
    module.write_text("from ..cloud._link import MqttLink\nfrom . import _evse\nimport drivers.modbus._bus\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert _imports(module) == [(1, "edge_agent.cloud._link"), (1, "edge_agent.cloud._link.MqttLink"),
                                    (2, "edge_agent.agent"), (2, "edge_agent.agent._evse"),
                                    (3, "drivers.modbus._bus")]
    finally:
        ROOT = saved
