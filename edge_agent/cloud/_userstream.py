"""Reads a full user list `{"version": 17, "users": [...], ...}` from a byte stream, one user
at a time, so that a 16 MB list of 100,000 users never sits in memory as 100,000 dicts.

The top-level object is walked by hand; each value (each user, each other field) is decoded
with the json module's own scanner. Every user passes check_user on the way; duplicates across
users are the caller's business (it stages the users in SQLite, whose keys find them).
"""
from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import IO, Any

from ._payloads import MAX_VERSION, PayloadError, check_text, check_user

CHUNK_CHARS = 1 << 20
MAX_VALUE_CHARS = 4 << 20  # one user (or one other top-level field) may not be larger
_WHITESPACE = " \t\n\r"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


class UserListReader:
    """Iterate `users()` for the checked users; afterwards `version` holds the list's version.

    With `stop_at_version`, reading stops (and `superseded` is True) as soon as a `version`
    field at or below it is seen, before any user after it is read: a list that would be ignored
    is not read to the end. Raises PayloadError naming the field for anything invalid.
    """

    def __init__(self, stream: IO[bytes], *, stop_at_version: int | None = None,
                 require_version: bool = True) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._json = json.JSONDecoder(parse_constant=_reject_constant)
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._stop_at = stop_at_version
        self._require_version = require_version
        self.version: int | None = None
        self.superseded = False
        self.user_count = 0
        self._value_start = 0
        self._base = 0  # characters dropped from the buffer's front so far

    # -- the grammar ---------------------------------------------------------------------

    def users(self) -> Iterator[dict[str, Any]]:
        self._skip_ws()
        if self._peek() != "{":
            raise PayloadError("", "must be a JSON object")
        self._pos += 1
        seen: set[str] = set()
        first = True
        while True:
            self._skip_ws()
            if self._peek() == "}":
                self._pos += 1
                break
            if not first:
                self._expect(",", "between fields")
                self._skip_ws()
            first = False
            if self._peek() != '"':
                raise PayloadError("", f"expected a field name at character {self._offset()}")
            key = self._value("")
            if key in seen:
                raise PayloadError(key, "appears twice")
            seen.add(key)
            self._skip_ws()
            self._expect(":", f"after {key!r}")
            self._skip_ws()
            if key == "users":
                yield from self._users()
                if self.superseded:
                    return
            elif key == "version":
                value = self._value("version")
                if isinstance(value, bool) or not isinstance(value, int):
                    raise PayloadError("version", f"wrong type {type(value).__name__}")
                if not 1 <= value <= MAX_VERSION:
                    raise PayloadError("version", f"must be an integer between 1 and {MAX_VERSION}")
                self.version = value
                if self._stop_at is not None and value <= self._stop_at:
                    self.superseded = True
                    return
            else:
                self._value(key)  # unknown fields are ignored, but must be valid JSON
        self._skip_ws()
        if self._peek() != "":
            raise PayloadError("", f"unexpected data after the object at character {self._offset()}")
        if self.version is None and self._require_version:
            raise PayloadError("version", "missing")
        if "users" not in seen:
            raise PayloadError("users", "missing")

    def _users(self) -> Iterator[dict[str, Any]]:
        if self._peek() != "[":
            value = self._value("users")
            raise PayloadError("users", f"wrong type {type(value).__name__}")
        self._pos += 1
        index = 0
        while True:
            self._skip_ws()
            if self._peek() == "]":
                self._pos += 1
                return
            if index:
                self._expect(",", f"after users[{index - 1}]")
                self._skip_ws()
            path = f"users[{index}]"
            user = self._value(path)
            if _SURROGATE_ESCAPE.search(self._buf, self._value_start, self._pos):
                check_text(user, path)
            yield check_user(user, path)
            index += 1
            self.user_count = index

    # -- the buffer ----------------------------------------------------------------------

    def _offset(self) -> int:
        return self._base + self._pos

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._stream.read(CHUNK_CHARS)
        try:
            text = self._decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise PayloadError("", f"not valid UTF-8 ({exc.reason})") from None
        if not chunk:
            self._eof = True
        self._base += self._pos
        self._buf = self._buf[self._pos:] + text
        self._pos = 0
        return bool(chunk) or bool(text)

    def _peek(self) -> str:
        while self._pos >= len(self._buf):
            if not self._fill():
                return ""
        return self._buf[self._pos]

    def _skip_ws(self) -> None:
        while True:
            buf, pos = self._buf, self._pos
            while pos < len(buf) and buf[pos] in _WHITESPACE:
                pos += 1
            self._pos = pos
            if pos < len(buf) or not self._fill():
                return

    def _expect(self, char: str, where: str) -> None:
        found = self._peek()
        if found != char:
            shown = repr(found) if found else "the end"
            raise PayloadError("", f"expected {char!r} {where}, found {shown} at character {self._offset()}")
        self._pos += 1

    def _value(self, path: str) -> Any:
        """One complete JSON value at the current position (reading more input as needed)."""
        while True:
            try:
                value, end = self._json.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if self._eof:
                    raise PayloadError(path, f"not valid JSON ({exc.msg})") from None
                if len(self._buf) - self._pos > MAX_VALUE_CHARS:
                    raise PayloadError(path, f"not valid JSON ({exc.msg}), or larger than "
                                             f"{MAX_VALUE_CHARS} characters") from None
                self._fill()
                continue
            except RecursionError:
                raise PayloadError(path, "nested too deeply") from None
            except ValueError as exc:  # an integer of more than 4300 digits
                raise PayloadError(path, f"not usable JSON ({str(exc)[:120]})") from None
            # A number cut by the end of the buffer ("12", "1.", "1e-") decodes as a shorter
            # number, leaving at most two characters: read more and decode again.
            if len(self._buf) - end <= 2 and not self._eof:
                self._fill()
                continue
            self._value_start, self._pos = self._pos, end
            return value
