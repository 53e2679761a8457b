"""ModbusCharger's readings: its IEC 61851 state, its card reader's UID and its measurement from the polled words.

For a model with only a session register the measurement's energy is the lifetime counter the
driver keeps (drivers.energy.SessionEnergyLifetime).
"""
from __future__ import annotations

import logging
import time

from drivers.api import Measurement
from drivers.energy import SessionEnergyLifetime
from drivers.errors import EnergyCounterError, NoValue
from drivers.tokens import InvalidToken, normalize_uid

from ._mapcodec import field_value, raw_value
from ._mapio import MapIO
from ._maptypes import ConditionalState, RegisterMap

log = logging.getLogger("drivers.modbus")

SESSION_STUCK_POWER_W = 500.0
SESSION_STUCK_AFTER_S = 120.0


class ChargerDecoding:
    """The reading half of ModbusCharger, which sets every attribute declared here."""

    name: str
    regmap: RegisterMap
    io: MapIO
    energy_counter: SessionEnergyLifetime | None
    _energy_role: str | None
    _counter_error: Exception | None
    _stuck_since: float | None
    _stuck_reported: bool

    # drivers.api.Identifier

    async def identify(self) -> str | None:
        """The UID of the card at the built-in reader, normalised, or None when there is none."""
        words = await self.io.read_register("rfid_uid")
        reg = self.io.source("rfid_uid")
        if reg.type == "ascii":
            text = str(self.io.text_or_value("rfid_uid", words) or "").strip("\x00 ")
            if not text or set(text) <= {"0"}:
                return None
        else:
            raw = raw_value(reg, words)
            if raw == 0 or raw in reg.no_value:
                return None
            text = raw.to_bytes(2 * reg.words, "big").hex()
        try:
            return normalize_uid(text)
        except InvalidToken:
            raise NoValue(f"rfid_uid reads {text!r}, which is not a hex UID", device=self.name, register=reg.address) from None

    def _state(self, words: dict[str, list[int]]) -> str:
        reg = self.io.source("state")
        address = reg.address
        if reg.type == "ascii":
            key: int | str = str(self.io.text_or_value("state", words["state"]))
        else:
            raw = raw_value(reg, words["state"])
            if raw in reg.no_value:
                raise NoValue(f"state reads 0x{raw:X}, which means no value", device=self.name, register=address)
            key = field_value(reg, raw)
            if reg.type.startswith("int"):
                value = self.io.value("state", words["state"])
                key = int(value)
        letter = self.regmap.states.get(key)
        if letter is None:
            raise NoValue(f"state value {key!r} is not in the map", device=self.name, register=address)
        if isinstance(letter, ConditionalState):
            bits = raw_value(self.io.source(letter.role), words[letter.role])
            return letter.set if bits & letter.mask else letter.clear
        return letter

    def _check_session_register(self, session_wh: float, power_w: float | None) -> None:
        """Some Etrel firmware reads 0 in the session register (evcc #5346): say so once, loudly."""
        now = time.monotonic()
        if session_wh > 0 or not power_w or power_w < SESSION_STUCK_POWER_W:
            self._stuck_since = None
            return
        if self._stuck_since is None:
            self._stuck_since = now
        elif now - self._stuck_since >= SESSION_STUCK_AFTER_S and not self._stuck_reported:
            self._stuck_reported = True
            log.error(
                "%s: %s's session energy register stays 0 while it draws %.0f W: this charger's energy is not"
                " counted; configure a billing meter for it", self.name, self.regmap.model, power_w,
            )

    async def _measurement(self, words: dict[str, list[int]]) -> Measurement:
        if self._energy_role == "session_energy":
            if self._counter_error is not None:
                raise EnergyCounterError(str(self._counter_error), device=self.name)
            assert self.energy_counter is not None
            session = self.io.value("session_energy", words["session_energy"])
            self._check_session_register(float(session), self.io.optional("power", words))
            try:
                energy = self.energy_counter.update(float(session))
            except OSError as exc:
                # The reading itself is good; the counter retries the save on the next update.
                log.error("%s: cannot save the lifetime energy counter: %s", self.name, exc)
                energy = self.energy_counter.value_wh
            return self.io.measurement(words, energy_wh=energy)
        return self.io.measurement(words)
