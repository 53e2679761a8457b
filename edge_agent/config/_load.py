"""The API (`load_config`, `parse_config_text`) and the checks that span sections: evse_id and
circuit references, one device per bus address, readers off the Modbus buses, phases vs the site,
OCPP chargers vs the `ocpp:` section.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode

from ._chargers import (
    ChargerBase,
    ChargerConfig,
    MeterConfig,
    ModbusEndpoint,
    ReaderConfig,
    _check_charger,
    _check_meter,
    _check_reader,
)
from ._errors import ConfigError, ConfigIssue
from ._model import CloudConfig, SiteConfig, TlsConfig, _check_cloud, _check_tls
from ._ocpp import (
    AnyChargerConfig,
    OcppChargerConfig,
    OcppConfig,
    OcppTlsConfig,
    _check_ocpp_charger,
    _check_ocpp_tls,
)
from ._reader import _NULL, _Context, _describe, _Entries, _hint, _line, _ok, _SectionCheck, _Values
from ._site import CircuitConfig, GridConnectionConfig, _check_grid_connection


def load_config(path: str | Path, *, known_models: Iterable[str] | None = None,
                known_meter_models: Iterable[str] | None = None,
                known_ocpp_models: Iterable[str] | None = None) -> SiteConfig:
    """Read and validate one site config file. Raises ConfigError (also for an unreadable file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue("", None, f"cannot read {path}: {exc}")], source=str(path)) from exc
    return _parse(text, source=str(path), path=path, known_models=known_models,
                  known_meter_models=known_meter_models, known_ocpp_models=known_ocpp_models)


def parse_config_text(text: str, *, source: str = "<string>",
                      known_models: Iterable[str] | None = None,
                      known_meter_models: Iterable[str] | None = None,
                      known_ocpp_models: Iterable[str] | None = None) -> SiteConfig:
    """Validate config text. `known_models` (charger register maps) defaults to what
    drivers.modbus.available_models() offers, or to CHARGER_MODELS if that cannot be imported;
    `known_meter_models` likewise with available_meter_models() and METER_MODELS, and
    `known_ocpp_models` (OCPP quirk maps) with drivers.ocpp.available_quirk_models() and
    OCPP_MODELS. Files the config names for OCPP (TLS, passwords) are checked and read."""
    return _parse(text, source=source, path=None, known_models=known_models,
                  known_meter_models=known_meter_models, known_ocpp_models=known_ocpp_models)


