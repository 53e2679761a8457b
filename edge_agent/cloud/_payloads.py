"""Checks for everything the cloud sends. A bad payload raises PayloadError naming the field;
a list with one bad entry is rejected whole."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drivers.tokens import InvalidToken, normalize_uid

from ..clock import parse_rfc3339

MAX_PAYLOAD_BYTES = 16 * 1024 * 1024 + 65536
# SQLite stores integers up to 2**63 - 1; a larger version could never be saved.
MAX_VERSION = 2**63 - 1
# A lone UTF-16 surrogate (\ud800-\udfff) is valid JSON but not valid text: SQLite and UTF-8
# encoders refuse it, so such payloads are rejected up front. Pairs decode to one character.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class PayloadError(ValueError):
    """Its text is always printable: a lone surrogate in a key or value it names becomes \\udXXX."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field = printable(field)
        message = printable(message)
        super().__init__(f"{field}: {message}" if field else message)


def printable(text: str) -> str:
    """Text that UTF-8 (a log, SQLite, the cloud's JSON parser) takes: lone surrogates escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_json_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError("", f"payload of {len(payload)} bytes is larger than {MAX_PAYLOAD_BYTES}")
    try:
        value = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PayloadError("", f"not valid UTF-8 JSON ({_short(exc)})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise PayloadError("", f"not usable JSON ({_short(exc)})") from None
    if not isinstance(value, dict):
        raise PayloadError("", f"must be a JSON object, got {type(value).__name__}")
    if _SURROGATE_ESCAPE.search(payload):
        check_text(value, "")
    return value


def check_text(value: Any, path: str) -> None:
    """Raises PayloadError naming the first string (or key) that holds a lone surrogate."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            _check_string(item, where)
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{where}.{key}" if where else str(key)
                _check_string(key, child_path)
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))


