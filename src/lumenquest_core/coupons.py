"""Coupons and the discounts they give a customer or a subscription."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

import attrs

from lumenquest_core.errors import CurrencyMismatch, ValidationError
from lumenquest_core.money import Money, _money

__all__ = ["Coupon", "CouponDuration", "Discount"]

_HUNDRED = Decimal(100)


class CouponDuration(enum.StrEnum):
    """How many invoices a coupon discounts (Stripe's names)."""

    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


def _percent(value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float | bool) or not isinstance(value, Decimal | int | str):
        raise ValidationError("percent_off must be a Decimal, an int or a string, never a float")
    percent = Decimal(value)
    if not percent.is_finite() or not 0 < percent <= _HUNDRED:
        raise ValidationError(f"percent_off must be in (0, 100], not {value}")
    return percent


@attrs.frozen
class Coupon:
    """A percent or amount off, for one invoice, ``duration_in_cycles`` invoices, or forever."""

    id: str
    name: str = ""
    percent_off: Decimal | None = attrs.field(default=None, converter=_percent)
    amount_off: Money | None = None
    duration: CouponDuration = attrs.field(default=CouponDuration.ONCE, converter=CouponDuration)
    duration_in_cycles: int | None = None

    def __attrs_post_init__(self) -> None:
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValidationError("a coupon takes exactly one of percent_off and amount_off")
        if self.amount_off is not None and self.amount_off.amount <= 0:
            raise ValidationError("amount_off must be positive")
        repeating = self.duration is CouponDuration.REPEATING
        if repeating != (self.duration_in_cycles is not None):
            raise ValidationError("duration_in_cycles is required for, and only for, repeating")
        if repeating and (type(self.duration_in_cycles) is not int or self.duration_in_cycles < 1):
            raise ValidationError("duration_in_cycles must be a positive int")

    def amount_off_of(self, amount: Money) -> Money:
        """Return the discount this coupon gives on ``amount``, never more than ``amount``."""
        if amount.amount <= 0:
            return _money(0, amount.currency)
        if self.amount_off is not None:
            if self.amount_off.currency != amount.currency:
                raise CurrencyMismatch(
                    f"coupon {self.id} is in {self.amount_off.currency},"
                    f" the amount in {amount.currency}"
                )
            return _money(min(self.amount_off.amount, amount.amount), amount.currency)
        off = (Decimal(amount.amount) * self.percent_off / _HUNDRED).to_integral_value(
            rounding=ROUND_HALF_EVEN
        )  # type: ignore[operator]
        return _money(min(int(off), amount.amount), amount.currency)


@attrs.frozen
class Discount:
    """A coupon applied from ``start``; ``invoices_left`` is ``None`` while it lasts forever."""

    coupon: Coupon
    start: datetime
    invoices_left: int | None

    @classmethod
    def begin(cls, coupon: Coupon, start: datetime) -> Discount:
        """Start applying ``coupon`` at ``start``."""
        left = {
            CouponDuration.ONCE: 1,
            CouponDuration.REPEATING: coupon.duration_in_cycles,
            CouponDuration.FOREVER: None,
        }[coupon.duration]
        return cls(coupon=coupon, start=start, invoices_left=left)

    @property
    def active(self) -> bool:
        """Whether the discount still applies to the next invoice."""
        return self.invoices_left is None or self.invoices_left > 0

    @property
    def recurring(self) -> bool:
        """Whether the discount lasts more than one invoice (counts toward MRR)."""
        return self.coupon.duration is not CouponDuration.ONCE

    def used(self) -> Discount:
        """Return the discount after it has been applied to one invoice."""
        if self.invoices_left is None:
            return self
        return attrs.evolve(self, invoices_left=max(0, self.invoices_left - 1))
