"""Lifecycle scenarios: renewals, trials, upgrades, downgrades, cancellation, pause, usage."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lumenquest_core import (
    BillingReason,
    ChangeTiming,
    CouponDuration,
    InvoiceStatus,
    LineKind,
    Money,
    SubscriptionStatus,
    UsageType,
)
from tests.service.scenario import Shop, amounts, at, periods, usd

ACTIVE = SubscriptionStatus.ACTIVE
HALF_WAY_THROUGH_JANUARY = at(1, 16, 12)  # 15.5 of January's 31 days


# -- renewals -------------------------------------------------------------------------


def test_a_jan_31_monthly_subscription_renews_on_the_last_day_of_shorter_months() -> None:
    shop = Shop(now=at(1, 31))
    sub = shop.subscribe()
    for renewal in (at(2, 28), at(3, 31), at(4, 30)):
        shop.go(renewal)
    invoices = shop.invoices(sub.id)
    assert periods(invoices) == [
        (at(1, 31), at(2, 28)),
        (at(2, 28), at(3, 31)),
        (at(3, 31), at(4, 30)),
        (at(4, 30), at(5, 31)),
    ]
    assert [i.total for i in invoices] == [usd(1000)] * 4
    assert all(i.status is InvoiceStatus.PAID for i in invoices)
    charges = shop.billing.gateway.charges
    assert [c.idempotency_key for c in charges] == [f"{i.id}:1" for i in invoices]
    assert [c.amount for c in charges] == [usd(1000)] * 4


def test_a_late_billing_run_bills_every_missed_period_once() -> None:
    """A run three months late catches up period by period, with the same anchored dates."""
    shop = Shop(now=at(1, 31))
    sub = shop.subscribe()
    summary = shop.go(at(4, 30))
    assert summary.renewals == 3
    assert periods(shop.invoices(sub.id))[1:] == [
        (at(2, 28), at(3, 31)),
        (at(3, 31), at(4, 30)),
        (at(4, 30), at(5, 31)),
    ]
    assert len(shop.billing.gateway.charges) == 4


def test_a_renewal_is_not_billed_a_second_before_the_period_ends() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.go(at(2, 1) - timedelta(seconds=1))
    assert len(shop.invoices(sub.id)) == 1
    shop.go(at(2, 1))
    assert len(shop.invoices(sub.id)) == 2


def test_the_first_payment_activates_an_incomplete_subscription() -> None:
    shop = Shop()
    sub = shop.subscribe()
    assert sub.status is ACTIVE
    [invoice] = shop.invoices(sub.id)
    assert invoice.billing_reason is BillingReason.SUBSCRIPTION_CREATE
    assert invoice.status is InvoiceStatus.PAID


# -- trials ---------------------------------------------------------------------------


def test_a_trial_converts_and_bills_at_trial_end() -> None:
    shop = Shop()
    sub = shop.subscribe(trial_days=14)
    assert sub.status is SubscriptionStatus.TRIALING
    assert shop.invoices(sub.id) == []
    assert shop.billing.gateway.charges == []
    shop.go(at(1, 15) - timedelta(seconds=1))
    assert shop.sub(sub.id).status is SubscriptionStatus.TRIALING
    assert shop.invoices(sub.id) == []
    shop.go(at(1, 15))
    assert shop.sub(sub.id).status is ACTIVE
    [invoice] = shop.invoices(sub.id)
    assert periods([invoice]) == [(at(1, 15), at(2, 15))]
    assert invoice.status is InvoiceStatus.PAID
    assert [c.amount for c in shop.billing.gateway.charges] == [usd(1000)]
    shop.go(at(2, 15))
    assert periods(shop.invoices(sub.id))[1] == (at(2, 15), at(3, 15))


def test_the_trial_ending_email_goes_out_three_days_before_the_trial_ends() -> None:
    shop = Shop()
    shop.subscribe(trial_days=14)
    shop.go(at(1, 12) - timedelta(seconds=1))
    assert shop.emails("trial_ending") == []
    shop.go(at(1, 12))
    [email] = shop.emails("trial_ending")
    assert email["trial_end"] == at(1, 15).isoformat()
    shop.go(at(1, 13))
    assert len(shop.emails("trial_ending")) == 1


def test_a_trial_from_the_price_uses_its_trial_days() -> None:
    shop = Shop()
    trial_price = shop.price(1500, trial_days=7)
    sub = shop.subscribe(trial_price)
    assert sub.trial_end == at(1, 8)
    shop.go(at(1, 8))
    assert [i.total for i in shop.invoices(sub.id)] == [usd(1500)]


def test_a_trial_set_to_cancel_ends_without_an_invoice() -> None:
    shop = Shop()
    sub = shop.subscribe(trial_days=14)
    shop.billing.cancel(sub.id, at_period_end=True)
    shop.go(at(1, 15))
    assert shop.sub(sub.id).status is SubscriptionStatus.CANCELED
    assert shop.invoices(sub.id) == []
    assert shop.billing.gateway.charges == []


# -- upgrades and downgrades -----------------------------------------------------------


def test_an_upgrade_half_way_with_always_invoice_charges_the_stripe_amounts_now() -> None:
    """$10 → $20 exactly half-way: −$5.00 unused time and +$10.00 remaining time, invoiced now."""
    shop = Shop()
    sub = shop.subscribe(shop.basic)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    changed = shop.billing.change_subscription(
        sub.id, price_id=shop.pro.id, proration_behavior="always_invoice"
    )
    assert changed.price.id == shop.pro.id
    assert changed.current_period.end == at(2, 1)
    proration = shop.invoices(sub.id)[-1]
    assert proration.billing_reason is BillingReason.SUBSCRIPTION_UPDATE
    assert amounts(proration) == [-500, 1000]
    assert all(line.kind is LineKind.PRORATION for line in proration.lines)
    assert all(line.period is not None for line in proration.lines)
    assert {line.period.start for line in proration.lines if line.period} == {
        HALF_WAY_THROUGH_JANUARY
    }
    assert proration.total == usd(500)
    assert proration.status is InvoiceStatus.PAID
    assert [c.amount for c in shop.billing.gateway.charges] == [usd(1000), usd(500)]
    shop.go(at(2, 1))
    assert amounts(shop.invoices(sub.id)[-1]) == [2000]


def test_an_upgrade_with_create_prorations_waits_for_the_next_renewal_invoice() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.basic)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    shop.billing.change_subscription(
        sub.id, price_id=shop.pro.id, proration_behavior="create_prorations"
    )
    assert len(shop.invoices(sub.id)) == 1
    assert len(shop.billing.gateway.charges) == 1
    assert shop.sub(sub.id).price.id == shop.pro.id
    shop.go(at(2, 1))
    renewal = shop.invoices(sub.id)[-1]
    assert renewal.billing_reason is BillingReason.SUBSCRIPTION_CYCLE
    assert sorted(amounts(renewal, LineKind.PRORATION)) == [-500, 1000]
    assert amounts(renewal, LineKind.SUBSCRIPTION) == [2000]
    assert renewal.total == usd(2500)
    assert shop.billing.gateway.charges[-1].amount == usd(2500)


def test_an_upgrade_without_proration_changes_the_price_and_bills_nothing_now() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.basic)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    shop.billing.change_subscription(sub.id, price_id=shop.pro.id, proration_behavior="none")
    shop.go(at(2, 1))
    assert [amounts(i) for i in shop.invoices(sub.id)] == [[1000], [2000]]


def test_a_quantity_upgrade_is_prorated_per_seat() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.basic, quantity=2)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    shop.billing.change_subscription(sub.id, quantity=4, proration_behavior="always_invoice")
    assert amounts(shop.invoices(sub.id)[-1]) == [-1000, 2000]
    shop.go(at(2, 1))
    assert amounts(shop.invoices(sub.id)[-1]) == [4000]


def test_the_preview_shows_the_upgrade_invoice_and_writes_nothing() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.basic)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    outbox = len(shop.billing.list_outbox())
    preview = shop.billing.preview_change(sub.id, price_id=shop.pro.id)
    assert amounts(preview) == [-500, 1000, 2000]
    assert preview.total == usd(2500)
    assert shop.sub(sub.id).price.id == shop.basic.id
    assert len(shop.invoices(sub.id)) == 1
    assert len(shop.billing.list_outbox()) == outbox


def test_a_downgrade_waits_for_period_end() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.pro)
    shop.clock.set(at(1, 10))
    scheduled = shop.billing.change_subscription(sub.id, price_id=shop.basic.id)
    assert scheduled.price.id == shop.pro.id
    assert scheduled.scheduled_change is not None
    assert scheduled.scheduled_change.price.id == shop.basic.id
    assert scheduled.scheduled_change.effective_at == at(2, 1)
    assert len(shop.invoices(sub.id)) == 1
    shop.go(at(1, 31))
    assert shop.sub(sub.id).price.id == shop.pro.id


def test_a_scheduled_downgrade_applies_at_renewal() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.pro)
    shop.clock.set(at(1, 10))
    shop.billing.change_subscription(sub.id, price_id=shop.basic.id)
    shop.go(at(2, 1))
    renewed = shop.sub(sub.id)
    assert renewed.price.id == shop.basic.id
    assert renewed.scheduled_change is None
    renewal = shop.invoices(sub.id)[-1]
    assert amounts(renewal) == [1000]
    assert periods([renewal]) == [(at(2, 1), at(3, 1))]
    assert [c.amount for c in shop.billing.gateway.charges] == [usd(2000), usd(1000)]


def test_an_immediate_downgrade_credits_the_unused_time_to_the_next_invoice() -> None:
    """A host may force the timing: the −$10.00/+$5.00 lines wait for the renewal."""
    shop = Shop()
    sub = shop.subscribe(shop.pro)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    shop.billing.change_subscription(sub.id, price_id=shop.basic.id, timing=ChangeTiming.IMMEDIATE)
    assert shop.sub(sub.id).price.id == shop.basic.id
    shop.go(at(2, 1))
    renewal = shop.invoices(sub.id)[-1]
    assert sorted(amounts(renewal)) == [-1000, 500, 1000]
    assert renewal.total == usd(500)


def test_a_host_policy_can_make_every_change_immediate() -> None:
    shop = Shop(change_timing=lambda *_: ChangeTiming.IMMEDIATE)
    sub = shop.subscribe(shop.pro)
    shop.clock.set(at(1, 10))
    assert shop.billing.change_subscription(sub.id, price_id=shop.basic.id).price == shop.basic


# -- cancellation ---------------------------------------------------------------------


def test_cancel_at_period_end_stops_renewal() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    pending = shop.billing.cancel(sub.id, at_period_end=True)
    assert pending.status is ACTIVE
    assert pending.cancel_at_period_end
    shop.go(at(2, 1))
    ended = shop.sub(sub.id)
    assert ended.status is SubscriptionStatus.CANCELED
    assert ended.ended_at == at(2, 1)
    assert len(shop.invoices(sub.id)) == 1
    assert len(shop.billing.gateway.charges) == 1
    assert shop.emails("subscription_canceled")
    shop.go(at(3, 1))
    assert len(shop.invoices(sub.id)) == 1


def test_reactivate_undoes_a_cancel_at_period_end_and_renewal_resumes() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    shop.billing.cancel(sub.id, at_period_end=True)
    shop.clock.set(at(1, 20))
    kept = shop.billing.reactivate(sub.id)
    assert not kept.cancel_at_period_end
    assert kept.canceled_at is None
    shop.go(at(2, 1))
    assert shop.sub(sub.id).status is ACTIVE
    assert periods(shop.invoices(sub.id))[-1] == (at(2, 1), at(3, 1))


def test_cancel_now_with_prorate_credits_unused_time_to_the_customer_balance() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    canceled = shop.billing.cancel(sub.id, prorate=True)
    assert canceled.status is SubscriptionStatus.CANCELED
    assert canceled.ended_at == HALF_WAY_THROUGH_JANUARY
    credit_invoice = shop.invoices(sub.id)[-1]
    assert amounts(credit_invoice) == [-500]
    assert credit_invoice.credit_generated == usd(500)
    assert shop.balance() == usd(500)
    assert len(shop.billing.gateway.charges) == 1  # a credit is never charged


def test_the_next_invoice_uses_the_credit_from_a_prorated_cancel() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    shop.billing.cancel(sub.id, prorate=True)
    again = shop.subscribe(shop.pro)
    [invoice] = shop.invoices(again.id)
    assert invoice.total == usd(2000)
    assert invoice.credit_applied == usd(500)
    assert invoice.amount_due == usd(1500)
    assert shop.billing.gateway.charges[-1].amount == usd(1500)
    assert shop.balance() == usd(0)


def test_cancel_now_without_prorate_credits_nothing() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    shop.billing.cancel(sub.id)
    assert len(shop.invoices(sub.id)) == 1
    assert shop.balance() == usd(0)
    shop.go(at(2, 1))
    assert len(shop.invoices(sub.id)) == 1


# -- pause and resume -------------------------------------------------------------------


def test_pause_skips_invoices_until_resumed() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    assert shop.billing.pause(sub.id).status is SubscriptionStatus.PAUSED
    shop.go(at(2, 1))
    shop.go(at(3, 1))
    assert len(shop.invoices(sub.id)) == 1
    assert shop.sub(sub.id).status is SubscriptionStatus.PAUSED


def test_resume_after_the_paid_period_bills_a_new_period_from_the_resume() -> None:
    """No invoice covers the paused time [Feb 1, Mar 15)."""
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    shop.billing.pause(sub.id)
    shop.go(at(3, 15))
    resumed = shop.billing.resume(sub.id)
    assert resumed.status is ACTIVE
    assert (resumed.current_period.start, resumed.current_period.end) == (at(3, 15), at(4, 15))
    assert periods(shop.invoices(sub.id)) == [(at(1, 1), at(2, 1)), (at(3, 15), at(4, 15))]
    shop.go(at(4, 15))
    assert periods(shop.invoices(sub.id))[-1] == (at(4, 15), at(5, 15))


def test_resume_within_the_paid_period_bills_nothing() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    shop.billing.pause(sub.id)
    shop.clock.set(at(1, 20))
    resumed = shop.billing.resume(sub.id)
    assert resumed.status is ACTIVE
    assert resumed.current_period.end == at(2, 1)
    assert len(shop.invoices(sub.id)) == 1
    shop.go(at(2, 1))
    assert periods(shop.invoices(sub.id))[-1] == (at(2, 1), at(3, 1))


def test_a_pause_with_resumes_at_resumes_automatically_in_run_due() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    shop.billing.pause(sub.id, resumes_at=at(3, 1))
    shop.go(at(2, 1))
    assert shop.sub(sub.id).status is SubscriptionStatus.PAUSED
    assert len(shop.invoices(sub.id)) == 1
    summary = shop.go(at(3, 1))
    assert summary.resumed == 1
    assert shop.sub(sub.id).status is ACTIVE
    assert periods(shop.invoices(sub.id)) == [(at(1, 1), at(2, 1)), (at(3, 1), at(4, 1))]


# -- usage and coupons ------------------------------------------------------------------


def test_usage_is_billed_in_arrears_on_the_renewal_invoice() -> None:
    shop = Shop()
    api_calls = shop.billing.create_price(
        plan_id=shop.plan.id, unit_amount=usd(5), usage_type=UsageType.METERED, nickname="API"
    )
    sub = shop.subscribe(api_calls)
    assert sub.status is ACTIVE  # nothing is due in advance
    assert shop.invoices(sub.id) == []
    shop.clock.set(at(1, 5))
    shop.billing.record_usage(sub.id, quantity=10)
    shop.clock.set(at(1, 20))
    shop.billing.record_usage(sub.id, quantity=15)
    shop.clock.set(at(2, 3))
    shop.billing.record_usage(sub.id, quantity=7, at=at(1, 31))  # late report, January usage
    shop.go(at(2, 3))
    [invoice] = shop.invoices(sub.id)
    [line] = invoice.lines
    assert line.kind is LineKind.USAGE
    assert line.quantity == 32
    assert line.amount == usd(160)
    assert line.period is not None
    assert (line.period.start, line.period.end) == (at(1, 1), at(2, 1))
    shop.billing.record_usage(sub.id, quantity=4)
    shop.go(at(3, 1))
    assert [(i.lines[0].quantity, i.total) for i in shop.invoices(sub.id)] == [
        (32, usd(160)),
        (4, usd(20)),
    ]


def test_usage_recorded_up_to_a_cancellation_is_billed_on_the_final_invoice() -> None:
    shop = Shop()
    api_calls = shop.billing.create_price(
        plan_id=shop.plan.id, unit_amount=usd(5), usage_type=UsageType.METERED
    )
    sub = shop.subscribe(api_calls)
    shop.clock.set(at(1, 5))
    shop.billing.record_usage(sub.id, quantity=4)
    shop.clock.set(at(1, 10))
    shop.billing.record_usage(sub.id, quantity=6)  # at the very instant of the cancel
    shop.billing.cancel(sub.id)
    [invoice] = shop.invoices(sub.id)
    [line] = invoice.lines
    assert (line.kind, line.quantity, line.amount) == (LineKind.USAGE, 10, usd(50))
    assert line.period is not None
    assert (line.period.start, line.period.end) == (at(1, 1), at(1, 10))


def test_usage_of_a_subscription_canceled_at_period_end_is_billed_at_the_end() -> None:
    shop = Shop()
    api_calls = shop.billing.create_price(
        plan_id=shop.plan.id, unit_amount=usd(5), usage_type=UsageType.METERED
    )
    sub = shop.subscribe(api_calls)
    shop.clock.set(at(1, 10))
    shop.billing.record_usage(sub.id, quantity=10)
    shop.billing.cancel(sub.id, at_period_end=True)
    shop.go(at(2, 1))
    assert shop.sub(sub.id).status is SubscriptionStatus.CANCELED
    assert [i.total for i in shop.invoices(sub.id)] == [usd(50)]


def test_a_future_anchor_prorates_the_first_period() -> None:
    """Jan 10 → Feb 1 is 22 of January's 31 days: $7.10 of $10.00."""
    shop = Shop(now=at(1, 10))
    sub = shop.subscribe(anchor=at(2, 1))
    shop.go(at(2, 1))
    invoices = shop.invoices(sub.id)
    assert [i.total for i in invoices] == [usd(710), usd(1000)]
    assert periods(invoices[1:]) == [(at(2, 1), at(3, 1))]


