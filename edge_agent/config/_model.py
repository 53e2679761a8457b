"""The whole site config (`SiteConfig`) and its general sections: cloud link, authorization,
sessions, clock. The device sections are in `_chargers`, OCPP's in `_ocpp`, load management's in
`_site`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from yaml.nodes import MappingNode

from ._chargers import ChargerConfig, ReaderConfig
from ._ocpp import AnyChargerConfig, OcppConfig, _charger_class
from ._reader import (
    _INVALID,
    _Context,
    _Entries,
    _join,
    _key_line,
    _setting,
    _time_zone_problem,
    _topic_level_problem,
    _topic_prefix_problem,
    _Values,
)
from ._site import CircuitConfig, GridConnectionConfig


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
    offline_unknown: Literal["reject", "accept"] = _setting(
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
    ocpp: OcppConfig | None = _setting(
        "section", "the local OCPP 1.6J central system; absent: none (no protocol: ocpp chargers), "
        "empty: its defaults",
        default=None, item=OcppConfig,
    )
    chargers: tuple[AnyChargerConfig, ...] = _setting(
        "list", "the charge points: Modbus ones (ChargerConfig) and OCPP ones (OcppChargerConfig)",
        item=ChargerConfig, min_items=1, pick=_charger_class,
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


def _check_tls(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    has_cert, has_key = "cert_file" in entries, "key_file" in entries
    if has_cert != has_key:
        given, missing = ("cert_file", "key_file") if has_cert else ("key_file", "cert_file")
        ctx.issue(_join(path, missing), _key_line(entries, given, node),
                  f"is required with {given} (mutual TLS needs both)")


def _check_cloud(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    if "port" not in entries:
        values["port"] = 8883 if values["tls"] not in (None, _INVALID) else 1883
