"""Properties of the SaaS metrics that hold for any subscriptions and snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from lumenquest_core.catalog import Price, PricingScheme, Tier, UsageType
from lumenquest_core.coupons import Coupon, CouponDuration, Discount
from lumenquest_core.metrics import (
    RATE_PLACES,
    Movement,
    MovementTotal,
    MrrSnapshots,
    arpa,
    arr,
    classify_movement,
    customer_mrr,
    gross_revenue_churn_rate,
    metrics_report,
    movement_totals,
    movements_from_totals,
    mrr,
    mrr_movements,
    net_revenue_churn_rate,
    net_revenue_retention,
    snapshot_movements,
    subscription_mrr,
)
from lumenquest_core.money import Money
from lumenquest_core.periods import Period
from lumenquest_core.subscriptions import Subscription, SubscriptionStatus
from tests.strategies import CURRENCIES, cycles

CUSTOMER_IDS = st.sampled_from([f"cus_{n}" for n in range(12)])
snapshots = st.dictionaries(CUSTOMER_IDS, st.integers(min_value=0, max_value=10**9), max_size=12)
customer_sets = st.frozensets(CUSTOMER_IDS, max_size=12)
PERIOD = Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


@st.composite
def discounts(draw: st.DrawFn, currency: str) -> Discount | None:
    """No discount, or a percent or amount-off discount of any duration, possibly used up."""
    if draw(st.booleans()):
        return None
    duration = draw(st.sampled_from(list(CouponDuration)))
    cycles = draw(st.integers(1, 3)) if duration is CouponDuration.REPEATING else None
    if draw(st.booleans()):
        percent = Decimal(draw(st.integers(1, 10_000))) / 100
        coupon = Coupon("c", percent_off=percent, duration=duration, duration_in_cycles=cycles)
    else:
        off = Money(draw(st.integers(1, 10**6)), currency)
        coupon = Coupon("c", amount_off=off, duration=duration, duration_in_cycles=cycles)
    discount = Discount.begin(coupon, PERIOD.start)
    if discount.invoices_left is None:
        return discount
    return Discount(coupon, PERIOD.start, draw(st.integers(0, discount.invoices_left)))


@st.composite
def metric_prices(draw: st.DrawFn, currency: str) -> Price:
    """A price of any scheme, cycle and usage type; tiered ones have two tiers (cheap to draw)."""
    scheme = draw(st.sampled_from(list(PricingScheme)))
    usage = UsageType.METERED if draw(st.integers(0, 9)) == 0 else UsageType.LICENSED
    cycle = draw(cycles)
    unit = st.integers(0, 10**7).map(lambda a: Money(a, currency))
    if scheme in (PricingScheme.FLAT, PricingScheme.PER_UNIT):
        return Price(
            "price_x", "plan_x", currency, cycle, scheme, unit_amount=draw(unit), usage_type=usage
        )
    tiers = (Tier(draw(st.integers(1, 20)), draw(unit), draw(unit)), Tier(None, draw(unit)))
    return Price("price_x", "plan_x", currency, cycle, scheme, tiers=tiers, usage_type=usage)


@st.composite
def subscriptions(draw: st.DrawFn, currency: str | None = None) -> Subscription:
    """A subscription in any status, price scheme, cycle and discount."""
    code = currency or draw(st.sampled_from(CURRENCIES))
    return Subscription(
        id="sub",
        customer_id=draw(CUSTOMER_IDS),
        price=draw(metric_prices(code)),
        quantity=draw(st.integers(0, 50)),
        status=draw(st.sampled_from(list(SubscriptionStatus))),
        anchor=PERIOD.start,
        current_period=PERIOD,
        created_at=PERIOD.start,
        discount=draw(discounts(code)),
    )


portfolios = st.lists(subscriptions(), max_size=6)


def as_fraction(rate: Decimal | None) -> Fraction:
    assert rate is not None
    return Fraction(rate)


@given(snapshots, snapshots, customer_sets)
def test_the_movement_identity_holds_for_any_snapshots(
    start: dict[str, int], end: dict[str, int], previously_active: frozenset[str]
) -> None:
    moved = mrr_movements(start, end, currency="USD", previously_active=previously_active)
    assert moved.end == (
        moved.start
        + moved.new
        + moved.expansion
        + moved.reactivation
        - moved.contraction
        - moved.churned
    )
    assert moved.start.amount == sum(start.values())
    assert moved.end.amount == sum(end.values())
    assert moved.end_customers == (
        moved.start_customers
        + moved.new_customers
        + moved.reactivated_customers
        - moved.churned_customers
    )


@given(snapshots, snapshots, customer_sets)
def test_movements_are_the_per_kind_totals_of_each_customers_classification(
    start: dict[str, int], end: dict[str, int], returning: frozenset[str]
) -> None:
    # What a store aggregating in SQL does: classify each customer, then sum per kind.
    tallies: dict[Movement, MovementTotal] = {}
    for customer_id in start.keys() | end.keys():
        m0, m1 = start.get(customer_id, 0), end.get(customer_id, 0)
        kind = classify_movement(m0, m1, returning=customer_id in returning)
        if kind is not None:
            seen = tallies.get(kind, MovementTotal())
            tallies[kind] = MovementTotal(seen.customers + 1, seen.start + m0, seen.end + m1)
    assert movement_totals(start, end, previously_active=returning) == tallies
    moved = mrr_movements(start, end, currency="USD", previously_active=returning)
    assert movements_from_totals(tallies, currency="USD") == moved
    paying_start = {c: m for c, m in start.items() if m}
    paying_end = {c: m for c, m in end.items() if m}
    snapshots = MrrSnapshots(
        paying_start, paying_end, (returning & paying_end.keys()) - paying_start.keys()
    )
    assert snapshot_movements(snapshots, "USD") == moved


@given(snapshots, snapshots)
def test_without_previously_active_customers_there_is_no_reactivation(
    start: dict[str, int], end: dict[str, int]
) -> None:
    moved = mrr_movements(start, end, currency="EUR")
    assert moved.reactivation == Money(0, "EUR")
    assert moved.reactivated_customers == 0


@given(portfolios)
def test_mrr_is_the_sum_of_each_subscriptions_mrr_per_currency(
    subs: list[Subscription],
) -> None:
    totals = mrr(subs)
    assert set(totals) == {s.currency for s in subs}
    for code, total in totals.items():
        assert total == sum(
            (subscription_mrr(s) for s in subs if s.currency == code), Money(0, code)
        )
        assert mrr(subs, code) == total


@given(portfolios)
def test_arr_is_twelve_times_mrr(subs: list[Subscription]) -> None:
    assert arr(subs) == {code: total * 12 for code, total in mrr(subs).items()}
    for code in CURRENCIES:
        assert arr(subs, code) == mrr(subs, code) * 12


@given(portfolios)
def test_customer_mrr_adds_up_to_mrr_and_holds_only_payers(subs: list[Subscription]) -> None:
    totals = mrr(subs)
    for code, per_customer in customer_mrr(subs).items():
        assert sum(per_customer.values()) == totals[code].amount
        assert all(amount > 0 for amount in per_customer.values())


@given(subscriptions())
def test_subscription_mrr_is_the_discounted_monthly_amount_within_half_a_minor_unit(
    sub: Subscription,
) -> None:
    value = subscription_mrr(sub)
    assert value.currency == sub.currency
    undiscounted = Fraction(sub.price.amount_for(sub.quantity).amount) / sub.price.cycle.months
    assert 0 <= value.amount <= round(undiscounted + Fraction(1, 2))
    paying = sub.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)
    if not paying or sub.price.usage_type is UsageType.METERED:
        assert value.amount == 0
    elif sub.discount is None:
        assert abs(value.amount - undiscounted) <= Fraction(1, 2)


@given(snapshots, snapshots, customer_sets)
def test_gross_revenue_churn_is_between_zero_and_one(
    start: dict[str, int], end: dict[str, int], previously_active: frozenset[str]
) -> None:
    moved = mrr_movements(start, end, currency="USD", previously_active=previously_active)
    rate = gross_revenue_churn_rate(moved)
    if moved.start.amount == 0:
        assert rate is None
    else:
        assert rate is not None
        assert Decimal(0) <= rate <= Decimal(1)
        assert rate.as_tuple().exponent == -RATE_PLACES


@given(snapshots, snapshots)
def test_nrr_is_one_minus_net_revenue_churn_without_reactivation(
    start: dict[str, int], end: dict[str, int]
) -> None:
    moved = mrr_movements(start, end, currency="USD")
    nrr = net_revenue_retention(moved)
    net = net_revenue_churn_rate(moved)
    if moved.start.amount == 0:
        assert nrr is None
        assert net is None
    else:
        # Exact even after rounding: half-to-even commutes with 1 − x at fixed places.
        assert nrr == 1 - as_fraction(net)
        assert nrr >= 0


@given(snapshots, snapshots, customer_sets)
def test_nrr_plus_net_churn_is_one_minus_the_reactivation_rate(
    start: dict[str, int], end: dict[str, int], previously_active: frozenset[str]
) -> None:
    moved = mrr_movements(start, end, currency="USD", previously_active=previously_active)
    if moved.start.amount:
        reactivated = Fraction(moved.reactivation.amount, moved.start.amount)
        gap = as_fraction(net_revenue_retention(moved)) + as_fraction(net_revenue_churn_rate(moved))
        # Two roundings of half a quantum each separate the rounded rates from the exact ones.
        assert abs(gap - (1 - reactivated)) <= Fraction(1, 10**RATE_PLACES)


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**6))
def test_arpa_times_customers_is_mrr_within_rounding(amount: int, customers: int) -> None:
    average = arpa(Money(amount, "USD"), customers)
    assert average is not None
    assert abs(average.amount * customers - amount) * 2 <= customers


@given(st.lists(subscriptions("USD"), max_size=5), st.lists(subscriptions("USD"), max_size=5))
def test_a_reports_movements_run_from_start_mrr_to_end_mrr(
    start: list[Subscription], end: list[Subscription]
) -> None:
    report = metrics_report(
        period=PERIOD, currency="USD", start_subscriptions=start, end_subscriptions=end
    )
    assert report.movements.start == mrr(start, "USD")
    assert report.mrr == mrr(end, "USD")
    assert report.arr == report.mrr * 12
