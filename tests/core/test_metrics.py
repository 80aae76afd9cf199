"""Worked examples for the SaaS metrics: MRR, movements, churn, NRR, ARPA, LTV, CAC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import attrs
import pytest

from lumenquest_core.catalog import Price, PricingScheme, Tier, UsageType
from lumenquest_core.coupons import Coupon, CouponDuration, Discount
from lumenquest_core.errors import CurrencyMismatch, UnknownCurrency, ValidationError
from lumenquest_core.metrics import (
    MetricsReport,
    MrrMovements,
    arpa,
    arr,
    cac,
    customer_churn_rate,
    customer_mrr,
    gross_revenue_churn_rate,
    ltv,
    metrics_report,
    mrr,
    mrr_movements,
    net_revenue_churn_rate,
    net_revenue_retention,
    plan_conversion_rates,
    subscription_mrr,
    trial_conversion_rate,
)
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval, Period
from lumenquest_core.subscriptions import Subscription, SubscriptionStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 2, 1, tzinfo=UTC)
S = SubscriptionStatus


def make_price(
    amount: int,
    currency: str = "USD",
    interval: Interval = Interval.MONTH,
    count: int = 1,
    *,
    usage: UsageType = UsageType.LICENSED,
    plan_id: str = "plan_pro",
) -> Price:
    return Price(
        f"price_{amount}_{interval}_{count}",
        plan_id,
        currency,
        BillingCycle(interval, count),
        PricingScheme.PER_UNIT,
        unit_amount=Money(amount, currency),
        usage_type=usage,
    )


def make_sub(
    price: Price,
    *,
    customer: str = "cus_a",
    status: SubscriptionStatus = S.ACTIVE,
    quantity: int = 1,
    discount: Discount | None = None,
) -> Subscription:
    return Subscription(
        id=f"sub_{customer}_{price.id}",
        customer_id=customer,
        price=price,
        quantity=quantity,
        status=status,
        anchor=T0,
        current_period=Period(T0, T0 + timedelta(days=31)),
        created_at=T0,
        discount=discount,
    )


def usd(amount: int) -> Money:
    return Money(amount, "USD")


def movements(**fields: object) -> MrrMovements:
    """Movements with every amount and count zero except ``fields``."""
    zero = usd(0)
    base: dict[str, object] = dict.fromkeys(
        ("start", "new", "expansion", "contraction", "churned", "reactivation", "end"), zero
    )
    base.update(
        dict.fromkeys(
            (
                "start_customers",
                "end_customers",
                "new_customers",
                "expansion_customers",
                "contraction_customers",
                "churned_customers",
                "reactivated_customers",
            ),
            0,
        )
    )
    base.update(fields)
    return MrrMovements(currency="USD", **base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- subscription MRR


@pytest.mark.parametrize(
    ("amount", "interval", "count", "expected"),
    [
        pytest.param(120_000, Interval.YEAR, 1, 10_000, id="yearly $1,200 is $100"),
        pytest.param(1_000, Interval.WEEK, 1, 4_333, id="weekly $10 is $43.33"),
        pytest.param(1_000, Interval.WEEK, 2, 2_167, id="fortnightly $10 is $21.67"),
        pytest.param(100, Interval.DAY, 1, 3_042, id="daily $1 is $30.42"),
        pytest.param(30_000, Interval.MONTH, 3, 10_000, id="quarterly $300 is $100"),
        pytest.param(10_000, Interval.MONTH, 3, 3_333, id="quarterly $100 is $33.33"),
        pytest.param(4_999, Interval.MONTH, 1, 4_999, id="monthly is unchanged"),
        pytest.param(240_000, Interval.YEAR, 2, 10_000, id="two-yearly $2,400 is $100"),
    ],
)
def test_subscription_mrr_normalises_the_cycle_amount_to_one_month(
    amount: int, interval: Interval, count: int, expected: int
) -> None:
    assert subscription_mrr(make_sub(make_price(amount, "USD", interval, count))) == usd(expected)


@pytest.mark.parametrize(
    ("yearly", "expected"),
    [(6, 0), (18, 2), (30, 2), (42, 4)],
    ids=["0.5 to 0", "1.5 to 2", "2.5 to 2", "3.5 to 4"],
)
def test_subscription_mrr_rounds_half_to_even(yearly: int, expected: int) -> None:
    assert subscription_mrr(make_sub(make_price(yearly, interval=Interval.YEAR))) == usd(expected)


def test_subscription_mrr_multiplies_by_quantity() -> None:
    assert subscription_mrr(make_sub(make_price(1_000), quantity=3)) == usd(3_000)


def test_subscription_mrr_uses_the_pricing_scheme_of_the_price() -> None:
    tiered = Price(
        "price_tiered",
        "plan_pro",
        "USD",
        BillingCycle(Interval.MONTH),
        PricingScheme.TIERED_GRADUATED,
        tiers=(Tier(10, usd(500)), Tier(None, usd(300))),
    )
    assert subscription_mrr(make_sub(tiered, quantity=12)) == usd(10 * 500 + 2 * 300)


def test_a_past_due_subscription_still_counts_toward_mrr() -> None:
    assert subscription_mrr(make_sub(make_price(5_000), status=S.PAST_DUE)) == usd(5_000)


@pytest.mark.parametrize(
    "status",
    [S.TRIALING, S.PAUSED, S.CANCELED, S.INCOMPLETE, S.INCOMPLETE_EXPIRED, S.UNPAID],
)
def test_a_subscription_that_is_not_active_or_past_due_counts_zero(
    status: SubscriptionStatus,
) -> None:
    assert subscription_mrr(make_sub(make_price(5_000, "EUR"), status=status)) == Money(0, "EUR")


def test_a_metered_price_counts_zero_because_usage_is_not_committed() -> None:
    metered = make_price(5_000, usage=UsageType.METERED)
    assert subscription_mrr(make_sub(metered, quantity=10)) == usd(0)


def test_a_forever_percent_coupon_reduces_mrr() -> None:
    coupon = Coupon("c20", percent_off=Decimal(20), duration=CouponDuration.FOREVER)
    sub = make_sub(make_price(4_999), discount=Discount.begin(coupon, T0))
    # 20 % of 49.99 is 9.998, rounded to 10.00 on the invoice: 39.99 remains.
    assert subscription_mrr(sub) == usd(3_999)


def test_a_percent_coupon_applies_to_the_cycle_amount_before_normalising() -> None:
    coupon = Coupon("c20", percent_off=Decimal(20), duration=CouponDuration.FOREVER)
    sub = make_sub(make_price(119_900, interval=Interval.YEAR), discount=Discount.begin(coupon, T0))
    # 1199.00 - 239.80 = 959.20 a year; ÷ 12 = 79.9333 → 79.93.
    assert subscription_mrr(sub) == usd(7_993)


def test_a_once_coupon_does_not_reduce_mrr() -> None:
    coupon = Coupon("once50", percent_off=Decimal(50), duration=CouponDuration.ONCE)
    sub = make_sub(make_price(10_000), discount=Discount.begin(coupon, T0))
    assert subscription_mrr(sub) == usd(10_000)


def test_a_repeating_coupon_reduces_mrr_while_it_has_invoices_left() -> None:
    coupon = Coupon(
        "rep", percent_off=Decimal(10), duration=CouponDuration.REPEATING, duration_in_cycles=3
    )
    running = Discount.begin(coupon, T0)
    used_up = attrs.evolve(running, invoices_left=0)
    assert subscription_mrr(make_sub(make_price(10_000), discount=running)) == usd(9_000)
    assert subscription_mrr(make_sub(make_price(10_000), discount=used_up)) == usd(10_000)


def test_a_forever_amount_off_coupon_reduces_mrr_and_never_below_zero() -> None:
    five_off = Coupon("five", amount_off=usd(500), duration=CouponDuration.FOREVER)
    big_off = Coupon("big", amount_off=usd(50_000), duration=CouponDuration.FOREVER)
    assert subscription_mrr(
        make_sub(make_price(2_000), discount=Discount.begin(five_off, T0))
    ) == usd(1_500)
    assert subscription_mrr(
        make_sub(make_price(2_000), discount=Discount.begin(big_off, T0))
    ) == usd(0)


def test_an_amount_off_coupon_in_another_currency_raises_currency_mismatch() -> None:
    euros_off = Coupon("eur", amount_off=Money(500, "EUR"), duration=CouponDuration.FOREVER)
    sub = make_sub(make_price(2_000), discount=Discount.begin(euros_off, T0))
    with pytest.raises(CurrencyMismatch):
        subscription_mrr(sub)


# --------------------------------------------------------------------------- MRR, ARR, customer MRR


def portfolio() -> list[Subscription]:
    return [
        make_sub(make_price(10_000), customer="cus_a"),
        make_sub(make_price(120_000, interval=Interval.YEAR), customer="cus_b"),
        make_sub(make_price(5_000), customer="cus_c", status=S.TRIALING),
        make_sub(make_price(3_000, "EUR"), customer="cus_d"),
        make_sub(make_price(500, "JPY"), customer="cus_e", status=S.PAUSED),
    ]


def test_mrr_keeps_currencies_apart() -> None:
    assert mrr(portfolio()) == {
        "USD": usd(20_000),
        "EUR": Money(3_000, "EUR"),
        "JPY": Money(0, "JPY"),
    }


def test_mrr_in_one_currency_is_a_single_money() -> None:
    assert mrr(portfolio(), "USD") == usd(20_000)
    assert mrr(portfolio(), "GBP") == Money(0, "GBP")


def test_mrr_of_nothing_is_empty() -> None:
    assert mrr([]) == {}


def test_mrr_refuses_an_unknown_currency() -> None:
    with pytest.raises(UnknownCurrency):
        mrr(portfolio(), "XYZ")


def test_arr_is_twelve_times_mrr() -> None:
    assert arr(portfolio()) == {
        "USD": usd(240_000),
        "EUR": Money(36_000, "EUR"),
        "JPY": Money(0, "JPY"),
    }
    assert arr(portfolio(), "EUR") == Money(36_000, "EUR")


def test_customer_mrr_sums_a_customers_subscriptions_per_currency_and_omits_non_payers() -> None:
    subs = [
        *portfolio(),
        make_sub(make_price(2_500), customer="cus_a"),
        make_sub(make_price(700, "EUR"), customer="cus_a"),
    ]
    assert customer_mrr(subs) == {
        "USD": {"cus_a": 12_500, "cus_b": 10_000},
        "EUR": {"cus_d": 3_000, "cus_a": 700},
    }


# --------------------------------------------------------------------------- movements


def test_mrr_movements_classify_each_kind_of_change() -> None:
    start = {"a": 1_000, "b": 2_000, "c": 3_000, "d": 500}
    end = {"a": 1_000, "b": 2_500, "c": 1_000, "e": 700, "f": 400}
    moved = mrr_movements(start, end, currency="USD", previously_active={"f", "b"})
    assert moved == movements(
        start=usd(6_500),
        new=usd(700),
        expansion=usd(500),
        contraction=usd(2_000),
        churned=usd(500),
        reactivation=usd(400),
        end=usd(5_600),
        start_customers=4,
        end_customers=5,
        new_customers=1,
        expansion_customers=1,
        contraction_customers=1,
        churned_customers=1,
        reactivated_customers=1,
    )
    assert moved.net_new == usd(-900)


def test_a_customer_listed_with_zero_mrr_is_the_same_as_an_absent_one() -> None:
    moved = mrr_movements({"a": 0}, {"a": 300, "b": 0}, currency="USD")
    assert moved.new == usd(300)
    assert (moved.start_customers, moved.end_customers, moved.new_customers) == (0, 1, 1)


def test_a_returning_customer_is_a_reactivation_not_new() -> None:
    moved = mrr_movements({}, {"a": 300}, currency="USD", previously_active=["a"])
    assert (moved.new, moved.reactivation, moved.reactivated_customers) == (usd(0), usd(300), 1)


def test_mrr_movements_reject_negative_or_non_integer_amounts() -> None:
    with pytest.raises(ValidationError):
        mrr_movements({"a": -1}, {}, currency="USD")
    with pytest.raises(ValidationError):
        mrr_movements({}, {"a": 1.5}, currency="USD")  # type: ignore[dict-item]


def test_mrr_movements_refuse_an_unknown_currency() -> None:
    with pytest.raises(UnknownCurrency):
        mrr_movements({}, {}, currency="usd")


def test_mrr_movements_that_do_not_add_up_cannot_be_built() -> None:
    with pytest.raises(ValidationError, match="do not add up"):
        movements(start=usd(100), end=usd(90), start_customers=1, end_customers=1)


def test_customer_counts_that_do_not_add_up_cannot_be_built() -> None:
    with pytest.raises(ValidationError, match="customer counts"):
        movements(start_customers=2, end_customers=1)


def test_mrr_movements_in_mixed_currencies_raise_currency_mismatch() -> None:
    with pytest.raises(CurrencyMismatch):
        movements(new=Money(100, "EUR"), end=usd(100))


def test_mrr_movements_with_a_negative_amount_or_count_cannot_be_built() -> None:
    with pytest.raises(ValidationError, match="must not be negative"):
        movements(churned=usd(-5), end=usd(5))
    with pytest.raises(ValidationError, match="non-negative int"):
        movements(new_customers=-1, end_customers=-1)


def test_mrr_movements_need_money_amounts() -> None:
    with pytest.raises(ValidationError, match="must be Money"):
        movements(start=0)


# --------------------------------------------------------------------------- rates


def test_customer_churn_rate_is_churned_over_customers_at_start() -> None:
    assert customer_churn_rate(200, 10) == Decimal("0.05")
    assert str(customer_churn_rate(200, 10)) == "0.0500"
    assert customer_churn_rate(3, 1) == Decimal("0.3333")
    assert customer_churn_rate(3, 2) == Decimal("0.6667")


def test_rates_round_half_to_even_at_four_places() -> None:
    assert customer_churn_rate(20_000, 1) == Decimal("0.0000")  # 0.00005
    assert customer_churn_rate(20_000, 3) == Decimal("0.0002")  # 0.00015


def test_rates_with_a_zero_denominator_are_none() -> None:
    empty = movements()
    assert customer_churn_rate(0, 0) is None
    assert trial_conversion_rate(0, 0) is None
    assert gross_revenue_churn_rate(empty) is None
    assert net_revenue_churn_rate(empty) is None
    assert net_revenue_retention(empty) is None
    assert arpa(usd(0), 0) is None
    assert cac(usd(50_000), 0) is None


@pytest.mark.parametrize(
    ("whole", "part"),
    [(3, 4), (-1, 0), (1, -1), (True, 0), (2, 1.0)],
)
def test_customer_churn_rate_rejects_impossible_counts(whole: object, part: object) -> None:
    with pytest.raises(ValidationError):
        customer_churn_rate(whole, part)  # type: ignore[arg-type]


def test_revenue_churn_and_retention_use_start_mrr_as_denominator() -> None:
    moved = mrr_movements(
        {"a": 1_000, "b": 2_000, "c": 3_000, "d": 500},
        {"a": 1_000, "b": 2_500, "c": 1_000, "e": 700, "f": 400},
        currency="USD",
        previously_active={"f"},
    )
    assert gross_revenue_churn_rate(moved) == Decimal("0.3846")  # 2500 / 6500
    assert net_revenue_churn_rate(moved) == Decimal("0.2462")  # 1600 / 6500
    assert net_revenue_retention(moved) == Decimal("0.6923")  # 4500 / 6500


def test_net_revenue_churn_is_negative_when_expansion_outweighs_losses() -> None:
    moved = mrr_movements({"a": 1_000, "b": 1_000}, {"a": 2_500, "b": 500}, currency="USD")
    assert gross_revenue_churn_rate(moved) == Decimal("0.25")
    assert net_revenue_churn_rate(moved) == Decimal("-0.5")
    assert net_revenue_retention(moved) == Decimal("1.5")


def test_arpa_is_mrr_over_paying_customers_rounded_half_to_even() -> None:
    assert arpa(usd(10_000), 3) == usd(3_333)
    assert arpa(usd(5), 2) == usd(2)
    assert arpa(usd(7), 2) == usd(4)


def test_arpa_rejects_a_non_money_mrr() -> None:
    with pytest.raises(ValidationError):
        arpa(10_000, 3)  # type: ignore[arg-type]


def test_ltv_is_arpa_times_margin_over_customer_churn() -> None:
    assert ltv(usd(5_000), Decimal("0.05")) == usd(100_000)
    assert ltv(usd(5_000), Decimal("0.05"), gross_margin=Decimal("0.8")) == usd(80_000)
    assert ltv(usd(1_000), Decimal("0.03")) == usd(33_333)


def test_ltv_is_none_without_arpa_or_churn() -> None:
    assert ltv(None, Decimal("0.05")) is None
    assert ltv(usd(5_000), None) is None
    assert ltv(usd(5_000), Decimal(0)) is None


@pytest.mark.parametrize(
    ("churn", "margin"),
    [
        (Decimal("-0.1"), Decimal(1)),
        (0.05, Decimal(1)),
        (Decimal("NaN"), Decimal(1)),
        (Decimal("0.05"), Decimal("1.5")),
        (Decimal("0.05"), Decimal("-0.1")),
        (Decimal("0.05"), 0.8),
    ],
)
def test_ltv_rejects_bad_rates_and_margins(churn: object, margin: object) -> None:
    with pytest.raises(ValidationError):
        ltv(usd(5_000), churn, margin)  # type: ignore[arg-type]


def test_cac_is_spend_over_new_customers() -> None:
    assert cac(usd(1_000_000), 40) == usd(25_000)
    assert cac(Money(10_000, "JPY"), 3) == Money(3_333, "JPY")


def test_trial_conversion_rate_is_converted_over_ended() -> None:
    assert trial_conversion_rate(40, 10) == Decimal("0.25")
    with pytest.raises(ValidationError):
        trial_conversion_rate(5, 6)


def test_plan_conversion_rates_are_per_plan() -> None:
    outcomes = [("basic", True), ("basic", False), ("pro", True), ("basic", False)]
    assert plan_conversion_rates(outcomes) == {
        "basic": Decimal("0.3333"),
        "pro": Decimal("1.0000"),
    }
    assert plan_conversion_rates([]) == {}


def test_plan_conversion_rates_reject_a_non_boolean_outcome() -> None:
    with pytest.raises(ValidationError):
        plan_conversion_rates([("pro", 1)])  # type: ignore[list-item]


# --------------------------------------------------------------------------- report


def report_snapshots() -> tuple[list[Subscription], list[Subscription]]:
    monthly_100 = make_price(10_000)
    monthly_50 = make_price(5_000)
    start = [
        make_sub(monthly_100, customer="alice"),
        make_sub(make_price(120_000, interval=Interval.YEAR), customer="bob"),
        make_sub(monthly_50, customer="carol", quantity=2),
        make_sub(make_price(2_000), customer="dave", status=S.TRIALING),
        make_sub(make_price(3_000, "EUR"), customer="erin"),
    ]
    end = [
        make_sub(monthly_100, customer="alice", quantity=2),
        make_sub(make_price(120_000, interval=Interval.YEAR), customer="bob", status=S.CANCELED),
        make_sub(monthly_50, customer="carol", status=S.PAST_DUE),
        make_sub(make_price(2_000), customer="dave"),
        make_sub(make_price(3_000), customer="frank"),
        make_sub(make_price(3_000, "EUR"), customer="erin"),
    ]
    return start, end


def test_metrics_report_bundles_every_metric_of_one_currency() -> None:
    start, end = report_snapshots()
    report = metrics_report(
        period=Period(T0, T1),
        currency="USD",
        start_subscriptions=start,
        end_subscriptions=end,
        previously_active={"frank"},
        marketing_spend=usd(50_000),
        trial_outcomes=iter([("plan_pro", True), ("plan_pro", False), ("plan_basic", False)]),
        gross_margin=Decimal("0.8"),
    )
    assert report.movements == movements(
        start=usd(30_000),
        new=usd(2_000),
        expansion=usd(10_000),
        contraction=usd(5_000),
        churned=usd(10_000),
        reactivation=usd(3_000),
        end=usd(30_000),
        start_customers=3,
        end_customers=4,
        new_customers=1,
        expansion_customers=1,
        contraction_customers=1,
        churned_customers=1,
        reactivated_customers=1,
    )
    assert report == MetricsReport(
        period=Period(T0, T1),
        currency="USD",
        mrr=usd(30_000),
        arr=usd(360_000),
        movements=report.movements,
        customer_churn_rate=Decimal("0.3333"),
        gross_revenue_churn_rate=Decimal("0.5"),
        net_revenue_churn_rate=Decimal("0.0667"),
        net_revenue_retention=Decimal("0.8333"),
        arpa=usd(7_500),
        ltv=usd(18_002),  # 7500 × 0.8 ÷ 0.3333 = 18001.8
        cac=usd(50_000),
        trial_conversion_rate=Decimal("0.3333"),
        plan_conversion_rates={"plan_pro": Decimal("0.5"), "plan_basic": Decimal(0)},
    )
    assert report.mrr == mrr(end, "USD")


def test_metrics_report_is_immutable_and_hashable() -> None:
    start, end = report_snapshots()
    report = metrics_report(
        period=Period(T0, T1),
        currency="USD",
        start_subscriptions=start,
        end_subscriptions=end,
        trial_outcomes=[("plan_pro", True)],
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        report.mrr = usd(0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        report.plan_conversion_rates["plan_pro"] = Decimal(0)  # type: ignore[index]
    assert hash(report) == hash(report)


def test_metrics_report_without_spend_or_customers_gives_none_for_ratios() -> None:
    report = metrics_report(
        period=Period(T0, T1),
        currency="JPY",
        start_subscriptions=[],
        end_subscriptions=[],
    )
    assert report.mrr == Money(0, "JPY")
    assert report.cac is None
    assert report.arpa is None
    assert report.ltv is None
    assert report.customer_churn_rate is None
    assert report.trial_conversion_rate is None
    assert report.plan_conversion_rates == {}


def test_metrics_report_with_spend_in_another_currency_raises_currency_mismatch() -> None:
    with pytest.raises(CurrencyMismatch):
        metrics_report(
            period=Period(T0, T1),
            currency="USD",
            start_subscriptions=[],
            end_subscriptions=[],
            marketing_spend=Money(100, "EUR"),
        )
