"""Gateway notifications: settle pending payments once, ignore duplicates, record refunds."""

from __future__ import annotations

from lumenquest_adapters.memory import GatewayOutcome
from lumenquest_core import (
    EventName,
    GatewayEvent,
    GatewayEventType,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    SubscriptionStatus,
)
from tests.service.scenario import Shop, at, usd


def pending_renewal() -> tuple[Shop, str, Payment]:
    """Return a shop whose Feb 1 renewal charge timed out, leaving a pending payment."""
    shop = Shop()
    sub = shop.subscribe()
    shop.billing.gateway.queue(GatewayOutcome.timeout())
    shop.go(at(2, 1))
    [payment] = shop.billing.list_payments(invoice_id=shop.invoices(sub.id)[-1].id)
    assert payment.status is PaymentStatus.PENDING
    return shop, sub.id, payment


def event(
    event_id: str, kind: GatewayEventType, payment: Payment | None = None, **fields: object
) -> GatewayEvent:
    return GatewayEvent(
        id=event_id,
        type=kind,
        occurred_at=at(2, 1),
        idempotency_key=None if payment is None else payment.idempotency_key,
        **fields,  # type: ignore[arg-type]
    )


def test_a_payment_succeeded_event_settles_a_pending_payment_once() -> None:
    shop, sub_id, payment = pending_renewal()
    succeeded = event("evt_1", GatewayEventType.PAYMENT_SUCCEEDED, payment, reference="ch_ext_1")
    assert shop.billing.handle_gateway_event(succeeded) is True
    [settled] = shop.billing.list_payments(invoice_id=payment.invoice_id)
    assert settled.status is PaymentStatus.SUCCEEDED
    assert settled.gateway_reference == "ch_ext_1"
    assert shop.billing.get_invoice(payment.invoice_id).status is InvoiceStatus.PAID
    assert len(shop.emails("invoice_paid")) == 2
    assert shop.sub(sub_id).status is SubscriptionStatus.ACTIVE


def test_a_duplicate_event_id_returns_false_and_changes_nothing() -> None:
    shop, _, payment = pending_renewal()
    succeeded = event("evt_1", GatewayEventType.PAYMENT_SUCCEEDED, payment, reference="ch_ext_1")
    shop.billing.handle_gateway_event(succeeded)
    outbox = len(shop.billing.list_outbox())
    emails = len(shop.billing.email.sent)
    assert shop.billing.handle_gateway_event(succeeded) is False
    assert len(shop.billing.list_outbox()) == outbox
    assert len(shop.billing.email.sent) == emails


def test_a_second_event_for_a_settled_payment_changes_nothing() -> None:
    shop, _, payment = pending_renewal()
    shop.billing.handle_gateway_event(
        event("evt_1", GatewayEventType.PAYMENT_SUCCEEDED, payment, reference="ch_ext_1")
    )
    paid = shop.billing.get_invoice(payment.invoice_id)
    assert shop.billing.handle_gateway_event(
        event("evt_2", GatewayEventType.PAYMENT_FAILED, payment, decline_code="late")
    )
    assert shop.billing.get_invoice(payment.invoice_id) == paid
    assert shop.billing.list_payments(invoice_id=payment.invoice_id)[0].status is (
        PaymentStatus.SUCCEEDED
    )


def test_a_settled_payment_is_not_charged_again_by_the_billing_run() -> None:
    shop, _, payment = pending_renewal()
    shop.billing.handle_gateway_event(
        event("evt_1", GatewayEventType.PAYMENT_SUCCEEDED, payment, reference="ch_ext_1")
    )
    calls = shop.billing.gateway.calls
    shop.go(at(2, 2))
    assert shop.billing.gateway.calls == calls


def test_a_payment_failed_event_opens_dunning() -> None:
    shop, sub_id, payment = pending_renewal()
    failed = event("evt_1", GatewayEventType.PAYMENT_FAILED, payment, decline_code="do_not_honor")
    assert shop.billing.handle_gateway_event(failed)
    sub = shop.sub(sub_id)
    assert sub.status is SubscriptionStatus.PAST_DUE
    assert sub.next_payment_retry_at == at(2, 4)
    assert shop.billing.list_payments(invoice_id=payment.invoice_id)[0].failure_code == (
        "do_not_honor"
    )


def test_a_charge_refunded_event_records_the_refund_once() -> None:
    shop = Shop()
    shop.subscribe()
    [payment] = shop.billing.list_payments(customer_id=shop.ada.id)
    reference = payment.gateway_reference
    refunded = event(
        "evt_r1", GatewayEventType.CHARGE_REFUNDED, reference=reference, amount=usd(300)
    )
    assert shop.billing.handle_gateway_event(refunded)
    [refund] = shop.billing.list_refunds(payment_id=payment.id)
    assert refund.amount == usd(300)
    assert shop.billing.get_invoice(payment.invoice_id).amount_refunded == usd(300)
    assert shop.billing.handle_gateway_event(refunded) is False
    # The event carries the charge's total refunded: the same total again adds nothing.
    assert shop.billing.handle_gateway_event(
        event("evt_r2", GatewayEventType.CHARGE_REFUNDED, reference=reference, amount=usd(300))
    )
    assert len(shop.billing.list_refunds(payment_id=payment.id)) == 1
    shop.billing.handle_gateway_event(
        event("evt_r3", GatewayEventType.CHARGE_REFUNDED, reference=reference, amount=usd(1000))
    )
    assert [r.amount for r in shop.billing.list_refunds(payment_id=payment.id)] == [
        usd(300),
        usd(700),
    ]
    assert shop.billing.gateway.refunds == []  # the refund happened at the gateway already


def test_a_refund_we_made_is_not_recorded_again_by_its_webhook() -> None:
    shop = Shop()
    shop.subscribe()
    [payment] = shop.billing.list_payments(customer_id=shop.ada.id)
    shop.billing.refund(payment.id, amount=usd(300))
    shop.billing.handle_gateway_event(
        event(
            "evt_r1",
            GatewayEventType.CHARGE_REFUNDED,
            reference=payment.gateway_reference,
            amount=usd(300),
        )
    )
    assert len(shop.billing.list_refunds(payment_id=payment.id)) == 1


def test_a_dispute_is_recorded_as_an_event() -> None:
    shop = Shop()
    shop.subscribe()
    assert shop.billing.handle_gateway_event(
        event("evt_d1", GatewayEventType.DISPUTE_CREATED, reference="ch_fake_1")
    )
    names = [m.event.name for m in shop.billing.list_outbox()]
    assert EventName.DISPUTE_CREATED in names
