"""A minute of lumenquest: subscribe, upgrade half-way, renew; print the invoices and MRR.

Run with ``make run``. Everything is in memory with a test clock, so "a month later"
takes no time at all.
"""

from __future__ import annotations

from datetime import UTC, datetime

from lumenquest_adapters.memory import in_memory_billing
from lumenquest_core import BillingCycle, Interval, Invoice, Money


def show(invoice: Invoice) -> None:
    """Print one invoice with its lines."""
    print(
        f"  {invoice.number}  {invoice.status:<6} total {invoice.total}  ({invoice.billing_reason})"
    )
    for line in invoice.lines:
        period = f"{line.period.start:%b %d} → {line.period.end:%b %d}" if line.period else ""
        print(f"      {line.description:<34} {period:<16} {line.amount}")


def main() -> None:
    """Run the demo."""
    billing = in_memory_billing(now=datetime(2026, 1, 1, tzinfo=UTC))
    ada = billing.create_customer(email="ada@example.com", name="Ada Lovelace")
    plan = billing.create_plan(name="Analytics", features=["reports", "exports"])
    monthly = BillingCycle(Interval.MONTH)
    basic = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1000, "USD"), cycle=monthly, nickname="Basic"
    )
    pro = billing.create_price(
        plan_id=plan.id, unit_amount=Money(2000, "USD"), cycle=monthly, nickname="Pro"
    )

    print("Jan 01  Ada subscribes to Basic ($10.00 a month)")
    sub = billing.subscribe(customer_id=ada.id, price_id=basic.id)

    billing.clock.set(datetime(2026, 1, 16, 12, tzinfo=UTC))
    print("Jan 16  half-way through January, Ada upgrades to Pro ($20.00 a month)")
    preview = billing.preview_change(sub.id, price_id=pro.id)
    print(f"        the preview says the next invoice comes to {preview.total}")
    billing.change_subscription(sub.id, price_id=pro.id, proration_behavior="always_invoice")

    billing.clock.set(datetime(2026, 2, 1, tzinfo=UTC))
    summary = billing.run_due()
    print(f"Feb 01  the billing run renews {summary.renewals} subscription(s)")

    print("\nInvoices")
    for invoice in billing.list_invoices(customer_id=ada.id):
        show(invoice)

    print("\nPayments through the fake gateway")
    for charge in billing.gateway.charges:
        print(f"  {charge.idempotency_key:<16} {charge.amount}  {charge.status}")

    report = billing.metrics(
        start=datetime(2025, 12, 31, tzinfo=UTC), end=datetime(2026, 2, 1, 12, tzinfo=UTC)
    )
    moves = report.movements
    print(f"\nMRR {report.mrr}   ARR {report.arr}")
    print(f"movements: new {moves.new}, expansion {moves.expansion}, churned {moves.churned}")
    print(f"emails sent: {', '.join(m.template for m in billing.email.sent)}")


if __name__ == "__main__":
    main()
