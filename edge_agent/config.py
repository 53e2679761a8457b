"""Site configuration: one YAML file per gateway -> typed, frozen dataclasses.

Validation is strict (unknown keys, wrong types and impossible values are errors) and works on
the YAML node tree, so every problem names its key path and line. All problems are collected and
raised together as one `ConfigError`.

Each setting's type, default, range and meaning sit next to its dataclass field (`_setting(...)`);
checks that involve several fields live in the `_check_*` functions below the dataclasses.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "CHARGER_MODELS",
    "METER_MODELS",
    "AuthorizationConfig",
    "ChargerConfig",
    "CircuitConfig",
    "CloudConfig",
    "ConfigError",
    "ConfigIssue",
    "GridConnectionConfig",
    "MeterConfig",
    "ModbusEndpoint",
    "ReaderConfig",
    "SessionsConfig",
    "SiteConfig",
    "TlsConfig",
    "load_config",
    "parse_config_text",
]

# The model names of contract/site-config.md; used when drivers.modbus cannot tell us its maps.
CHARGER_MODELS = (
    "bender-cc613",
    "heidelberg-energy-control",
    "abb-terra-ac",
    "alfen-ng9xx",
    "schneider-evlink-pro-ac",
    "phoenix-charx",
    "etrel-inch",
    "peblar",
)
METER_MODELS = (
    "eastron-sdm630",
    "eastron-sdm120",
    "eastron-sdm72",
    "carlo-gavazzi-em340",
    "abb-b23",
)

BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
MAX_TOPIC_LEVEL_CHARS = 64


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: where (key path such as `chargers[1].baudrate`, 1-based line) and what."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where = f"{where} (line {self.line})" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


class ConfigError(Exception):
    """Every problem found in one config file; str() lists them one per line."""

    def __init__(self, errors: list[ConfigIssue], *, source: str = "<string>") -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__("\n".join(str(issue) for issue in self.errors))


# --------------------------------------------------------------------------- field specs

_REQUIRED: Any = dataclasses.MISSING


@dataclass(frozen=True, kw_only=True)
class _Spec:
    kind: str  # "str" | "path" | "int" | "number" | "section" | "list"
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    item: type | None = None  # the dataclass of a "section" or of each "list" entry
    min_items: int = 0
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None


def _setting(
    kind: str,
    doc: str,
    *,
    default: Any = _REQUIRED,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[Any, ...] | None = None,
    item: type | None = None,
    min_items: int = 0,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    spec = _Spec(
        kind=kind, doc=doc, min=min, max=max, choices=choices, item=item,
        min_items=min_items, check=check,
    )
    return field(default=default, metadata={"spec": spec})


def _topic_level_problem(value: str) -> str | None:
    if len(value) > MAX_TOPIC_LEVEL_CHARS:
        return f"must be at most {MAX_TOPIC_LEVEL_CHARS} characters, got {len(value)}"
    if any(c in "/+#" or ord(c) < 0x20 for c in value):
        return (
            f"must be usable as one MQTT topic level (no '/', '+', '#' or control characters), "
            f"got {json.dumps(value)}"
        )
    return None


def _topic_prefix_problem(value: str) -> str | None:
    if value.startswith("$"):
        return f"must not start with '$' (reserved for the broker), got {json.dumps(value)}"
    if any(level == "" for level in value.split("/")):
        return f"must not start or end with '/' or contain '//', got {json.dumps(value)}"
    if any(c in "+#" or ord(c) < 0x20 for c in value):
        return f"must not contain '+', '#' or control characters, got {json.dumps(value)}"
    return None


def _time_zone_problem(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {json.dumps(value)}{_hint(value, available_timezones())}"
    return None


def _failsafe_current_problem(value: float) -> str | None:
    # A charger cannot offer 0 < I < 6 A (IEC 61851), so those values cannot be a fail-safe.
    if 0 < value < 6:
        return f"must be 0 or between 6 and 80, got {value:g}"
    return None


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    ca_file: Path | None = _setting(
        "path", "CA bundle that signs the broker's certificate; default: the system's", default=None
    )
    cert_file: Path | None = _setting(
        "path", "this gateway's client certificate (mutual TLS)", default=None
    )
    key_file: Path | None = _setting("path", "private key of cert_file", default=None)


@dataclass(frozen=True, kw_only=True)
class CloudConfig:
    host: str = _setting("str", "MQTT broker host name or address")
    port: int = _setting("int", "default 1883, or 8883 with tls", default=1883, min=1, max=65535)
    topic_prefix: str = _setting(
        "str", "topics are {topic_prefix}/{gateway_id}/...", default="edge/v1",
        check=_topic_prefix_problem,
    )
    tls: TlsConfig | None = _setting("section", "TLS; absent: plain TCP", default=None, item=TlsConfig)
    username: str | None = _setting("str", "MQTT user name", default=None)
    password_file: Path | None = _setting(
        "path", "file whose content is the MQTT password", default=None
    )
    keepalive_s: int = _setting("int", "MQTT keepalive", default=30, min=5, max=3600)
    ack_timeout_s: float = _setting(
        "number", "re-send an unacknowledged event after this long", default=60.0, min=1, max=86400
    )
    reconnect_max_s: float = _setting(
        "number", "upper bound of the reconnect backoff", default=60.0, min=1, max=3600
    )
    session_expiry_s: int = _setting(
        "int", "MQTT 5 session expiry interval", default=86400, min=0, max=0xFFFFFFFF
    )
    lists_ca_file: Path | None = _setting(
        "path", "CA bundle that signs the HTTPS server of user lists sent by URL; "
        "default: tls.ca_file, else the system's", default=None
    )


@dataclass(frozen=True, kw_only=True)
class AuthorizationConfig:
    offline_unknown: str = _setting(
        "str", "unknown tokens while the cloud is unreachable", default="reject",
        choices=("reject", "accept"),
    )
    online_timeout_s: float = _setting(
        "number", "wait this long for ~/auth/response before deciding locally",
        default=3.0, min=0.1, max=60,
    )
    connect_timeout_s: float = _setting(
        "number", "after a tap, how long the driver has to plug in", default=60.0, min=5, max=3600
    )
    debounce_s: float = _setting(
        "number", "repeated reads of one token within this time are one tap",
        default=2.0, min=0, max=60,
    )


@dataclass(frozen=True, kw_only=True)
class SessionsConfig:
    meter_values_interval_s: float = _setting(
        "number", "interval of meter_values samples", default=60.0, min=5, max=3600
    )
    poll_interval_s: float = _setting(
        "number", "how often each charger is polled", default=1.0, min=0.1, max=60
    )
    status_heartbeat_s: float = _setting(
        "number", "re-publish ~/evse/{id}/status at least this often", default=10.0, min=1, max=3600
    )
    max_plausible_power_kw: float = _setting(
        "number", "a charger's energy counter rising faster than this is held back as implausible",
        default=100.0, min=1, max=1_000_000
    )


@dataclass(frozen=True, kw_only=True)
class ModbusEndpoint:
    """Where a Modbus device answers: `host`/`port` (TCP) or `serial` (RTU), and its unit id.

    After loading, `transport` is always set, `port` is set exactly when there is a `host`, and
    `baudrate`/`parity`/`stopbits` can only be set with `serial`; None there means the model's
    factory setting, and `unit` None means the model's usual unit id.
    """

    transport: str = _setting(
        "str", "default: tcp with host, rtu with serial; rtu-over-tcp for a serial gateway",
        default="tcp", choices=("tcp", "rtu", "rtu-over-tcp"),
    )
    host: str | None = _setting("str", "Modbus TCP host", default=None)
    port: int | None = _setting("int", "Modbus TCP port, default 502", default=502, min=1, max=65535)
    serial: str | None = _setting("str", "serial port of the RS-485 bus", default=None)
    baudrate: int | None = _setting("int", "default: the model's", default=None, choices=BAUDRATES)
    parity: str | None = _setting("str", "default: the model's", default=None, choices=("N", "E", "O"))
    stopbits: int | None = _setting("int", "default: the model's", default=None, choices=(1, 2))
    unit: int | None = _setting("int", "Modbus unit id; default: the model's", default=None, min=0, max=255)


@dataclass(frozen=True, kw_only=True)
class MeterConfig(ModbusEndpoint):
    model: str = _setting("str", "a meter register map, e.g. eastron-sdm630")


@dataclass(frozen=True, kw_only=True)
class ChargerConfig(ModbusEndpoint):
    evse_id: str = _setting("str", "the EVSE's id in topics and events", check=_topic_level_problem)
    model: str = _setting("str", "a charger register map shipped in drivers/modbus/maps")
    connector: int | None = _setting(
        "int", "charge point behind the unit (phoenix-charx, etrel-inch duo)", default=None,
        min=1, max=255,
    )
    max_current_a: float | None = _setting(
        "number", "what a session is offered; default: the charger's maximum", default=None,
        min=6, max=80,
    )
    timeout_s: float = _setting("number", "Modbus response timeout", default=1.0, min=0.05, max=30)
    retries: int = _setting("int", "Modbus retries per request", default=1, min=0, max=10)
    failsafe_current_a: float | None = _setting(
        "number", "current the charger falls back to if the gateway dies; default: load management's",
        default=None, min=0, max=80, check=_failsafe_current_problem,
    )
    failsafe_timeout_s: float | None = _setting(
        "number", "seconds without the gateway before the charger falls back: the setpoint validity set in "
        "ACE (alfen-ng9xx), else the timeout written to the charger; default: what the charger reports, "
        "else the model's", default=None, min=2, max=3600,
    )
    circuit: str | None = _setting(
        "str", "id of a circuits entry; default: on the site connection", default=None
    )
    phases: int = _setting("int", "what the charger is wired for", default=3, choices=(1, 3))
    phase_l1: str = _setting(
        "str", "which site phase the charger's L1 is on", default="L1", choices=("L1", "L2", "L3")
    )
    priority: int = _setting("int", "higher is served first", default=0, min=-9, max=9)
    meter: MeterConfig | None = _setting(
        "section", "billing meter; its lifetime register is the session's energy", default=None,
        item=MeterConfig,
    )


@dataclass(frozen=True, kw_only=True)
class ReaderConfig:
    driver: str = _setting(
        "str", "reader type; charger: the card reader built into that EVSE's charger",
        choices=("rdm6300", "pn532", "hid", "charger"),
    )
    port: str | None = _setting("str", "serial port (rdm6300)", default=None)
    device: str | None = _setting(
        "str", "nfcpy device (pn532, e.g. usb) or input device (hid)", default=None
    )
    evse_id: str | None = _setting(
        "str", "the EVSE this reader is mounted on; default: site-wide", default=None
    )


@dataclass(frozen=True, kw_only=True)
class GridConnectionConfig:
    """The `site:` section: the connection all chargers share (load management)."""

    max_current_a: float = _setting("number", "per phase, the main fuse", min=6, max=5000)
    phases: int = _setting("int", "phases of the connection", default=3, choices=(1, 3))
    safe_current_a: float = _setting(
        "number", "per phase for all chargers while the site meter is silent; "
        "required with a meter, else max_current_a", default=0.0, min=0, max=5000,
    )
    meter: MeterConfig | None = _setting(
        "section", "grid connection meter, for dynamic headroom", default=None, item=MeterConfig
    )
    meter_timeout_s: float = _setting(
        "number", "no fresh reading for this long -> safe_current_a", default=5.0, min=1, max=3600
    )


@dataclass(frozen=True, kw_only=True)
class CircuitConfig:
    id: str = _setting("str", "name chargers use in `circuit:`")
    max_current_a: float = _setting("number", "per phase", min=6, max=5000)


@dataclass(frozen=True, kw_only=True)
class ClockConfig:
    synced_marker: Path = _setting(
        "path", "a file whose presence says the clock is synchronised (systemd-timesyncd's)",
        default=Path("/run/systemd/timesync/synchronized"),
    )
    jump_threshold_s: float = _setting(
        "number", "a wall-clock step larger than this is a clock jump", default=2.0, min=0.5, max=3600
    )


@dataclass(frozen=True, kw_only=True)
class SiteConfig:
    gateway_id: str = _setting(
        "str", "MQTT client id and topic level", check=_topic_level_problem
    )
    timezone: str = _setting("str", "IANA zone of the site's local time", check=_time_zone_problem)
    data_dir: Path = _setting(
        "path", "SQLite database and state", default=Path("/var/lib/edge-agent")
    )
    log_level: str = _setting(
        "str", "log level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    cloud: CloudConfig = _setting("section", "the MQTT link", item=CloudConfig)
    authorization: AuthorizationConfig = _setting(
        "section", "token decisions", default=AuthorizationConfig(), item=AuthorizationConfig
    )
    sessions: SessionsConfig = _setting(
        "section", "polling and reporting", default=SessionsConfig(), item=SessionsConfig
    )
    clock: ClockConfig = _setting(
        "section", "wall-clock trust (a Pi has no battery clock)", default=ClockConfig(), item=ClockConfig
    )
    chargers: tuple[ChargerConfig, ...] = _setting(
        "list", "the charge points", item=ChargerConfig, min_items=1
    )
    readers: tuple[ReaderConfig, ...] = _setting(
        "list", "RFID readers", default=(), item=ReaderConfig
    )
    site: GridConnectionConfig | None = _setting(
        "section", "load management; absent: none", default=None, item=GridConnectionConfig
    )
    circuits: tuple[CircuitConfig, ...] = _setting(
        "list", "sub-distribution boards", default=(), item=CircuitConfig
    )
    path: Path | None = field(default=None, compare=False)  # the file it came from

    def topic_root(self) -> str:
        return f"{self.cloud.topic_prefix}/{self.gateway_id}"

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# --------------------------------------------------------------------------- API


def load_config(path: str | Path, *, known_models: Iterable[str] | None = None,
                known_meter_models: Iterable[str] | None = None) -> SiteConfig:
    """Read and validate one site config file. Raises ConfigError (also for an unreadable file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue("", None, f"cannot read {path}: {exc}")], source=str(path)) from exc
    return _parse(text, source=str(path), path=path, known_models=known_models,
                  known_meter_models=known_meter_models)


