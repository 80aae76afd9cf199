"""Plans, prices and their pricing schemes."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import attrs

from lumenquest_core.errors import CurrencyMismatch, ValidationError
from lumenquest_core.money import Money, _money, currency_exponent
from lumenquest_core.periods import BillingCycle

__all__ = [
    "Plan",
    "PlanChange",
    "Price",
    "PricingScheme",
    "Tier",
    "UsageType",
    "compare",
    "monthly_amount",
]


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _features(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValidationError("features must be a list of names, not a single string")
    return tuple(value)


@attrs.frozen
class Plan:
    """A product a customer subscribes to, with the features it grants."""

    id: str
    name: str
    features: tuple[str, ...] = attrs.field(default=(), converter=_features)
    active: bool = True
    description: str = ""
    metadata: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, hash=False, eq=False
    )

    def __attrs_post_init__(self) -> None:
        if not self.name.strip():
            raise ValidationError("a plan needs a non-empty name", details={"field": "name"})

    def grants(self, feature: str) -> bool:
        """Whether the plan includes ``feature``."""
        return feature in self.features


class PricingScheme(enum.StrEnum):
    """How a price turns a quantity into an amount."""

    FLAT = "flat"
    PER_UNIT = "per_unit"
    TIERED_GRADUATED = "tiered_graduated"
    TIERED_VOLUME = "tiered_volume"


class UsageType(enum.StrEnum):
    """Licensed prices bill a set quantity in advance; metered ones bill usage in arrears."""

    LICENSED = "licensed"
    METERED = "metered"


class PlanChange(enum.StrEnum):
    """The direction of a move between two prices."""

    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    SAME = "same"


_PER_UNIT = PricingScheme.PER_UNIT


@attrs.frozen
class Tier:
    """One tier of a tiered price: units up to ``up_to`` (``None`` = no limit)."""

    up_to: int | None
    unit_amount: Money
    flat_amount: Money | None = None


def _tiers(value: Iterable[Tier]) -> tuple[Tier, ...]:
    return tuple(value)


def _check_quantity(quantity: object) -> int:
    if type(quantity) is not int or quantity < 0:
        raise ValidationError(
            f"quantity must be a non-negative int, not {quantity!r}",
            details={"quantity": repr(quantity)},
        )
    return quantity


@attrs.frozen
class Price:
    """What a plan costs in one currency and cycle, and how quantity affects it."""

    id: str
    plan_id: str
    currency: str
    cycle: BillingCycle
    scheme: PricingScheme = attrs.field(default=PricingScheme.PER_UNIT, converter=PricingScheme)
    unit_amount: Money | None = None
    tiers: tuple[Tier, ...] = attrs.field(default=(), converter=_tiers)
    usage_type: UsageType = attrs.field(default=UsageType.LICENSED, converter=UsageType)
    trial_days: int = 0
    active: bool = True
    nickname: str = ""

    def __attrs_post_init__(self) -> None:
        currency_exponent(self.currency)
        if type(self.trial_days) is not int or self.trial_days < 0:
            raise ValidationError("trial_days must be a non-negative int")
        if self.scheme in (PricingScheme.FLAT, PricingScheme.PER_UNIT):
            self._check_unit_amount()
        else:
            self._check_tiers()

    def _check_unit_amount(self) -> None:
        if self.unit_amount is None:
            raise ValidationError(f"a {self.scheme} price needs unit_amount")
        if self.tiers:
            raise ValidationError(f"a {self.scheme} price takes no tiers")
        self._check_amount(self.unit_amount)

    def _check_tiers(self) -> None:
        if not self.tiers or self.unit_amount is not None:
            raise ValidationError(f"a {self.scheme} price needs tiers and no unit_amount")
        previous = 0
        for index, tier in enumerate(self.tiers):
            last = index == len(self.tiers) - 1
            if (tier.up_to is None) != last:
                raise ValidationError("only the last tier is unbounded (up_to=None)")
            if tier.up_to is not None:
                if tier.up_to <= previous:
                    raise ValidationError("tier bounds must increase")
                previous = tier.up_to
            self._check_amount(tier.unit_amount)
            if tier.flat_amount is not None:
                self._check_amount(tier.flat_amount)

    def _check_amount(self, amount: Money) -> None:
        if amount.currency != self.currency:
            raise CurrencyMismatch(
                f"price is in {self.currency} but an amount is in {amount.currency}"
            )
        if amount.amount < 0:
            raise ValidationError("price amounts must not be negative")

    def amount_for(self, quantity: int) -> Money:
        """Return what ``quantity`` units cost for one whole cycle."""
        if type(quantity) is not int or quantity < 0:  # inline: a renewal asks on every call
            _check_quantity(quantity)
        scheme = self.scheme
        if scheme is _PER_UNIT:
            return _money(self.unit_amount.amount * quantity, self.currency)  # type: ignore[union-attr]
        if quantity == 0:
            return _money(0, self.currency)
        if scheme is PricingScheme.FLAT:
            return self.unit_amount  # type: ignore[return-value]
        if scheme is PricingScheme.TIERED_VOLUME:
            return self._volume(quantity)
        return self._graduated(quantity)

    def _volume(self, quantity: int) -> Money:
        for tier in self.tiers:
            if tier.up_to is None or quantity <= tier.up_to:
                flat = tier.flat_amount.amount if tier.flat_amount else 0
                return _money(tier.unit_amount.amount * quantity + flat, self.currency)
        raise AssertionError("the last tier is unbounded")  # pragma: no cover

    def _graduated(self, quantity: int) -> Money:
        total = 0
        lower = 0
        for tier in self.tiers:
            upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
            units = upper - lower
            if units <= 0:
                break
            total += tier.unit_amount.amount * units
            if tier.flat_amount:
                total += tier.flat_amount.amount
            lower = upper
        return _money(total, self.currency)


def monthly_amount(price: Price, quantity: int = 1) -> Fraction:
    """Return the price of ``quantity`` normalised to one month, in exact minor units."""
    return price.amount_for(quantity).amount / price.cycle.months


def compare(a: Price, b: Price, quantity: int = 1, new_quantity: int | None = None) -> PlanChange:
    """Say whether moving from price ``a`` to ``b`` is an upgrade, a downgrade or the same."""
    if a.currency != b.currency:
        raise CurrencyMismatch(f"cannot compare a {a.currency} price with a {b.currency} price")
    before = monthly_amount(a, quantity)
    after = monthly_amount(b, quantity if new_quantity is None else new_quantity)
    if after > before:
        return PlanChange.UPGRADE
    if after < before:
        return PlanChange.DOWNGRADE
    return PlanChange.SAME
