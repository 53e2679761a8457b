"""Offline session pricing with OCPI 2.2.1 tariffs, in Decimal throughout.

parse_tariff validates a Tariff object. price_session prices a gateway session from its meter
samples (totals, a breakdown per dimension, and the charging periods as priced); RunningCost and
running_cost give a running session's price if it ended now; unpriced_session stands in for a
session whose tariff cannot price it. Underneath, periods_from_samples turns meter samples into
charging periods and price_periods prices them (price_cdr does the same from an OCPI CDR).
Pure: no I/O, no clock, no floats except in the JSON renderings.
"""
from __future__ import annotations

from ._arithmetic import money_json
from ._charging_period import ChargingPeriod
from ._periods import MeterSample, periods_from_samples
from ._pricer import Cost, DimensionCost, price_cdr, price_periods
from ._session import (
    RunningCost,
    SessionPrice,
    price_session,
    running_cost,
    tariff_in_list,
    unpriced_session,
)
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
    "RunningCost",
    "SessionPrice",
    "Tariff",
    "TariffDimension",
    "TariffElement",
    "TariffError",
    "TariffRestrictions",
    "money_json",
    "parse_tariff",
    "periods_from_samples",
    "price_cdr",
    "price_periods",
    "price_session",
    "running_cost",
    "tariff_in_list",
    "unpriced_session",
]
