"""One generic Modbus meter driver; what differs per model is in its register map (``meters/*.yaml``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.api import Measurement, Meter

from ._bus import ModbusDevice
from ._mapio import METER_ROLES, MapIO
from ._maptypes import RegisterMap


class ModbusMeter:
    """An energy meter read as its register map says. Implements drivers.api Meter.

    ``measure()`` gives the lifetime import counter in Wh (billing), the total power in W
    (signed: negative is export) and the phase currents (L2/L3 read 0 on a single-phase meter;
    None when the model has no current registers, like the SDM72D-M).
    """

    def __init__(self, *, name: str, regmap: RegisterMap, device: ModbusDevice) -> None:
        if regmap.kind != "meter":
            raise ValueError(f"{name}: {regmap.model} is not a meter map")
        self.name = name
        self.regmap = regmap
        self.device = device
        self.io = MapIO(name=name, regmap=regmap, device=device)
        self._roles = tuple(role for role in METER_ROLES if regmap.register(role) is not None)

    def __repr__(self) -> str:
        return f"ModbusMeter({self.name!r}, {self.regmap.model}, {self.device.link.name} unit {self.device.unit})"

    @property
    def model(self) -> str:
        return self.regmap.model

    async def measure(self) -> Measurement:
        """Raises NoValue when the energy register has no value this time (retry next poll)."""
        return self.io.measurement(await self.io.read_roles(*self._roles))

    async def identity(self) -> dict[str, str | int | float | bool | None]:
        return await self.io.identity()


if TYPE_CHECKING:
    _meter: type[Meter] = ModbusMeter
