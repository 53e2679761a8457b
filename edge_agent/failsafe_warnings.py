"""What a valid configuration still risks when the gateway is down: for `config check` and the start-up checks."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import SiteConfig


def failsafe_config_warnings(config: SiteConfig) -> list[str]:
    """For `config check`: chargers whose safe current is set on the device (Alfen, in ACE), where a
    gateway outage lets a plugged car charge unbilled unless the installer set it to 0."""
    from drivers.modbus import MapError, load_map, unbilled_fallback_warning

    from .config import ChargerConfig

    warnings = []
    for i, charger in enumerate(config.chargers):
        if not isinstance(charger, ChargerConfig):
            continue  # an OCPP charger has no register map
        try:
            failsafe = load_map(charger.model).failsafe
        except MapError:
            continue  # config check reports the unknown model itself
        if failsafe is None or failsafe.set_by != "device":
            continue
        timeout = charger.failsafe_timeout_s
        after = timeout if timeout is not None else \
            f"its setpoint validity (set in ACE; {failsafe.timeout_s:g} s by default)"
        text = unbilled_fallback_warning(
            f"its safe current ({failsafe.current_a:g} A unless changed in ACE; `edge-agent probe` reads it)", after)
        warnings.append(f"chargers[{i}] (EVSE {charger.evse_id}, {charger.model}): {text}")
    return warnings