def parse_config_text(text: str, *, source: str = "<string>",
                      known_models: Iterable[str] | None = None,
                      known_meter_models: Iterable[str] | None = None) -> SiteConfig:
    """Validate config text. `known_models` (charger register maps) defaults to what
    drivers.modbus.available_models() offers, or to CHARGER_MODELS if that cannot be imported;
    `known_meter_models` likewise with available_meter_models() and METER_MODELS."""
    return _parse(text, source=source, path=None, known_models=known_models,
                  known_meter_models=known_meter_models)


def _parse(text: str, *, source: str, path: Path | None,
           known_models: Iterable[str] | None,
           known_meter_models: Iterable[str] | None) -> SiteConfig:
    ctx = _Context(known_models=known_models, known_meter_models=known_meter_models)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError(
            [ConfigIssue("", mark.line + 1 if mark else None, f"invalid YAML: {detail}")],
            source=source,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", None, f"invalid YAML: {exc}")], source=source) from None
    if root is None:
        raise ConfigError([ConfigIssue("", None, "the file is empty")], source=source)
    if not isinstance(root, MappingNode):
        raise ConfigError(
            [ConfigIssue("", _line(root), f"the top level must be a mapping of keys, got {_describe(root)}")],
            source=source,
        )
    config = ctx.read_section(SiteConfig, root, "")
    if ctx.issues or config is None:
        raise ConfigError(ctx.sorted_issues(), source=source)
    return dataclasses.replace(config, path=path)


# --------------------------------------------------------------------------- node reading

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_INVALID: Any = object()  # stands in for a value that had an error; never leaves this module

_Entries = dict[str, tuple[Node, Node]]  # key -> (key node, value node)


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _STR:
        return json.dumps(node.value)
    if node.tag == _NULL:
        return "nothing (null)"
    return node.value


def _hint(word: str, options: Iterable[str]) -> str:
    options = list(options)
    by_fold = {option.casefold(): option for option in options}
    close = difflib.get_close_matches(word.casefold(), by_fold, n=1, cutoff=0.6)
    return f" (did you mean '{by_fold[close[0]]}'?)" if close else ""


def _format_choices(choices: tuple[Any, ...]) -> str:
    return ", ".join(str(choice) for choice in choices)


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(kw_only=True)
class _Context:
    known_models: Iterable[str] | None
    known_meter_models: Iterable[str] | None
    issues: list[ConfigIssue] = field(default_factory=list)
    # Where each constructed object came from: id(obj) -> (path, its mapping node, entries).
    origins: dict[int, tuple[str, MappingNode, _Entries]] = field(default_factory=dict)
    _scalars: SafeConstructor = field(default_factory=SafeConstructor)
    _charger_models: frozenset[str] | None = None
    _meter_models: frozenset[str] | None = None

    def issue(self, path: str, line: int | None, message: str) -> None:
        self.issues.append(ConfigIssue(path, line, message))

    def sorted_issues(self) -> list[ConfigIssue]:
        unique = list(dict.fromkeys(self.issues))  # a merged anchor can repeat one problem
        return sorted(unique, key=lambda issue: (issue.line is None, issue.line or 0))

    # -- where things are, for checks that look at several objects

    def path_of(self, obj: object) -> str:
        return self.origins[id(obj)][0]

    def where(self, obj: object, key: str) -> tuple[str, int]:
        """Path and line of `key` in obj's mapping (the mapping's line when the key is absent)."""
        path, node, entries = self.origins[id(obj)]
        if key in entries:
            return _join(path, key), _line(entries[key][1])
        return _join(path, key), _line(node)

    def has(self, obj: object, key: str) -> bool:
        return key in self.origins[id(obj)][2]

    # -- models

    def charger_models(self) -> frozenset[str]:
        if self._charger_models is None:
            self._charger_models = _model_names(self.known_models, "available_models", CHARGER_MODELS)
        return self._charger_models

    def meter_models(self) -> frozenset[str]:
        if self._meter_models is None:
            self._meter_models = _model_names(
                self.known_meter_models, "available_meter_models", METER_MODELS
            )
        return self._meter_models

    # -- reading

    def entries(self, node: MappingNode, path: str) -> _Entries:
        """The mapping's keys, reporting duplicate and non-string keys; `<<` merges are applied."""
        found: _Entries = {}
        merged: _Entries = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, MappingNode):
                        for key, pair in self.entries(source, path).items():
                            merged.setdefault(key, pair)
                    else:
                        self.issue(path, _line(source), f"'<<' needs a mapping, got {_describe(source)}")
                continue
            if not (isinstance(key_node, ScalarNode) and key_node.tag == _STR):
                self.issue(path, _line(key_node), f"keys must be strings, got {_describe(key_node)}")
                continue
            key = key_node.value
            if key in found:
                self.issue(
                    _join(path, key), _line(key_node),
                    f"duplicate key '{key}' (first at line {_line(found[key][0])})",
                )
                continue
            found[key] = (key_node, value_node)
        for key, pair in merged.items():
            found.setdefault(key, pair)
        return found

    def read_section(self, cls: type, node: Node, path: str) -> Any:
        """An instance of dataclass `cls` from a mapping node, or None if it is not a mapping.

        Fields with errors are None in the instance; the caller only returns it if no issue was
        found, so such partial objects only serve the cross checks."""
        if not isinstance(node, MappingNode):
            self.issue(path, _line(node), f"must be a mapping of keys, got {_describe(node)}")
            return None
        entries = self.entries(node, path)
        specs = {f.name: f for f in dataclasses.fields(cls) if "spec" in f.metadata}
        for key, (key_node, _) in entries.items():
            if key not in specs:
                hint = _hint(key, specs) or f" (expected one of: {', '.join(specs)})"
                self.issue(_join(path, key), _line(key_node), f"unknown key '{key}'{hint}")
        values: dict[str, Any] = {}
        for name, fld in specs.items():
            key_path = _join(path, name)
            if name in entries:
                values[name] = self.read_value(fld, entries[name][1], key_path)
            elif fld.default is _REQUIRED:
                self.issue(key_path, _line(node) if path else None, "is required but missing")
                values[name] = _INVALID
            else:
                values[name] = fld.default
        check = _SECTION_CHECKS.get(cls)
        if check is not None:
            check(self, values, entries, node, path)
        obj = cls(**{name: None if value is _INVALID else value for name, value in values.items()})
        self.origins[id(obj)] = (path, node, entries)
        return obj

    def read_value(self, fld: dataclasses.Field[Any], node: Node, path: str) -> Any:
        spec: _Spec = fld.metadata["spec"]
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            # An empty value (`tls:` with everything below commented out) means "not set".
            if fld.default is None:
                return None
            if spec.kind == "section" and fld.default is not _REQUIRED:
                return self.read_section(spec.item, MappingNode("tag:yaml.org,2002:map", [],
                                                                node.start_mark, node.end_mark), path)
            if spec.kind == "list" and fld.default is not _REQUIRED:
                return fld.default
        if spec.kind == "section":
            obj = self.read_section(spec.item, node, path)
            return _INVALID if obj is None else obj
        if spec.kind == "list":
            return self.read_list(spec, node, path)
        value = self.read_scalar(spec, node, path)
        if value is not _INVALID and spec.check is not None:
            problem = spec.check(value)
            if problem:
                self.issue(path, _line(node), problem)
                return _INVALID
        return value

    def read_list(self, spec: _Spec, node: Node, path: str) -> Any:
        if not isinstance(node, SequenceNode):
            self.issue(path, _line(node), f"must be a list, got {_describe(node)}")
            return _INVALID
        if len(node.value) < spec.min_items:
            self.issue(path, _line(node), f"must have at least {spec.min_items} entry, got none")
            return _INVALID
        items = (self.read_section(spec.item, item, f"{path}[{i}]") for i, item in enumerate(node.value))
        return tuple(item for item in items if item is not None)

    def read_scalar(self, spec: _Spec, node: Node, path: str) -> Any:
        line = _line(node)
        if not isinstance(node, ScalarNode) or node.tag == _NULL:
            self.issue(path, line, f"{self.expected(spec)}, got {_describe(node)}")
            return _INVALID
        try:
            value = self._scalars.construct_object(node)
        except ConstructorError as exc:
            self.issue(path, line, f"cannot read this value: {exc.problem}")
            return _INVALID
        if spec.choices is not None:
            if node.tag in (_STR, _INT) and value in spec.choices and not isinstance(value, bool):
                return value
            hint = _hint(value, map(str, spec.choices)) if isinstance(value, str) else ""
            self.issue(path, line, f"{self.expected(spec)}, got {_describe(node)}{hint}")
            return _INVALID
        if spec.kind in ("str", "path"):
            if node.tag != _STR:
                self.issue(
                    path, line,
                    f"must be a string, got {node.value}; put it in quotes: \"{node.value}\"",
                )
                return _INVALID
            if not value.strip():
                self.issue(path, line, "must not be empty")
                return _INVALID
            return Path(value) if spec.kind == "path" else value
        if spec.kind == "int":
            if node.tag != _INT:
                self.issue(path, line, f"{self.expected(spec)}, got {_describe(node)}")
                return _INVALID
        elif spec.kind == "number":
            if node.tag not in (_INT, _FLOAT) or not math.isfinite(value):
                self.issue(path, line, f"{self.expected(spec)}, got {_describe(node)}")
                return _INVALID
            value = float(value)
        if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
            self.issue(path, line, f"{self.expected(spec)}, got {_number(value)}")
            return _INVALID
        return value

    @staticmethod
    def expected(spec: _Spec) -> str:
        if spec.choices is not None:
            return f"must be one of {_format_choices(spec.choices)}"
        if spec.kind in ("int", "number") and spec.min is not None and spec.max is not None:
            noun = "an integer" if spec.kind == "int" else "a number"
            return f"must be {noun} between {_number(spec.min)} and {_number(spec.max)}"
        return {"str": "must be a string", "path": "must be a path", "int": "must be an integer",
                "number": "must be a number"}[spec.kind]


