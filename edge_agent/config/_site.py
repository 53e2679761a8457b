"""Load management's sections: `site:` (the grid connection all chargers share) and `circuits:`."""
from __future__ import annotations

from dataclasses import dataclass

from yaml.nodes import MappingNode

from ._chargers import MeterConfig
from ._reader import _Context, _Entries, _join, _line, _number, _ok, _setting, _Values


@dataclass(frozen=True, kw_only=True)
class GridConnectionConfig:
    """The `site:` section: the connection all chargers share (load management)."""

    max_current_a: float = _setting("number", "per phase, the main fuse", min=6, max=5000)
    phases: int = _setting("int", "phases of the connection", default=3, choices=(1, 3))
    safe_current_a: float = _setting(
        "number", "per phase for all chargers while the site meter is silent; "
        "required with a meter, else max_current_a", default=0.0, min=0, max=5000,
    )
    meter: MeterConfig | None = _setting(
        "section", "grid connection meter, for dynamic headroom", default=None, item=MeterConfig
    )
    meter_timeout_s: float = _setting(
        "number", "no fresh reading for this long -> safe_current_a", default=5.0, min=1, max=3600
    )


@dataclass(frozen=True, kw_only=True)
class CircuitConfig:
    id: str = _setting("str", "name chargers use in `circuit:`")
    max_current_a: float = _setting("number", "per phase", min=6, max=5000)


def _check_grid_connection(ctx: _Context, values: _Values, entries: _Entries,
                           node: MappingNode, path: str) -> None:
    maximum, safe, meter = values["max_current_a"], values["safe_current_a"], values["meter"]
    if "safe_current_a" not in entries:
        if meter is not None:
            ctx.issue(_join(path, "safe_current_a"), _line(node),
                      "is required with a site meter (the limit while the meter is silent)")
        values["safe_current_a"] = maximum
    elif _ok(maximum, safe) and safe > maximum:
        ctx.issue(_join(path, "safe_current_a"), _line(entries["safe_current_a"][1]),
                  f"must not exceed max_current_a ({_number(maximum)}), got {_number(safe)}")
