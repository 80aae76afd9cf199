"""GDPR: export everything about a customer as JSON; erase the person, keep the books."""

from __future__ import annotations

import json

from lumenquest_core import InvoiceStatus, SubscriptionStatus
from tests.service.scenario import Shop, at, usd


def busy_customer() -> Shop:
    """Return a shop where Ada has subscribed, renewed, been refunded and used a meter."""
    shop = Shop()
    sub = shop.subscribe()
    metered = shop.billing.create_price(
        plan_id=shop.plan.id, unit_amount=usd(5), usage_type="metered"
    )
    meter = shop.subscribe(metered)
    shop.clock.set(at(1, 20))
    shop.billing.record_usage(meter.id, quantity=3)
    shop.go(at(2, 1))
    [payment, *_] = shop.billing.list_payments(customer_id=shop.ada.id)
    shop.billing.refund(payment.id, amount=usd(100))
    shop.billing.issue_credit_note(shop.invoices(sub.id)[-1].id, amount=usd(50), outcome="refund")
    shop.customer("grace@example.com", "Grace Hopper")
    return shop


def test_export_customer_is_json_serialisable_and_holds_everything_about_the_customer() -> None:
    shop = busy_customer()
    exported = shop.billing.export_customer(shop.ada.id)
    text = json.dumps(exported)
    assert json.loads(text) == exported
    assert exported["customer"]["email"] == "ada@example.com"
    assert exported["customer"]["name"] == "Ada Lovelace"
    assert len(exported["subscriptions"]) == 2
    assert len(exported["invoices"]) == len(shop.invoices())
    assert len(exported["payments"]) == len(shop.billing.list_payments(customer_id=shop.ada.id))
    assert len(exported["refunds"]) == 2
    assert len(exported["credit_notes"]) == 1
    assert [u["quantity"] for u in exported["usage"]] == [3]
    assert {e["template"] for e in exported["emails"]} >= {"welcome", "invoice_paid"}
    assert exported["audit_log"]
    assert exported["analytics_events"]
    assert exported["subscription_changes"]
    assert exported["exported_at"] == at(2, 1).isoformat()


def test_export_customer_holds_nothing_about_other_customers() -> None:
    shop = busy_customer()
    text = json.dumps(shop.billing.export_customer(shop.ada.id))
    assert "grace@example.com" not in text
    assert "Grace Hopper" not in text


def test_erase_customer_removes_the_email_and_name_everywhere() -> None:
    shop = busy_customer()
    erased = shop.billing.erase_customer(shop.ada.id)
    assert erased.name == ""
    assert "ada@example.com" not in erased.email
    assert erased.erased_at == at(2, 1)
    assert shop.billing.find_customer_by_email("ada@example.com") is None
    exported = shop.billing.export_customer(shop.ada.id)
    text = json.dumps(exported)
    assert "ada@example.com" not in text
    assert "Ada Lovelace" not in text
    assert exported["emails"]
    assert all(e["to"] == erased.email for e in exported["emails"])


def test_erase_customer_cancels_subscriptions_and_keeps_invoices() -> None:
    shop = busy_customer()
    invoices = shop.invoices()
    shop.billing.erase_customer(shop.ada.id)
    subs = shop.billing.list_subscriptions(customer_id=shop.ada.id)
    assert {s.status for s in subs} == {SubscriptionStatus.CANCELED}
    assert [i.id for i in shop.invoices()] == [i.id for i in invoices]
    assert all(i.status is InvoiceStatus.PAID for i in shop.invoices())
    calls = shop.billing.gateway.calls
    shop.go(at(3, 1))
    assert shop.billing.gateway.calls == calls
    assert len(shop.invoices()) == len(invoices)


def test_an_erased_customer_gets_no_more_email_and_the_address_is_free_again() -> None:
    shop = busy_customer()
    sent = len(shop.billing.email.sent)
    shop.billing.erase_customer(shop.ada.id)
    assert len(shop.billing.email.sent) == sent  # not even the cancellation email
    again = shop.billing.create_customer(email="ada@example.com", name="Ada")
    assert again.id != shop.ada.id


def test_erasing_twice_with_the_same_key_erases_once() -> None:
    shop = busy_customer()
    first = shop.billing.erase_customer(shop.ada.id, idempotency_key="gdpr-1")
    audit = len(shop.billing.audit_log(customer_id=shop.ada.id))
    assert shop.billing.erase_customer(shop.ada.id, idempotency_key="gdpr-1") == first
    assert len(shop.billing.audit_log(customer_id=shop.ada.id)) == audit
