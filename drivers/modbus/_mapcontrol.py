"""The charger-only sections of a map: states, control, connectors, never_write, setup, failsafe, keepalive."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drivers.api import IEC61851_STATES

from ._mapchecks import MapChecks
from ._maptypes import (
    INTEGER_TYPES,
    MAX_KEEPALIVE_SHARE,
    ConditionalState,
    Connectors,
    Control,
    Failsafe,
    Keepalive,
    NeverWrite,
    Register,
)


class ChargerSections(MapChecks):
    """What a charger map has beyond a meter's: how its state reads, how it is controlled, what keeps it safe."""

    def states(self, data: Any, registers: Mapping[str, Register]) -> dict[int | str, str | ConditionalState]:
        if not isinstance(data, dict) or not data:
            raise self.fail("states", "must be a non-empty mapping of raw value -> IEC 61851 letter")
        textual = registers["state"].type == "ascii"
        out: dict[int | str, str | ConditionalState] = {}
        letters: set[str] = set()
        for value, letter in data.items():
            key = f"states.{value}"
            if textual:
                raw_key: int | str = self.str_(value, key)
            else:
                raw_key = self.int_(value, key, lo=0, hi=0xFFFFFFFF)
            if isinstance(letter, dict):
                cond = self.section(letter, key, required={"role", "mask", "set", "clear"})
                state = ConditionalState(
                    role=self.role_ref(cond["role"], f"{key}.role", registers),
                    mask=self.int_(cond["mask"], f"{key}.mask", lo=1, hi=0xFFFFFFFF),
                    set=self.choice(cond["set"], f"{key}.set", IEC61851_STATES),
                    clear=self.choice(cond["clear"], f"{key}.clear", IEC61851_STATES),
                )
                if registers[state.role].type not in INTEGER_TYPES:
                    raise self.fail(f"{key}.role", "must be an integer register")
                out[raw_key] = state
                letters.update((state.set, state.clear))
            else:
                out[raw_key] = self.choice(letter, key, IEC61851_STATES)
                letters.add(letter)
        for letter in ("A", "B", "C"):
            if letter not in letters:
                raise self.fail("states", f"no raw value maps to {letter}")
        return out

    def control(self, data: Any, registers: Mapping[str, Register]) -> Control:
        key = "control"
        raw = self.section(
            data, key, required={"register", "stop_value", "min_current_a", "max_current_a"}, optional={"pause"}
        )
        role = self.role_ref(raw["register"], f"{key}.register", registers)
        reg = registers[role]
        if reg.table != "holding" or reg.type not in (*INTEGER_TYPES, "float32", "float64"):
            raise self.fail(f"{key}.register", f"role {role!r} must be a numeric holding register")
        if not reg.writable:
            raise self.fail(f"registers.{role}.access", "the control register must be writable")
        if not reg.readable and reg.readback is None:
            raise self.fail(f"registers.{role}.readback", "a write-only control register needs a readback")
        lo = self.number(raw["min_current_a"], f"{key}.min_current_a", positive=True)
        hi = self.number(raw["max_current_a"], f"{key}.max_current_a", positive=True)
        if hi < lo:
            raise self.fail(f"{key}.max_current_a", f"{hi} is below min_current_a {lo}")
        pause = None
        if "pause" in raw:
            p = self.section(raw["pause"], f"{key}.pause", required={"address", "value"})
            pause = (self.int_(p["address"], f"{key}.pause.address"), self.int_(p["value"], f"{key}.pause.value"))
        return Control(role, self.int_(raw["stop_value"], f"{key}.stop_value", hi=0xFFFFFFFF), lo, hi, pause)

    def connectors(self, data: Any, registers: Mapping[str, Register]) -> Connectors | None:
        if data is None:
            return None
        raw = self.section(data, "connectors", required={"max", "stride"})
        result = Connectors(
            self.int_(raw["max"], "connectors.max", lo=2, hi=64),
            self.int_(raw["stride"], "connectors.stride", lo=1),
        )
        reach = (result.max - 1) * result.stride
        for role, reg in registers.items():
            if not reg.station and reg.end + reach > 0x10000:
                raise self.fail(f"registers.{role}.address", f"connector {result.max} would run past 65535")
        return result

    def never_write(self, data: Any) -> tuple[NeverWrite, ...]:
        if not isinstance(data, list):
            raise self.fail("never_write", "must be a list")
        out = []
        for i, item in enumerate(data):
            key = f"never_write[{i}]"
            raw = self.section(item, key, required={"address", "why"}, optional={"station"})
            out.append(NeverWrite(
                self.int_(raw["address"], f"{key}.address"),
                self.str_(raw["why"], f"{key}.why"),
                self.bool_(raw.get("station", False), f"{key}.station"),
            ))
        return tuple(out)

    def setup(self, data: Any, never_write: Mapping[int, str]) -> tuple[tuple[int, int], ...]:
        raw = self.section(data, "setup", required=set(), optional={"writes"})
        writes = raw.get("writes", [])
        if not isinstance(writes, list):
            raise self.fail("setup.writes", "must be a list")
        out = []
        for i, item in enumerate(writes):
            key = f"setup.writes[{i}]"
            w = self.section(item, key, required={"address", "value"})
            address = self.int_(w["address"], f"{key}.address")
            if address in never_write:
                raise self.fail(f"{key}.address", f"is in never_write ({never_write[address]})")
            out.append((address, self.int_(w["value"], f"{key}.value")))
        return tuple(out)

    def failsafe(self, data: Any, registers: Mapping[str, Register], control: Control) -> Failsafe | None:
        if data is None:
            return None
        key = "failsafe"
        raw = self.section(data, key, required={"current_a", "timeout_s"}, optional={"set_by", "current_roles"})
        set_by = self.choice(raw.get("set_by", "gateway"), f"{key}.set_by", ("gateway", "device"))
        roles_raw = raw.get("current_roles", ["failsafe_current"])
        if not isinstance(roles_raw, list) or not roles_raw:
            raise self.fail(f"{key}.current_roles", "must be a non-empty list of roles")
        roles = tuple(self.str_(r, f"{key}.current_roles") for r in roles_raw)
        if set_by == "gateway":
            for role in roles:
                if role not in registers:
                    raise self.fail(key, f"needs register role {role}")
                reg = registers[role]
                if reg.table != "holding" or not reg.writable:
                    raise self.fail(f"registers.{role}.table", "must be a writable holding register (it is written)")
                if reg.unit != "A":
                    raise self.fail(f"registers.{role}.unit", "a fail-safe current is in A")
            timeout = registers.get("failsafe_timeout")
            if timeout is not None and (timeout.table != "holding" or not timeout.writable):
                raise self.fail("registers.failsafe_timeout.table", "must be a writable holding register (it is written)")
        elif "current_roles" in raw:
            raise self.fail(f"{key}.current_roles", "only for set_by gateway")
        current = self.number(raw["current_a"], f"{key}.current_a", lo=0.0)
        if current and not control.min_current_a <= current <= control.max_current_a:
            raise self.fail(f"{key}.current_a", f"{current} is neither 0 nor within control min..max")
        return Failsafe(current, self.number(raw["timeout_s"], f"{key}.timeout_s", positive=True), set_by, roles)

    def keepalive(self, data: Any, failsafe: Failsafe | None, registers: Mapping[str, Register]) -> Keepalive | None:
        if data is None:
            return None
        key = "keepalive"
        raw = self.section(
            data, key, required={"kind"}, optional={"every", "every_s", "register", "value", "disabled_when"}
        )
        kind = self.choice(raw["kind"], f"{key}.kind", ("traffic", "rewrite_setpoint", "write"))
        if ("every" in raw) == ("every_s" in raw):
            raise self.fail(key, "give exactly one of every (share of the fail-safe timeout) or every_s")
        every = every_s = None
        if "every" in raw:
            if failsafe is None:
                raise self.fail(key, "needs a failsafe section (the timeout it keeps alive)")
            every = self.number(raw["every"], f"{key}.every", positive=True)
            if every > MAX_KEEPALIVE_SHARE:
                raise self.fail(f"{key}.every", f"must be at most {MAX_KEEPALIVE_SHARE} of the timeout, got {every}")
        else:
            every_s = self.number(raw["every_s"], f"{key}.every_s", positive=True)
        register = value = disabled = None
        if kind == "write":
            for name in ("register", "value"):
                if name not in raw:
                    raise self.fail(f"{key}.{name}", "missing (kind write)")
            register = self.role_ref(raw["register"], f"{key}.register", registers)
            if registers[register].table != "holding":
                raise self.fail(f"{key}.register", "must be a holding register")
            value = self.int_(raw["value"], f"{key}.value")
            if "disabled_when" in raw:
                disabled = self.int_(raw["disabled_when"], f"{key}.disabled_when")
        else:
            for name in ("register", "value", "disabled_when"):
                if name in raw:
                    raise self.fail(f"{key}.{name}", "only for kind write")
        return Keepalive(kind, every, every_s, register, value, disabled)
