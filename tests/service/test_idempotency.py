"""Idempotency: keys replay the first result; run_due and gateway timeouts never charge twice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lumenquest_adapters.memory import GatewayOutcome
from lumenquest_core import (
    IdempotencyConflict,
    InvoiceStatus,
    PaymentStatus,
    SubscriptionStatus,
    ValidationError,
)
from tests.service.scenario import Shop, at, footprint, row_counts, usd

# -- run_due ----------------------------------------------------------------------------


def test_run_due_twice_at_the_same_instant_invoices_and_charges_nothing_new() -> None:
    shop = Shop()
    for n in range(3):
        shop.subscribe(customer_id=shop.customer(f"c{n}@example.com"))
    first = shop.go(at(2, 1))
    assert first.renewals == 3
    assert first.invoices == 3
    before = footprint(shop.billing)
    second = shop.billing.run_due()
    assert (second.renewals, second.invoices, second.payments_succeeded) == (0, 0, 0)
    assert footprint(shop.billing) == before


def test_run_due_with_a_small_limit_finishes_the_work_over_several_runs() -> None:
    shop = Shop()
    subs = [shop.subscribe(customer_id=shop.customer(f"c{n}@example.com")) for n in range(5)]
    shop.clock.set(at(2, 1))
    assert shop.billing.run_due(limit=2).renewals == 2
    assert shop.billing.run_due(limit=2).renewals == 2
    assert shop.billing.run_due(limit=2).renewals == 1
    assert shop.billing.run_due(limit=2).renewals == 0
    assert all(len(shop.invoices(s.id)) == 2 for s in subs)


def test_a_gateway_timeout_leaves_a_pending_payment_that_a_later_run_settles() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.billing.gateway.queue(GatewayOutcome.timeout())
    summary = shop.go(at(2, 1))
    assert summary.payments_pending == 1
    renewal = shop.invoices(sub.id)[-1]
    [pending] = shop.billing.list_payments(invoice_id=renewal.id)
    assert pending.status is PaymentStatus.PENDING
    assert renewal.status is InvoiceStatus.OPEN
    shop.billing.run_due()  # within the grace period: left alone
    assert shop.billing.list_payments(invoice_id=renewal.id)[0].status is PaymentStatus.PENDING
    shop.go(at(2, 1) + timedelta(minutes=10))
    [settled] = shop.billing.list_payments(invoice_id=renewal.id)
    assert settled.id == pending.id
    assert settled.status is PaymentStatus.SUCCEEDED
    assert shop.billing.get_invoice(renewal.id).status is InvoiceStatus.PAID
    keys = [c.idempotency_key for c in shop.billing.gateway.charges]
    assert keys.count(pending.idempotency_key) == 1
    assert shop.billing.gateway.charged_total() == usd(2000)


def test_a_lost_gateway_response_is_resolved_by_looking_the_charge_up() -> None:
    """The gateway charged but the answer was lost: the run asks what happened, never re-charges."""
    shop = Shop()
    sub = shop.subscribe()
    shop.billing.gateway.queue(GatewayOutcome.unknown())
    shop.go(at(2, 1))
    renewal = shop.invoices(sub.id)[-1]
    [payment] = shop.billing.list_payments(invoice_id=renewal.id)
    assert payment.status is PaymentStatus.PENDING
    calls = shop.billing.gateway.calls
    shop.go(at(2, 1, 1))
    assert shop.billing.gateway.calls == calls  # found by find_charge: no charge call at all
    assert [c.idempotency_key for c in shop.billing.gateway.charges].count(
        payment.idempotency_key
    ) == 1
    assert shop.billing.list_payments(invoice_id=renewal.id)[0].status is PaymentStatus.SUCCEEDED
    assert shop.billing.gateway.charged_total() == usd(2000)


def test_a_timed_out_first_payment_activates_the_subscription_once_settled() -> None:
    shop = Shop()
    shop.billing.gateway.queue(GatewayOutcome.timeout())
    sub = shop.subscribe()
    assert sub.status is SubscriptionStatus.INCOMPLETE
    shop.go(at(1, 1, 1))
    assert shop.sub(sub.id).status is SubscriptionStatus.ACTIVE
    assert len(shop.billing.gateway.charges) == 1


# -- idempotency keys ---------------------------------------------------------------------


def test_subscribe_with_the_same_key_and_arguments_returns_the_first_subscription() -> None:
    shop = Shop()
    first = shop.subscribe(idempotency_key="k1")
    before = footprint(shop.billing)
    again = shop.subscribe(idempotency_key="k1")
    assert again.id == first.id
    assert footprint(shop.billing) == before
    assert len(shop.billing.list_subscriptions(customer_id=shop.ada.id)) == 1
    assert len(shop.billing.gateway.charges) == 1


def test_the_same_key_with_other_arguments_raises_idempotency_conflict() -> None:
    shop = Shop()
    shop.subscribe(shop.basic, idempotency_key="k1")
    before = footprint(shop.billing)
    with pytest.raises(IdempotencyConflict) as conflict:
        shop.subscribe(shop.pro, idempotency_key="k1")
    assert conflict.value.code == "IDEMPOTENCY_CONFLICT"
    with pytest.raises(IdempotencyConflict):
        shop.subscribe(shop.basic, quantity=2, idempotency_key="k1")
    with pytest.raises(IdempotencyConflict):
        shop.billing.cancel(shop.invoices()[0].subscription_id or "", idempotency_key="k1")
    assert footprint(shop.billing) == before


def test_a_repeated_refund_with_its_key_refunds_once() -> None:
    shop = Shop()
    shop.subscribe()
    [payment] = shop.billing.list_payments(customer_id=shop.ada.id)
    first = shop.billing.refund(payment.id, amount=usd(100), idempotency_key="r1")
    again = shop.billing.refund(payment.id, amount=usd(100), idempotency_key="r1")
    assert again == first
    assert len(shop.billing.gateway.refunds) == 1
    with pytest.raises(IdempotencyConflict):
        shop.billing.refund(payment.id, amount=usd(200), idempotency_key="r1")


def test_a_repeated_upgrade_with_its_key_invoices_once() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 16, 12))
    for _ in range(2):
        shop.billing.change_subscription(
            sub.id, price_id=shop.pro.id, proration_behavior="always_invoice", idempotency_key="u1"
        )
    assert len(shop.invoices(sub.id)) == 2
    assert len(shop.billing.gateway.charges) == 2


def test_repeated_create_customer_and_usage_calls_with_keys_write_once() -> None:
    shop = Shop()
    first = shop.billing.create_customer(email="grace@example.com", idempotency_key="c1")
    assert shop.billing.create_customer(email="grace@example.com", idempotency_key="c1") == first
    metered = shop.billing.create_price(
        plan_id=shop.plan.id, unit_amount=usd(1), usage_type="metered"
    )
    sub = shop.subscribe(metered, customer_id=first.id)
    record = shop.billing.record_usage(sub.id, quantity=3, idempotency_key="u1")
    rows = row_counts(shop.billing)
    assert shop.billing.record_usage(sub.id, quantity=3, idempotency_key="u1") == record
    assert row_counts(shop.billing) == rows
    assert [r.quantity for r in shop.billing.list_usage(sub.id)] == [3]


def test_an_empty_idempotency_key_is_refused() -> None:
    shop = Shop()
    with pytest.raises(ValidationError):
        shop.subscribe(idempotency_key="")


def test_a_dunning_retry_never_charges_an_invoice_whose_payment_is_pending() -> None:
    """A pending charge may have gone through: a second attempt under a new key could charge twice."""
    shop = Shop()
    sub = shop.subscribe()
    shop.billing.gateway.queue(GatewayOutcome.timeout())
    shop.go(at(2, 1))  # the renewal's charge is pending
    shop.clock.set(at(2, 1, 1))
    shop.billing.gateway.queue(GatewayOutcome.decline())
    shop.billing.change_subscription(
        sub.id, price_id=shop.pro.id, proration_behavior="always_invoice"
    )  # the upgrade's charge is declined: past due, retried on Feb 4
    assert shop.sub(sub.id).status is SubscriptionStatus.PAST_DUE
    shop.billing.gateway.queue(GatewayOutcome.timeout())
    shop.go(at(2, 4, 1))  # the dunning retry, while the renewal's charge is still pending
    shop.go(at(2, 4, 2))
    succeeded: dict[str, int] = {}
    for charge in shop.billing.gateway.succeeded_charges():
        invoice_id = charge.idempotency_key.split(":")[0]
        succeeded[invoice_id] = succeeded.get(invoice_id, 0) + 1
    assert set(succeeded.values()) == {1}
    assert {i.status for i in shop.invoices(sub.id)} == {InvoiceStatus.PAID}
    assert shop.sub(sub.id).status is SubscriptionStatus.ACTIVE
