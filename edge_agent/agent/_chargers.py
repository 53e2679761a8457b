"""The drivers of a config's chargers and site meter, as `run` makes them and `config check` tries them."""
from __future__ import annotations

from pathlib import Path

from drivers.api import Charger
from drivers.modbus import BusRegistry, ModbusMeter, create_charger, create_meter

from ..config import AnyChargerConfig, ChargerConfig, MeterConfig
from ..loadmanagement import SitePlan


def create_evse_charger(charger_cfg: AnyChargerConfig, *, registry: BusRegistry, plan: SitePlan | None,
                        energy_dir: Path | None) -> Charger:
    """The driver of one `chargers:` entry (nothing opened yet). Raises MapError or ValueError for
    options the model cannot take, and ValueError for an OCPP charger (not driven by the agent yet)."""
    if not isinstance(charger_cfg, ChargerConfig):
        raise ValueError(f"evse {charger_cfg.evse_id}: protocol {charger_cfg.protocol}: OCPP chargers are "
                         f"not yet driven by the agent; only Modbus chargers are")
    meter = charger_cfg.meter
    return create_charger(
        model=charger_cfg.model, name=f"evse {charger_cfg.evse_id}", registry=registry,
        transport=charger_cfg.transport, host=charger_cfg.host, port=charger_cfg.port,
        serial=charger_cfg.serial, baudrate=charger_cfg.baudrate, parity=charger_cfg.parity,
        stopbits=charger_cfg.stopbits, unit=charger_cfg.unit, connector=charger_cfg.connector,
        timeout_s=charger_cfg.timeout_s, retries=charger_cfg.retries,
        meter=None if meter is None else dict(
            model=meter.model, transport=meter.transport, host=meter.host, port=meter.port,
            serial=meter.serial, baudrate=meter.baudrate, parity=meter.parity,
            stopbits=meter.stopbits, unit=meter.unit),
        # Chargers without a lifetime register: the agent's own counter, kept on disk.
        energy_counter_path=None if energy_dir is None else energy_dir / f"evse-{charger_cfg.evse_id}.json",
        max_current_a=charger_cfg.max_current_a,
        failsafe_current_a=plan.failsafe_a[charger_cfg.evse_id] if plan else charger_cfg.failsafe_current_a,
        failsafe_timeout_s=charger_cfg.failsafe_timeout_s)


def create_site_meter(meter: MeterConfig, registry: BusRegistry) -> ModbusMeter:
    return create_meter(model=meter.model, name="site meter", registry=registry, transport=meter.transport,
                        host=meter.host, port=meter.port, serial=meter.serial, baudrate=meter.baudrate,
                        parity=meter.parity, stopbits=meter.stopbits, unit=meter.unit)
