"""Reading the YAML node tree strictly: every value checked against its field's spec, every
problem recorded with its key path and line.

`_setting(...)` declares a field's type, default, range and meaning on the section dataclasses;
`_Context` reads a mapping node into one of them, then runs the section's cross-field check (the
`section_checks` it was given). A value with an error is `_INVALID` while reading and None in the
partial object, which only ever reaches the checks.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ._errors import ConfigIssue

MAX_TOPIC_LEVEL_CHARS = 64


# --------------------------------------------------------------------------- field specs

_REQUIRED: Any = dataclasses.MISSING
_Entries = dict[str, tuple[Node, Node]]  # key -> (key node, value node)


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
    # For a "list" whose entries come in kinds: the dataclass of one entry, from its keys
    # (`protocol: ocpp` chargers); `item` is then the kind an entry that says nothing is.
    pick: Callable[[_Entries], type] | None = None

    def item_class(self) -> type:
        """The dataclass of a "section" or "list" setting, which `_setting(..., item=...)` names."""
        if self.item is None:
            raise TypeError(f"a {self.kind} setting needs item=")
        return self.item


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
    pick: Callable[[_Entries], type] | None = None,
) -> Any:
    spec = _Spec(
        kind=kind, doc=doc, min=min, max=max, choices=choices, item=item,
        min_items=min_items, check=check, pick=pick,
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


# --------------------------------------------------------------------------- node reading

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_INVALID: Any = object()  # stands in for a value that had an error; never leaves this package


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
    return str(node.value)


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
    section_checks: Mapping[type, _SectionCheck]  # cross-field check of a section's dataclass
    known_models: Iterable[str] | None
    known_meter_models: Iterable[str] | None
    known_ocpp_models: Iterable[str] | None = None
    issues: list[ConfigIssue] = field(default_factory=list)
    # Where each constructed object came from: id(obj) -> (path, its mapping node, entries).
    origins: dict[int, tuple[str, MappingNode, _Entries]] = field(default_factory=dict)
    _scalars: SafeConstructor = field(default_factory=SafeConstructor)
    _models_by_lister: dict[str, frozenset[str]] = field(default_factory=dict)

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

    def model_names(self, given: Iterable[str] | None, function: str, fallback: tuple[str, ...],
                    module: str = "drivers.modbus") -> frozenset[str]:
        """`given`, else what `module`.`function`() lists, else `fallback`; looked up once."""
        lister = f"{module}.{function}"
        if lister not in self._models_by_lister:
            self._models_by_lister[lister] = _model_names(given, module, function, fallback)
        return self._models_by_lister[lister]

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

    def read_section(self, cls: type, node: Node, path: str,
                     pick: Callable[[_Entries], type] | None = None) -> Any:
        """An instance of dataclass `cls` (or of the one `pick` chooses by the keys) from a
        mapping node, or None if it is not a mapping.

        Fields with errors are None in the instance; the caller only returns it if no issue was
        found, so such partial objects only serve the cross checks. A key of the class's
        `_FOREIGN_KEYS` (key -> why) is refused with that reason rather than as unknown."""
        if not isinstance(node, MappingNode):
            self.issue(path, _line(node), f"must be a mapping of keys, got {_describe(node)}")
            return None
        entries = self.entries(node, path)
        if pick is not None:
            cls = pick(entries)
        specs = {f.name: f for f in dataclasses.fields(cls) if "spec" in f.metadata}
        foreign: Mapping[str, str] = getattr(cls, "_FOREIGN_KEYS", {})
        for key, (key_node, _) in entries.items():
            if key in specs:
                continue
            if key in foreign:
                self.issue(_join(path, key), _line(key_node), foreign[key])
            else:
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
        check = self.section_checks.get(cls)
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
                return self.read_section(spec.item_class(), MappingNode("tag:yaml.org,2002:map", [],
                                                                node.start_mark, node.end_mark), path)
            if spec.kind == "list" and fld.default is not _REQUIRED:
                return fld.default
        if spec.kind == "section":
            obj = self.read_section(spec.item_class(), node, path)
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
        items = (self.read_section(spec.item_class(), item, f"{path}[{i}]", spec.pick)
                 for i, item in enumerate(node.value))
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


def _model_names(given: Iterable[str] | None, module: str, function: str,
                 fallback: tuple[str, ...]) -> frozenset[str]:
    if given is not None:
        return frozenset(given)
    try:
        # Imported here, not at module level: config must load without the driver package.
        lister = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError):
        return frozenset(fallback)
    return frozenset(lister())


# --------------------------------------------------------------------------- for cross-field checks
#
# Each check gets the section's values (already type- and range-checked; _INVALID where not),
# may fill in derived defaults, and reports what involves more than one field.

_Values = dict[str, Any]
_SectionCheck = Callable[[_Context, _Values, _Entries, MappingNode, str], None]


def _ok(*values: Any) -> bool:
    return all(value is not _INVALID for value in values)


def _key_line(entries: _Entries, key: str, node: MappingNode) -> int:
    return _line(entries[key][1]) if key in entries else _line(node)
