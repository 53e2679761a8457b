"""`edge-agent config init`: a commented site configuration from a technician's answers.

Answers come from prompts on a terminal, from an answers file (YAML) or from flags; what is
missing is asked for, or named as missing when nobody can be asked. The result is checked by the
same validation as `config check` before a file is written, so init never writes a config the agent
would refuse.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ..config import CHARGER_MODELS, ChargerConfig, CloudConfig, ReaderConfig, SiteConfig, parse_config_text
from ._common import fail, print_json
from ._exit_codes import ExitCode

COMMENT_COLUMN = 36


class AnswersError(ValueError):
    """Answers that cannot make a configuration; the message names the answer."""


@dataclass(frozen=True, kw_only=True)
class Answers:
    gateway_id: str
    timezone: str
    cloud: dict[str, Any]
    chargers: tuple[dict[str, Any], ...]
    readers: tuple[dict[str, Any], ...] = ()
    offline_unknown: str = "reject"
    data_dir: str | None = None
    log_level: str | None = None
    notes: tuple[str, ...] = field(default=())  # comments for the top of the file (e.g. the scan)


_TOP_KEYS = {"gateway_id", "timezone", "cloud", "chargers", "readers", "offline_unknown", "data_dir", "log_level"}


def answers_from_mapping(obj: Any, *, source: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise AnswersError(f"{source}: must be a mapping of answers (gateway_id, timezone, cloud, chargers, ...)")
    unknown = sorted(set(obj) - _TOP_KEYS)
    if unknown:
        raise AnswersError(f"{source}: unknown answer(s) {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}")
    for key in ("chargers", "readers"):
        if key in obj and not isinstance(obj[key], list):
            raise AnswersError(f"{source}: {key} must be a list")
    if "cloud" in obj and not isinstance(obj["cloud"], dict):
        raise AnswersError(f"{source}: cloud must be a mapping (host, port, ...)")
    return dict(obj)


def parse_spec(text: str, *, what: str) -> dict[str, Any]:
    """`evse_id=1,model=bender-cc613,host=192.168.10.21` -> a mapping (numbers become numbers)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise AnswersError(f"{what} {text!r}: expected key=value pairs separated by commas, got {part!r}")
        value = value.strip()
        out[key.strip()] = _number_or_text(value) if key.strip() != "evse_id" else value
    return out


def _number_or_text(value: str) -> Any:
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d*", value):
        return float(value)
    return value


# -- the serial bus scan (`edge-agent scan`, edge_agent/cli/_modbus_tools.py) -----------------------


SCAN_UNITS = "1-32"  # a garage's bus; `edge-agent scan` alone covers 1-247 at every usual setting
SCAN_BAUDRATES = "19200,9600,38400"


