"""The cloud's lists applied to the store: full user lists (inline or by URL), user deltas,
tariff lists.

Every list is checked whole before anything is written (a list with one bad entry is rejected
whole, raising PayloadError naming the entry) and then applied in one transaction, or not at all.

Large full lists never sit in memory: UserListReader hands over one user at a time, and the users
are staged in a scratch SQLite file (`<data_dir>/lists/`), whose keys find duplicate user ids
and tokens. The staged list is then swapped in with one short transaction on the store's own
connection, on the agent's loop: the agent has a single writer, so no session write can ever
meet a locked database. The swap is the only moment the loop waits (see docs/mqtt-api.md for
the measured time); parsing, checking, staging and downloading run in a thread or asynchronously.
"""
from __future__ import annotations

import asyncio
import io
import logging
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .cloud import (
    MAX_PAYLOAD_BYTES,
    MAX_VERSION,
    DownloadError,
    DownloadPolicy,
    PayloadError,
    UserListReader,
    UserListUrl,
    check_tariff_list,
    check_user,
    check_user_list,
    check_user_list_url,
    download_with_retries,
    is_user_list_url,
    parse_json_object,
    shown_url,
)
from .store import DuplicateToken, DuplicateUser, Store, TokenTaken, UserStaging

log = logging.getLogger("edge_agent.lists")

# A full list up to this size that arrives while nothing else is in progress is applied at once,
# on the loop (a few milliseconds); larger ones are streamed and staged in a thread.
INLINE_AT_ONCE_BYTES = 256 * 1024
_STAGE_CHECK_CANCEL_EVERY = 2000


@dataclass(frozen=True, slots=True)
class Outcome:
    applied: bool
    detail: str


class Cancelled(Exception):
    """A newer full list arrived while this one was being staged."""


# -- full lists held in memory (small) ---------------------------------------------------------

def apply_user_list(store: Store, obj: dict[str, Any]) -> Outcome:
    users = check_user_list(obj)
    local = store.list_version("users")
    if users.version <= local:
        return _said(Outcome(False, f"user list version {users.version} ignored (local version {local})"))
    store.replace_users(users.version, users.users)
    return _said(Outcome(True, f"user list version {users.version} applied: {len(users.users)} users"))


# -- full lists of any size: stream -> staging file -> one swap transaction --------------------

@dataclass(frozen=True, slots=True)
class StagedUserList:
    path: Path
    version: int
    users: int
    tokens: int


def stage_user_list(stream: IO[bytes], staging_path: Path, *, stop_at_version: int | None = None,
                    expected_version: int | None = None,
                    cancel: threading.Event | None = None) -> StagedUserList | None:
    """Reads, checks and stages a full list. Returns None when its version is at or below
    `stop_at_version` (such a list is ignored, so it is not read further). With
    `expected_version` (a list by URL), the file's own `version`, if it has one, must match.
    Raises PayloadError; the staging file is removed on any failure."""
    staging = UserStaging(staging_path)  # scratch data: no journal, no fsync, a bounded page cache
    ok = False
    try:
        reader = UserListReader(stream, stop_at_version=stop_at_version,
                                require_version=expected_version is None)
        tokens = 0
        for seq, user in enumerate(reader.users()):
            if cancel is not None and seq % _STAGE_CHECK_CANCEL_EVERY == 0 and cancel.is_set():
                raise Cancelled()
            _stage_user(staging, seq, user)
            tokens += len(user["tokens"])
        if reader.superseded:
            return None
        if expected_version is not None and reader.version not in (None, expected_version):
            raise PayloadError("version", f"the file says version {reader.version}, the message "
                                          f"{expected_version}")
        version = reader.version if reader.version is not None else expected_version
        assert version is not None
        staging.commit()
        ok = True
        return StagedUserList(staging_path, version, reader.user_count, tokens)
    finally:
        staging.close()
        if not ok:
            staging_path.unlink(missing_ok=True)


