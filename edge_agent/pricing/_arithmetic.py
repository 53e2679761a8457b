"""The pricer's Decimal arithmetic: proportional shares, step_size, VAT per component line,
min_price/max_price, and amounts as the JSON numbers of the cloud contract."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext

from ._tariff import Price, PriceComponent, Tariff, TariffDimension

PRECISION = 50
_ZERO = Decimal(0)
_ONE_MICROSECOND = timedelta(microseconds=1)
# Step rounding reads totals at this resolution (seconds or Wh), so that a last-digit remainder
# of proportional splitting can never push a total past a step boundary.
_STEP_RESOLUTION = Decimal("1e-6")
_JSON_RESOLUTION = Decimal("0.0001")
STEP_UNITS = {TariffDimension.ENERGY: Decimal(1000), TariffDimension.TIME: Decimal(3600),
              TariffDimension.PARKING_TIME: Decimal(3600)}


def share(total: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """Split total in proportion to weights; the parts add up to total exactly."""
    whole = sum(weights, _ZERO)
    if len(weights) == 1 or whole <= 0 or total == 0:
        return [total] + [_ZERO] * (len(weights) - 1)
    parts = [total * w / whole for w in weights[:-1]]
    parts.append(max(total - sum(parts, _ZERO), _ZERO))
    return parts


def step_extra(total: Decimal, step_size: int, units_per_quantity: Decimal) -> Decimal:
    """The quantity to add so that the total becomes a whole number of steps."""
    in_units = total * units_per_quantity
    steps = (in_units.quantize(_STEP_RESOLUTION, ROUND_HALF_EVEN) / step_size).to_integral_value(ROUND_CEILING)
    return max(steps * step_size - in_units, _ZERO) / units_per_quantity


def sum_lines(lines: Iterable[tuple[PriceComponent, Decimal]]) -> Price:
    excl = incl = _ZERO
    for component, quantity in lines:
        amount = quantity * component.price
        excl += amount
        incl += amount if component.vat is None else amount * (100 + component.vat) / 100
    return Price(excl_vat=excl, incl_vat=incl)


def bounded(excl: Decimal, incl: Decimal, tariff: Tariff) -> tuple[Decimal, Decimal]:
    """min_price/max_price bind excl and incl VAT separately; a limit without incl_vat leaves the
    incl-VAT total alone (OCPI gives no rule to derive it, and VAT rates differ per component)."""
    if tariff.min_price is not None:
        excl = max(excl, tariff.min_price.excl_vat)
        if tariff.min_price.incl_vat is not None:
            incl = max(incl, tariff.min_price.incl_vat)
    if tariff.max_price is not None:
        excl = min(excl, tariff.max_price.excl_vat)
        if tariff.max_price.incl_vat is not None:
            incl = min(incl, tariff.max_price.incl_vat)
    return excl, incl


def microseconds(delta: timedelta) -> Decimal:
    return Decimal(delta // _ONE_MICROSECOND)


def money_json(amount: Decimal) -> float:
    """An amount as the cloud contract wants it: a JSON number, 4 decimals, half up."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return float(amount.quantize(_JSON_RESOLUTION, ROUND_HALF_UP))
