"""The technician's Modbus tools: `edge-agent probe` and `edge-agent scan`.

Both only read: nothing is written to a device (no setup, no fail-safe, no setpoint), so they
are safe to run next to a charging car. They use the same register maps and drivers as the
agent, so what they show is what the agent will see.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._exit_codes import ExitCode

USUAL_BAUDRATES = (9600, 19200, 2400, 38400, 4800, 57600, 115200)
USUAL_PARITIES = ("N", "E")


# -- probe --


def _quiet_drivers() -> None:
    """The tools report every failure themselves; the drivers' "unavailable" log lines would say it twice."""
    import logging

    for name in ("drivers", "pymodbus"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def cmd_probe(args: argparse.Namespace) -> int:
    from drivers.modbus import MapError, load_any_map

    _quiet_drivers()
    try:
        regmap = load_any_map(args.model)
    except MapError as exc:
        print(f"edge-agent probe: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        result = asyncio.run(_probe(args, regmap.kind))
    except ValueError as exc:
        print(f"edge-agent probe: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.json:
        print(json.dumps(result, default=_jsonable))
    else:
        _print_probe(result)
    if result.get("error"):
        return ExitCode.BUSY if result.get("port_problem") else ExitCode.NO
    return ExitCode.OK


async def _probe(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    from drivers.errors import DeviceError, ModbusExceptionResponse, NoValue, PortSettingRefused
    from drivers.modbus import BusRegistry, create_charger, create_meter

    options: dict[str, Any] = dict(
        model=args.model, name=args.model, host=args.host, port=args.port, serial=args.serial,
        baudrate=args.baudrate, parity=args.parity, stopbits=args.stopbits, unit=args.unit,
        timeout_s=args.timeout, retries=1, recheck_s=0,
    )
    if args.transport:
        options["transport"] = args.transport
    out: dict[str, Any] = {"model": args.model, "kind": kind}
    async with BusRegistry() as registry:
        if kind == "charger":
            device: Any = create_charger(registry=registry, connector=args.connector, **options)
        else:
            if args.connector is not None:
                raise ValueError("--connector is for chargers")
            device = create_meter(registry=registry, **options)
        io = device.io
        out["address"] = {"link": device.device.link.name, "unit": device.device.unit}
        if kind == "charger" and device.regmap.connectors is not None:
            out["address"]["connector"] = device.regmap.connector
        try:
            # the first read decides whether anything answers at all
            if kind == "charger":
                words = await io.read_roles("state")
                out["state"] = await _state_of(device, words)
            else:
                out["energy_wh"] = _rounded(io.value("energy", (await io.read_roles("energy"))["energy"]))
        except PortSettingRefused as exc:
            out["error"], out["port_problem"] = str(exc), True
            return out
        except NoValue as exc:
            out["state_error"] = str(exc)
        except DeviceError as exc:
            out["error"] = str(exc)
            out["port_problem"] = "cannot open" in str(exc) or "No such file" in str(exc)
            return out
        out["identity"] = await io.identity()
        out["firmware"] = _firmware(out["identity"])
        for role in ("energy", "session_energy", "power", "current_l1", "current_l2", "current_l3"):
            if not io.has(role) or role in out:
                continue
            try:
                value = io.value(role, await io.read_register(role))
            except (NoValue, ModbusExceptionResponse) as exc:
                out[f"{role}_error"] = str(exc)
                continue
            key = {"energy": "energy_wh", "session_energy": "session_energy_wh", "power": "power_w"}.get(role, role)
            out[key] = _rounded(value)
        if kind == "charger":
            if "energy" not in device.regmap.registers:
                out["energy_note"] = ("no lifetime energy register: the agent builds one from the session register,"
                                      " or use a billing meter")
            try:
                offered = io.value(device.regmap.control.register, await io.read_register(device.regmap.control.register))
                out["offered_current_a"] = _rounded(offered)
            except (NoValue, ModbusExceptionResponse):
                out["offered_current_a"] = None
            try:
                out["failsafe"] = await device.failsafe_status()
            except DeviceError as exc:
                out["failsafe"] = {"configured": None, "error": str(exc)}
            out["built_in_reader"] = device.has_identifier
    return out


async def _state_of(charger: Any, words: dict[str, list[int]]) -> dict[str, Any]:
    from drivers.modbus import decode, field_value, raw_value

    reg = charger.io.source("state")
    raw: Any = decode(reg, words["state"]) if reg.type == "ascii" else field_value(reg, raw_value(reg, words["state"]))
    cond_roles = [r for r in charger._state_roles if r != "state"]  # noqa: SLF001 - the probe decodes as the driver does
    if cond_roles:
        words.update(await charger.io.read_roles(*cond_roles))
    return {"iec61851": charger._state(words), "raw": raw}  # noqa: SLF001


def _firmware(identity: dict[str, Any]) -> str | None:
    if identity.get("firmware") is not None:
        value = identity["firmware"]
        return value if isinstance(value, str) else f"{value} (0x{value:X})"
    parts = [identity.get(f"firmware_{p}") for p in ("major", "minor", "build")]
    if all(p is not None for p in parts):
        return ".".join(str(p) for p in parts)
    return None


def _rounded(value: float | int) -> float | int:
    return value if isinstance(value, int) else round(value, 3)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _print_probe(r: dict[str, Any]) -> None:
    where = r.get("address", {})
    print(f"{r['model']} ({r['kind']}) at {where.get('link', '?')} unit {where.get('unit', '?')}"
          + (f" connector {where['connector']}" if "connector" in where else ""))
    if r.get("error"):
        print(f"  no answer: {r['error']}")
        return
    for key, value in r.get("identity", {}).items():
        if key not in ("model", "firmware"):
            print(f"  {key:22} {value}")
    print(f"  {'firmware':22} {r.get('firmware') or '-'}")
    if "state" in r:
        print(f"  {'state':22} {r['state']['iec61851']} (raw {r['state']['raw']!r})")
    elif "state_error" in r:
        print(f"  {'state':22} ? ({r['state_error']})")
    for key, unit in (("energy_wh", "Wh lifetime"), ("session_energy_wh", "Wh this session"), ("power_w", "W")):
        if key in r:
            print(f"  {key:22} {r[key]} {unit}")
    currents = [r.get(f"current_l{i}") for i in (1, 2, 3)]
    if any(c is not None for c in currents):
        print(f"  {'currents_a':22} {' / '.join('-' if c is None else str(c) for c in currents)}")
    if "energy_note" in r:
        print(f"  note: {r['energy_note']}")
    if "offered_current_a" in r:
        offered = r["offered_current_a"]
        print(f"  {'offered_current_a':22} {'-' if offered is None else offered}")
    failsafe = r.get("failsafe")
    if failsafe is not None:
        configured = {True: "yes", False: "NO", None: "not available"}[failsafe.get("configured")]
        detail = ", ".join(f"{k} {failsafe[k]}" for k in ("current_a", "timeout_s", "set_by") if failsafe.get(k) is not None)
        print(f"  {'fail-safe configured':22} {configured}" + (f" ({detail})" if detail else ""))
        if failsafe.get("note"):
            print(f"  note: {failsafe['note']}")
        if failsafe.get("warning"):
            print(f"  WARNING: {failsafe['warning']}")
    if r.get("built_in_reader"):
        print(f"  {'built-in card reader':22} yes (the agent can take taps from it)")


# -- scan --


@dataclass
class Found:
    baudrate: int
    parity: str
    unit: int
    models: list[str] = field(default_factory=list)
    also: list[str] = field(default_factory=list)  # maps whose registers also all make sense, less specific
    identity: dict[str, Any] = field(default_factory=dict)


def cmd_scan(args: argparse.Namespace) -> int:
    _quiet_drivers()
    result = asyncio.run(_scan(args))
    if args.json:
        print(json.dumps(result, default=_jsonable))
    else:
        for skipped in result["skipped"]:
            print(f"{skipped['baudrate']} {skipped['parity']}: skipped: {skipped['reason']}", file=sys.stderr)
        if not result["found"]:
            print(f"{args.serial}: no Modbus unit answered")
        for f in result["found"]:
            models = ", ".join(f["models"]) or "unknown model"
            also = f" (also fits: {', '.join(f['also'])})" if f["also"] else ""
            print(f"{args.serial} {f['baudrate']} 8{f['parity']}1 unit {f['unit']}: {models}{also}")
    if result.get("port_error"):
        print(f"edge-agent scan: {result['port_error']}", file=sys.stderr)
        return ExitCode.BUSY
    if result["skipped"] and not result["found"] and len(result["skipped"]) == len(args.baudrates) * len(args.parities):
        return ExitCode.BUSY
    return ExitCode.OK if result["found"] else ExitCode.NO


async def _scan(args: argparse.Namespace) -> dict[str, Any]:
    from drivers.errors import DeviceTimeout, DeviceUnreachable, ModbusExceptionResponse, PortSettingRefused
    from drivers.modbus import BusRegistry, ModbusDevice

    found: list[Found] = []
    skipped: list[dict[str, Any]] = []
    candidates = _rtu_maps()
    for baudrate in args.baudrates:
        for parity in args.parities:
            async with BusRegistry() as registry:
                link = registry.serial(args.serial, baudrate=baudrate, parity=parity)
                for unit in args.units:
                    device = ModbusDevice(link, unit=unit, name=f"unit {unit}", timeout_s=args.timeout, retries=0,
                                          frame_gap_s=args.gap, recheck_s=0)
                    try:
                        await device.read_holding(0, 1)
                    except ModbusExceptionResponse:
                        pass  # it answered: it is there
                    except DeviceTimeout:
                        continue
                    except PortSettingRefused as exc:
                        skipped.append({"baudrate": baudrate, "parity": parity, "reason": str(exc)})
                        break
                    except DeviceUnreachable as exc:
                        return {"port": args.serial, "found": [], "skipped": skipped, "port_error": str(exc)}
                    hit = Found(baudrate, parity, unit)
                    await _identify(device, candidates, hit)
                    found.append(hit)
                    print(f"{args.serial} {baudrate} 8{parity}1 unit {unit}: answers", file=sys.stderr)
    return {"port": args.serial, "found": [vars(f) for f in found], "skipped": skipped}


def _rtu_maps() -> list[Any]:
    from drivers.modbus import available_meter_models, available_models, load_map, load_meter_map

    maps = [load_map(m) for m in available_models()] + [load_meter_map(m) for m in available_meter_models()]
    return [m for m in maps if "rtu" in m.transport.kinds]


async def _identify(device: Any, candidates: Sequence[Any], hit: Found) -> None:
    """Score every map against the unit: how many of its identifying registers read plausibly."""
    from drivers.modbus import MapIO

    cache: dict[tuple[str, int, int], list[int] | None] = {}
    scored: list[tuple[int, str, dict[str, Any]]] = []
    for regmap in candidates:
        io = MapIO(name=device.name, regmap=regmap, device=device)
        roles = list(dict.fromkeys([*regmap.identity, *(["state"] if regmap.kind == "charger" else []), "energy",
                                    "session_energy", "power", "current_l1", "current_l3"]))
        roles = [r for r in roles if io.has(r)]
        ok = 0
        identity: dict[str, Any] = {}
        for role in roles:
            reg = io.source(role)
            key = (reg.table, reg.address, reg.words)
            if key not in cache:
                cache[key] = await _read_or_none(io, role)
            words = cache[key]
            if words is None:
                break
            value = _plausible(regmap, io, role, words)
            if value is _IMPLAUSIBLE:
                break
            if role in regmap.identity:
                identity[role] = value
            ok += 1
        if roles and ok == len(roles):
            scored.append((ok, regmap.model, identity))
    scored.sort(key=lambda s: (-s[0], s[1]))
    if scored:
        best = scored[0][0]
        hit.models = [model for score, model, _ in scored if score == best]
        hit.also = [model for score, model, _ in scored if score < best]
        hit.identity = scored[0][2]


async def _read_or_none(io: Any, role: str) -> list[int] | None:
    from drivers.errors import DeviceError

    try:
        words: list[int] = await io.read_register(role)
    except DeviceError:
        return None
    return words


_IMPLAUSIBLE = object()


def _plausible(regmap: Any, io: Any, role: str, words: list[int]) -> Any:
    from drivers.errors import NoValue
    from drivers.modbus import decode, field_value, raw_value

    reg = io.source(role)
    if role == "state":
        key: Any = decode(reg, words) if reg.type == "ascii" else field_value(reg, raw_value(reg, words))
        return key if key in regmap.states else _IMPLAUSIBLE
    if reg.type == "ascii":
        text = str(decode(reg, words))  # ascii registers decode to text
        if "\ufffd" in text or any(not (c.isprintable()) for c in text):
            return _IMPLAUSIBLE
        value: Any = text
    else:
        try:
            value = io.value(role, words)
        except NoValue:
            return None  # "no value now" is a value this model can have
        if role in ("energy", "session_energy") and value < 0:
            return _IMPLAUSIBLE
        if role.startswith("current_") and not 0 <= value <= 1000:
            return _IMPLAUSIBLE
    expected = regmap.signature.get(role)
    if expected is not None and value not in expected:
        return _IMPLAUSIBLE
    return value
