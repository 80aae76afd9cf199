"""Coupons and the discounts they give a customer or a subscription."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

import attrs

from lumenquest_core.errors import CurrencyMismatch, ValidationError
from lumenquest_core.money import Money, _money
from lumenquest_core.periods import aware

__all__ = ["Coupon", "CouponDuration", "Discount"]

_HUNDRED = Decimal(100)


class CouponDuration(enum.StrEnum):
    """How many invoices a coupon discounts (Stripe's names)."""

    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


def _duration(value: CouponDuration | str) -> CouponDuration:
    try:
        return CouponDuration(value)
    except ValueError:
        raise ValidationError(
            f"duration must be one of {[d.value for d in CouponDuration]}, not {value!r}",
            details={"duration": repr(value)},
        ) from None


def _percent(value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float | bool) or not isinstance(value, Decimal | int | str):
        raise ValidationError(
            "percent_off must be a Decimal, an int or a string, never a float",
            details={"percent_off": repr(value)},
        )
    try:
        percent = Decimal(value)
    except ArithmeticError:
        raise ValidationError(
            f"percent_off {value!r} is not a number", details={"percent_off": repr(value)}
        ) from None
    if not percent.is_finite() or not 0 < percent <= _HUNDRED:
        raise ValidationError(
            f"percent_off must be in (0, 100], not {value}", details={"percent_off": str(value)}
        )
    return percent


@attrs.frozen
class Coupon:
    """A percent or amount off, for one invoice, ``duration_in_cycles`` invoices, or forever."""

    id: str
    name: str = ""
    percent_off: Decimal | None = attrs.field(default=None, converter=_percent)
    amount_off: Money | None = None
    duration: CouponDuration = attrs.field(default=CouponDuration.ONCE, converter=_duration)
    duration_in_cycles: int | None = None

    def __attrs_post_init__(self) -> None:
        details = {"coupon_id": self.id}
        if not isinstance(self.id, str) or not self.id:
            raise ValidationError("a coupon needs a non-empty id", details=details)
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValidationError(
                "a coupon takes exactly one of percent_off and amount_off", details=details
            )
        if self.amount_off is not None and (
            not isinstance(self.amount_off, Money) or self.amount_off.amount <= 0
        ):
            raise ValidationError("amount_off must be a positive Money", details=details)
        repeating = self.duration is CouponDuration.REPEATING
        if repeating != (self.duration_in_cycles is not None):
            raise ValidationError(
                "duration_in_cycles is required for, and only for, repeating", details=details
            )
        if repeating and (type(self.duration_in_cycles) is not int or self.duration_in_cycles < 1):
            raise ValidationError("duration_in_cycles must be a positive int", details=details)

    def amount_off_of(self, amount: Money) -> Money:
        """Return the discount this coupon gives on ``amount``, never more than ``amount``."""
        # The currency is checked before the zero short-cut so a wrong coupon always fails.
        if self.amount_off is not None and self.amount_off.currency != amount.currency:
            raise CurrencyMismatch(
                f"coupon {self.id} is in {self.amount_off.currency},"
                f" the amount in {amount.currency}",
                details={"currencies": [self.amount_off.currency, amount.currency]},
            )
        if amount.amount <= 0:
            return _money(0, amount.currency)
        if self.amount_off is not None:
            return _money(min(self.amount_off.amount, amount.amount), amount.currency)
        percent = self.percent_off
        assert percent is not None  # exactly one of the two is set, checked at construction
        off = (Decimal(amount.amount) * percent / _HUNDRED).to_integral_value(
            rounding=ROUND_HALF_EVEN
        )
        return _money(min(int(off), amount.amount), amount.currency)


def _invoices_left(_instance: object, _attribute: object, value: int | None) -> None:
    if value is not None and (type(value) is not int or value < 0):
        raise ValidationError(
            f"invoices_left must be None or a non-negative int, not {value!r}",
            details={"invoices_left": repr(value)},
        )


def _start(value: datetime) -> datetime:
    return aware(value, "discount start")


@attrs.frozen
class Discount:
    """A coupon applied from ``start``; ``invoices_left`` is ``None`` while it lasts forever."""

    coupon: Coupon
    start: datetime = attrs.field(converter=_start)
    invoices_left: int | None = attrs.field(validator=_invoices_left)

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

    def applies_at(self, at: datetime) -> bool:
        """Whether the discount applies to an invoice created at ``at``."""
        return self.active and self.start <= aware(at, "at")

    @property
    def recurring(self) -> bool:
        """Whether the discount lasts more than one invoice (counts toward MRR)."""
        return self.coupon.duration is not CouponDuration.ONCE

    def used(self) -> Discount:
        """Return the discount after it has been applied to one invoice."""
        if self.invoices_left is None:
            return self
        return attrs.evolve(self, invoices_left=max(0, self.invoices_left - 1))
