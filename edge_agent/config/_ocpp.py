"""OCPP 1.6J: the `ocpp:` section (the gateway's local central system) and `protocol: ocpp`
chargers, which connect to it instead of being polled over Modbus.

The files these sections name are checked as they are read, as the start-up checks check the
cloud link's: a certificate must be a readable file, a private key or a password file one that
only its owner may access, and the certificate must go with its key. A charger's password is
read here, once: `OcppChargerConfig.password` is password_file's content, stripped.
"""
from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Literal

from yaml.nodes import MappingNode, ScalarNode

from ._chargers import (
    CHARGER_MODELS,
    PROTOCOLS,
    ChargerBase,
    ChargerConfig,
    ModbusEndpoint,
    _check_charger_common,
    _check_model,
    ocpp_model_names,
)
from ._reader import _STR, _Context, _Entries, _join, _line, _ok, _setting, _Values

# Group or others may not read, write or execute a private key or a password file
# (as edge_agent.cloud requires of the cloud link's).
PRIVATE_MODE_MASK = 0o077

# The settings of a Modbus charger that an OCPP charger does not take: how to reach it on a bus.
_MODBUS_ONLY = (*(f.name for f in fields(ModbusEndpoint)), "timeout_s", "retries", "failsafe_timeout_s", "meter")


def _charge_point_id_problem(value: str) -> str | None:
    if "/" in value:
        return f"must be one URL path segment (no '/'), got {value!r}"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return f"must not contain control characters, got {value!r}"
    if value != value.strip():
        return f"must not start or end with white space, got {value!r}"
    return None


@dataclass(frozen=True, kw_only=True)
class OcppTlsConfig:
    cert_file: Path = _setting("path", "the server certificate chargers check (PEM, with its chain)")
    key_file: Path = _setting("path", "private key of cert_file; only its owner may read it")


@dataclass(frozen=True, kw_only=True)
class OcppConfig:
    """The `ocpp:` section: where the websocket server OCPP chargers connect to listens."""

    host: str = _setting("str", "where the websocket server listens", default="0.0.0.0")
    port: int = _setting(
        "int", "a charger connects to ws://GATEWAY:{port}/{charge_point_id}", default=8887, min=1, max=65535
    )
    tls: OcppTlsConfig | None = _setting(
        "section", "wss (OCPP security profile 2); absent: plain ws", default=None, item=OcppTlsConfig
    )
    heartbeat_s: int = _setting(
        "int", "the interval given in BootNotification.conf", default=300, min=10, max=86400
    )


@dataclass(frozen=True, kw_only=True)
class OcppChargerConfig(ChargerBase):
    """An OCPP 1.6J charger (`protocol: ocpp`): it connects to the gateway's `ocpp:` server."""

    _FOREIGN_KEYS: ClassVar[Mapping[str, str]] = {
        key: "is a Modbus setting; a charger with protocol: ocpp connects to the gateway "
             "(the ocpp: section) and takes none"
        for key in _MODBUS_ONLY
    }

    protocol: Literal["ocpp"] = _setting(
        "str", "ocpp: the charger connects to the gateway's central system", choices=PROTOCOLS
    )
    model: str = _setting(
        "str", "an OCPP quirk map shipped in drivers/ocpp/quirks (generic-ocpp16 always exists)"
    )
    charge_point_id: str = _setting(
        "str", "the last segment of the URL the charger connects to", check=_charge_point_id_problem
    )
    connector: int = _setting("int", "the charger's connector of this EVSE", default=1, min=1, max=9)
    password_file: Path | None = _setting(
        "path", "file whose content is the charger's password (HTTP basic auth, security profile 1/2); "
        "absent: the charger connects without one", default=None,
    )
    password: str | None = field(default=None, repr=False)  # password_file's content, stripped


AnyChargerConfig = ChargerConfig | OcppChargerConfig


def _charger_class(entries: _Entries) -> type:
    """`protocol: ocpp` makes an entry an OCPP charger, and so does a protocol that is a misspelt
    ocpp (`OCPP`, `ocpp1.6`: refused, but the rest is checked as what it was meant to be);
    anything else is read as a Modbus charger (which refuses a protocol that is neither)."""
    node = entries["protocol"][1] if "protocol" in entries else None
    if isinstance(node, ScalarNode) and node.tag == _STR and "ocpp" in node.value.casefold():
        return OcppChargerConfig
    return ChargerConfig


# --------------------------------------------------------------------------- files


def _file_problem(path: Path, *, private: bool) -> str | None:
    """Why `path` cannot serve (missing, not a regular file, unreadable, or, for a secret,
    accessible to group or others), or None."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    mode = stat.S_IMODE(info.st_mode)
    if private and mode & PRIVATE_MODE_MASK:
        return (f"{path} has mode {mode:04o}: group or others may access this secret; "
                f"make it private with `chmod 600 {path}`")
    if not os.access(path, os.R_OK):
        return f"cannot read {path}: permission denied"
    return None


def _check_file(ctx: _Context, values: _Values, entries: _Entries, path: str, key: str, *,
                private: bool) -> bool:
    """Reports `key`'s file if it cannot serve; True if it is there and fine."""
    file = values[key]
    if not _ok(file) or file is None:
        return False
    problem = _file_problem(file, private=private)
    if problem is not None:
        ctx.issue(_join(path, key), _line(entries[key][1]), problem)
        return False
    return True


def _read_password(ctx: _Context, values: _Values, entries: _Entries, path: str) -> str | None:
    if not _check_file(ctx, values, entries, path, "password_file", private=True):
        return None
    file: Path = values["password_file"]
    where = (_join(path, "password_file"), _line(entries["password_file"][1]))
    try:
        password = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        ctx.issue(*where, f"cannot read {file}: {exc.strerror}")
        return None
    except UnicodeDecodeError:
        ctx.issue(*where, f"{file} is not UTF-8 text")
        return None
    if not password:
        ctx.issue(*where, f"{file} is empty (it holds the charger's password)")
        return None
    return password


# --------------------------------------------------------------------------- checks


def _check_ocpp_tls(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode, path: str) -> None:
    cert_ok = _check_file(ctx, values, entries, path, "cert_file", private=False)
    key_ok = _check_file(ctx, values, entries, path, "key_file", private=True)
    if cert_ok and key_ok:
        cert, key = values["cert_file"], values["key_file"]
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            ctx.issue(_join(path, "cert_file"), _line(entries["cert_file"][1]),
                      f"cannot use {cert} with {key}: {exc.reason or exc}")


def _check_ocpp_charger(ctx: _Context, values: _Values, entries: _Entries, node: MappingNode,
                        path: str) -> None:
    known = ocpp_model_names(ctx)
    model = values["model"]
    if _ok(model) and model is not None and model not in known:
        modbus = ctx.model_names(ctx.known_models, "available_models", CHARGER_MODELS)
        _check_model(ctx, values, entries, path, known, "OCPP charger", list_known=True, other=(
            modbus, "that is a Modbus charger; leave out protocol: ocpp and give its host or serial"))
    _check_charger_common(ctx, values, entries, path)
    if "password_file" in entries:
        values["password"] = _read_password(ctx, values, entries, path)
