from fractions import Fraction

import pytest

from lumenquest_core.catalog import (
    Plan,
    PlanChange,
    Price,
    PricingScheme,
    Tier,
    UsageType,
    compare,
    monthly_amount,
)
from lumenquest_core.errors import CurrencyMismatch, ValidationError
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval

MONTHLY = BillingCycle(Interval.MONTH)
YEARLY = BillingCycle(Interval.YEAR)


def usd(amount: int) -> Money:
    return Money(amount, "USD")


def per_unit(amount: int, cycle: BillingCycle = MONTHLY, price_id: str = "price_a") -> Price:
    return Price(price_id, "plan", "USD", cycle, unit_amount=usd(amount))


TIERS = (Tier(5, usd(1000), usd(500)), Tier(10, usd(800)), Tier(None, usd(500)))


def test_a_plan_has_features_and_refuses_an_empty_name():
    plan = Plan("plan_pro", "Pro", features=["reports", "api"], metadata={"tier": "gold"})
    assert plan.grants("reports")
    assert not plan.grants("sso")
    assert plan.metadata["tier"] == "gold"
    with pytest.raises(ValidationError, match="non-empty name"):
        Plan("plan_x", "  ")
    with pytest.raises(ValidationError, match="list of names"):
        Plan("plan_x", "X", features="reports")  # type: ignore[arg-type]


def test_flat_price_ignores_quantity_above_zero():
    flat = Price("p", "plan", "USD", MONTHLY, PricingScheme.FLAT, unit_amount=usd(4900))
    assert flat.amount_for(1) == flat.amount_for(7) == usd(4900)
    assert flat.amount_for(0) == usd(0)


def test_per_unit_price_multiplies():
    assert per_unit(1000).amount_for(3) == usd(3000)


def test_graduated_tiers_charge_each_unit_at_its_tier():
    price = Price("p", "plan", "USD", MONTHLY, "tiered_graduated", tiers=TIERS)
    # 5×$10 + $5 flat, 5×$8, 2×$5
    assert price.amount_for(12) == usd(5000 + 500 + 4000 + 1000)
    assert price.amount_for(3) == usd(3000 + 500)
    assert price.amount_for(0) == usd(0)


def test_volume_tiers_charge_every_unit_at_the_reached_tier():
    price = Price("p", "plan", "USD", MONTHLY, "tiered_volume", tiers=TIERS)
    assert price.amount_for(12) == usd(12 * 500)
    assert price.amount_for(5) == usd(5 * 1000 + 500)
    assert price.amount_for(6) == usd(6 * 800)


@pytest.mark.parametrize("quantity", [-1, 1.5, True])
def test_a_quantity_must_be_a_non_negative_int(quantity):
    with pytest.raises(ValidationError, match="quantity"):
        per_unit(100).amount_for(quantity)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "per_unit"}, "needs unit_amount"),
        ({"scheme": "per_unit", "unit_amount": usd(1), "tiers": TIERS}, "takes no tiers"),
        ({"scheme": "tiered_volume"}, "needs tiers"),
        ({"scheme": "tiered_volume", "tiers": TIERS, "unit_amount": usd(1)}, "needs tiers"),
        ({"scheme": "tiered_volume", "tiers": (Tier(5, usd(1)),)}, "only the last tier"),
        (
            {"scheme": "tiered_volume", "tiers": (Tier(None, usd(1)), Tier(None, usd(1)))},
            "only the last",
        ),
        (
            {
                "scheme": "tiered_volume",
                "tiers": (Tier(5, usd(1)), Tier(5, usd(1)), Tier(None, usd(1))),
            },
            "increase",
        ),
        ({"scheme": "per_unit", "unit_amount": Money(1, "EUR")}, "EUR"),
        ({"scheme": "per_unit", "unit_amount": usd(-1)}, "must not be negative"),
        (
            {"scheme": "tiered_graduated", "tiers": (Tier(None, usd(1), usd(-1)),)},
            "must not be negative",
        ),
        ({"scheme": "per_unit", "unit_amount": usd(1), "trial_days": -1}, "trial_days"),
    ],
)
def test_malformed_prices_are_refused(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        Price("p", "plan", "USD", MONTHLY, **kwargs)


def test_usage_type_defaults_to_licensed():
    assert per_unit(1).usage_type is UsageType.LICENSED
    metered = Price("m", "plan", "USD", MONTHLY, unit_amount=usd(5), usage_type="metered")
    assert metered.usage_type is UsageType.METERED


def test_monthly_amount_normalises_every_interval():
    assert monthly_amount(per_unit(120000, YEARLY)) == 10000
    assert monthly_amount(per_unit(1000, BillingCycle(Interval.WEEK))) == Fraction(1000 * 52, 12)
    assert monthly_amount(per_unit(100, BillingCycle(Interval.DAY))) == Fraction(100 * 365, 12)
    assert monthly_amount(per_unit(3000, BillingCycle(Interval.MONTH, 3))) == 1000


def test_compare_says_upgrade_downgrade_or_same_by_monthly_amount():
    monthly_10, monthly_20 = per_unit(1000), per_unit(2000, price_id="b")
    yearly_100 = per_unit(10000, YEARLY, price_id="c")
    assert compare(monthly_10, monthly_20) is PlanChange.UPGRADE
    assert compare(monthly_20, monthly_10) is PlanChange.DOWNGRADE
    assert compare(monthly_10, yearly_100) is PlanChange.DOWNGRADE  # $8.33 a month
    assert compare(monthly_10, monthly_10, 2, 2) is PlanChange.SAME
    assert compare(monthly_10, monthly_10, 2, 3) is PlanChange.UPGRADE


def test_compare_refuses_prices_in_different_currencies():
    eur = Price("e", "plan", "EUR", MONTHLY, unit_amount=Money(1000, "EUR"))
    with pytest.raises(CurrencyMismatch):
        compare(per_unit(1000), eur)
