"""Energy meter simulators that follow the meter register maps (drivers/modbus/meters), on real pymodbus servers.

    grid = SimMeter("eastron-sdm630", unit=2, energy_wh=5_000_000)
    grid.set_load(currents_a=(20, 18, 25))
    billing = SimMeter("eastron-sdm630", unit=3, follows=sim_charger)   # in series with a charger
    server = sims.serve_rtu([grid, billing], pair.b)     # SimChargerThread serves meters too

The lifetime import counter integrates the power times `speed`. A meter that `follows` a
SimCharger measures what that charger delivers (and counts it as its own lifetime energy).
Word order, float/integer encodings and scales come from the map. Quirks: the SDM72D-M takes
at most 10 registers per read (`max_read`, as some units do), the EM340 at most 50.
"""
from __future__ import annotations

import time

from drivers.modbus import load_meter_map

from .chargers import SimCharger, SimModbusUnit

# What the identity registers of each simulated meter read.
_IDENTITY: dict[str, dict[str, str | int]] = {
    "eastron-sdm630": {"serial_number": 19_063_001},
    "eastron-sdm120": {"serial_number": 19_012_002},
    "eastron-sdm72": {"serial_number": 19_072_003},
    "carlo-gavazzi-em340": {"model_code": 1654},
    "abb-b23": {"serial_number": 7_654_321, "firmware": "2.10", "model_name": "B23 "},
}
_MAX_READ = {"eastron-sdm72": 10}


class SimMeter(SimModbusUnit):
    """One simulated meter (one Modbus unit)."""

    def __init__(
        self,
        model: str,
        *,
        unit: int | None = None,
        energy_wh: float = 1_000_000,
        speed: float = 1.0,
        voltage_v: float = 230.0,
        follows: SimCharger | None = None,
        max_read: int | None = None,
    ) -> None:
        regmap = load_meter_map(model)
        super().__init__(regmap, unit=unit, max_read=max_read or _MAX_READ.get(model), serve_station=False)
        self.speed = speed
        self.voltage_v = voltage_v
        self.follows = follows
        self._energy_wh = float(energy_wh)
        self._export_wh = 0.0
        self._currents: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self._power_w = 0.0
        self._t = time.monotonic()
        self._build_image()
        for role, value in _IDENTITY.get(model, {}).items():
            if role in regmap.registers:
                self._put(regmap.registers[role], value)

    def set_load(self, *, currents_a: tuple[float, float, float] | None = None, power_w: float | None = None) -> None:
        """What flows through the meter now: phase currents (power follows at `voltage_v`), or a power."""
        with self._lock:
            self._advance(time.monotonic())
            if currents_a is not None:
                self._currents = tuple(float(c) for c in currents_a)  # type: ignore[assignment]
                self._power_w = sum(self._currents) * self.voltage_v if power_w is None else float(power_w)
            elif power_w is not None:
                self._power_w = float(power_w)
                self._currents = (power_w / self.voltage_v / 3,) * 3  # type: ignore[assignment]

    @property
    def energy_wh(self) -> float:
        with self._lock:
            self._advance(time.monotonic())
            return self._energy_wh

    def _now_power(self) -> tuple[float, tuple[float, float, float]]:
        if self.follows is not None:
            charger = self.follows
            power = charger._power_w()  # called under our lock only; the charger's numbers are plain floats  # noqa: SLF001
            per_phase = charger._offered_a() if charger._letter() == "C" else 0.0  # noqa: SLF001
            return power, (per_phase, per_phase if charger.phases == 3 else 0.0, per_phase if charger.phases == 3 else 0.0)
        return self._power_w, self._currents

    def _advance(self, now: float) -> None:
        power, _ = self._now_power()
        delta = power * (now - self._t) * self.speed / 3600.0
        if delta >= 0:
            self._energy_wh += delta
        else:
            self._export_wh -= delta
        self._t = now

    def _refresh_live(self) -> None:
        power, currents = self._now_power()
        values = {
            "energy": self._energy_wh,
            "energy_export": self._export_wh,
            "energy_total": self._energy_wh + self._export_wh,
            "power": power,
            "current_l1": currents[0],
            "current_l2": currents[1],
            "current_l3": currents[2],
            "voltage_l1": self.voltage_v,
            "voltage_l2": self.voltage_v,
            "voltage_l3": self.voltage_v,
        }
        for role, value in values.items():
            reg = self.regmap.registers.get(role)
            if reg is not None:
                self._put_live(reg, value)
