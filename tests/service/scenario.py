"""A small shop to run scenarios in: a billing on the test fakes, a customer and prices.

The billing's store is the current backend (tests/service/stores.py): memory, or under
the tests' ``backend`` fixture an SQLite file or a PostgreSQL schema; ``Shop(backend=…)``
picks one. Time moves only through ``shop.clock`` (the billing's ``TestClock``);
``shop.go(...)`` sets it and runs the billing run, as a worker would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from lumenquest_adapters.memory import TestClock
from lumenquest_core import (
    BillingCycle,
    Interval,
    Invoice,
    InvoiceStatus,
    LineKind,
    Money,
    PaymentStatus,
    Price,
    RunSummary,
    Subscription,
)
from lumenquest_core.ports import UnitOfWork
from tests.service.stores import Backend, ScenarioBilling, current_backend, row_counts

__all__ = [
    "MONTHLY",
    "NEW_YEAR",
    "Shop",
    "amounts",
    "at",
    "footprint",
    "periods",
    "row_counts",
    "usd",
]

MONTHLY = BillingCycle(Interval.MONTH)
NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)


def at(month: int, day: int, hour: int = 0, *, year: int = 2026) -> datetime:
    """Return an instant in 2026 (by default), in UTC."""
    return datetime(year, month, day, hour, tzinfo=UTC)


def usd(amount: int) -> Money:
    """Return ``amount`` cents in US dollars."""
    return Money(amount, "USD")


class Shop:
    """A billing with one plan, a $10 Basic and a $20 Pro monthly price, and a customer."""

    def __init__(
        self, now: datetime = NEW_YEAR, *, backend: Backend | None = None, **billing_options: Any
    ) -> None:
        self.backend = backend or current_backend()
        self.billing: ScenarioBilling = self.backend.billing(now, **billing_options)
        self.plan = self.billing.create_plan(name="Analytics", features=["reports"])
        self.basic = self.price(1000, nickname="Basic")
        self.pro = self.price(2000, nickname="Pro")
        self.ada = self.billing.create_customer(email="ada@example.com", name="Ada Lovelace")

    @property
    def clock(self) -> TestClock:
        """The billing's test clock."""
        return self.billing.clock

    def price(
        self, amount: int, *, currency: str = "USD", cycle: BillingCycle = MONTHLY, **options: Any
    ) -> Price:
        """Create a price of ``amount`` minor units per ``cycle`` for the plan."""
        return self.billing.create_price(
            plan_id=self.plan.id, unit_amount=Money(amount, currency), cycle=cycle, **options
        )

    def customer(self, email: str, name: str = "") -> str:
        """Create another customer and return its id."""
        return self.billing.create_customer(email=email, name=name).id

    def subscribe(
        self, price: Price | None = None, customer_id: str | None = None, **options: Any
    ) -> Subscription:
        """Subscribe Ada (or ``customer_id``) to ``price`` (Basic by default)."""
        return self.billing.subscribe(
            customer_id=customer_id or self.ada.id, price_id=(price or self.basic).id, **options
        )

    def go(self, when: datetime) -> RunSummary:
        """Move the clock to ``when`` and run the billing run."""
        self.clock.set(when)
        return self.billing.run_due()

    def sub(self, subscription_id: str) -> Subscription:
        """Re-read a subscription."""
        return self.billing.get_subscription(subscription_id)

    def invoices(self, subscription_id: str | None = None) -> list[Invoice]:
        """Return the invoices of a subscription, or all of Ada's, oldest first."""
        if subscription_id is not None:
            return self.billing.list_invoices(subscription_id=subscription_id)
        return self.billing.list_invoices(customer_id=self.ada.id)

    def balance(self, customer_id: str | None = None) -> Money | None:
        """Return a customer's credit balance (Ada's by default)."""
        return self.billing.get_customer(customer_id or self.ada.id).balance()

    def emails(self, template: str) -> list[dict[str, Any]]:
        """Return the data of every email sent with ``template``."""
        return [dict(m.data) for m in self.billing.email.sent if m.template == template]


class CountingShop(Shop):
    """A shop that counts how often the billing opens its store."""

    def __init__(self, **billing_options: Any) -> None:
        self.opened = 0

        def counting(open_store: Callable[[], UnitOfWork]) -> Callable[[], UnitOfWork]:
            def unit_of_work() -> UnitOfWork:
                self.opened += 1
                return open_store()

            return unit_of_work

        super().__init__(wrap_unit_of_work=counting, **billing_options)


def assert_renewals_settled(shop: Shop, customers: Sequence[str], declined: Sequence[str]) -> None:
    """Assert each customer's last invoice is paid, or open after one failed payment if declined."""
    for customer in customers:
        renewal = shop.billing.list_invoices(customer_id=customer)[-1]
        paid = customer not in declined
        assert renewal.status is (InvoiceStatus.PAID if paid else InvoiceStatus.OPEN)
        assert [p.status for p in shop.billing.list_payments(invoice_id=renewal.id)] == [
            PaymentStatus.SUCCEEDED if paid else PaymentStatus.FAILED
        ]


def amounts(invoice: Invoice, kind: LineKind | None = None) -> list[int]:
    """Return the invoice's line amounts in minor units, optionally of one kind."""
    return [line.amount.amount for line in invoice.lines if kind is None or line.kind is kind]


def periods(invoices: Iterable[Invoice]) -> list[tuple[datetime, datetime]]:
    """Return the period of each invoice's subscription line."""
    found = []
    for invoice in invoices:
        [line] = [line for line in invoice.lines if line.kind is LineKind.SUBSCRIPTION]
        assert line.period is not None
        found.append((line.period.start, line.period.end))
    return found


def footprint(billing: ScenarioBilling) -> dict[str, Any]:
    """Return everything a failed call must leave unchanged: rows, charges and emails."""
    return {
        "rows": row_counts(billing),
        "subscriptions": billing.list_subscriptions(limit=1000),
        "invoices": billing.list_invoices(limit=1000),
        "customers": billing.list_customers(limit=1000),
        "gateway_calls": billing.gateway.calls,
        "refunds": list(billing.gateway.refunds),
        "emails": len(billing.email.sent),
    }
