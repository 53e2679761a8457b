"""Modbus chargers: one generic driver, per-model register maps as data, shared bus owners.

    async with BusRegistry() as registry:
        cp = create_charger(model="heidelberg-energy-control", name="cp1", registry=registry,
                            serial="/dev/ttyUSB0", unit=1)
        await cp.setup()
        reading = await cp.poll()
        await cp.keepalive()

Chargers on the same serial port (or host:port) share one bus owner from the registry.
"""
from __future__ import annotations

from ._bus import BusRegistry, ModbusDevice, ModbusTcpLink, SerialBus
from ._charger import ModbusCharger
from ._registermap import MapError, RegisterMap, available_models, load_map

__all__ = [
    "BusRegistry",
    "MapError",
    "ModbusCharger",
    "ModbusDevice",
    "RegisterMap",
    "available_models",
    "create_charger",
    "load_map",
]


def create_charger(
    *,
    model: str,
    name: str,
    registry: BusRegistry,
    host: str | None = None,
    port: int | None = None,
    serial: str | None = None,
    baudrate: int | None = None,
    parity: str | None = None,
    unit: int | None = None,
    timeout_s: float = 1.0,
    retries: int = 1,
    max_current_a: float | None = None,
    failsafe_current_a: float | None = None,
    failsafe_timeout_s: float | None = None,
    frame_gap_s: float | None = None,
) -> ModbusCharger:
    """A charger of `model` on TCP (`host`, `port`) or a serial port (`serial`, `baudrate`, `parity`).

    Unset options come from the model's map (port 502 / unit 255 for Bender, 19200 8E1 unit 1
    for Heidelberg). Nothing is opened here; the link connects on first use.
    Raises MapError for an unknown model and ValueError for inconsistent options.
    """
    regmap = load_map(model)
    transport = regmap.transport
    link: ModbusTcpLink | SerialBus
    if (host is None) == (serial is None):
        raise ValueError(f"{name}: give exactly one of host= (Modbus TCP) or serial= (Modbus RTU)")
    if host is not None:
        if baudrate is not None or parity is not None:
            raise ValueError(f"{name}: baudrate= and parity= are for serial= only")
        link = registry.tcp(host, port or transport.port or 502)
    else:
        assert serial is not None
        if port is not None:
            raise ValueError(f"{name}: port= is the TCP port; use serial= for a serial port")
        baud = baudrate or transport.baudrate
        if baud is None:
            raise ValueError(f"{name}: {model} has no default baudrate; pass baudrate=")
        parity = (parity or transport.parity).upper()
        if parity not in ("N", "E", "O"):
            raise ValueError(f"{name}: parity must be N, E or O, got {parity!r}")
        link = registry.serial(serial, baudrate=baud, bytesize=transport.bytesize, parity=parity, stopbits=transport.stopbits)
    device = ModbusDevice(
        link,
        unit=transport.unit if unit is None else unit,
        name=name,
        timeout_s=timeout_s,
        retries=retries,
        frame_gap_s=transport.frame_gap_s if frame_gap_s is None else frame_gap_s,
    )
    return ModbusCharger(
        name=name,
        regmap=regmap,
        device=device,
        max_current_a=max_current_a,
        failsafe_current_a=failsafe_current_a,
        failsafe_timeout_s=failsafe_timeout_s,
    )
