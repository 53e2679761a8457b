"""The checks `edge-agent run` makes before it touches a device or the network, run by
`edge-agent config check` too, so that the two never disagree.

They go beyond the config file's own rules: the secrets and TLS files it names (present, private,
usable), the load-management plan (limit tree, fail-safe budget), and what each charger model
takes (its current range, whether the gateway sets its fail-safe current, a built-in reader).
Each problem is a ConfigIssue with its key path and, where the file says, its line.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from .config import ChargerConfig, ConfigError, ConfigIssue, SiteConfig


def startup_issues(config: SiteConfig) -> list[ConfigIssue]:
    """Every problem that would make `run` refuse this config, in file order where known."""
    from drivers.modbus import BusRegistry, MapError
    from drivers.readers import create_reader, identifier_of

    from .agent import create_evse_charger, create_site_meter
    from .cloud import link_credentials, lists_verify
    from .loadmanagement import LoadManagementError, site_plan

    source = str(config.path) if config.path is not None else "<config>"
    issues: list[ConfigIssue] = []
    for check in (link_credentials, lists_verify):
        try:
            check(config.cloud, source=source)
        except ConfigError as exc:
            issues += exc.errors
    plan = None
    if config.site is not None:
        try:
            plan = site_plan(config)
        except (LoadManagementError, ValueError) as exc:
            issues.append(ConfigIssue(_plan_key(config, str(exc)), None, str(exc)))
    registry = BusRegistry()
    chargers: dict[str, Any] = {}
    for i, charger_cfg in enumerate(config.chargers):
        try:
            chargers[charger_cfg.evse_id] = create_evse_charger(
                charger_cfg, registry=registry, plan=plan, energy_dir=None)
        except (MapError, ValueError) as exc:
            issues.append(ConfigIssue(_charger_key(i, str(exc)), None, str(exc)))
    for i, reader_cfg in enumerate(config.readers):
        if reader_cfg.driver == "charger":
            charger = chargers.get(reader_cfg.evse_id) if reader_cfg.evse_id is not None else None
            if charger is not None and identifier_of(charger) is None:
                issues.append(ConfigIssue(f"readers[{i}].driver", None, f"the {charger.model} of EVSE "
                                          f"{reader_cfg.evse_id} has no card reader in its register map"))
            continue
        try:
            create_reader(driver=reader_cfg.driver, port=reader_cfg.port, device=reader_cfg.device,
                          evse_id=reader_cfg.evse_id, on_tap=lambda tap: None)
        except ValueError as exc:
            issues.append(ConfigIssue(f"readers[{i}]", None, str(exc)))
    if config.site is not None and config.site.meter is not None:
        try:
            create_site_meter(config.site.meter, registry)
        except (MapError, ValueError) as exc:
            issues.append(ConfigIssue("site.meter", None, str(exc)))
    return _with_lines(_unique(issues), config.path)


def check_startup(config: SiteConfig) -> None:
    """Raises ConfigError with every startup issue of `config`."""
    issues = startup_issues(config)
    if issues:
        raise ConfigError(issues, source=str(config.path) if config.path is not None else "<config>")


_CHARGER_KEYS = sorted((f.name for f in dataclasses.fields(ChargerConfig)), key=len, reverse=True)


def _charger_key(index: int, message: str) -> str:
    # The driver names the option it cannot take ("evse 1: failsafe_current_a 10 is ...").
    key = next((k for k in _CHARGER_KEYS if re.search(rf"\b{k}\b", message)), None)
    if key is None and "fail-safe current" in message:
        key = "failsafe_current_a"
    return f"chargers[{index}].{key}" if key else f"chargers[{index}]"


def _plan_key(config: SiteConfig, message: str) -> str:
    found = re.match(r"EVSE (\S+?):", message)
    if found:
        index = next((i for i, c in enumerate(config.chargers) if c.evse_id == found.group(1)), None)
        if index is not None:
            return _charger_key(index, message)
    found = re.match(r"circuit '([^']*)'", message)
    if found:
        index = next((i for i, c in enumerate(config.circuits) if c.id == found.group(1)), None)
        if index is not None:
            return f"circuits[{index}]"
    return "site"


def _unique(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    # cloud.tls.ca_file is both the link's CA and, by default, the list downloads' CA.
    seen: set[tuple[str, str]] = set()
    out = []
    for issue in issues:
        if (issue.path, issue.message) not in seen:
            seen.add((issue.path, issue.message))
            out.append(issue)
    return out


def _with_lines(issues: list[ConfigIssue], path: Path | None) -> list[ConfigIssue]:
    lines = _key_lines(path) if path is not None else {}
    out = []
    for issue in issues:
        line, key = issue.line, issue.path
        while line is None and key:  # the key itself, else the nearest enclosing key the file sets
            line = lines.get(key)
            last = re.search(r"(\.[^.\[\]]+|\[\d+\])$", key)
            key = key[:last.start()] if last else ""
        out.append(dataclasses.replace(issue, line=line))
    return out


def _key_lines(path: Path) -> dict[str, int]:
    """Key path (`chargers[1].max_current_a`) -> the 1-based line where the file sets it."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8-sig"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    lines: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines.setdefault(name, key.start_mark.line + 1)
                walk(value, name)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault(f"{prefix}[{i}]", item.start_mark.line + 1)
                walk(item, f"{prefix}[{i}]")

    walk(root, "")
    return lines