def _check_string(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(where, "holds a lone UTF-16 surrogate (not valid text)") from None


def _short(exc: BaseException | str, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str = "") -> Any:
    where = f"{path}.{key}" if path else key
    if key not in obj:
        raise PayloadError(where, "missing")
    value = obj[key]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise PayloadError(where, "must be a number, got a boolean")
    if not isinstance(value, kind):
        raise PayloadError(where, f"wrong type {type(value).__name__}")
    return value


def _optional(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str = "") -> Any:
    if obj.get(key) is None:
        return None
    return _require(obj, key, kind, path)


def _version(obj: dict[str, Any], key: str = "version") -> int:
    value: int = _require(obj, key, int)
    if not 1 <= value <= MAX_VERSION:
        raise PayloadError(key, f"must be an integer between 1 and {MAX_VERSION}, got {_short(str(value), 30)}")
    return value


def _time(obj: dict[str, Any], key: str, path: str = "") -> datetime | None:
    text = _optional(obj, key, str, path)
    if text is None:
        return None
    try:
        return parse_rfc3339(text)
    except (ValueError, OverflowError) as exc:
        raise PayloadError(f"{path}.{key}" if path else key, _short(exc)) from None


# -- users ------------------------------------------------------------------------------

def check_user(user: Any, path: str) -> dict[str, Any]:
    if not isinstance(user, dict):
        raise PayloadError(path, "must be an object")
    user_id = _require(user, "id", str, path)
    if not user_id:
        raise PayloadError(f"{path}.id", "must not be empty")
    tokens = _require(user, "tokens", list, path)
    normalized = []
    for i, uid in enumerate(tokens):
        try:
            normalized.append(normalize_uid(uid))
        except InvalidToken as exc:
            raise PayloadError(f"{path}.tokens[{i}]", str(exc)) from None
    for key in ("name", "phone", "group"):
        _optional(user, key, str, path)
    blocked = user.get("blocked", False)
    if not isinstance(blocked, bool):
        raise PayloadError(f"{path}.blocked", "must be true or false")
    valid_until = _time(user, "valid_until", path)
    return {"id": user_id, "name": user.get("name"), "phone": user.get("phone"),
            "group": user.get("group"), "tokens": normalized, "blocked": blocked,
            "valid_until": valid_until.strftime("%Y-%m-%dT%H:%M:%SZ") if valid_until else None}


@dataclass(frozen=True, slots=True)
class UserList:
    version: int
    users: list[dict[str, Any]]


def check_user_list(obj: dict[str, Any]) -> UserList:
    version = _version(obj)
    if "url" in obj:
        raise PayloadError("url", "a list is either inline (users) or by URL (url, sha256), not both"
                           if "users" in obj else "a list by URL is read with check_user_list_url")
    raw = _require(obj, "users", list)
    users = [check_user(u, f"users[{i}]") for i, u in enumerate(raw)]
    seen_users: set[str] = set()
    owner: dict[str, str] = {}
    for i, user in enumerate(users):
        if user["id"] in seen_users:
            raise PayloadError(f"users[{i}].id", f"duplicate user id {user['id']!r}")
        seen_users.add(user["id"])
        for uid in user["tokens"]:
            if uid in owner:
                raise PayloadError(f"users[{i}].tokens", f"token {uid} also belongs to {owner[uid]!r}")
            owner[uid] = user["id"]
    return UserList(version, users)


@dataclass(frozen=True, slots=True)
class UserListUrl:
    """`{"version": 19, "url": "https://...", "sha256": "<64 hex>"}`: a full list to download."""

    version: int
    url: str
    sha256: str


MAX_URL_CHARS = 2048
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def is_user_list_url(obj: dict[str, Any]) -> bool:
    return "url" in obj and "users" not in obj


def check_user_list_url(obj: dict[str, Any]) -> UserListUrl:
    from urllib.parse import urlsplit

    version = _version(obj)
    url = _require(obj, "url", str)
    if len(url) > MAX_URL_CHARS:
        raise PayloadError("url", f"longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise PayloadError("url", f"not a URL ({exc})") from None
    if parts.scheme != "https":
        raise PayloadError("url", f"must be an https:// URL, got scheme {parts.scheme!r}")
    if not host or any(ord(c) < 0x21 for c in url):
        raise PayloadError("url", "must name a host and contain no spaces or control characters")
    digest = _require(obj, "sha256", str)
    if not _SHA256.fullmatch(digest):
        raise PayloadError("sha256", "must be 64 hex digits (the SHA-256 of the list file)")
    return UserListUrl(version, url, digest.lower())


# -- tariffs ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TariffList:
    version: int
    body: dict[str, Any]


def check_tariff_list(obj: dict[str, Any]) -> TariffList:
    from ..pricing import TariffError, parse_tariff

    version = _version(obj)
    tariffs = _require(obj, "tariffs", list)
    ids = set()
    for i, tariff in enumerate(tariffs):
        if not isinstance(tariff, dict):
            raise PayloadError(f"tariffs[{i}]", "must be an object")
        try:
            parsed = parse_tariff(tariff)
        except TariffError as exc:
            raise PayloadError(f"tariffs[{i}]", str(exc)) from None
        except (ValueError, TypeError, ArithmeticError, LookupError, AttributeError) as exc:
            # The tariff parser should have said TariffError; a tariff it cannot read is invalid anyway.
            raise PayloadError(f"tariffs[{i}]", f"unreadable ({type(exc).__name__}: {_short(exc)})") from None
        if parsed.id in ids:
            raise PayloadError(f"tariffs[{i}].id", f"duplicate tariff id {parsed.id!r}")
        ids.add(parsed.id)
    groups = obj.get("groups") or {}
    if not isinstance(groups, dict):
        raise PayloadError("groups", "must be an object of group -> tariff id")
    for group, tariff_id in groups.items():
        if not isinstance(tariff_id, str):
            raise PayloadError(f"groups.{group}", f"must be a tariff id (string), got {type(tariff_id).__name__}")
        if tariff_id not in ids:
            raise PayloadError(f"groups.{group}", f"names unknown tariff {tariff_id!r}")
    default = _optional(obj, "default", str)
    if default is not None and default not in ids:
        raise PayloadError("default", f"names unknown tariff {default!r}")
    return TariffList(version, {"version": version, "groups": groups, "default": default,
                                "tariffs": tariffs})


# -- commands ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Command:
    name: str
    request_id: str
    expires_at: datetime | None
    fields: dict[str, Any]


COMMANDS = ("start", "stop", "set_availability", "resync", "set_site_limit")


def check_request_id(obj: dict[str, Any]) -> str:
    request_id: str = _require(obj, "request_id", str)
    if not request_id or len(request_id) > 200:
        raise PayloadError("request_id", "must be 1..200 characters")
    return request_id


def check_command(name: str, obj: dict[str, Any]) -> Command:
    request_id = check_request_id(obj)
    expires_at = _time(obj, "expires_at")
    if name not in COMMANDS:
        raise PayloadError("", f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
    fields: dict[str, Any] = {}
    if name == "start":
        fields["evse_id"] = _require(obj, "evse_id", str)
        fields["user_id"] = _require(obj, "user_id", str)
    elif name == "stop":
        fields["evse_id"] = _optional(obj, "evse_id", str)
        fields["session_id"] = _optional(obj, "session_id", str)
        if fields["evse_id"] is None and fields["session_id"] is None:
            raise PayloadError("evse_id", "stop needs evse_id or session_id")
    elif name == "set_availability":
        fields["evse_id"] = _require(obj, "evse_id", str)
        fields["available"] = _require(obj, "available", bool)
    elif name == "resync":
        what = _require(obj, "what", str)
        if what not in ("users", "tariffs", "all"):
            raise PayloadError("what", f"must be users, tariffs or all, got {what!r}")
        fields["what"] = what
    elif name == "set_site_limit":
        amps = _require(obj, "max_current_a", (int, float))
        if not math.isfinite(amps) or amps < 0:
            raise PayloadError("max_current_a", f"must be a finite number >= 0, got {amps}")
        fields["max_current_a"] = float(amps)
        fields["until"] = _time(obj, "until")
    return Command(name, request_id, expires_at, fields)


# -- acks and online authorization -------------------------------------------------------

def check_ack(obj: dict[str, Any]) -> list[str]:
    ids: list[str] = _require(obj, "ids", list)
    for i, event_id in enumerate(ids):
        if not isinstance(event_id, str):
            raise PayloadError(f"ids[{i}]", "must be a string")
    return ids


@dataclass(frozen=True, slots=True)
class AuthResponse:
    request_id: str
    status: str
    user: dict[str, Any] | None


def check_auth_response(obj: dict[str, Any]) -> AuthResponse:
    request_id = check_request_id(obj)
    status = _require(obj, "status", str)
    if status not in ("accepted", "blocked", "unknown"):
        raise PayloadError("status", f"must be accepted, blocked or unknown, got {status!r}")
    user = obj.get("user")
    if user is not None:
        if not isinstance(user, dict):
            raise PayloadError("user", "must be an object or null")
        user = dict(user)
        user.setdefault("tokens", [])
        user = check_user(user, "user")
    return AuthResponse(request_id, status, user)


def salvaged_request_id(payload: bytes) -> str | None:
    """The request_id of a command rejected whole (JSON but for NaN/Infinity, or a lone surrogate
    in another field) when that field itself is usable, so the cloud can tell which command its
    error answer is for."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        obj = json.loads(payload.decode("utf-8"))
        if not isinstance(obj, dict):
            return None
        request_id = check_request_id(obj)
        check_text(request_id, "request_id")
        return request_id
    except (ValueError, UnicodeError, PayloadError, RecursionError):
        return None
