"""One-off invoices and what can happen to them, and the history every change leaves behind."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lumenquest_adapters.memory import GatewayOutcome
from lumenquest_core import (
    BillingReason,
    CreditNoteOutcome,
    EventName,
    GatewayUnavailable,
    IdempotencyConflict,
    InvalidTransition,
    InvoiceStatus,
    LineKind,
    Money,
    PaymentDeclined,
    PaymentStatus,
    SubscriptionStatus,
    ValidationError,
)
from lumenquest_core.ports import DeliveryStatus
from tests.service.scenario import Shop, at, footprint, usd

SETUP = [("Onboarding", usd(5000)), ("Training", usd(2500))]
AFTER_THE_GRACE = timedelta(minutes=10)  # past the 5 minutes a pending payment is left alone


def events_of(shop: Shop, subject_id: str) -> list[EventName]:
    return [m.event.name for m in shop.billing.list_outbox() if m.event.subject_id == subject_id]


def with_credit(amount: int) -> Shop:
    """Return a shop where Ada has paid her first invoice and holds ``amount`` of credit."""
    shop = Shop()
    shop.subscribe()
    [invoice] = shop.invoices()
    shop.billing.issue_credit_note(
        invoice.id, amount=usd(amount), outcome=CreditNoteOutcome.CREDIT_BALANCE
    )
    assert shop.balance() == usd(amount)
    return shop


# -- one-off invoices -------------------------------------------------------------------


def test_a_one_off_invoice_is_numbered_charged_and_paid() -> None:
    shop = Shop()
    invoice = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP)
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.billing_reason is BillingReason.MANUAL
    assert invoice.number is not None
    assert invoice.number.startswith("LQ-")
    assert [(line.kind, line.description) for line in invoice.lines] == [
        (LineKind.ONE_OFF, "Onboarding"),
        (LineKind.ONE_OFF, "Training"),
    ]
    assert invoice.total == invoice.amount_paid == usd(7500)
    [payment] = shop.billing.list_payments(invoice_id=invoice.id)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert shop.billing.gateway.charged_total() == usd(7500)
    assert shop.billing.get_customer(shop.ada.id).currency == "USD"  # bound by the invoice
    assert events_of(shop, invoice.id) == [EventName.INVOICE_FINALIZED, EventName.INVOICE_PAID]


def test_a_one_off_invoice_in_another_currency_than_the_customers_is_refused() -> None:
    shop = Shop()
    shop.subscribe()  # Ada now bills in USD
    before = footprint(shop.billing)
    with pytest.raises(ValidationError):
        shop.billing.create_invoice(customer_id=shop.ada.id, items=[("Setup", Money(100, "EUR"))])
    assert footprint(shop.billing) == before


def test_an_invoice_without_items_is_refused_and_writes_nothing() -> None:
    shop = Shop()
    before = footprint(shop.billing)
    with pytest.raises(ValidationError, match="at least one item"):
        shop.billing.create_invoice(customer_id=shop.ada.id, items=[])
    assert footprint(shop.billing) == before


def test_a_repeated_create_invoice_with_its_key_invoices_and_charges_once() -> None:
    shop = Shop()
    first = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP, idempotency_key="k")
    again = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP, idempotency_key="k")
    assert again == first
    assert len(shop.invoices()) == 1
    assert len(shop.billing.gateway.charges) == 1
    with pytest.raises(IdempotencyConflict):
        shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP[:1], idempotency_key="k")


def test_a_declined_one_off_invoice_stays_open_and_says_no_retry_is_planned() -> None:
    shop = Shop()
    shop.billing.gateway.queue(GatewayOutcome.decline("insufficient_funds"))
    invoice = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP)
    assert invoice.status is InvoiceStatus.OPEN
    [payment] = shop.billing.list_payments(invoice_id=invoice.id)
    assert (payment.status, payment.failure_code) == (PaymentStatus.FAILED, "insufficient_funds")
    [failed] = [m.event for m in shop.billing.list_outbox() if m.event.subject_id == payment.id]
    assert failed.name is EventName.PAYMENT_FAILED
    assert failed.data["next_retry_at"] is None
    assert shop.emails("payment_failed")


def test_one_off_invoice_uses_the_customers_credit_first() -> None:
    shop = with_credit(400)
    invoice = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP)
    assert invoice.credit_applied == usd(400)
    assert invoice.amount_paid == usd(7100)
    assert shop.balance() == usd(0)


# -- paying an invoice ------------------------------------------------------------------


def declined_invoice(shop: Shop) -> str:
    shop.billing.gateway.queue(GatewayOutcome.decline())
    return shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP).id


def test_paying_an_open_invoice_charges_it_and_marks_it_paid() -> None:
    shop = Shop()
    invoice_id = declined_invoice(shop)
    paid = shop.billing.pay_invoice(invoice_id)
    assert paid.status is InvoiceStatus.PAID
    assert paid.amount_paid == usd(7500)
    payments = shop.billing.list_payments(invoice_id=invoice_id)
    assert [(p.attempt, p.status) for p in payments] == [
        (1, PaymentStatus.FAILED),
        (2, PaymentStatus.SUCCEEDED),
    ]
    assert payments[0].idempotency_key != payments[1].idempotency_key
    assert shop.billing.gateway.charged_total() == usd(7500)


def test_a_declined_payment_raises_payment_declined_and_leaves_the_invoice_open() -> None:
    shop = Shop()
    invoice_id = declined_invoice(shop)
    shop.billing.gateway.queue(GatewayOutcome.decline("expired_card", "Your card has expired."))
    with pytest.raises(PaymentDeclined) as raised:
        shop.billing.pay_invoice(invoice_id)
    assert raised.value.decline_code == "expired_card"
    assert raised.value.message == "Your card has expired."
    assert raised.value.details["invoice_id"] == invoice_id
    assert shop.billing.get_invoice(invoice_id).status is InvoiceStatus.OPEN
    assert shop.billing.gateway.charged_total() == usd(0)


def test_a_gateway_timeout_raises_gateway_unavailable_and_the_billing_run_settles_it() -> None:
    shop = Shop()
    invoice_id = declined_invoice(shop)
    shop.billing.gateway.queue(GatewayOutcome.timeout())
    with pytest.raises(GatewayUnavailable) as raised:
        shop.billing.pay_invoice(invoice_id)
    assert raised.value.retryable
    assert shop.billing.list_payments(invoice_id=invoice_id)[-1].status is PaymentStatus.PENDING
    assert shop.billing.get_invoice(invoice_id).status is InvoiceStatus.OPEN
    shop.clock.advance(AFTER_THE_GRACE)
    summary = shop.billing.run_due()
    assert summary.payments_succeeded == 1
    assert shop.billing.get_invoice(invoice_id).status is InvoiceStatus.PAID
    assert shop.billing.gateway.charged_total() == usd(7500)


@pytest.mark.parametrize("lost", [GatewayOutcome.timeout(), GatewayOutcome.unknown()])
def test_paying_an_invoice_whose_charge_timed_out_resends_that_charge_never_a_second_one(
    lost: GatewayOutcome,
) -> None:
    """Whether or not the lost charge went through, the customer pays the invoice once."""
    shop = Shop()
    shop.billing.gateway.queue(lost)
    invoice = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP)
    paid = shop.billing.pay_invoice(invoice.id)
    assert paid.status is InvoiceStatus.PAID
    [payment] = shop.billing.list_payments(invoice_id=invoice.id)
    assert payment.status is PaymentStatus.SUCCEEDED
    shop.clock.advance(AFTER_THE_GRACE)
    shop.billing.run_due()
    assert shop.billing.gateway.charged_total() == usd(7500)


def test_a_paid_invoice_cannot_be_paid_again() -> None:
    shop = Shop()
    invoice = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP)
    before = footprint(shop.billing)
    with pytest.raises(InvalidTransition) as raised:
        shop.billing.pay_invoice(invoice.id)
    assert raised.value.details == {"status": "paid", "operation": "pay"}
    assert footprint(shop.billing) == before


def test_a_repeated_pay_invoice_with_its_key_charges_once() -> None:
    shop = Shop()
    invoice_id = declined_invoice(shop)
    first = shop.billing.pay_invoice(invoice_id, idempotency_key="pay-it")
    again = shop.billing.pay_invoice(invoice_id, idempotency_key="pay-it")
    assert again == first
    assert len(shop.billing.gateway.succeeded_charges()) == 1


# -- voiding and writing off ----------------------------------------------------------------


def test_a_voided_invoice_gives_back_its_credit_and_cannot_be_paid() -> None:
    shop = with_credit(400)
    invoice_id = declined_invoice(shop)
    assert shop.balance() == usd(0)
    voided = shop.billing.void_invoice(invoice_id)
    assert voided.status is InvoiceStatus.VOID
    assert voided.voided_at == shop.clock.now()
    assert shop.balance() == usd(400)
    assert EventName.INVOICE_VOIDED in events_of(shop, invoice_id)
    [row] = [
        a
        for a in shop.billing.audit_log(subject_id=invoice_id)
        if a.action == "invoice.void_invoice"
    ]
    assert (row.before, row.after) == ({"status": "open"}, {"status": "void"})
    with pytest.raises(InvalidTransition):
        shop.billing.pay_invoice(invoice_id)


def test_an_invoice_whose_payment_is_pending_cannot_be_voided_until_it_settles() -> None:
    """Voiding it would let the pending charge go through for a void invoice."""
    shop = Shop()
    shop.billing.gateway.queue(GatewayOutcome.timeout(), GatewayOutcome.decline())
    invoice = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP)
    before = footprint(shop.billing)
    with pytest.raises(InvalidTransition, match="not known yet"):
        shop.billing.void_invoice(invoice.id)
    assert footprint(shop.billing) == before
    shop.clock.advance(AFTER_THE_GRACE)
    assert shop.billing.run_due().payments_failed == 1
    assert shop.billing.void_invoice(invoice.id).status is InvoiceStatus.VOID
    shop.clock.advance(AFTER_THE_GRACE)
    shop.billing.run_due()
    assert shop.billing.gateway.charged_total() == usd(0)


def test_an_uncollectible_invoice_can_still_be_paid() -> None:
    shop = Shop()
    invoice_id = declined_invoice(shop)
    written_off = shop.billing.mark_uncollectible(invoice_id)
    assert written_off.status is InvoiceStatus.UNCOLLECTIBLE
    assert written_off.amount_remaining == usd(7500)
    assert EventName.INVOICE_UNCOLLECTIBLE in events_of(shop, invoice_id)
    paid = shop.billing.pay_invoice(invoice_id)
    assert paid.status is InvoiceStatus.PAID
    assert paid.amount_remaining == usd(0)


def test_only_an_open_invoice_can_be_voided_or_written_off() -> None:
    shop = Shop()
    invoice = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP)
    with pytest.raises(InvalidTransition):
        shop.billing.void_invoice(invoice.id)
    with pytest.raises(InvalidTransition):
        shop.billing.mark_uncollectible(invoice.id)


def test_repeated_void_and_write_off_calls_with_their_keys_act_once() -> None:
    shop = Shop()
    first_id, second_id = declined_invoice(shop), declined_invoice(shop)
    voided = shop.billing.void_invoice(first_id, idempotency_key="void-1")
    assert shop.billing.void_invoice(first_id, idempotency_key="void-1") == voided
    written_off = shop.billing.mark_uncollectible(second_id, idempotency_key="bad-debt-2")
    assert shop.billing.mark_uncollectible(second_id, idempotency_key="bad-debt-2") == written_off
    with pytest.raises(IdempotencyConflict):
        shop.billing.mark_uncollectible(first_id, idempotency_key="bad-debt-2")
    assert len(events_of(shop, first_id)) == 2  # finalized, voided
    assert len(events_of(shop, second_id)) == 2  # finalized, marked uncollectible


# -- credit notes ---------------------------------------------------------------------------


def test_a_repeated_credit_note_with_its_key_credits_once() -> None:
    shop = Shop()
    shop.subscribe()
    [invoice] = shop.invoices()
    note = {
        "amount": usd(300),
        "outcome": CreditNoteOutcome.CREDIT_BALANCE,
        "idempotency_key": "cn",
    }
    first = shop.billing.issue_credit_note(invoice.id, **note)  # type: ignore[arg-type]
    again = shop.billing.issue_credit_note(invoice.id, **note)  # type: ignore[arg-type]
    assert again == first
    assert shop.billing.list_credit_notes(invoice_id=invoice.id) == [first]
    assert shop.billing.get_invoice(invoice.id).amount_credited == usd(300)
    assert shop.balance() == usd(300)


def test_an_open_invoice_whose_payment_is_pending_cannot_be_credited_until_it_settles() -> None:
    """The pending charge is for the full amount: crediting now would overcharge the customer."""
    shop = Shop()
    shop.billing.gateway.queue(GatewayOutcome.timeout())
    invoice = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP)
    before = footprint(shop.billing)
    with pytest.raises(InvalidTransition, match="not known yet"):
        shop.billing.issue_credit_note(invoice.id, amount=usd(1000))
    assert footprint(shop.billing) == before
    shop.clock.advance(AFTER_THE_GRACE)
    shop.billing.run_due()
    paid = shop.billing.get_invoice(invoice.id)
    assert paid.amount_paid == shop.billing.gateway.charged_total() == usd(7500)
    shop.billing.issue_credit_note(invoice.id, amount=usd(1000), outcome=CreditNoteOutcome.REFUND)
    assert shop.billing.gateway.refunded_total() == usd(1000)


# -- history: payments, refunds, credit notes, events, audit ------------------------------------


def test_each_history_can_be_read_per_customer_invoice_or_payment() -> None:
    shop = Shop()
    bob = shop.customer("bob@example.com", "Bob")
    shop.subscribe()
    ada_invoice = shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP)
    bob_invoice = shop.billing.create_invoice(customer_id=bob, items=SETUP[:1])
    [ada_payment] = shop.billing.list_payments(invoice_id=ada_invoice.id)
    refund = shop.billing.refund(ada_payment.id, amount=usd(1000))
    note = shop.billing.issue_credit_note(
        bob_invoice.id, amount=usd(200), outcome=CreditNoteOutcome.CREDIT_BALANCE
    )

    assert [p.invoice_id for p in shop.billing.list_payments(customer_id=bob)] == [bob_invoice.id]
    assert len(shop.billing.list_payments(customer_id=shop.ada.id)) == 2
    assert len(shop.billing.list_payments()) == 3
    assert shop.billing.list_refunds(payment_id=ada_payment.id) == [refund]
    assert shop.billing.list_refunds(invoice_id=bob_invoice.id) == []
    assert shop.billing.list_refunds() == [refund]
    assert shop.billing.list_credit_notes(customer_id=bob) == [note]
    assert shop.billing.list_credit_notes(customer_id=shop.ada.id) == []
    assert {a.customer_id for a in shop.billing.audit_log(customer_id=bob)} == {bob}
    assert {m.event.customer_id for m in shop.billing.list_outbox(customer_id=bob)} == {bob}
    assert EventName.CREDIT_NOTE_ISSUED.value in [
        e.name for e in shop.billing.list_analytics_events(customer_id=bob)
    ]


def test_analytics_events_can_be_read_from_an_instant_on() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.go(at(2, 1))
    since = shop.billing.list_analytics_events(since=at(2, 1))
    assert since
    assert all(e.occurred_at >= at(2, 1) for e in since)
    assert EventName.SUBSCRIPTION_RENEWED.value in [e.name for e in since]
    assert EventName.SUBSCRIPTION_CREATED.value not in [e.name for e in since]
    everything = shop.billing.list_analytics_events()
    assert len(everything) > len(since)
    assert [e.occurred_at for e in everything] == sorted(e.occurred_at for e in everything)
    assert shop.sub(sub.id).status is SubscriptionStatus.ACTIVE


# -- email delivery reports -------------------------------------------------------------------


def test_a_delivered_report_is_recorded_and_emails_keep_going() -> None:
    shop = Shop()
    [welcome] = shop.billing.email.sent
    shop.clock.advance(timedelta(minutes=1))
    delivery = shop.billing.record_email_event(welcome.message_id, DeliveryStatus.DELIVERED)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.updated_at == shop.clock.now()
    assert shop.billing.get_customer(shop.ada.id).email_deliverable
    shop.subscribe()
    assert shop.billing.email.templates() == ["welcome", "invoice_paid"]


def test_a_dropped_email_marks_the_address_undeliverable() -> None:
    shop = Shop()
    [welcome] = shop.billing.email.sent
    shop.billing.record_email_event(welcome.message_id, "dropped")
    assert not shop.billing.get_customer(shop.ada.id).email_deliverable
    shop.billing.create_invoice(customer_id=shop.ada.id, items=SETUP)
    assert shop.billing.email.templates() == ["welcome"]


def test_the_email_deliveries_of_a_customer_are_listed_with_their_reports() -> None:
    shop = Shop()
    eve = shop.customer("eve@example.com")
    [welcome, _] = shop.billing.email.sent
    shop.billing.record_email_event(welcome.message_id, DeliveryStatus.DELIVERED)
    shop.subscribe()
    ada = shop.billing.list_email_deliveries(customer_id=shop.ada.id)
    assert [d.template for d in ada] == ["welcome", "invoice_paid"]
    assert [d.status for d in ada] == [DeliveryStatus.DELIVERED, DeliveryStatus.SENT]
    assert [d.customer_id for d in shop.billing.list_email_deliveries(customer_id=eve)] == [eve]
    assert len(shop.billing.list_email_deliveries()) == 3


# -- history feeds the metrics ------------------------------------------------------------------


def test_metrics_count_only_the_subscriptions_billed_in_the_asked_currency() -> None:
    shop = Shop()
    euro = shop.price(900, currency="EUR", nickname="Euro")
    shop.subscribe()
    shop.subscribe(euro, customer_id=shop.customer("eve@example.com"))
    usd_report = shop.billing.metrics(start=at(1, 1), end=at(1, 15))
    eur_report = shop.billing.metrics(start=at(1, 1), end=at(1, 15), currency="EUR")
    assert usd_report.mrr == usd(1000)
    assert eur_report.mrr == Money(900, "EUR")
