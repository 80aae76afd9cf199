"""Dunning: a declined renewal goes past due, is retried on schedule, recovers or ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from lumenquest_adapters.memory import GatewayOutcome
from lumenquest_core import (
    ChargeStatus,
    DunningPolicy,
    FinalAction,
    InvoiceStatus,
    PaymentDeclined,
    PaymentStatus,
    SubscriptionStatus,
)
from tests.service.scenario import Shop, at, usd

DECLINE = GatewayOutcome.decline("insufficient_funds")
# A failure on Feb 1 is retried 3, 5 and 7 days after each failure: Feb 4, Feb 9, Feb 16.
RETRIES = (at(2, 4), at(2, 9), at(2, 16))


def declined_renewal(**options: Any) -> tuple[Shop, str]:
    """Return a shop whose Feb 1 renewal was declined."""
    shop = Shop(**options)
    sub = shop.subscribe()
    shop.billing.gateway.queue(DECLINE)
    shop.go(at(2, 1))
    return shop, sub.id


def test_a_declined_renewal_goes_past_due_with_a_retry_in_three_days() -> None:
    shop, sub_id = declined_renewal()
    sub = shop.sub(sub_id)
    assert sub.status is SubscriptionStatus.PAST_DUE
    assert sub.failed_payments == 1
    assert sub.next_payment_retry_at == at(2, 4)
    renewal = shop.invoices(sub_id)[-1]
    assert renewal.status is InvoiceStatus.OPEN
    [payment] = shop.billing.list_payments(invoice_id=renewal.id)
    assert payment.status is PaymentStatus.FAILED
    assert payment.failure_code == "insufficient_funds"


def test_the_payment_failed_email_carries_the_next_retry_date() -> None:
    shop, _ = declined_renewal()
    [email] = shop.emails("payment_failed")
    assert email["next_retry_at"] == at(2, 4).isoformat()
    assert email["name"] == "Ada Lovelace"


def test_retries_follow_the_schedule_of_3_5_and_7_days() -> None:
    shop, sub_id = declined_renewal()
    shop.billing.gateway.queue(DECLINE, DECLINE)
    shop.go(RETRIES[0])
    assert shop.sub(sub_id).next_payment_retry_at == RETRIES[1]
    shop.go(RETRIES[1])
    assert shop.sub(sub_id).next_payment_retry_at == RETRIES[2]
    assert [e["next_retry_at"] for e in shop.emails("payment_failed")] == [
        r.isoformat() for r in RETRIES
    ]
    attempts = [c for c in shop.billing.gateway.charges if c.status is ChargeStatus.DECLINED]
    renewal = shop.invoices(sub_id)[-1]
    assert [c.idempotency_key for c in attempts] == [f"{renewal.id}:{n}" for n in (1, 2, 3)]


def test_no_retry_happens_before_its_date() -> None:
    shop, sub_id = declined_renewal()
    calls = shop.billing.gateway.calls
    shop.go(at(2, 3, 23))
    assert shop.billing.gateway.calls == calls
    assert shop.sub(sub_id).status is SubscriptionStatus.PAST_DUE


def test_a_successful_retry_recovers_the_subscription() -> None:
    shop, sub_id = declined_renewal()
    summary = shop.go(RETRIES[0])
    assert summary.payment_retries == 1
    assert summary.payments_succeeded == 1
    sub = shop.sub(sub_id)
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sub.failed_payments == 0
    assert sub.next_payment_retry_at is None
    assert shop.invoices(sub_id)[-1].status is InvoiceStatus.PAID
    assert shop.billing.gateway.succeeded_charges()[-1].amount == usd(1000)
    shop.go(at(3, 1))
    assert shop.invoices(sub_id)[-1].status is InvoiceStatus.PAID
    assert len(shop.invoices(sub_id)) == 3


def test_after_the_last_retry_fails_the_subscription_is_canceled_by_default() -> None:
    shop, sub_id = declined_renewal()
    shop.billing.gateway.queue(DECLINE, DECLINE, DECLINE)
    for retry in RETRIES[:2]:
        shop.go(retry)
        assert shop.sub(sub_id).status is SubscriptionStatus.PAST_DUE
    shop.go(RETRIES[2])
    sub = shop.sub(sub_id)
    assert sub.status is SubscriptionStatus.CANCELED
    assert sub.ended_at == RETRIES[2]
    assert sub.next_payment_retry_at is None
    assert shop.emails("subscription_canceled")
    assert shop.emails("payment_failed")[-1]["next_retry_at"] is None
    calls = shop.billing.gateway.calls
    shop.go(at(3, 1))
    assert shop.billing.gateway.calls == calls
    assert len(shop.invoices(sub_id)) == 2


def test_the_unpaid_final_action_keeps_the_subscription_unpaid_and_stops_retrying() -> None:
    shop, sub_id = declined_renewal(dunning=DunningPolicy(final_action=FinalAction.UNPAID))
    shop.billing.gateway.queue(DECLINE, DECLINE, DECLINE)
    for retry in RETRIES:
        shop.go(retry)
    sub = shop.sub(sub_id)
    assert sub.status is SubscriptionStatus.UNPAID
    assert sub.next_payment_retry_at is None
    assert shop.invoices(sub_id)[-1].status is InvoiceStatus.OPEN
    calls = shop.billing.gateway.calls
    shop.go(at(3, 1))
    assert shop.billing.gateway.calls == calls
    assert len(shop.invoices(sub_id)) == 2


def test_paying_the_open_invoice_of_an_unpaid_subscription_reactivates_it() -> None:
    shop, sub_id = declined_renewal(dunning=DunningPolicy(retry_delays=(), final_action="unpaid"))
    assert shop.sub(sub_id).status is SubscriptionStatus.UNPAID
    open_invoice = shop.invoices(sub_id)[-1]
    assert shop.billing.pay_invoice(open_invoice.id).status is InvoiceStatus.PAID
    assert shop.sub(sub_id).status is SubscriptionStatus.ACTIVE


def test_a_custom_schedule_sets_the_retry_dates() -> None:
    shop, sub_id = declined_renewal(dunning=DunningPolicy(retry_delays=(timedelta(days=1),)))
    assert shop.sub(sub_id).next_payment_retry_at == at(2, 2)
    shop.billing.gateway.queue(DECLINE)
    shop.go(at(2, 2))
    assert shop.sub(sub_id).status is SubscriptionStatus.CANCELED


def test_a_declined_first_payment_leaves_the_subscription_incomplete_then_expired() -> None:
    shop = Shop()
    shop.billing.gateway.queue(DECLINE)
    sub = shop.subscribe()
    assert sub.status is SubscriptionStatus.INCOMPLETE
    shop.go(at(1, 1, 23))
    assert shop.sub(sub.id).status is SubscriptionStatus.INCOMPLETE_EXPIRED
    assert shop.invoices(sub.id)[0].status is InvoiceStatus.VOID


def test_pay_invoice_raises_payment_declined_on_a_decline() -> None:
    shop = Shop()
    shop.billing.gateway.queue(DECLINE)
    sub = shop.subscribe()
    shop.billing.gateway.queue(GatewayOutcome.decline("expired_card"))
    with pytest.raises(PaymentDeclined) as declined:
        shop.billing.pay_invoice(shop.invoices(sub.id)[0].id)
    assert declined.value.decline_code == "expired_card"
    assert shop.sub(sub.id).status is SubscriptionStatus.INCOMPLETE
