"""What the store raises when the storage fails, typed once at the store's boundary.

    StoreError                      the store refused an operation (not the storage's fault)
        TokenTaken                  a user delta gives a card that another user already holds
        DuplicateUser, DuplicateToken   (._staging) a full list names a user or a card twice
    StorageError                    the storage failed (a sqlite3.DatabaseError)
        StorageFull                 no space: the disk is full, or a write failed with an I/O error
                                    (how a full SD card or tmpfs often shows); retryable, space may return
        StorageCorrupt              the file is damaged or not a database; not retryable
        StorageFailed               any other operational failure (locked, read-only, cannot open)

The storage errors subclass sqlite3's own (StorageFull and StorageFailed are
sqlite3.OperationalError, StorageCorrupt a sqlite3.DatabaseError), so code written against sqlite3
still catches them; they keep the original message, `sqlite_errorcode` and `sqlite_errorname`.
SQLite's result codes decide; the message text only for an error raised by hand without one.
Other sqlite3 errors (a constraint, a programming error) pass through unchanged.
"""
from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar


class StoreError(RuntimeError):
    pass


class TokenTaken(StoreError):
    """A user delta gives the card `uid` (upsert[user].tokens[token]) that `owner` already holds."""

    def __init__(self, user: int, token: int, uid: str, owner: str) -> None:
        super().__init__(f"token {uid} already belongs to {owner!r}")
        self.user, self.token, self.uid, self.owner = user, token, uid, owner


class StorageError(sqlite3.DatabaseError):
    """The storage failed; `retryable`: the same write may succeed later."""

    retryable = False


class StorageFull(StorageError, sqlite3.OperationalError):
    """SQLITE_FULL or SQLITE_IOERR: nothing more can be written until space returns."""

    retryable = True


class StorageCorrupt(StorageError):
    """SQLITE_CORRUPT or SQLITE_NOTADB."""


class StorageFailed(StorageError, sqlite3.OperationalError):
    """Any other operational error (SQLITE_BUSY, SQLITE_READONLY, SQLITE_CANTOPEN, ...)."""


_PRIMARY = 0xFF  # an extended result code (SQLITE_IOERR_WRITE, ...) carries its primary code in the low byte
_FULL = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def storage_error(exc: sqlite3.DatabaseError) -> StorageError | None:
    """The typed error for a sqlite3 error, or None for one that is not the storage's (passed on)."""
    if isinstance(exc, StorageError):
        return exc
    code = getattr(exc, "sqlite_errorcode", None)
    kind: type[StorageError] | None
    if code is None:  # raised by hand, not by SQLite: only its text says what it is
        text = str(exc).lower()
        if not isinstance(exc, sqlite3.OperationalError):
            kind = None
        elif "full" in text or "disk i/o" in text:
            kind = StorageFull
        else:
            kind = StorageFailed
    elif code & _PRIMARY in _FULL:
        kind = StorageFull
    elif code & _PRIMARY in _CORRUPT:
        kind = StorageCorrupt
    elif isinstance(exc, sqlite3.OperationalError):
        kind = StorageFailed
    else:
        kind = None
    if kind is None:
        return None
    typed = kind(*exc.args)
    if code is not None:
        typed.sqlite_errorcode, typed.sqlite_errorname = code, exc.sqlite_errorname
    return typed


@contextmanager
def storage_errors() -> Iterator[None]:
    """The store's boundary: a sqlite3 error of the storage leaves it as a StorageError."""
    try:
        yield
    except StorageError:
        raise
    except sqlite3.DatabaseError as exc:
        typed = storage_error(exc)
        if typed is None:
            raise
        raise typed from exc


C = TypeVar("C", bound=type)


def typed_errors(cls: C) -> C:
    """Class decorator: every public method of `cls` runs inside storage_errors() (a context
    manager method, such as a transaction, takes care of its own body)."""
    for name, value in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(value):
            setattr(cls, name, _typed(value))
    return cls


def _typed(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with storage_errors():
            return method(*args, **kwargs)

    return call
