"""Downloads a list file over HTTPS into a file, checking its SHA-256 on the way.

The server's certificate is checked against the configured CA (and its host name); plain
http:// is refused, also as a redirect target. The body is streamed to disk in chunks, never
held in memory. Errors say whether trying again may help (`retryable`).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger("edge_agent.lists")

MAX_LIST_BYTES = 128 * 1024 * 1024
_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")


class DownloadError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadPolicy:
    attempts: int = 5  # tries per list, the first included
    backoff_first_s: float = 2.0  # wait before the second try; doubles, with jitter
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0  # between two bytes of the body
    total_timeout_s: float = 600.0  # for one try
    max_bytes: int = MAX_LIST_BYTES

    def delay(self, attempt: int) -> float:
        """Wait before try number `attempt + 1` (attempt >= 1)."""
        ceiling = min(self.backoff_max_s, self.backoff_first_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


async def _refuse_plain_http(request: httpx.Request) -> None:
    if request.url.scheme != "https":
        raise DownloadError(f"refusing to follow {shown_url(str(request.url))} (not https)", retryable=False)


async def download_to_file(url: str, destination: Path, *, sha256: str, verify: ssl.SSLContext,
                           policy: DownloadPolicy = DownloadPolicy()) -> int:
    """One try: GET `url` into `destination`; returns the number of bytes. Raises DownloadError.
    `destination` holds exactly the verified body on success; it may be partial on failure."""
    timeout = httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s)
    digest = hashlib.sha256()
    received = 0
    try:
        async with asyncio.timeout(policy.total_timeout_s):
            # trust_env=False: no proxy, netrc or CA bundle from the environment changes what is trusted.
            async with httpx.AsyncClient(verify=verify, timeout=timeout, follow_redirects=True,  # noqa: SIM117
                                         max_redirects=5, trust_env=False,
                                         event_hooks={"request": [_refuse_plain_http]}) as client:
                async with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
                    if response.status_code != 200:
                        retryable = response.status_code >= 500 or response.status_code in (408, 429)
                        raise DownloadError(f"HTTP {response.status_code} {response.reason_phrase}",
                                            retryable=retryable)
                    length = response.headers.get("content-length")
                    if length is not None and length.isdigit() and int(length) > policy.max_bytes:
                        raise DownloadError(f"the file has {length} bytes, more than {policy.max_bytes}",
                                            retryable=False)
                    with open(destination, "wb") as out:
                        # Decoded bytes: the hash is of the file, whatever content-encoding carried it.
                        async for chunk in response.aiter_bytes(65536):
                            received += len(chunk)
                            if received > policy.max_bytes:
                                raise DownloadError(f"the file is larger than {policy.max_bytes} bytes",
                                                    retryable=False)
                            digest.update(chunk)
                            out.write(chunk)
    except DownloadError:
        raise
    except TimeoutError:
        raise DownloadError(f"no complete download within {policy.total_timeout_s:g} s "
                            f"({received} bytes)", retryable=True) from None
    except httpx.ConnectError as exc:
        problem = _certificate_problem(exc)
        if problem is not None:
            raise DownloadError(f"the server's certificate is not accepted: {problem}", retryable=True) from None
        raise DownloadError(f"cannot connect: {_reason(exc)}", retryable=True) from None
    except httpx.HTTPError as exc:  # timeouts, a connection cut short, a broken chunked body...
        raise DownloadError(f"{type(exc).__name__}: {_reason(exc)} after {received} bytes",
                            retryable=True) from None
    except OSError as exc:  # writing to the data directory
        raise DownloadError(f"cannot write {destination}: {exc.strerror or exc}", retryable=True) from None
    found = digest.hexdigest()
    if found != sha256.lower():
        # A body cut short by a server that sent no length looks just like this; try again.
        raise DownloadError(f"SHA-256 mismatch: the {received} bytes downloaded hash to {found}, "
                            f"the message says {sha256.lower()}", retryable=True)
    return received


def shown_url(url: str) -> str:
    """The URL without its query: a pre-signed URL carries its credentials there."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _certificate_problem(exc: BaseException) -> str | None:
    """The certificate verification message somewhere in httpx's chain of wrapped errors."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or str(current)
        if "CERTIFICATE_VERIFY_FAILED" in str(current):
            text = str(current)
            return _SSL_LOCATION.sub("", text.split("certificate verify failed:", 1)[-1]).strip()
        current = current.__cause__ or current.__context__
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


async def download_with_retries(url: str, destination: Path, *, sha256: str, verify: ssl.SSLContext,
                                policy: DownloadPolicy = DownloadPolicy(),
                                on_failed_try: Callable[[int, DownloadError], Awaitable[None] | None]
                                = lambda attempt, error: None) -> int:
    """Tries up to policy.attempts times with backoff; raises the last DownloadError."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await download_to_file(url, destination, sha256=sha256, verify=verify, policy=policy)
        except DownloadError as error:
            outcome = on_failed_try(attempt, error)
            if outcome is not None:
                await outcome
            if not error.retryable or attempt >= policy.attempts:
                raise
            delay = policy.delay(attempt)
            log.info("list download from %s failed (%s); try %d of %d in %.1f s", shown_url(url), error,
                     attempt + 1, policy.attempts, delay)
            await asyncio.sleep(delay)
