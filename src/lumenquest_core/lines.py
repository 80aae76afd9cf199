"""Invoice lines and tax rates: the vocabulary every billing change speaks."""

from __future__ import annotations

import enum
from decimal import Decimal

import attrs

from lumenquest_core.errors import ValidationError
from lumenquest_core.money import Money
from lumenquest_core.periods import Period

__all__ = ["InvoiceLine", "LineKind", "TaxRate"]


class LineKind(enum.StrEnum):
    """Where an invoice line comes from."""

    SUBSCRIPTION = "subscription"  # a licensed price billed in advance
    PRORATION = "proration"  # a credit or charge for part of a period after a change
    USAGE = "usage"  # a metered price billed in arrears
    ONE_OFF = "one_off"  # anything the host adds by hand


def _percentage(value: object) -> Decimal:
    if isinstance(value, float | bool) or not isinstance(value, Decimal | int | str):
        raise ValidationError(
            "a tax percentage must be a Decimal, an int or a string, never a float"
        )
    percentage = Decimal(value)
    if not percentage.is_finite() or percentage < 0 or percentage >= 1000:
        raise ValidationError(f"tax percentage {value} is out of range")
    return percentage


@attrs.frozen
class TaxRate:
    """A tax applied to a line: ``TaxRate("vat", "VAT", Decimal("20"), inclusive=True)``."""

    id: str
    name: str
    percentage: Decimal = attrs.field(converter=_percentage)
    inclusive: bool = False
    jurisdiction: str = ""


# Not slotted: lines are built on every renewal, and a dict-backed object builds fastest.
@attrs.frozen(slots=False)
class InvoiceLine:
    """One line of an invoice: an amount for a quantity over a period.

    ``amount`` is before discounts; for an inclusive tax rate it already contains the tax.
    """

    kind: LineKind
    description: str
    amount: Money
    quantity: int = 1
    period: Period | None = None
    price_id: str | None = None
    subscription_id: str | None = None
    discountable: bool = True
    tax_rates: tuple[TaxRate, ...] = attrs.field(default=(), converter=tuple)

    @property
    def proration(self) -> bool:
        """Whether the line is a proration credit or charge."""
        return self.kind is LineKind.PRORATION