def scan_serial_bus(port: str, *, say: Callable[[str], None], units: str = SCAN_UNITS,
                    baudrates: str = SCAN_BAUDRATES, timeout_s: float = 600) -> list[dict[str, Any]] | None:
    """Chargers `edge-agent scan` finds on `port`, as charger answers (without evse_id).

    None when this release has no scan command (it is said, and init goes on without it). The scan
    runs as its own process through its command line, the interface it promises.
    """
    command = [sys.executable, "-m", "edge_agent", "scan", "--serial", port, "--units", units,
               "--baudrates", baudrates, "--json"]
    say(f"scanning {port} for Modbus units {units} at {baudrates} baud (edge-agent scan) ...")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        say(f"the scan of {port} took longer than {timeout_s:g} s; skipping it")
        return []
    if done.returncode == 2 and "invalid choice: 'scan'" in done.stderr:
        say("the serial bus scan (edge-agent scan) is not in this release; skipping it")
        return None
    try:
        result = json.loads(done.stdout)
    except ValueError:
        say(f"the scan of {port} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        return []
    if result.get("port_error"):
        say(f"the scan of {port} failed: {result['port_error']}")
        return []
    chargers, seen = [], set()
    for found in result.get("found") or []:
        models = [m for m in found.get("models") or [] if m in CHARGER_MODELS or m in _charger_models()]
        if not models or found.get("unit") in seen:
            if found.get("models") and not models:
                say(f"unit {found.get('unit')} is a {', '.join(found['models'])} (not a charger): not added")
            continue
        seen.add(found["unit"])
        if len(models) > 1:
            say(f"unit {found['unit']} fits {', '.join(models)}: taking {models[0]}; check the model")
        chargers.append({"model": models[0], "serial": port, "baudrate": found.get("baudrate"),
                         "parity": found.get("parity"), "unit": found["unit"]})
    say(f"{port}: {len(chargers)} charger(s) found")
    return chargers


def _charger_models() -> tuple[str, ...]:
    try:
        from drivers.modbus import available_models

        return tuple(available_models())
    except ImportError:
        return CHARGER_MODELS


# -- rendering -------------------------------------------------------------------------------------


def _doc(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name and "spec" in f.metadata:
            return str(f.metadata["spec"].doc)
    return ""


def _scalar(value: Any, *, quote: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    text = str(value)
    plain = re.fullmatch(r"[A-Za-z0-9_./@+-][A-Za-z0-9_./@:+ -]*", text) and not text.endswith(" ")
    if quote or not plain or not isinstance(yaml.safe_load(text), str):
        return json.dumps(text)  # a JSON string is a YAML double-quoted scalar
    return text


def _line(indent: str, key: str, value: Any, comment: str, *, quote: bool = False) -> str:
    text = f"{indent}{key}: {_scalar(value, quote=quote)}"
    return f"{text:<{COMMENT_COLUMN - 1}} # {comment}" if comment else text


_CHARGER_ORDER = ("evse_id", "model", "transport", "host", "port", "serial", "baudrate", "parity", "stopbits",
                  "unit", "max_current_a", "failsafe_current_a", "timeout_s", "retries", "connector")
_READER_ORDER = ("driver", "port", "device", "evse_id")


def _entries(items: Iterable[dict[str, Any]], order: tuple[str, ...], cls: type) -> list[str]:
    lines = []
    for item in items:
        keys = [k for k in order if k in item] + sorted(k for k in item if k not in order)
        for index, key in enumerate(keys):
            indent = "  - " if index == 0 else "    "
            lines.append(_line(indent, key, item[key], _doc(cls, key), quote=key == "evse_id"))
    return lines


def render_config(answers: Answers, *, written_by: str = "edge-agent config init") -> str:
    """Commented YAML; raises AnswersError with every config problem (key path and line)."""
    lines = [f"# Site configuration of gateway {answers.gateway_id}, written by `{written_by}`",
             f"# on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC. Check it with: edge-agent config check FILE",
             "# Every key is described in config/example-site.yaml; unknown keys and impossible values are errors."]
    lines += [f"# {note}" for note in answers.notes]
    lines.append("")
    lines.append(_line("", "gateway_id", answers.gateway_id, _doc(SiteConfig, "gateway_id")))
    lines.append(_line("", "timezone", answers.timezone, _doc(SiteConfig, "timezone")))
    if answers.data_dir:
        lines.append(_line("", "data_dir", answers.data_dir, _doc(SiteConfig, "data_dir")))
    else:
        lines.append(f"{'# data_dir: /var/lib/edge-agent':<{COMMENT_COLUMN - 1}} # SQLite database and state; "
                     "keep it off tmpfs")
    if answers.log_level:
        lines.append(_line("", "log_level", answers.log_level, "DEBUG | INFO | WARNING | ERROR"))
    lines += ["", "cloud:"]
    cloud = dict(answers.cloud)
    tls = cloud.pop("tls", None)
    for key in ("host", "port", "topic_prefix", "username", "password_file"):
        if key in cloud:
            lines.append(_line("  ", key, cloud.pop(key), _doc(CloudConfig, key)))
    if tls:
        lines.append(f"{'  tls:':<{COMMENT_COLUMN - 1}} # mutual TLS with this gateway's certificate")
        for key, value in tls.items():
            lines.append(_line("    ", key, value, ""))
    for key, value in sorted(cloud.items()):
        lines.append(_line("  ", key, value, _doc(CloudConfig, key)))
    lines += ["", "authorization:",
              _line("  ", "offline_unknown", answers.offline_unknown,
                    "reject | accept: unknown cards while the cloud is unreachable"),
              "", "chargers:"]
    lines += _entries(answers.chargers, _CHARGER_ORDER, ChargerConfig)
    lines.append("")
    if answers.readers:
        lines.append("readers:")
        lines += _entries(answers.readers, _READER_ORDER, ReaderConfig)
    else:
        lines.append(f"{'readers: []':<{COMMENT_COLUMN - 1}} # no card readers: app and cloud starts only")
    text = "\n".join(lines) + "\n"
    from ..config import ConfigError

    try:
        parse_config_text(text, source="the new configuration")
    except ConfigError as exc:
        raise AnswersError(f"these answers do not make a valid configuration:\n{exc}") from None
    return text


# -- the command -----------------------------------------------------------------------------------


def _ask(prompt: str, default: str | None = None, *, required: bool = True) -> str:
    suffix = f" [{default}]" if default else ""
    while True:
        answer = input(f"{prompt}{suffix}: ").strip()
        if answer:
            return answer
        if default is not None:
            return default
        if not required:
            return ""
        print("  (an answer is needed)")


def _interactive(found: dict[str, Any], *, scan: bool) -> dict[str, Any]:
    say = lambda text: print(f"  {text}")  # noqa: E731
    answers = dict(found)
    if "gateway_id" not in answers:
        answers["gateway_id"] = _ask("gateway id (the cloud's name for this gateway)")
    if "timezone" not in answers:
        answers["timezone"] = _ask("site time zone", "Europe/Oslo")
    cloud = dict(answers.get("cloud") or {})
    if "host" not in cloud:
        cloud["host"] = _ask("MQTT broker host")
    if "port" not in cloud:
        tls = _ask("TLS to the broker? (yes/no)", "yes").lower().startswith("y")
        cloud["port"] = int(_ask("MQTT broker port", "8883" if tls else "1883"))
        if tls and "tls" not in cloud:
            cloud["tls"] = {k: v for k, v in (
                ("ca_file", _ask("  CA file (empty: the system's)", "", required=False)),
                ("cert_file", _ask("  client certificate", "/etc/edge-agent/gw.pem")),
                ("key_file", _ask("  client key", "/etc/edge-agent/gw.key"))) if v}
    answers["cloud"] = cloud
    if "offline_unknown" not in answers:
        answers["offline_unknown"] = _ask("unknown cards while the cloud is unreachable: reject or accept", "reject")
    if not answers.get("chargers"):
        chargers: list[dict[str, Any]] = []
        port = _ask("RS-485 adapter to scan for chargers (empty: no scan)", "/dev/ttyUSB0" if scan else "",
                    required=False)
        if port and scan:
            found_chargers = scan_serial_bus(port, say=say) or []
            for entry in found_chargers:
                use = _ask(f"  found {entry['model']} unit {entry.get('unit')} on {port}: add it? (yes/no)", "yes")
                if use.lower().startswith("y"):
                    entry["evse_id"] = _ask("    its EVSE id", str(len(chargers) + 1))
                    chargers.append(entry)
        print("chargers as key=value lists, e.g. evse_id=1,model=bender-cc613,host=192.168.10.21 "
              "or evse_id=2,model=heidelberg-energy-control,serial=/dev/ttyUSB0,unit=1 (empty line: done)")
        while True:
            spec = _ask(f"  charger {len(chargers) + 1}", "" if chargers else None, required=not chargers)
            if not spec:
                break
            chargers.append(parse_spec(spec, what="charger"))
        answers["chargers"] = chargers
    if "readers" not in answers:
        readers: list[dict[str, Any]] = []
        print("card readers as key=value lists, e.g. driver=rdm6300,port=/dev/ttyAMA0,evse_id=1 (empty line: done)")
        while True:
            spec = _ask(f"  reader {len(readers) + 1}", "", required=False)
            if not spec:
                break
            readers.append(parse_spec(spec, what="reader"))
        answers["readers"] = readers
    return answers


def cmd_config_init(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        return fail(f"{out} exists; --force replaces it", ExitCode.NO)
    try:
        found: dict[str, Any] = {}
        if args.answers:
            try:
                loaded = yaml.safe_load(Path(args.answers).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                return fail(f"{args.answers}: cannot read answers: {exc}", ExitCode.USAGE)
            found = answers_from_mapping(loaded, source=args.answers)
        for key, value in (("gateway_id", args.gateway_id), ("timezone", args.timezone),
                           ("offline_unknown", args.offline_unknown), ("data_dir", args.data_dir_answer)):
            if value is not None:
                found[key] = value
        cloud = dict(found.get("cloud") or {})
        for key, value in (("host", args.cloud_host), ("port", args.cloud_port), ("username", args.username),
                           ("password_file", args.password_file)):
            if value is not None:
                cloud[key] = value
        if cloud:
            found["cloud"] = cloud
        if args.charger:
            found["chargers"] = [parse_spec(s, what="--charger") for s in args.charger]
        if args.reader:
            found["readers"] = [parse_spec(s, what="--reader") for s in args.reader]
        notes: list[str] = []
        if args.scan:
            entries = scan_serial_bus(args.scan, say=lambda text: print(text, file=sys.stderr),
                                      units=args.scan_units, baudrates=args.scan_baudrates)
            if entries is not None:
                notes.append(f"serial bus scan of {args.scan}: {len(entries)} charger(s) found")
                start = len(found.get("chargers") or [])
                for index, entry in enumerate(entries):
                    entry.setdefault("evse_id", str(start + index + 1))
                found["chargers"] = [*(found.get("chargers") or []), *entries]
        interactive = not args.non_interactive and sys.stdin.isatty()
        if interactive:
            found = _interactive(found, scan=args.scan is None)
        missing = [k for k in ("gateway_id", "timezone", "chargers") if not found.get(k)]
        if not (found.get("cloud") or {}).get("host"):
            missing.append("cloud.host")
        if missing:
            return fail(f"missing answers: {', '.join(missing)} (give them in --answers FILE or as flags, "
                        "or run on a terminal to be asked)", ExitCode.USAGE)
        answers = Answers(gateway_id=str(found["gateway_id"]), timezone=str(found["timezone"]),
                          cloud=dict(found["cloud"]), chargers=tuple(found["chargers"]),
                          readers=tuple(found.get("readers") or ()),
                          offline_unknown=str(found.get("offline_unknown") or "reject"),
                          data_dir=found.get("data_dir"), log_level=found.get("log_level"), notes=tuple(notes))
        text = render_config(answers)
    except AnswersError as exc:
        return fail(str(exc), ExitCode.CONFIG)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, out)
    if args.json:
        print_json({"written": str(out), "chargers": len(answers.chargers), "readers": len(answers.readers)})
    else:
        print(f"{out}: written ({len(answers.chargers)} charger(s), {len(answers.readers)} reader(s)); "
              f"check it any time with: edge-agent config check {out}")
    return ExitCode.OK

