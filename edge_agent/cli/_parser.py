"""The `edge-agent` command line: every sub-command and its options, in one parser.

What each command does is in the module named for its kind: _run (run, config check), _price,
_records (report, sessions, outbox), _status, _cards (tap-test, users find), _config_init,
_database (db-check, migrate, export, import), _modbus_tools (probe, scan).
"""
from __future__ import annotations

import argparse
from datetime import date
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import __version__
from ._cards import cmd_tap_test, cmd_users_find
from ._common import DEFAULT_CONFIG
from ._config_init import cmd_config_init
from ._database import cmd_db_check, cmd_export, cmd_import, cmd_migrate
from ._exit_codes import MODBUS_EXIT_CODES, TECHNICIAN_EXIT_CODES
from ._modbus_tools import USUAL_BAUDRATES, USUAL_PARITIES, cmd_probe, cmd_scan
from ._price import cmd_price
from ._records import REPORT_DESCRIPTION, cmd_outbox, cmd_report, cmd_sessions
from ._run import cmd_config_check, cmd_run
from ._status import cmd_status

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]  # noqa: SLF001 - argparse's own type for it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=(
        "EV charging site gateway: reads RFID cards, drives chargers over Modbus, prices and "
        "records every session, and syncs with the cloud over MQTT."))
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_run_and_config(sub)
    _add_price(sub)
    _add_outbox(sub)
    _add_technician(sub)
    _add_records(sub)
    _add_modbus_tools(sub)
    return parser


def _add_run_and_config(sub: Commands) -> None:
    run = sub.add_parser("run", help="run the agent in the foreground (systemd runs this)")
    run.add_argument("--config", required=True, help="site configuration file (YAML)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=cmd_run)

    config = sub.add_parser("config", help="check a site configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate FILE; exit 3 with every error named by key and line")
    check.add_argument("file")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_config_check)

    fmt = argparse.RawDescriptionHelpFormatter
    p = config_sub.add_parser(
        "init", help="write a commented configuration from answers (prompts, --answers FILE or flags)",
        formatter_class=fmt, epilog="charger/reader SPEC: key=value pairs, e.g. "
        "evse_id=1,model=bender-cc613,host=192.168.10.21\n" + TECHNICIAN_EXIT_CODES)
    p.add_argument("--out", default=DEFAULT_CONFIG, help=f"file to write (default {DEFAULT_CONFIG})")
    p.add_argument("--answers", help="YAML file with the answers (gateway_id, timezone, cloud, chargers, readers)")
    p.add_argument("--gateway-id")
    p.add_argument("--timezone")
    p.add_argument("--cloud-host")
    p.add_argument("--cloud-port", type=int)
    p.add_argument("--username")
    p.add_argument("--password-file")
    p.add_argument("--offline-unknown", choices=["reject", "accept"])
    p.add_argument("--data-dir", dest="data_dir_answer", help="data_dir of the new configuration")
    p.add_argument("--charger", action="append", metavar="SPEC", help="a charger (repeat for more)")
    p.add_argument("--reader", action="append", metavar="SPEC", help="a card reader (repeat for more)")
    p.add_argument("--scan", metavar="PORT", help="scan this RS-485 port for chargers (edge-agent scan)")
    p.add_argument("--scan-units", default="1-32", help="unit ids to scan (default 1-32)")
    p.add_argument("--scan-baudrates", default="19200,9600,38400", help="baud rates to scan")
    p.add_argument("--non-interactive", action="store_true", help="never prompt, even on a terminal")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config_init)


def _add_price(sub: Commands) -> None:
    price = sub.add_parser("price", help="price one OCPI CDR with one OCPI tariff")
    price.add_argument("--tariff", required=True, help="OCPI 2.2.1 Tariff JSON file")
    price.add_argument("--cdr", required=True, help="OCPI CDR JSON file")
    price.add_argument("--tz", default="UTC", help="site time zone for time restrictions (default UTC)")
    price.set_defaults(func=cmd_price)


def _add_outbox(sub: Commands) -> None:
    p = sub.add_parser("outbox", help="show events not yet acknowledged by the cloud")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="site configuration (its data_dir is read)")
    where.add_argument("--data-dir", help="the agent's data directory")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outbox)


