"""Offline session pricing with OCPI 2.2.1 tariffs, in Decimal throughout.

parse_tariff validates a Tariff object; periods_from_samples turns a session's meter samples into
charging periods; price_periods prices them (price_cdr does the same from an OCPI CDR). Pure: no
I/O, no clock, no floats except in Cost.to_json.
"""
from __future__ import annotations

from ._periods import MeterSample, periods_from_samples
from ._pricer import ChargingPeriod, Cost, DimensionCost, price_cdr, price_periods
from ._tariff import (
    Price,
    PriceComponent,
    Tariff,
    TariffDimension,
    TariffElement,
    TariffError,
    TariffRestrictions,
    parse_tariff,
)

__all__ = [
    "ChargingPeriod",
    "Cost",
    "DimensionCost",
    "MeterSample",
    "Price",
    "PriceComponent",
    "Tariff",
    "TariffDimension",
    "TariffElement",
    "TariffError",
    "TariffRestrictions",
    "parse_tariff",
    "periods_from_samples",
    "price_cdr",
    "price_periods",
]