def test_a_coupon_repeating_three_cycles_applies_exactly_three_times() -> None:
    shop = Shop()
    coupon = shop.billing.create_coupon(
        percent_off=50, duration=CouponDuration.REPEATING, duration_in_cycles=3
    )
    sub = shop.subscribe(coupon_id=coupon.id)
    for month in (2, 3, 4, 5):
        shop.go(at(month, 1))
    invoices = shop.invoices(sub.id)
    assert [i.discount.amount for i in invoices] == [500, 500, 500, 0, 0]
    assert [i.total.amount for i in invoices] == [500, 500, 500, 1000, 1000]
    assert [c.amount.amount for c in shop.billing.gateway.charges] == [500, 500, 500, 1000, 1000]
    assert shop.sub(sub.id).discount is None


def test_an_amount_off_coupon_once_discounts_only_the_first_invoice() -> None:
    shop = Shop()
    coupon = shop.billing.create_coupon(amount_off=usd(300), duration="once")
    sub = shop.subscribe(coupon_id=coupon.id)
    shop.go(at(2, 1))
    assert [i.total for i in shop.invoices(sub.id)] == [usd(700), usd(1000)]


@pytest.mark.parametrize("currency", ["EUR", "JPY"])
def test_a_subscription_bills_in_its_price_currency(currency: str) -> None:
    shop = Shop()
    price = shop.price(1000, currency=currency)
    customer = shop.customer(f"{currency.lower()}@example.com")
    sub = shop.subscribe(price, customer_id=customer)
    [invoice] = shop.invoices(sub.id)
    assert invoice.total == Money(1000, currency)
    assert shop.billing.get_customer(customer).currency == currency