def _model_names(given: Iterable[str] | None, function: str, fallback: tuple[str, ...]) -> frozenset[str]:
    if given is not None:
        return frozenset(given)
    try:
        # Imported here, not at module level: config must load without the driver package.
        lister = getattr(importlib.import_module("drivers.modbus"), function)
    except (ImportError, AttributeError):
        return frozenset(fallback)
    return frozenset(lister())


# --------------------------------------------------------------------------- cross-field checks
#
# Each check gets the section's values (already type- and range-checked; _INVALID where not),
# may fill in derived defaults, and reports what involves more than one field.

_Values = dict[str, Any]


def _ok(*values: Any) -> bool:
    return all(value is not _INVALID for value in values)


def _key_line(entries: _Entries, key: str, node: MappingNode) -> int:
    return _line(entries[key][1]) if key in entries else _line(node)


def _check_tls(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    has_cert, has_key = "cert_file" in entries, "key_file" in entries
    if has_cert != has_key:
        given, missing = ("cert_file", "key_file") if has_cert else ("key_file", "cert_file")
        ctx.issue(_join(path, missing), _key_line(entries, given, node),
                  f"is required with {given} (mutual TLS needs both)")


def _check_cloud(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    if "port" not in entries:
        values["port"] = 8883 if values["tls"] not in (None, _INVALID) else 1883


def _check_endpoint(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    has_host, has_serial = "host" in entries, "serial" in entries
    line = _line(node)
    if has_host and has_serial:
        ctx.issue(_join(path, "serial"), _key_line(entries, "serial", node),
                  "give either host (Modbus TCP) or serial (Modbus RTU), not both")
    elif not has_host and not has_serial:
        ctx.issue(path, line, "needs host (Modbus TCP) or serial (Modbus RTU)")
    if "transport" not in entries:
        values["transport"] = "rtu" if has_serial and not has_host else "tcp"
    transport = values["transport"]
    if transport in ("tcp", "rtu-over-tcp") and has_serial and not has_host:
        ctx.issue(_join(path, "transport"), _key_line(entries, "transport", node),
                  f"transport {transport} needs host, not serial")
    if transport == "rtu" and has_host and not has_serial:
        ctx.issue(_join(path, "transport"), _key_line(entries, "transport", node),
                  "transport rtu needs serial, not host (rtu-over-tcp for a serial gateway)")
    if not has_host:
        if "port" in entries:
            ctx.issue(_join(path, "port"), _key_line(entries, "port", node),
                      "port is the TCP port and needs host; the serial port goes in serial")
        values["port"] = None
    if not has_serial:
        for key in ("baudrate", "parity", "stopbits"):
            if key in entries:
                ctx.issue(_join(path, key), _key_line(entries, key, node),
                          f"{key} is a serial setting and needs serial")


def _check_model(ctx: _Context, values: _Values, entries: _Entries, path: str,
                 known: frozenset[str], what: str) -> None:
    model = values["model"]
    if _ok(model) and model is not None and model not in known:
        hint = _hint(model, known) or f" (known: {', '.join(sorted(known)) or 'none'})"
        ctx.issue(_join(path, "model"), _line(entries["model"][1]),
                  f"unknown {what} model '{model}'{hint}")


def _check_meter(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    _check_endpoint(ctx, values, entries, node, path)
    _check_model(ctx, values, entries, path, ctx.meter_models(), "meter")


def _check_charger(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    _check_endpoint(ctx, values, entries, node, path)
    _check_model(ctx, values, entries, path, ctx.charger_models(), "charger")
    failsafe, maximum = values["failsafe_current_a"], values["max_current_a"]
    if _ok(failsafe, maximum) and failsafe is not None and maximum is not None and failsafe > maximum:
        ctx.issue(_join(path, "failsafe_current_a"), _line(entries["failsafe_current_a"][1]),
                  f"must not exceed max_current_a ({_number(maximum)}), got {_number(failsafe)}")


def _check_reader(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    driver = values["driver"]
    if driver in (None, _INVALID):
        return
    if driver == "charger":  # read through the charger's own Modbus map: no port of its own
        for key in ("port", "device"):
            if key in entries:
                ctx.issue(_join(path, key), _key_line(entries, key, node),
                          "is not used by driver charger (the charger's map has the reader)")
        if "evse_id" not in entries:
            ctx.issue(_join(path, "evse_id"), _line(node), "is required for driver charger")
        return
    needed, unused = ("port", "device") if driver == "rdm6300" else ("device", "port")
    if needed not in entries:
        ctx.issue(_join(path, needed), _line(node), f"is required for driver {driver}")
    if unused in entries:
        ctx.issue(_join(path, unused), _key_line(entries, unused, node),
                  f"is not used by driver {driver} (it takes {needed})")


def _check_grid_connection(ctx: _Context, values: _Values, entries: _Entries,
                           node: MappingNode, path: str) -> None:
    maximum, safe, meter = values["max_current_a"], values["safe_current_a"], values["meter"]
    if "safe_current_a" not in entries:
        if meter is not None:
            ctx.issue(_join(path, "safe_current_a"), _line(node),
                      "is required with a site meter (the limit while the meter is silent)")
        values["safe_current_a"] = maximum
    elif _ok(maximum, safe) and safe > maximum:
        ctx.issue(_join(path, "safe_current_a"), _line(entries["safe_current_a"][1]),
                  f"must not exceed max_current_a ({_number(maximum)}), got {_number(safe)}")


def _check_site_config(ctx: _Context, values: _Values, entries: _Entries,
                       node: MappingNode, path: str) -> None:
    chargers = values["chargers"] if _ok(values["chargers"]) else ()
    readers = values["readers"] if _ok(values["readers"]) else ()
    circuits = values["circuits"] if _ok(values["circuits"]) else ()
    site = values["site"] if _ok(values["site"]) else None

    evse_ids: dict[str, ChargerConfig] = {}
    for charger in chargers:
        if charger.evse_id is None:
            continue
        if charger.evse_id in evse_ids:
            first = evse_ids[charger.evse_id]
            ctx.issue(*ctx.where(charger, "evse_id"),
                      f"duplicate evse_id '{charger.evse_id}' (first at {ctx.path_of(first)}, "
                      f"line {ctx.where(first, 'evse_id')[1]})")
        else:
            evse_ids[charger.evse_id] = charger

    # An evse_id with an error (say, unquoted) still counts as named, so readers that name it
    # get no second, misleading error.
    named_ids = set(evse_ids)
    for charger in chargers:
        if charger.evse_id is None and ctx.has(charger, "evse_id"):
            named_ids.add(str(ctx.origins[id(charger)][2]["evse_id"][1].value))
    _check_readers(ctx, readers, named_ids, tuple(_endpoints(chargers, site)))
    _check_circuits(ctx, circuits, chargers, site, entries)
    if site is not None and site.phases == 1:
        for charger in chargers:
            if charger.phases == 3:
                default = "" if ctx.has(charger, "phases") else " (the default)"
                ctx.issue(*ctx.where(charger, "phases"),
                          f"is 3{default} but site.phases is 1; set phases: 1")
            if charger.phase_l1 not in (None, "L1"):
                ctx.issue(*ctx.where(charger, "phase_l1"), "must be L1 when site.phases is 1")
    _check_buses(ctx, chargers, site)


def _check_readers(ctx: _Context, readers: tuple[ReaderConfig, ...],
                   evse_ids: set[str], endpoints: tuple[ModbusEndpoint, ...]) -> None:
    modbus_serials = {e.serial: e for e in endpoints if e.serial is not None and e.host is None}
    seen: dict[tuple[str, str], ReaderConfig] = {}
    for reader in readers:
        if reader.evse_id is not None and reader.evse_id not in evse_ids:
            hint = _hint(reader.evse_id, evse_ids) or f" (chargers: {', '.join(sorted(evse_ids)) or 'none'})"
            ctx.issue(*ctx.where(reader, "evse_id"), f"no charger has evse_id '{reader.evse_id}'{hint}")
        for key in ("port", "device"):
            value = getattr(reader, key)
            if value is None:
                continue
            if (key, value) in seen:
                first = seen[(key, value)]
                ctx.issue(*ctx.where(reader, key),
                          f"{value} is already used by {ctx.path_of(first)} "
                          f"(line {ctx.where(first, key)[1]})")
            else:
                seen[(key, value)] = reader
            if key == "port" and value in modbus_serials:
                device = modbus_serials[value]
                ctx.issue(*ctx.where(reader, key),
                          f"{value} is the Modbus bus of {ctx.path_of(device)} "
                          f"(line {ctx.where(device, 'serial')[1]})")


def _check_circuits(ctx: _Context, circuits: tuple[CircuitConfig, ...],
                    chargers: tuple[ChargerConfig, ...], site: GridConnectionConfig | None,
                    entries: _Entries) -> None:
    if circuits and site is None and "site" not in entries:
        ctx.issue("circuits", _line(entries["circuits"][1]),
                  "needs a site section (the connection the circuits hang off)")
    ids: dict[str, CircuitConfig] = {}
    for circuit in circuits:
        if circuit.id is None:
            continue
        if circuit.id in ids:
            first = ids[circuit.id]
            ctx.issue(*ctx.where(circuit, "id"),
                      f"duplicate circuit id '{circuit.id}' (first at line {ctx.where(first, 'id')[1]})")
        ids.setdefault(circuit.id, circuit)
    for charger in chargers:
        if charger.circuit is not None and charger.circuit not in ids:
            hint = _hint(charger.circuit, ids) or f" (circuits: {', '.join(ids) or 'none'})"
            ctx.issue(*ctx.where(charger, "circuit"), f"unknown circuit '{charger.circuit}'{hint}")


def _endpoints(chargers: tuple[ChargerConfig, ...],
               site: GridConnectionConfig | None) -> Iterator[ModbusEndpoint]:
    for charger in chargers:
        yield charger
        if charger.meter is not None:
            yield charger.meter
    if site is not None and site.meter is not None:
        yield site.meter


def _check_buses(ctx: _Context, chargers: tuple[ChargerConfig, ...],
                 site: GridConnectionConfig | None) -> None:
    """No two devices at one address; devices on one serial bus agree on its settings."""
    addresses: dict[tuple[Any, ...], ModbusEndpoint] = {}
    serial_settings: dict[tuple[str, str], tuple[Any, ModbusEndpoint]] = {}
    for endpoint in _endpoints(chargers, site):
        if endpoint.host is not None and endpoint.serial is None and endpoint.port is not None:
            bus: tuple[Any, ...] = ("tcp", endpoint.host.lower(), endpoint.port)
            bus_text = f"host {endpoint.host} port {endpoint.port}"
        elif endpoint.serial is not None and endpoint.host is None:
            bus = ("serial", endpoint.serial)
            bus_text = f"serial {endpoint.serial}"
            for key in ("baudrate", "parity", "stopbits"):
                value = getattr(endpoint, key)
                if value is None:
                    continue
                first_value, first = serial_settings.setdefault((endpoint.serial, key), (value, endpoint))
                if first_value != value:
                    ctx.issue(*ctx.where(endpoint, key),
                              f"{value} differs from {first_value} at {ctx.path_of(first)} "
                              f"(line {ctx.where(first, key)[1]}); devices on one serial bus "
                              f"share its settings")
        else:
            continue
        model = getattr(endpoint, "model", None)
        address = (*bus, endpoint.unit) if endpoint.unit is not None else (*bus, "default unit of", model)
        if address in addresses:
            first = addresses[address]
            key = "unit" if endpoint.unit is not None else ("host" if bus[0] == "tcp" else "serial")
            ctx.issue(*ctx.where(endpoint, key),
                      f"same {bus_text} and unit as {ctx.path_of(first)} "
                      f"(line {ctx.where(first, key)[1]}); give each device its own unit")
        else:
            addresses[address] = endpoint


_SECTION_CHECKS: dict[type, Callable[[_Context, _Values, _Entries, MappingNode, str], None]] = {
    TlsConfig: _check_tls,
    CloudConfig: _check_cloud,
    MeterConfig: _check_meter,
    ChargerConfig: _check_charger,
    ReaderConfig: _check_reader,
    GridConnectionConfig: _check_grid_connection,
    SiteConfig: _check_site_config,
}
