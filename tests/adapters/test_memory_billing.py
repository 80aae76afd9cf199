"""``in_memory_billing`` wires a working Billing on the memory adapters."""

from collections.abc import Callable
from datetime import UTC, datetime

from lumenquest_adapters.memory import (
    FakeGateway,
    GatewayOutcome,
    InMemoryBilling,
    MemoryCache,
    MemoryStore,
    RecordingEmailSender,
    TestClock,
    in_memory_billing,
)
from lumenquest_core.invoicing import InvoiceStatus
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval
from lumenquest_core.service import Billing
from lumenquest_core.subscriptions import SubscriptionStatus

JAN_31 = datetime(2026, 1, 31, tzinfo=UTC)


def subscribed(billing: InMemoryBilling) -> tuple[str, str]:
    customer = billing.create_customer(email="ada@example.com", name="Ada")
    plan = billing.create_plan(name="Pro", features=["reports"])
    price = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1000, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    sub = billing.subscribe(customer_id=customer.id, price_id=price.id)
    return customer.id, sub.id


def test_the_billing_exposes_its_memory_adapters() -> None:
    billing = in_memory_billing(now=JAN_31)
    assert isinstance(billing, Billing)
    assert isinstance(billing.clock, TestClock)
    assert billing.clock.now() == JAN_31
    assert isinstance(billing.gateway, FakeGateway)
    assert isinstance(billing.email, RecordingEmailSender)
    assert isinstance(billing.cache, MemoryCache)
    assert isinstance(billing.store, MemoryStore)


def test_ids_are_readable_counters_per_prefix() -> None:
    billing = in_memory_billing(now=JAN_31)
    customer_id, sub_id = subscribed(billing)
    assert (customer_id, sub_id) == ("cus_1", "sub_1")


def test_an_id_factory_and_billing_options_are_passed_on() -> None:
    made: list[str] = []

    def ids(prefix: str) -> str:
        made.append(prefix)
        return f"{prefix}-{len(made)}"

    ids_factory: Callable[[str], str] = ids
    billing = in_memory_billing(now=JAN_31, ids=ids_factory, invoice_prefix="INV")
    customer_id, _ = subscribed(billing)
    assert customer_id.startswith("cus-")
    [invoice] = billing.list_invoices(customer_id=customer_id)
    assert invoice.number is not None
    assert invoice.number.startswith("INV")


def test_a_month_of_billing_charges_the_gateway_and_emails_the_customer() -> None:
    billing = in_memory_billing(now=JAN_31)
    customer_id, sub_id = subscribed(billing)
    billing.clock.set(datetime(2026, 2, 28, tzinfo=UTC))
    billing.run_due()
    invoices = billing.list_invoices(customer_id=customer_id)
    assert [i.status for i in invoices] == [InvoiceStatus.PAID, InvoiceStatus.PAID]
    assert billing.gateway.charged_total() == Money(2000, "USD")
    assert billing.get_subscription(sub_id).status is SubscriptionStatus.ACTIVE
    assert "welcome" in billing.email.templates()


def test_a_declined_renewal_leaves_the_subscription_past_due() -> None:
    billing = in_memory_billing(now=JAN_31)
    _, sub_id = subscribed(billing)
    billing.gateway.queue(GatewayOutcome.decline("insufficient_funds"))
    billing.clock.set(datetime(2026, 2, 28, tzinfo=UTC))
    billing.run_due()
    assert billing.get_subscription(sub_id).status is SubscriptionStatus.PAST_DUE
    assert "payment_failed" in billing.email.templates()
