"""Where the agent's log lines go: journald with levels under systemd, timestamps on a terminal.

Under systemd, stderr is a stream to journald (JOURNAL_STREAM names it). journald reads a `<N>`
syslog priority prefix on every line and stamps the time itself, so the lines carry the priority
and no timestamp. Anywhere else (a terminal, a test's log file) lines start with the time.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

__all__ = ["JournalFormatter", "configure_logging", "logging_to_journal"]

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# sd-daemon(3) priorities: what `journalctl -p warning` and the colours of journalctl go by.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def _priority(levelno: int) -> int:
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class JournalFormatter(logging.Formatter):
    """`<6>edge_agent.site: message`; each line of a traceback gets the prefix too, so journald
    keeps the whole of it at the record's priority instead of logging the tail as INFO."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def logging_to_journal(stream: TextIO | None = None) -> bool:
    """True when `stream` (default stderr) is the journald stream systemd gave us.

    JOURNAL_STREAM is inherited by children that may have redirected stderr elsewhere, so the
    device and inode are compared as systemd.exec(5) asks.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    stream = stream if stream is not None else sys.stderr
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    device, _, inode = value.partition(":")
    return device == str(st.st_dev) and inode == str(st.st_ino)


def configure_logging(level: str | int, *, stream: TextIO | None = None) -> None:
    """The agent's root logger; replaces handlers set up before (one configuration per process)."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if logging_to_journal(stream) else logging.Formatter(TERMINAL_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