def _config_or_data_dir(parser: argparse.ArgumentParser) -> None:
    """Where the database is, for the technician's commands: the config's data_dir by default."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", default=DEFAULT_CONFIG,
                       help=f"site configuration; its data_dir is used (default {DEFAULT_CONFIG})")
    where.add_argument("--data-dir", help="the agent's data directory, instead of --config")


def _add_technician(sub: Commands) -> None:
    """status, tap-test, users find, db-check, migrate, export, import."""
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "status", help="live view: cloud link, EVSEs, sessions, readers, outbox, lists", formatter_class=fmt,
        description="What the running agent is doing now (from its status file on tmpfs; the database is "
                    "only read when the agent is not running).", epilog=TECHNICIAN_EXIT_CODES)
    _config_or_data_dir(p)
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes with --watch")
    p.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "tap-test", help="read one card (or --token) and say who it is and whether they may charge",
        formatter_class=fmt, epilog=TECHNICIAN_EXIT_CODES,
        description="Judges a card the way the agent would: the local user list, the online step and the "
                    "offline decision, and the tariff it would get. Never starts charging. While the agent "
                    "runs it owns the readers: use --token then.")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"site configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--data-dir", help="the agent's data directory (default: the config's)")
    p.add_argument("--token", help="judge this card number (hex) instead of reading a card")
    p.add_argument("--evse", help="the reader of this EVSE (default: the first reader)")
    p.add_argument("--reader", help="the reader on this port or device")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a card (default 30)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tap_test)

    users = sub.add_parser("users", help="the local user list")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    p = users_sub.add_parser("find", help="find users by name, id, phone or card number", formatter_class=fmt,
                             epilog=TECHNICIAN_EXIT_CODES)
    p.add_argument("text", help="part of a name, phone number or card number, or a whole user id")
    _config_or_data_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_users_find)

    p = sub.add_parser("db-check", help="can this release run on that database? (exit 5: downgrade)",
                       epilog=TECHNICIAN_EXIT_CODES)
    _config_or_data_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_check)

    p = sub.add_parser("migrate", help="bring the database to this release's schema (the agent also does "
                       "this when it starts)", epilog=TECHNICIAN_EXIT_CODES)
    _config_or_data_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "export", help="the whole state (database snapshot + config) as one tar.gz; safe while the agent runs",
        formatter_class=fmt, epilog=TECHNICIAN_EXIT_CODES)
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"site configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--data-dir", help="data directory (default: the config's)")
    p.add_argument("--out", required=True, help="archive to write (mode 0600: it holds personal data)")
    p.add_argument("--with-secrets", action="store_true",
                   help="include the files the config names (MQTT password, TLS key and certificates)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import", help="put an exported state on this gateway (replacing a broken one)", formatter_class=fmt,
        epilog=TECHNICIAN_EXIT_CODES, description="Checks the archive's sha256 sums and schema first. Refuses a "
        "data directory that holds data unless --force (the old database is then kept beside it), and refuses "
        "while an agent runs on it.")
    p.add_argument("archive")
    p.add_argument("--data-dir", help="where the database goes (default: the archived config's data_dir)")
    p.add_argument("--config-out", help="write the archived configuration here (e.g. /etc/edge-agent/site.yaml)")
    p.add_argument("--restore-secrets", action="store_true", help="write the archived secrets to their paths")
    p.add_argument("--force", action="store_true", help="replace existing data (kept beside it) and files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import)


def _period_options(p: argparse.ArgumentParser) -> None:
    """report and sessions: where the records are, the period, the format."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="site configuration (its data_dir and timezone are read)")
    where.add_argument("--data-dir", help="the agent's data directory")
    p.add_argument("--tz", type=_zone_arg, help="time zone of the dates (default: the site's, "
                                                "or this machine's with --data-dir)")
    p.add_argument("--from", dest="date_from", type=_date_arg, metavar="YYYY-MM-DD",
                   help="first day, included (sessions by their start)")
    p.add_argument("--to", dest="date_to", type=_date_arg, metavar="YYYY-MM-DD", help="last day, included")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true")
    output.add_argument("--json", action="store_true")


