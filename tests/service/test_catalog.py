"""The catalog through ``Billing``: plans, prices and coupons, read through a cache that never goes stale."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lumenquest_core import (
    BillingCycle,
    CouponDuration,
    IdempotencyConflict,
    Interval,
    Money,
    PricingScheme,
    SubscriptionStatus,
    Tier,
    UsageType,
    ValidationError,
)
from tests.service.scenario import CountingShop, Shop, at, footprint, usd

# -- plans ------------------------------------------------------------------------------


def test_a_plan_is_read_from_the_cache_after_the_first_read() -> None:
    shop = CountingShop()
    first = shop.billing.get_plan(shop.plan.id)
    opened = shop.opened
    again = shop.billing.get_plan(shop.plan.id)
    assert shop.opened == opened
    assert again == first == shop.plan
    assert again.features == ("reports",)


def test_the_plan_lists_are_read_from_the_cache_after_the_first_read() -> None:
    shop = CountingShop()
    everything = shop.billing.list_plans()
    active = shop.billing.list_plans(active_only=True)
    opened = shop.opened
    assert shop.billing.list_plans() == everything == [shop.plan]
    assert shop.billing.list_plans(active_only=True) == active == [shop.plan]
    assert shop.opened == opened


def test_a_cached_plan_is_read_again_from_the_store_once_it_expires() -> None:
    shop = CountingShop()
    shop.billing.get_plan(shop.plan.id)
    shop.clock.advance(timedelta(seconds=301))
    opened = shop.opened
    shop.billing.get_plan(shop.plan.id)
    assert shop.opened == opened + 1


def test_an_updated_plan_is_seen_by_a_cached_read() -> None:
    shop = Shop()
    shop.billing.get_plan(shop.plan.id)  # now cached
    updated = shop.billing.update_plan(
        shop.plan.id,
        name="Analytics Plus",
        features=["reports", "exports"],
        description="More of it",
        metadata={"tier": "gold"},
    )
    assert updated.name == "Analytics Plus"
    read = shop.billing.get_plan(shop.plan.id)
    assert read == updated
    assert read.grants("exports")
    assert dict(read.metadata) == {"tier": "gold"}


def test_an_update_changes_only_what_it_names() -> None:
    shop = Shop()
    updated = shop.billing.update_plan(shop.plan.id, description="For teams")
    assert (updated.name, updated.features, updated.active) == ("Analytics", ("reports",), True)
    assert updated.description == "For teams"


def test_an_archived_plan_leaves_the_cached_list_of_active_plans() -> None:
    shop = Shop()
    other = shop.billing.create_plan(name="Storage")
    assert [p.id for p in shop.billing.list_plans(active_only=True)] == [shop.plan.id, other.id]
    assert len(shop.billing.list_plans()) == 2  # both lists are now cached
    shop.billing.update_plan(other.id, active=False)
    assert [p.id for p in shop.billing.list_plans(active_only=True)] == [shop.plan.id]
    assert [p.active for p in shop.billing.list_plans()] == [True, False]


def test_a_new_plan_appears_in_a_cached_plan_list() -> None:
    shop = Shop()
    assert len(shop.billing.list_plans()) == 1
    created = shop.billing.create_plan(name="Storage", features=["backups"])
    assert shop.billing.list_plans()[-1] == created


def test_an_archived_plan_takes_no_new_prices_or_subscriptions() -> None:
    shop = Shop()
    shop.billing.update_plan(shop.plan.id, active=False)
    before = footprint(shop.billing)
    with pytest.raises(ValidationError, match="archived"):
        shop.price(3000)
    with pytest.raises(ValidationError, match="archived"):
        shop.subscribe()
    assert footprint(shop.billing) == before


def test_a_plan_update_is_audited_with_the_state_before_and_after() -> None:
    shop = Shop()
    shop.billing.as_actor("admin:1").update_plan(shop.plan.id, name="Analytics Plus")
    [row] = [
        a for a in shop.billing.audit_log(subject_id=shop.plan.id) if a.action == "plan.updated"
    ]
    assert row.actor == "admin:1"
    assert row.before is not None
    assert row.after is not None
    assert (row.before["name"], row.after["name"]) == ("Analytics", "Analytics Plus")


def test_a_repeated_plan_update_with_its_key_returns_the_first_result() -> None:
    shop = Shop()
    first = shop.billing.update_plan(shop.plan.id, name="Plus", idempotency_key="k1")
    shop.billing.update_plan(shop.plan.id, name="Other")
    again = shop.billing.update_plan(shop.plan.id, name="Plus", idempotency_key="k1")
    assert again.id == first.id
    assert again.name == "Other"  # re-read from the store: the key did not write again
    with pytest.raises(IdempotencyConflict):
        shop.billing.update_plan(shop.plan.id, name="Else", idempotency_key="k1")


def test_a_repeated_create_plan_with_its_key_creates_one_plan() -> None:
    shop = Shop()
    first = shop.billing.create_plan(name="Storage", idempotency_key="plan-storage")
    again = shop.billing.create_plan(name="Storage", idempotency_key="plan-storage")
    assert again == first
    assert len(shop.billing.list_plans()) == 2


# -- prices -----------------------------------------------------------------------------


def test_a_price_is_read_from_the_cache_after_the_first_read() -> None:
    shop = CountingShop()
    first = shop.billing.get_price(shop.basic.id)
    opened = shop.opened
    assert shop.billing.get_price(shop.basic.id) == first == shop.basic
    assert shop.opened == opened
    assert shop.billing.list_prices(plan_id=shop.plan.id) == [shop.basic, shop.pro]
    opened = shop.opened
    assert shop.billing.list_prices(plan_id=shop.plan.id) == [shop.basic, shop.pro]
    assert shop.opened == opened


def test_a_tiered_price_comes_back_from_the_cache_unchanged() -> None:
    shop = Shop()
    tiered = shop.billing.create_price(
        plan_id=shop.plan.id,
        scheme=PricingScheme.TIERED_VOLUME,
        tiers=[Tier(10, usd(900)), Tier(None, usd(700), usd(500))],
        cycle=BillingCycle(Interval.YEAR),
        usage_type=UsageType.METERED,
    )
    assert tiered.currency == "USD"  # taken from the tiers
    assert tiered.nickname == "Analytics"  # the plan's name by default
    assert shop.billing.get_price(tiered.id) == tiered
    cached = shop.billing.get_price(tiered.id)
    assert cached == tiered
    assert cached.amount_for(11) == usd(11 * 700 + 500)


def test_an_archived_price_is_seen_archived_by_cached_reads() -> None:
    shop = Shop()
    assert shop.billing.get_price(shop.basic.id).active
    assert len(shop.billing.list_prices(plan_id=shop.plan.id, active_only=True)) == 2
    assert len(shop.billing.list_prices(active_only=True)) == 2
    archived = shop.billing.archive_price(shop.basic.id)
    assert not archived.active
    assert not shop.billing.get_price(shop.basic.id).active
    assert shop.billing.list_prices(plan_id=shop.plan.id, active_only=True) == [shop.pro]
    assert shop.billing.list_prices(active_only=True) == [shop.pro]
    assert [p.active for p in shop.billing.list_prices()] == [False, True]


def test_a_new_price_appears_in_cached_price_lists() -> None:
    shop = Shop()
    assert len(shop.billing.list_prices()) == 2
    assert len(shop.billing.list_prices(plan_id=shop.plan.id)) == 2
    team = shop.price(5000, nickname="Team")
    assert shop.billing.list_prices()[-1] == team
    assert shop.billing.list_prices(plan_id=shop.plan.id)[-1] == team


def test_an_archived_price_keeps_its_subscriptions_but_takes_no_new_ones() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.billing.archive_price(shop.basic.id)
    with pytest.raises(ValidationError, match="archived"):
        shop.subscribe(customer_id=shop.customer("bob@example.com"))
    shop.go(at(2, 1))
    renewed = shop.sub(sub.id)
    assert renewed.status is SubscriptionStatus.ACTIVE
    assert renewed.price.id == shop.basic.id
    assert len(shop.invoices(sub.id)) == 2


def test_archiving_a_price_is_audited_and_repeatable_with_its_key() -> None:
    shop = Shop()
    first = shop.billing.archive_price(shop.basic.id, idempotency_key="archive-basic")
    again = shop.billing.archive_price(shop.basic.id, idempotency_key="archive-basic")
    assert again == first
    rows = [
        a for a in shop.billing.audit_log(subject_id=shop.basic.id) if a.action == "price.archived"
    ]
    assert len(rows) == 1
    assert (rows[0].before, rows[0].after) == ({"active": True}, {"active": False})


def test_a_price_needs_an_amount_tiers_or_a_currency() -> None:
    shop = Shop()
    with pytest.raises(ValidationError, match="unit_amount, tiers or a currency"):
        shop.billing.create_price(plan_id=shop.plan.id)


def test_a_repeated_create_price_with_its_key_creates_one_price() -> None:
    shop = Shop()
    first = shop.price(3000, idempotency_key="price-3000")
    again = shop.price(3000, idempotency_key="price-3000")
    assert again == first
    assert len(shop.billing.list_prices()) == 3
    with pytest.raises(IdempotencyConflict):
        shop.price(3100, idempotency_key="price-3000")


# -- coupons ----------------------------------------------------------------------------


def test_a_repeating_coupon_discounts_the_invoices_it_covers() -> None:
    shop = Shop()
    coupon = shop.billing.create_coupon(
        percent_off="25", duration=CouponDuration.REPEATING, duration_in_cycles=2, name="Launch"
    )
    sub = shop.subscribe(coupon_id=coupon.id)
    shop.go(at(2, 1))
    shop.go(at(3, 1))
    assert [i.discount.amount for i in shop.invoices(sub.id)] == [250, 250, 0]
    [row] = shop.billing.audit_log(subject_id=coupon.id)
    assert row.action == "coupon.created"


def test_a_repeated_create_coupon_with_its_key_creates_one_coupon() -> None:
    shop = Shop()
    first = shop.billing.create_coupon(amount_off=Money(500, "USD"), idempotency_key="c1")
    again = shop.billing.create_coupon(amount_off=Money(500, "USD"), idempotency_key="c1")
    assert again == first
    with pytest.raises(IdempotencyConflict):
        shop.billing.create_coupon(amount_off=Money(600, "USD"), idempotency_key="c1")
