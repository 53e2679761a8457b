"""The one error type of a site config: every problem found, each naming its key path and line."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: where (key path such as `chargers[1].baudrate`, 1-based line) and what."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where = f"{where} (line {self.line})" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


class ConfigError(Exception):
    """Every problem found in one config file; str() lists them one per line."""

    def __init__(self, errors: list[ConfigIssue], *, source: str = "<string>") -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__("\n".join(str(issue) for issue in self.errors))