def _add_records(sub: Commands) -> None:
    report = sub.add_parser(
        "report", help="usage and revenue per user, group and EVSE (default: this quarter)",
        description=REPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _period_options(report)
    report.set_defaults(func=cmd_report)

    sessions = sub.add_parser("sessions", help="list and export sessions (table, --csv or --json)")
    _period_options(sessions)
    sessions.add_argument("--evse", help="only this EVSE id")
    sessions.add_argument("--user", help="only this user id (or token)")
    sessions.add_argument("--status", choices=["active", "ended"])
    sessions.add_argument("--limit", type=int, default=None, help="only the last N sessions")
    sessions.set_defaults(func=cmd_sessions)


def _add_modbus_tools(sub: Commands) -> None:
    from drivers.modbus import available_meter_models, available_models

    models = ", ".join(available_models() + available_meter_models())
    probe = sub.add_parser(
        "probe",
        help="read a charger or meter by model and address: identity, firmware, state, energy, fail-safe",
        description="Read one Modbus device as its register map says, without writing anything.",
        epilog=f"models: {models}\n\n{MODBUS_EXIT_CODES}\n\nexamples:\n"
               "  edge-agent probe --model bender-cc613 --host 10.0.0.21\n"
               "  edge-agent probe --model heidelberg-energy-control --serial /dev/ttyUSB0 --unit 2\n"
               "  edge-agent probe --model eastron-sdm630 --host 10.0.0.30 --transport rtu-over-tcp --port 4196",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument("--model", required=True, help="register map name (see below)")
    where = probe.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="Modbus TCP host, a TCP/RTU gateway, or a serial server")
    where.add_argument("--serial", help="serial port of the RS-485 bus, e.g. /dev/ttyUSB0")
    probe.add_argument("--port", type=int, help="TCP port (default: the model's, usually 502)")
    probe.add_argument("--transport", choices=("tcp", "rtu-over-tcp"), help="with --host (default tcp)")
    probe.add_argument("--baudrate", type=int, help="with --serial (default: the model's factory setting)")
    probe.add_argument("--parity", choices=("N", "E", "O"), help="with --serial (default: the model's)")
    probe.add_argument("--stopbits", type=int, choices=(1, 2), help="with --serial (default: the model's)")
    probe.add_argument("--unit", type=int, help="Modbus unit id (default: the model's usual one)")
    probe.add_argument("--connector", type=int, help="charge point behind the unit (phoenix-charx, etrel-inch)")
    probe.add_argument("--timeout", type=float, default=1.0, help="seconds per request (default 1)")
    probe.add_argument("--json", action="store_true", help="print one JSON object")
    probe.set_defaults(func=cmd_probe)

    scan = sub.add_parser(
        "scan",
        help="find Modbus units on a serial bus at the usual settings and suggest their models",
        description="Ask every unit id at every baud rate / parity whether it is there (any answer counts, "
                    "even an exception), then read each found unit's identifying registers as every register "
                    "map that can sit on RS-485 says, and suggest the models whose registers all make sense. "
                    "Reads only. On a pseudo-terminal every baud rate 'works' and parity E/O is refused.",
        epilog=f"{MODBUS_EXIT_CODES}\n\nexamples:\n"
               "  edge-agent scan --serial /dev/ttyUSB0\n"
               "  edge-agent scan --serial /dev/ttyUSB0 --baudrates 19200 --parities E --units 1-16 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scan.add_argument("--serial", required=True, help="serial port of the RS-485 bus")
    scan.add_argument("--baudrates", type=_int_list, default=list(USUAL_BAUDRATES),
                      help=f"comma-separated (default {','.join(map(str, USUAL_BAUDRATES))})")
    scan.add_argument("--parities", type=_parity_list, default=list(USUAL_PARITIES),
                      help="comma-separated from N, E, O (default N,E)")
    scan.add_argument("--units", type=_unit_list, default=list(range(1, 248)),
                      help="unit ids, e.g. 1-247 or 1,3,10-12 (default 1-247)")
    scan.add_argument("--timeout", type=float, default=0.2, help="seconds to wait per unit (default 0.2)")
    scan.add_argument("--gap", type=float, default=0.05, help="quiet seconds between frames (default 0.05)")
    scan.add_argument("--json", action="store_true", help="print one JSON object")
    scan.set_defaults(func=cmd_scan)


# -- argument types ----------------------------------------------------------------------------------


def _date_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date as YYYY-MM-DD") from None


def _zone_arg(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r}") from None


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return values


def _parity_list(text: str) -> list[str]:
    values = [v.strip().upper() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in ("N", "E", "O")]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"parities are N, E or O, got {text!r}")
    return values


def _unit_list(text: str) -> list[int]:
    units: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi or lo)
            units.extend(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected unit ids like 1-247 or 1,3,10-12, got {text!r}") from None
    if not units or min(units) < 1 or max(units) > 247:
        raise argparse.ArgumentTypeError(f"unit ids are 1..247, got {text!r}")
    return sorted(set(units))