def _stage_user(staging: UserStaging, seq: int, user: dict[str, Any]) -> None:
    try:
        staging.add(seq, user)
    except DuplicateUser as dup:
        first = "?" if dup.first_seq is None else dup.first_seq
        raise PayloadError(f"users[{seq}].id", f"duplicate user id {user['id']!r} "
                                               f"(also users[{first}])") from None
    except DuplicateToken as dup:
        uid, where = dup.uid, f"users[{seq}].tokens[{dup.index}]"
        if dup.owner is not None and dup.owner_seq == seq:
            raise PayloadError(where, f"token {uid} appears twice for {user['id']!r}") from None
        found = dup.owner is not None
        raise PayloadError(where, f"token {uid} also belongs to {dup.owner if found else '?'!r}"
                                  f" (users[{dup.owner_seq if found else '?'}])") from None


def swap_in_user_list(store: Store, staged: StagedUserList) -> Outcome:
    """Replaces the user list with the staged one in one transaction on the store's connection
    (re-checking the version inside it). A crash at any point leaves the old list or the new
    one, never a mix."""
    started = time.monotonic()
    local = store.replace_users_from(staged.path, staged.version)
    if staged.version <= local:
        return _said(Outcome(False, f"user list version {staged.version} ignored "
                                    f"(local version {local})"))
    took = time.monotonic() - started
    return _said(Outcome(True, f"user list version {staged.version} applied: {staged.users} users, "
                               f"{staged.tokens} tokens (swap {took * 1000:.0f} ms)"))


def apply_user_list_stream(store: Store, stream: IO[bytes], *, work_dir: Path,
                           expected_version: int | None = None) -> Outcome:
    """Stage and swap in one call (synchronous): for tools and tests."""
    work_dir.mkdir(parents=True, exist_ok=True)
    local = store.list_version("users")
    staged = stage_user_list(stream, work_dir / f"users-{uuid.uuid4().hex}.staging.db",
                             stop_at_version=local, expected_version=expected_version)
    if staged is None:
        return _said(Outcome(False, f"user list ignored: its version is not above the local {local}"))
    try:
        return swap_in_user_list(store, staged)
    finally:
        staged.path.unlink(missing_ok=True)


# -- deltas -----------------------------------------------------------------------------------

def apply_user_delta(store: Store, obj: dict[str, Any]) -> Outcome:
    """`{"version": 18, "base_version": 17, "upsert": [user, ...], "remove": [user id, ...]}`:
    applied only when base_version is the local version; otherwise ignored (the cloud then sees
    the local users_version in ~/state and sends a full list)."""
    version, base = _int(obj, "version"), _int(obj, "base_version")
    if version <= base:
        raise PayloadError("version", f"must be greater than base_version ({version} <= {base})")
    upsert, remove = obj.get("upsert", []), obj.get("remove", [])
    if upsert is None:
        upsert = []
    if remove is None:
        remove = []
    if not isinstance(upsert, list):
        raise PayloadError("upsert", "must be a list of users")
    if not isinstance(remove, list):
        raise PayloadError("remove", "must be a list of user ids")
    for i, user_id in enumerate(remove):
        if not isinstance(user_id, str) or not user_id:
            raise PayloadError(f"remove[{i}]", "must be a user id (non-empty string)")
    users = [check_user(u, f"upsert[{i}]") for i, u in enumerate(upsert)]
    ids: dict[str, int] = {}
    owners: dict[str, tuple[int, str]] = {}
    for i, user in enumerate(users):
        if user["id"] in ids:
            raise PayloadError(f"upsert[{i}].id", f"duplicate user id {user['id']!r} (also upsert[{ids[user['id']]}])")
        ids[user["id"]] = i
        for k, uid in enumerate(user["tokens"]):
            if uid in owners:
                raise PayloadError(f"upsert[{i}].tokens[{k}]",
                                   f"token {uid} also belongs to {owners[uid][1]!r} (upsert[{owners[uid][0]}])")
            owners[uid] = (i, user["id"])
    local = store.list_version("users")
    if base != local:
        return _said(Outcome(False, f"user delta {version} (base {base}) ignored: local version is {local}"))
    try:
        store.update_users(version, remove=remove, upsert=users)
    except TokenTaken as taken:  # nothing was changed
        raise PayloadError(f"upsert[{taken.user}].tokens[{taken.token}]",
                           f"token {taken.uid} already belongs to {taken.owner!r}") from None
    return _said(Outcome(True, f"user delta {version} applied: {len(users)} upserted, {len(remove)} removed"))


# -- tariffs ----------------------------------------------------------------------------------

