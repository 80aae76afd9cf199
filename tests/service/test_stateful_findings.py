"""Regressions for what the Billing state machine (tests/service_stateful) found."""

from __future__ import annotations

from lumenquest_adapters.memory import GatewayOutcome
from lumenquest_core import InvoiceStatus, PaymentStatus, SubscriptionStatus
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
