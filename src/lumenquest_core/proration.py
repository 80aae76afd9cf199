"""Stripe-compatible proration with cumulative rounding: no cent is ever created or lost."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta

from lumenquest_core.catalog import Price
from lumenquest_core.errors import ValidationError
from lumenquest_core.lines import InvoiceLine, LineKind
from lumenquest_core.money import Money, _money, round_half_even
from lumenquest_core.periods import Period, _unsafe_period

__all__ = [
    "ChangeTiming",
    "Granularity",
    "ProrationBehavior",
    "change_lines",
    "prorate",
]


class Granularity(enum.StrEnum):
    """The unit time is counted in when prorating."""

    SECOND = "second"  # Stripe's unit
    DAY = "day"  # whole UTC calendar days, as Kill Bill and Lago count


class ProrationBehavior(enum.StrEnum):
    """What happens to the proration lines a change creates (Stripe's names)."""

    CREATE_PRORATIONS = "create_prorations"  # the lines wait for the next invoice
    ALWAYS_INVOICE = "always_invoice"  # the lines are invoiced now
    NONE = "none"  # no lines at all


class ChangeTiming(enum.StrEnum):
    """When a price or quantity change takes effect."""

    IMMEDIATE = "immediate"
    PERIOD_END = "period_end"


def _seconds(delta: timedelta) -> int:
    # Whole seconds of a non-negative offset; microseconds are dropped as Stripe's timestamps do.
    return delta.days * _SECONDS_PER_DAY + delta.seconds


_SECONDS_PER_DAY = 86400


def prorate(
    amount: Money,
    period: Period,
    portion: Period,
    granularity: Granularity = Granularity.SECOND,
) -> Money:
    """Return the share of ``amount`` (the price of all of ``period``) that ``portion`` is worth.

    Cumulative rounding: ``R(amount·(b−s)/L) − R(amount·(a−s)/L)`` with ``R`` round half
    to even, so the shares of any partition of the period sum exactly to ``amount``.
    """
    start = period.start
    if portion.start < start or portion.end > period.end:
        raise ValidationError(
            f"the portion {portion} lies outside the period {period}",
            details={"period": str(period), "portion": str(portion)},
        )
    if granularity is Granularity.SECOND:
        length = _seconds(period.end - start)
        upto_start = _seconds(portion.start - start)
        upto_end = _seconds(portion.end - start)
    else:
        # Whole UTC calendar days: every bound is already in UTC (Period converts it).
        first_day = start.toordinal()
        length = period.end.toordinal() - first_day
        upto_start = portion.start.toordinal() - first_day
        upto_end = portion.end.toordinal() - first_day
    if length <= 0:
        raise ValidationError(f"the period {period} is shorter than one {granularity}")
    total = amount.amount
    share = round_half_even(total * upto_end, length) - round_half_even(total * upto_start, length)
    return _money(share, amount.currency)


def change_lines(
    *,
    old_price: Price,
    old_quantity: int,
    new_price: Price,
    new_quantity: int,
    period: Period,
    at: datetime,
    subscription_id: str | None = None,
    granularity: Granularity = Granularity.SECOND,
) -> tuple[InvoiceLine, InvoiceLine]:
    """Return Stripe's two lines for a change at ``at``: the unused-time credit and the new charge.

    $10/month → $20/month exactly half-way through the period gives −$5.00 and +$10.00.
    """
    if not period.start <= at < period.end:
        raise ValidationError(f"the change at {at.isoformat()} is outside the period {period}")
    remaining = _unsafe_period(at.astimezone(UTC), period.end)
    credit = prorate(old_price.amount_for(old_quantity), period, remaining, granularity)
    charge = prorate(new_price.amount_for(new_quantity), period, remaining, granularity)
    return (
        InvoiceLine(
            kind=LineKind.PRORATION,
            description=f"Unused time on {_label(old_price, old_quantity)}",
            amount=-credit,
            quantity=old_quantity,
            period=remaining,
            price_id=old_price.id,
            subscription_id=subscription_id,
        ),
        InvoiceLine(
            kind=LineKind.PRORATION,
            description=f"Remaining time on {_label(new_price, new_quantity)}",
            amount=charge,
            quantity=new_quantity,
            period=remaining,
            price_id=new_price.id,
            subscription_id=subscription_id,
        ),
    )


def _label(price: Price, quantity: int) -> str:
    name = price.nickname or price.id
    return name if quantity == 1 else f"{quantity} × {name}"
