"""Metrics from the subscription history: MRR, movements and trial conversion."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from lumenquest_adapters.memory import GatewayOutcome
from lumenquest_core import BillingCycle, DunningPolicy, Interval, MetricsReport, mrr
from tests.service.scenario import Shop, at, usd

DEC_31 = at(12, 31, year=2025)


def report(shop: Shop, start: datetime, end: datetime) -> MetricsReport:
    return shop.billing.metrics(start=start, end=end)


def test_mrr_is_the_sum_of_normalised_active_prices() -> None:
    shop = Shop()
    yearly = shop.price(12_000, cycle=BillingCycle(Interval.YEAR))
    weekly = shop.price(1200, cycle=BillingCycle(Interval.WEEK))
    daily = shop.price(100, cycle=BillingCycle(Interval.DAY))
    quarterly = shop.price(3000, cycle=BillingCycle(Interval.MONTH, 3))
    shop.subscribe(shop.basic, quantity=3)  # 3 × $10.00
    for n, price in enumerate((yearly, weekly, daily, quarterly)):
        shop.subscribe(price, customer_id=shop.customer(f"c{n}@example.com"))
    trialing = shop.customer("trial@example.com")
    shop.subscribe(shop.pro, customer_id=trialing, trial_days=30)  # counts 0
    paused = shop.customer("paused@example.com")
    shop.billing.pause(shop.subscribe(shop.pro, customer_id=paused).id)  # counts 0
    expected = 3000 + 1000 + 5200 + 3042 + 1000  # weekly × 52/12, daily × 365/12 rounded
    result = report(shop, DEC_31, at(1, 2))
    assert result.mrr == usd(expected)
    assert result.arr == usd(12 * expected)
    assert mrr(shop.billing.list_subscriptions(), "USD") == usd(expected)
    assert result.movements.new == usd(expected)
    assert result.movements.new_customers == 5


def test_mrr_follows_the_history_to_the_end_of_the_range() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    shop.billing.change_subscription(sub.id, price_id=shop.pro.id)
    assert report(shop, DEC_31, at(1, 5)).mrr == usd(1000)
    assert report(shop, DEC_31, at(1, 11)).mrr == usd(2000)


def test_a_new_customer_is_new_mrr() -> None:
    shop = Shop()
    shop.subscribe()
    moves = report(shop, DEC_31, at(1, 2)).movements
    assert (moves.start, moves.new, moves.end) == (usd(0), usd(1000), usd(1000))
    assert moves.new_customers == 1


def test_an_upgrade_is_expansion_and_a_downgrade_at_renewal_is_contraction() -> None:
    shop = Shop()
    up = shop.subscribe(shop.basic)
    down = shop.subscribe(shop.pro, customer_id=shop.customer("grace@example.com"))
    shop.clock.set(at(1, 10))
    shop.billing.change_subscription(up.id, price_id=shop.pro.id)
    shop.billing.change_subscription(down.id, price_id=shop.basic.id)
    january = report(shop, at(1, 2), at(1, 20)).movements
    assert (january.expansion, january.contraction) == (usd(1000), usd(0))
    assert january.expansion_customers == 1
    shop.go(at(2, 1))
    february = report(shop, at(1, 20), at(2, 2)).movements
    assert (february.expansion, february.contraction) == (usd(0), usd(1000))
    assert february.contraction_customers == 1
    assert february.end == february.start - february.contraction


def test_a_cancellation_is_churn() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.subscribe(customer_id=shop.customer("grace@example.com"))
    shop.clock.set(at(1, 10))
    shop.billing.cancel(sub.id)
    result = report(shop, at(1, 2), at(1, 20))
    assert result.movements.churned == usd(1000)
    assert result.movements.churned_customers == 1
    assert result.customer_churn_rate == Decimal("0.5000")
    assert result.mrr == usd(1000)


def test_a_cancel_at_period_end_churns_at_the_period_end() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    shop.billing.cancel(sub.id, at_period_end=True)
    assert report(shop, at(1, 2), at(1, 20)).movements.churned == usd(0)
    shop.go(at(2, 1))
    assert report(shop, at(1, 20), at(2, 2)).movements.churned == usd(1000)


def test_dunning_that_ends_in_cancellation_is_churn() -> None:
    shop = Shop(dunning=DunningPolicy(retry_delays=()))
    shop.subscribe()
    shop.billing.gateway.queue(GatewayOutcome.decline())
    shop.go(at(2, 1))
    assert report(shop, at(1, 20), at(2, 2)).movements.churned == usd(1000)


def test_a_customer_who_returns_is_reactivation_not_new() -> None:
    shop = Shop()
    first = shop.subscribe()
    shop.clock.set(at(1, 10))
    shop.billing.cancel(first.id)
    shop.clock.set(at(2, 10))
    shop.subscribe(shop.pro)
    moves = report(shop, at(1, 20), at(2, 20)).movements
    assert moves.reactivation == usd(2000)
    assert moves.reactivated_customers == 1
    assert moves.new == usd(0)


def test_movements_always_add_up() -> None:
    shop = Shop()
    a = shop.subscribe()
    b = shop.subscribe(shop.pro, customer_id=shop.customer("b@example.com"))
    shop.clock.set(at(1, 10))
    shop.billing.change_subscription(a.id, quantity=3)
    shop.billing.cancel(b.id)
    shop.subscribe(customer_id=shop.customer("c@example.com"))
    m = report(shop, at(1, 5), at(1, 20)).movements
    assert m.end == m.start + m.new + m.expansion + m.reactivation - m.contraction - m.churned
    assert (m.start, m.end) == (usd(3000), usd(4000))
    assert (m.new, m.expansion, m.churned) == (usd(1000), usd(2000), usd(2000))


def test_trial_conversion_counts_trials_that_ended_in_the_range() -> None:
    shop = Shop()
    converts = shop.subscribe(trial_days=14)
    leaves = shop.subscribe(customer_id=shop.customer("grace@example.com"), trial_days=14)
    shop.billing.cancel(leaves.id, at_period_end=True)
    assert report(shop, DEC_31, at(1, 10)).trial_conversion_rate is None
    shop.go(at(1, 15))
    result = report(shop, DEC_31, at(1, 20))
    assert result.trial_conversion_rate == Decimal("0.5000")
    assert result.plan_conversion_rates == {shop.plan.id: Decimal("0.5000")}
    assert result.mrr == usd(1000)
    assert shop.sub(converts.id).price.id == shop.basic.id


def test_a_paused_subscription_leaves_mrr_until_it_resumes() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    shop.billing.pause(sub.id)
    assert report(shop, at(1, 2), at(1, 20)).movements.churned == usd(1000)
    shop.clock.set(at(1, 25))
    shop.billing.resume(sub.id)
    assert report(shop, at(1, 20), at(1, 30)).movements.reactivation == usd(1000)
