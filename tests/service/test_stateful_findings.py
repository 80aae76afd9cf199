"""Regressions for what the Billing state machine (tests/service_stateful) found."""

from __future__ import annotations

from datetime import timedelta

from lumenquest_adapters.memory import FakeGateway, GatewayOutcome
from lumenquest_core import (
    ChargeResult,
    Customer,
    GatewayUnavailable,
    InvoiceStatus,
    PaymentStatus,
    SubscriptionStatus,
)
from tests.service.scenario import Shop, at


def test_an_expired_subscription_never_charges_its_voided_first_invoice() -> None:
    # The first charge and its retry time out: the payment stays pending while the
    # subscription expires and its invoice is voided. A later run must not send it again.
    shop = Shop()
    shop.billing.gateway.queue(GatewayOutcome.timeout(), GatewayOutcome.timeout())
    sub = shop.subscribe()
    assert sub.status is SubscriptionStatus.INCOMPLETE
    shop.go(at(1, 2))
    assert shop.sub(sub.id).status is SubscriptionStatus.INCOMPLETE_EXPIRED
    [invoice] = shop.invoices(sub.id)
    assert invoice.status is InvoiceStatus.VOID
    [payment] = shop.billing.list_payments(invoice_id=invoice.id)
    assert payment.status is PaymentStatus.FAILED
    assert payment.failure_code == "invoice_voided"

    shop.go(at(2, 1))
    assert shop.billing.gateway.charges == []
    assert shop.billing.list_payments(invoice_id=invoice.id) == [payment]


def test_a_first_charge_found_at_the_gateway_at_expiry_activates_instead_of_expiring() -> None:
    """The response was lost, but the charge went through: expiry asks before voiding."""
    # A long grace keeps the run's own pending sweep away, so expiry is what resolves it.
    shop = Shop(pending_payment_grace=timedelta(days=3))
    shop.billing.gateway.queue(GatewayOutcome.unknown())
    sub = shop.subscribe()
    assert sub.status is SubscriptionStatus.INCOMPLETE
    shop.go(at(1, 2))
    assert shop.sub(sub.id).status is SubscriptionStatus.ACTIVE
    [invoice] = shop.invoices(sub.id)
    assert invoice.status is InvoiceStatus.PAID
    assert len(shop.billing.gateway.charges) == 1


class _GatewayThatCannotLookUp(FakeGateway):
    """A gateway whose look-ups fail, as when its API is down."""

    def find_charge(self, customer: Customer, idempotency_key: str) -> ChargeResult | None:
        raise GatewayUnavailable("the gateway's API is down")


def test_expiry_waits_while_the_gateway_cannot_say_what_happened_to_the_first_charge() -> None:
    shop = Shop(pending_payment_grace=timedelta(days=3), gateway=_GatewayThatCannotLookUp())
    shop.billing.gateway.queue(GatewayOutcome.unknown())
    sub = shop.subscribe()
    shop.go(at(1, 2))
    assert shop.sub(sub.id).status is SubscriptionStatus.INCOMPLETE
    [invoice] = shop.invoices(sub.id)
    assert invoice.status is InvoiceStatus.OPEN
    [payment] = shop.billing.list_payments(invoice_id=invoice.id)
    assert payment.status is PaymentStatus.PENDING