def apply_tariff_list(store: Store, obj: dict[str, Any]) -> Outcome:
    tariffs = check_tariff_list(obj)
    local = store.list_version("tariffs")
    if tariffs.version <= local:
        return _said(Outcome(False, f"tariff list version {tariffs.version} ignored (local version {local})"))
    store.replace_tariffs(tariffs.version, tariffs.body)
    return _said(Outcome(True, f"tariff list version {tariffs.version} applied: "
                               f"{len(tariffs.body['tariffs'])} tariffs"))


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if key not in obj:
        raise PayloadError(key, "missing")
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_VERSION:
        raise PayloadError(key, f"must be an integer between 1 and {MAX_VERSION}")
    return value


def _said(outcome: Outcome) -> Outcome:
    log.info(outcome.detail)
    return outcome


# -- the agent's side: messages in arrival order, downloads, one job at a time -------------------

@dataclass(eq=False)
class _Job:
    topic: str
    kind: str  # "inline" (full list bytes), "url" (full list to download), "delta" (parsed object)
    payload: bytes = b""
    source: UserListUrl | None = None
    delta: dict[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def full(self) -> bool:
        return self.kind != "delta"


class UserListUpdater:
    """Takes ~/config/users and ~/config/users/delta messages and applies them in arrival order.

    The newest full list wins: a full list cancels any full list still waiting or being fetched
    (but not the same list by URL delivered again, e.g. the retained message after a reconnect).
    A list that fails (download, hash, content) leaves the current list in force; `error` says
    why until a full list is applied. offer_* raise PayloadError when the message is invalid on
    its face; later failures are reported through `on_rejected` (content) and `error`.
    """

    def __init__(self, *, store: Store, work_dir: Path, verify: ssl.SSLContext,
                 policy: DownloadPolicy | None = None,
                 on_rejected: Callable[[str, Exception], None] = lambda topic, error: None) -> None:
        self._store = store
        self._work_dir = work_dir
        self._verify = verify
        self._policy = policy or DownloadPolicy()
        self._on_rejected = on_rejected
        self._queue: deque[_Job] = deque()
        self._current: _Job | None = None
        self._current_task: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.error: str | None = None
        self.applied = 0
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """A crash (or SIGKILL) in the middle leaves a partial download or staging file."""
        if not self._work_dir.is_dir():
            return
        for leftover in [*self._work_dir.glob("*.part"), *self._work_dir.glob("*.staging.db*")]:
            leftover.unlink(missing_ok=True)

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    # -- messages in (called on the loop) -------------------------------------------------------

    def offer_full(self, topic: str, payload: bytes) -> Outcome | None:
        """A ~/config/users message. Returns the outcome when it was decided at once."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PayloadError("", f"payload of {len(payload)} bytes is larger than {MAX_PAYLOAD_BYTES}")
        if len(payload) <= INLINE_AT_ONCE_BYTES:
            try:
                obj = parse_json_object(payload)
                if is_user_list_url(obj):
                    return self._offer_url(topic, check_user_list_url(obj))
                if not self.busy:
                    outcome = apply_user_list(self._store, obj)
                    if outcome.applied:
                        self.error = None
                    return outcome
            except PayloadError as exc:
                self.error = f"user list not applied: {exc}"
                raise
        self._supersede(None)
        self._enqueue(_Job(topic, "inline", payload=payload))
        return None

    def _offer_url(self, topic: str, source: UserListUrl) -> Outcome | None:
        local = self._store.list_version("users")
        if source.version <= local:
            return _said(Outcome(False, f"user list version {source.version} by URL ignored "
                                        f"(local version {local})"))
        for job in [self._current, *self._queue]:
            if job is not None and job.kind == "url" and job.source == source:
                log.info("user list version %d by URL is already being fetched", source.version)
                return None
        self._supersede(source)
        self._enqueue(_Job(topic, "url", source=source))
        return None

    def offer_delta(self, topic: str, payload: bytes) -> Outcome | None:
        obj = parse_json_object(payload)
        if not self.busy:
            return apply_user_delta(self._store, obj)
        self._enqueue(_Job(topic, "delta", delta=obj))
        return None

    def _supersede(self, source: UserListUrl | None) -> None:
        dropped = [job for job in self._queue if job.full]
        for job in dropped:
            self._queue.remove(job)
        current = self._current
        if current is not None and current.full and self._current_task is not None:
            log.info("a newer user list arrived; dropping the one in progress")
            current.cancel.set()
            self._current_task.cancel()

    def _enqueue(self, job: _Job) -> None:
        self._queue.append(job)
        self._idle.clear()
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())

    # -- the worker -------------------------------------------------------------------------

    async def join(self) -> None:
        """Returns when every message offered so far has been dealt with."""
        await self._idle.wait()

    async def aclose(self) -> None:
        for job in [self._current, *self._queue]:
            if job is not None:
                job.cancel.set()
        self._queue.clear()
        for task in (self._current_task, self._worker):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (self._current_task, self._worker) if t is not None),
                             return_exceptions=True)
        self._idle.set()

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            job = self._queue.popleft()
            self._current = job
            self._current_task = asyncio.ensure_future(self._run(job))
            try:
                await asyncio.shield(self._current_task)
            except asyncio.CancelledError:
                if not self._current_task.cancelled():
                    raise  # the worker itself is being cancelled
            finally:
                self._current, self._current_task = None, None

    async def _run(self, job: _Job) -> None:
        try:
            if job.kind == "delta":
                assert job.delta is not None
                apply_user_delta(self._store, job.delta)
            elif job.kind == "inline":
                await self._apply_file(job, io.BytesIO(job.payload), expected_version=None)
            else:
                await self._fetch_and_apply(job)
        except asyncio.CancelledError:
            raise
        except PayloadError as exc:
            if job.full:
                self.error = f"user list not applied: {exc}"
            self._on_rejected(job.topic, exc)
        except DownloadError as exc:
            assert job.source is not None
            self.error = (f"user list version {job.source.version} not applied: download from "
                          f"{shown_url(job.source.url)} failed: {exc}")
            log.warning("%s; the current list stays in force", self.error)
        except Exception as exc:  # one bad list must not stop the next one
            log.exception("user list message on %s could not be applied", job.topic)
            self.error = f"user list not applied: {type(exc).__name__}: {exc}"

    async def _fetch_and_apply(self, job: _Job) -> None:
        source = job.source
        assert source is not None
        self._work_dir.mkdir(parents=True, exist_ok=True)
        part = self._work_dir / f"users-{source.version}-{uuid.uuid4().hex}.part"
        try:
            log.info("downloading user list version %d from %s", source.version, shown_url(source.url))

            def failed_try(attempt: int, error: DownloadError) -> None:
                # Shown in ~/state while the retries go on, not only after the last one.
                self.error = (f"user list version {source.version}: download try {attempt} of "
                              f"{self._policy.attempts} from {shown_url(source.url)} failed: {error}")

            size = await download_with_retries(source.url, part, sha256=source.sha256,
                                               verify=self._verify, policy=self._policy,
                                               on_failed_try=failed_try)
            log.info("user list version %d downloaded: %d bytes, SHA-256 matches", source.version, size)

            def open_file() -> IO[bytes]:
                return open(part, "rb")  # closed by _apply_file

            await self._apply_file(job, open_file, expected_version=source.version)
        finally:
            part.unlink(missing_ok=True)

    async def _apply_file(self, job: _Job, stream: IO[bytes] | Callable[[], IO[bytes]], *,
                          expected_version: int | None) -> None:
        self._work_dir.mkdir(parents=True, exist_ok=True)
        staging = self._work_dir / f"users-{uuid.uuid4().hex}.staging.db"
        local = self._store.list_version("users")

        def stage() -> StagedUserList | None:
            handle = stream() if callable(stream) else stream
            with handle:
                staged = stage_user_list(handle, staging, stop_at_version=None if expected_version else local,
                                         expected_version=expected_version, cancel=job.cancel)
            if job.cancel.is_set():
                staging.unlink(missing_ok=True)
                raise Cancelled()
            return staged

        try:
            # If this await is cancelled, the thread sees job.cancel and removes its file itself.
            staged = await asyncio.to_thread(stage)
        except Cancelled:
            return
        try:
            if staged is None:
                _said(Outcome(False, f"user list on {job.topic} ignored: its version is not above "
                                     f"the local {local}"))
                return
            outcome = swap_in_user_list(self._store, staged)  # on the loop: the store's one writer
            if outcome.applied:
                self.error = None
                self.applied += 1
        finally:
            staging.unlink(missing_ok=True)
