"""Modbus chargers and meters: one generic driver each, per-model register maps as data, shared bus owners.

    async with BusRegistry() as registry:
        cp = create_charger(model="heidelberg-energy-control", name="cp1", registry=registry,
                            serial="/dev/ttyUSB0", unit=1,
                            meter=dict(model="eastron-sdm630", serial="/dev/ttyUSB0", unit=3))
        await cp.setup()
        reading = await cp.poll()        # energy from the billing meter's lifetime register
        await cp.keepalive()
        grid = create_meter(model="eastron-sdm630", name="grid", registry=registry, host="10.0.0.30", unit=2)
        m = await grid.measure()

Transports: ``tcp`` (Modbus TCP), ``rtu`` (a serial port) and ``rtu-over-tcp`` (RTU frames to
a serial server at host:port). Devices on the same serial port, host:port or serial server
share one bus owner from the registry.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from drivers.energy import CounterFileError, SessionEnergyLifetime

from ._bus import BusRegistry, ModbusDevice, ModbusTcpLink, RtuOverTcpLink, SerialBus
from ._charger import ModbusCharger
from ._failsafe import unbilled_fallback_warning
from ._mapcodec import decode, encode, field_value, raw_value, raw_words
from ._mapio import MapIO
from ._mapload import available_meter_models, available_models, load_any_map, load_map, load_meter_map, parse_map
from ._maptypes import ConditionalState, MapError, Register, RegisterMap
from ._meter import ModbusMeter

__all__ = [
    "TRANSPORTS",
    "BusRegistry",
    "ConditionalState",
    "MapError",
    "MapIO",
    "ModbusCharger",
    "ModbusDevice",
    "ModbusMeter",
    "Register",
    "RegisterMap",
    "available_meter_models",
    "available_models",
    "create_charger",
    "create_meter",
    "decode",
    "encode",
    "field_value",
    "load_any_map",
    "load_map",
    "load_meter_map",
    "parse_map",
    "raw_value",
    "raw_words",
    "unbilled_fallback_warning",
]

TRANSPORTS = ("tcp", "rtu", "rtu-over-tcp")


def create_charger(
    *,
    model: str,
    name: str,
    registry: BusRegistry,
    transport: str | None = None,
    host: str | None = None,
    port: int | None = None,
    serial: str | None = None,
    baudrate: int | None = None,
    parity: str | None = None,
    stopbits: int | None = None,
    unit: int | None = None,
    connector: int | None = None,
    timeout_s: float = 1.0,
    retries: int = 1,
    recheck_s: float = 5.0,
    max_current_a: float | None = None,
    failsafe_current_a: float | None = None,
    failsafe_timeout_s: float | None = None,
    frame_gap_s: float | None = None,
    meter: Mapping[str, Any] | ModbusMeter | None = None,
    energy_counter_path: str | os.PathLike[str] | None = None,
) -> ModbusCharger:
    """A charger of `model` on Modbus TCP (`host`, `port`), a serial port (`serial`, `baudrate`,
    `parity`, `stopbits`) or a serial server (`transport="rtu-over-tcp"`, `host`, `port`).

    Unset options come from the model's map (port 502 / unit 255 for Bender, 19200 8E1 unit 1
    for Heidelberg). `connector` picks the charge point behind a unit with several (CHARX,
    Etrel Duo). `meter` names a billing meter (a dict of create_meter's options, without
    `name` and `registry`, or a ModbusMeter) whose lifetime register then is the energy of
    every reading. For a model without a lifetime register and no meter, the driver keeps its
    own lifetime counter, persisted at `energy_counter_path` (in memory only without one).
    Nothing is opened here; links connect on first use.
    Raises MapError for an unknown model and ValueError for inconsistent options.
    """
    regmap = load_map(model).for_connector(connector)
    link = _link(regmap, registry, name, transport, host, port, serial, baudrate, parity, stopbits)
    device, station = _devices(regmap, link, name, unit, timeout_s, retries, recheck_s, frame_gap_s)
    billing: ModbusMeter | None
    if meter is None or isinstance(meter, ModbusMeter):
        billing = meter
    elif isinstance(meter, Mapping):
        options = dict(meter)
        for key in ("name", "registry"):
            if key in options:
                raise ValueError(f"{name}: meter: {key} is given by the charger")
        options.setdefault("timeout_s", timeout_s)
        options.setdefault("retries", retries)
        options.setdefault("recheck_s", recheck_s)
        billing = create_meter(name=f"{name} meter", registry=registry, **options)
    else:
        raise ValueError(f"{name}: meter must be a mapping of create_meter options or a ModbusMeter")
    counter: SessionEnergyLifetime | None = None
    counter_error: Exception | None = None
    if billing is None and regmap.register("energy") is None and energy_counter_path is not None:
        try:
            counter = SessionEnergyLifetime(path=energy_counter_path, name=f"{name} lifetime energy")
        except CounterFileError as exc:
            counter_error = exc  # every poll says so; the other chargers go on
    return ModbusCharger(
        name=name,
        regmap=regmap,
        device=device,
        station_device=station,
        max_current_a=max_current_a,
        failsafe_current_a=failsafe_current_a,
        failsafe_timeout_s=failsafe_timeout_s,
        meter=billing,
        energy_counter=counter,
        energy_counter_error=counter_error,
    )


def create_meter(
    *,
    model: str,
    name: str,
    registry: BusRegistry,
    transport: str | None = None,
    host: str | None = None,
    port: int | None = None,
    serial: str | None = None,
    baudrate: int | None = None,
    parity: str | None = None,
    stopbits: int | None = None,
    unit: int | None = None,
    timeout_s: float = 1.0,
    retries: int = 1,
    recheck_s: float = 5.0,
    frame_gap_s: float | None = None,
) -> ModbusMeter:
    """A meter of `model` (a billing meter, or the site's grid connection meter), addressed like create_charger."""
    regmap = load_meter_map(model)
    link = _link(regmap, registry, name, transport, host, port, serial, baudrate, parity, stopbits)
    device, _ = _devices(regmap, link, name, unit, timeout_s, retries, recheck_s, frame_gap_s)
    return ModbusMeter(name=name, regmap=regmap, device=device)


def _link(
    regmap: RegisterMap,
    registry: BusRegistry,
    name: str,
    transport: str | None,
    host: str | None,
    port: int | None,
    serial: str | None,
    baudrate: int | None,
    parity: str | None,
    stopbits: int | None,
) -> ModbusTcpLink | SerialBus | RtuOverTcpLink:
    model, offered = regmap.model, regmap.transport.kinds
    if (host is None) == (serial is None):
        raise ValueError(f"{name}: give exactly one of host= (Modbus TCP, rtu-over-tcp) or serial= (Modbus RTU)")
    if transport is None:
        transport = "tcp" if host is not None else "rtu"
    if transport not in TRANSPORTS:
        raise ValueError(f"{name}: transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    # An RTU device is also reachable over Modbus TCP through a TCP/RTU gateway (common for
    # meters); a TCP-only device (Alfen) never over a serial line.
    if transport != "tcp" and "rtu" not in offered:
        raise ValueError(f"{name}: {model} offers Modbus TCP only, not {transport}")
    if transport == "rtu":
        if serial is None:
            raise ValueError(f"{name}: transport rtu needs serial=, not host= (rtu-over-tcp for a serial server)")
        if port is not None:
            raise ValueError(f"{name}: port= is the TCP port; use serial= for a serial port")
        settings = regmap.transport
        baud = baudrate or settings.baudrate
        if baud is None:
            raise ValueError(f"{name}: {model} has no known factory baudrate; pass baudrate=")
        chosen = parity or settings.parity
        if chosen is None:
            raise ValueError(f"{name}: {model} has no known factory parity; pass parity=")
        chosen = chosen.upper()
        if chosen not in ("N", "E", "O"):
            raise ValueError(f"{name}: parity must be N, E or O, got {chosen!r}")
        stop = stopbits or settings.stopbits
        if stop not in (1, 2):
            raise ValueError(f"{name}: stopbits must be 1 or 2, got {stop!r}")
        return registry.serial(serial, baudrate=baud, bytesize=settings.bytesize, parity=chosen, stopbits=stop)
    if host is None:
        raise ValueError(f"{name}: transport {transport} needs host=, not serial=")
    if baudrate is not None or parity is not None or stopbits is not None:
        raise ValueError(f"{name}: baudrate=, parity= and stopbits= are for serial= only"
                         + (" (a serial server keeps its own)" if transport == "rtu-over-tcp" else ""))
    tcp_port = port or regmap.transport.port or 502
    if transport == "rtu-over-tcp":
        return registry.rtu_over_tcp(host, tcp_port)
    return registry.tcp(host, tcp_port)


def _devices(
    regmap: RegisterMap,
    link: ModbusTcpLink | SerialBus | RtuOverTcpLink,
    name: str,
    unit: int | None,
    timeout_s: float,
    retries: int,
    recheck_s: float,
    frame_gap_s: float | None,
) -> tuple[ModbusDevice, ModbusDevice | None]:
    settings = regmap.transport
    common: dict[str, Any] = dict(
        timeout_s=timeout_s,
        retries=retries,
        recheck_s=recheck_s,
        frame_gap_s=settings.frame_gap_s if frame_gap_s is None else frame_gap_s,
        forbidden=regmap.forbidden(),
        write_multiple=settings.write_multiple,
    )
    device = ModbusDevice(link, unit=settings.unit if unit is None else unit, name=name, **common)
    station = None
    if settings.station_unit is not None:
        if device.unit == settings.station_unit:
            raise ValueError(f"{name}: unit {device.unit} is {regmap.model}'s station unit; give the socket's unit")
        station = ModbusDevice(link, unit=settings.station_unit, name=f"{name} station", **common)
    return device, station