def _parse(text: str, *, source: str, path: Path | None,
           known_models: Iterable[str] | None,
           known_meter_models: Iterable[str] | None,
           known_ocpp_models: Iterable[str] | None) -> SiteConfig:
    ctx = _Context(section_checks=_SECTION_CHECKS, known_models=known_models,
                   known_meter_models=known_meter_models, known_ocpp_models=known_ocpp_models)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError(
            [ConfigIssue("", mark.line + 1 if mark else None, f"invalid YAML: {detail}")],
            source=source,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", None, f"invalid YAML: {exc}")], source=source) from None
    if root is None:
        raise ConfigError([ConfigIssue("", None, "the file is empty")], source=source)
    if not isinstance(root, MappingNode):
        raise ConfigError(
            [ConfigIssue("", _line(root), f"the top level must be a mapping of keys, got {_describe(root)}")],
            source=source,
        )
    config: SiteConfig | None = ctx.read_section(SiteConfig, root, "")
    if ctx.issues or config is None:
        raise ConfigError(ctx.sorted_issues(), source=source)
    return dataclasses.replace(config, path=path)


def _check_site_config(ctx: _Context, values: _Values, entries: _Entries,
                       node: MappingNode, path: str) -> None:
    chargers = values["chargers"] if _ok(values["chargers"]) else ()
    readers = values["readers"] if _ok(values["readers"]) else ()
    circuits = values["circuits"] if _ok(values["circuits"]) else ()
    site = values["site"] if _ok(values["site"]) else None

    evse_ids: dict[str, ChargerBase] = {}
    for charger in chargers:
        if charger.evse_id is None:
            continue
        if charger.evse_id in evse_ids:
            first = evse_ids[charger.evse_id]
            ctx.issue(*ctx.where(charger, "evse_id"),
                      f"duplicate evse_id '{charger.evse_id}' (first at {ctx.path_of(first)}, "
                      f"line {ctx.where(first, 'evse_id')[1]})")
        else:
            evse_ids[charger.evse_id] = charger

    # An evse_id with an error (say, unquoted) still counts as named, so readers that name it
    # get no second, misleading error.
    named_ids = set(evse_ids)
    for charger in chargers:
        if charger.evse_id is None and ctx.has(charger, "evse_id"):
            named_ids.add(str(ctx.origins[id(charger)][2]["evse_id"][1].value))
    _check_readers(ctx, readers, named_ids, tuple(_endpoints(chargers, site)))
    _check_readers_of_ocpp(ctx, readers, chargers)
    _check_ocpp(ctx, values, entries, chargers)
    _check_circuits(ctx, circuits, chargers, site, entries)
    if site is not None and site.phases == 1:
        for charger in chargers:
            if charger.phases == 3:
                default = "" if ctx.has(charger, "phases") else " (the default)"
                ctx.issue(*ctx.where(charger, "phases"),
                          f"is 3{default} but site.phases is 1; set phases: 1")
            if charger.phase_l1 not in (None, "L1"):
                ctx.issue(*ctx.where(charger, "phase_l1"), "must be L1 when site.phases is 1")
    _check_buses(ctx, chargers, site)


def _check_readers(ctx: _Context, readers: tuple[ReaderConfig, ...],
                   evse_ids: set[str], endpoints: tuple[ModbusEndpoint, ...]) -> None:
    modbus_serials = {e.serial: e for e in endpoints if e.serial is not None and e.host is None}
    seen: dict[tuple[str, str], ReaderConfig] = {}
    for reader in readers:
        if reader.evse_id is not None and reader.evse_id not in evse_ids:
            hint = _hint(reader.evse_id, evse_ids) or f" (chargers: {', '.join(sorted(evse_ids)) or 'none'})"
            ctx.issue(*ctx.where(reader, "evse_id"), f"no charger has evse_id '{reader.evse_id}'{hint}")
        for key in ("port", "device"):
            value = getattr(reader, key)
            if value is None:
                continue
            if (key, value) in seen:
                first = seen[(key, value)]
                ctx.issue(*ctx.where(reader, key),
                          f"{value} is already used by {ctx.path_of(first)} "
                          f"(line {ctx.where(first, key)[1]})")
            else:
                seen[(key, value)] = reader
            if key == "port" and value in modbus_serials:
                device = modbus_serials[value]
                ctx.issue(*ctx.where(reader, key),
                          f"{value} is the Modbus bus of {ctx.path_of(device)} "
                          f"(line {ctx.where(device, 'serial')[1]})")


def _check_ocpp(ctx: _Context, values: _Values, entries: _Entries,
                chargers: tuple[AnyChargerConfig, ...]) -> None:
    """OCPP chargers need the ocpp: section (an empty `ocpp:` is its defaults) and each its own
    charge_point_id."""
    if values["ocpp"] is None and "ocpp" in entries:
        value = entries["ocpp"][1]
        if isinstance(value, ScalarNode) and value.tag == _NULL:
            empty = MappingNode("tag:yaml.org,2002:map", [], value.start_mark, value.end_mark)
            values["ocpp"] = ctx.read_section(OcppConfig, empty, "ocpp")
    ocpp_chargers = [c for c in chargers if isinstance(c, OcppChargerConfig)]
    if values["ocpp"] is None:  # absent (when it has errors, they are reported already)
        for charger in ocpp_chargers:
            ctx.issue(*ctx.where(charger, "protocol"),
                      "protocol ocpp needs the ocpp: section (the gateway's central system the "
                      "charger connects to; ocpp: {} for its defaults)")
    # One charge point may serve several EVSEs (a two-socket CTEK), one per connector, over one
    # websocket: so one model and one password for all of them.
    connectors: dict[tuple[str, int], OcppChargerConfig] = {}
    stations: dict[str, OcppChargerConfig] = {}
    for charger in ocpp_chargers:
        if charger.charge_point_id is None:
            continue
        first = connectors.setdefault((charger.charge_point_id, charger.connector), charger)
        if first is not charger:
            ctx.issue(*ctx.where(charger, "charge_point_id"),
                      f"duplicate charge_point_id '{charger.charge_point_id}' with connector "
                      f"{charger.connector} (first at {ctx.path_of(first)}, line "
                      f"{ctx.where(first, 'charge_point_id')[1]}); another connector of the same "
                      "charge point needs its own connector number")
            continue
        station = stations.setdefault(charger.charge_point_id, charger)
        for key in ("model", "password_file"):
            if getattr(station, key) != getattr(charger, key):
                ctx.issue(*ctx.where(charger, key if ctx.has(charger, key) else "charge_point_id"),
                          f"{key} differs from {ctx.path_of(station)} (line {ctx.where(station, key)[1]}), "
                          f"the same charge point '{charger.charge_point_id}'")


def _check_readers_of_ocpp(ctx: _Context, readers: tuple[ReaderConfig, ...],
                           chargers: tuple[AnyChargerConfig, ...]) -> None:
    ocpp_ids = {c.evse_id for c in chargers if isinstance(c, OcppChargerConfig) and c.evse_id is not None}
    for reader in readers:
        if reader.driver == "charger" and reader.evse_id in ocpp_ids:
            ctx.issue(*ctx.where(reader, "driver"),
                      f"driver charger reads a Modbus charger's reader through its register map; "
                      f"EVSE {reader.evse_id} is an OCPP charger, whose own reader needs no entry "
                      f"(it sends Authorize itself)")


def _check_circuits(ctx: _Context, circuits: tuple[CircuitConfig, ...],
                    chargers: tuple[AnyChargerConfig, ...], site: GridConnectionConfig | None,
                    entries: _Entries) -> None:
    if circuits and site is None and "site" not in entries:
        ctx.issue("circuits", _line(entries["circuits"][1]),
                  "needs a site section (the connection the circuits hang off)")
    ids: dict[str, CircuitConfig] = {}
    for circuit in circuits:
        if circuit.id is None:
            continue
        if circuit.id in ids:
            first = ids[circuit.id]
            ctx.issue(*ctx.where(circuit, "id"),
                      f"duplicate circuit id '{circuit.id}' (first at line {ctx.where(first, 'id')[1]})")
        ids.setdefault(circuit.id, circuit)
    for charger in chargers:
        if charger.circuit is not None and charger.circuit not in ids:
            hint = _hint(charger.circuit, ids) or f" (circuits: {', '.join(ids) or 'none'})"
            ctx.issue(*ctx.where(charger, "circuit"), f"unknown circuit '{charger.circuit}'{hint}")


def _endpoints(chargers: tuple[AnyChargerConfig, ...],
               site: GridConnectionConfig | None) -> Iterator[ModbusEndpoint]:
    for charger in chargers:
        if not isinstance(charger, ChargerConfig):
            continue  # an OCPP charger is on no Modbus bus
        yield charger
        if charger.meter is not None:
            yield charger.meter
    if site is not None and site.meter is not None:
        yield site.meter


def _check_buses(ctx: _Context, chargers: tuple[AnyChargerConfig, ...],
                 site: GridConnectionConfig | None) -> None:
    """No two devices at one address; devices on one serial bus agree on its settings."""
    addresses: dict[tuple[Any, ...], ModbusEndpoint] = {}
    serial_settings: dict[tuple[str, str], tuple[Any, ModbusEndpoint]] = {}
    for endpoint in _endpoints(chargers, site):
        if endpoint.host is not None and endpoint.serial is None and endpoint.port is not None:
            bus: tuple[Any, ...] = ("tcp", endpoint.host.lower(), endpoint.port)
            bus_text = f"host {endpoint.host} port {endpoint.port}"
        elif endpoint.serial is not None and endpoint.host is None:
            bus = ("serial", endpoint.serial)
            bus_text = f"serial {endpoint.serial}"
            for key in ("baudrate", "parity", "stopbits"):
                value = getattr(endpoint, key)
                if value is None:
                    continue
                first_value, first = serial_settings.setdefault((endpoint.serial, key), (value, endpoint))
                if first_value != value:
                    ctx.issue(*ctx.where(endpoint, key),
                              f"{value} differs from {first_value} at {ctx.path_of(first)} "
                              f"(line {ctx.where(first, key)[1]}); devices on one serial bus "
                              f"share its settings")
        else:
            continue
        model = getattr(endpoint, "model", None)
        address = (*bus, endpoint.unit) if endpoint.unit is not None else (*bus, "default unit of", model)
        if address in addresses:
            first = addresses[address]
            key = "unit" if endpoint.unit is not None else ("host" if bus[0] == "tcp" else "serial")
            ctx.issue(*ctx.where(endpoint, key),
                      f"same {bus_text} and unit as {ctx.path_of(first)} "
                      f"(line {ctx.where(first, key)[1]}); give each device its own unit")
        else:
            addresses[address] = endpoint


_SECTION_CHECKS: Mapping[type, _SectionCheck] = {
    TlsConfig: _check_tls,
    CloudConfig: _check_cloud,
    MeterConfig: _check_meter,
    ChargerConfig: _check_charger,
    OcppTlsConfig: _check_ocpp_tls,
    OcppChargerConfig: _check_ocpp_charger,
    ReaderConfig: _check_reader,
    GridConnectionConfig: _check_grid_connection,
    SiteConfig: _check_site_config,
}
