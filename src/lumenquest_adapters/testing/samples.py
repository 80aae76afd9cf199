"""Small, valid domain objects for the contract suites (and a host's own adapter tests).

Every builder takes the id first and defaults everything else, so that a test names only
what it is about: ``invoice("in_1", subscription_id="sub_1", period_start=T0)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import attrs

from lumenquest_core.catalog import Plan, Price
from lumenquest_core.coupons import Coupon
from lumenquest_core.customers import Customer
from lumenquest_core.events import DomainEvent, EventName
from lumenquest_core.invoicing import (
    BillingReason,
    CreditNote,
    CreditNoteOutcome,
    Invoice,
    InvoiceStatus,
    Refund,
    build_invoice,
)
from lumenquest_core.lines import InvoiceLine, LineKind
from lumenquest_core.money import Money
from lumenquest_core.payments import (
    AuditEntry,
    Payment,
    PaymentStatus,
    SubscriptionChange,
    UsageRecord,
)
from lumenquest_core.periods import BillingCycle, Interval, Period
from lumenquest_core.ports import (
    AnalyticsEvent,
    DeliveryStatus,
    EmailDelivery,
    EmailMessage,
    IdempotencyRecord,
    OutboxMessage,
    PendingLine,
)
from lumenquest_core.subscriptions import Subscription, SubscriptionStatus

__all__ = [
    "T0",
    "analytics_event",
    "audit_entry",
    "coupon",
    "credit_note",
    "customer",
    "email_delivery",
    "email_message",
    "idempotency_record",
    "invoice",
    "outbox_message",
    "payment",
    "pending_line",
    "plan",
    "price",
    "refund",
    "subscription",
    "subscription_change",
    "usage_record",
    "usd",
]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
"""The instant every sample is anchored on."""

_MONTH = timedelta(days=31)


def usd(cents: int) -> Money:
    """Return ``cents`` US cents."""
    return Money(cents, "USD")


def customer(customer_id: str, *, email: str | None = None) -> Customer:
    """Return a customer whose email defaults to ``<id>@example.com``."""
    return Customer(
        id=customer_id, email=email or f"{customer_id}@example.com", created_at=T0, name="Ada"
    )


def plan(plan_id: str, *, active: bool = True) -> Plan:
    """Return a plan."""
    return Plan(id=plan_id, name=f"Plan {plan_id}", active=active)


def price(
    price_id: str, *, plan_id: str = "plan_1", cents: int = 1000, active: bool = True
) -> Price:
    """Return a monthly USD per-unit price."""
    return Price(
        id=price_id,
        plan_id=plan_id,
        currency="USD",
        cycle=BillingCycle(Interval.MONTH),
        unit_amount=usd(cents),
        active=active,
    )


def coupon(coupon_id: str) -> Coupon:
    """Return a 10 % off, once, coupon."""
    return Coupon(id=coupon_id, percent_off=Decimal(10))


def subscription(
    subscription_id: str,
    *,
    customer_id: str = "cus_1",
    due: datetime | None = T0 + _MONTH,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
) -> Subscription:
    """Return an active subscription whose work is next due at ``due`` (its period end).

    ``due=None`` gives a canceled subscription, for which no work is ever due.
    """
    end = T0 + _MONTH if due is None else due
    return Subscription(
        id=subscription_id,
        customer_id=customer_id,
        price=price("price_1"),
        quantity=1,
        status=SubscriptionStatus.CANCELED if due is None else status,
        anchor=end - _MONTH,
        current_period=Period(end - _MONTH, end),
        created_at=end - _MONTH,
        ended_at=end - _MONTH if due is None else None,
    )


def invoice(
    invoice_id: str,
    *,
    customer_id: str = "cus_1",
    subscription_id: str | None = "sub_1",
    period_start: datetime = T0,
    reason: BillingReason = BillingReason.SUBSCRIPTION_CYCLE,
    status: InvoiceStatus = InvoiceStatus.DRAFT,
) -> Invoice:
    """Return a $10 invoice for the month from ``period_start``."""
    period = Period(period_start, period_start + _MONTH)
    built = build_invoice(
        invoice_id=invoice_id,
        customer_id=customer_id,
        currency="USD",
        lines=[
            InvoiceLine(
                kind=LineKind.SUBSCRIPTION,
                description="Plan",
                amount=usd(1000),
                period=period,
                subscription_id=subscription_id,
            )
        ],
        at=period_start,
        subscription_id=subscription_id,
        billing_reason=reason,
        period=period,
    )
    if status is InvoiceStatus.DRAFT:
        return built
    # Only the status matters to storage; the lifecycle rules are the core's to test.
    return attrs.evolve(built, status=status)


def pending_line(
    line_id: str, *, subscription_id: str = "sub_1", created_at: datetime = T0
) -> PendingLine:
    """Return a proration credit waiting for the subscription's next invoice."""
    return PendingLine(
        id=line_id,
        customer_id="cus_1",
        subscription_id=subscription_id,
        line=InvoiceLine(
            kind=LineKind.PRORATION,
            description="Unused time",
            amount=usd(-500),
            subscription_id=subscription_id,
        ),
        created_at=created_at,
    )


def payment(
    payment_id: str,
    *,
    invoice_id: str = "in_1",
    customer_id: str = "cus_1",
    idempotency_key: str | None = None,
    status: PaymentStatus = PaymentStatus.PENDING,
    created_at: datetime = T0,
) -> Payment:
    """Return a $10 payment whose idempotency key defaults to ``key-<id>``."""
    return Payment(
        id=payment_id,
        invoice_id=invoice_id,
        customer_id=customer_id,
        amount=usd(1000),
        status=status,
        idempotency_key=idempotency_key or f"key-{payment_id}",
        attempt=1,
        created_at=created_at,
    )


def refund(refund_id: str, *, payment_id: str = "pay_1", invoice_id: str = "in_1") -> Refund:
    """Return a $1 refund."""
    return Refund(
        id=refund_id,
        payment_id=payment_id,
        invoice_id=invoice_id,
        amount=usd(100),
        reason="requested_by_customer",
        created_at=T0,
    )


def credit_note(
    note_id: str, *, invoice_id: str = "in_1", customer_id: str = "cus_1"
) -> CreditNote:
    """Return a $1 credit note to the customer's balance."""
    return CreditNote(
        id=note_id,
        number=f"CN-{note_id}",
        invoice_id=invoice_id,
        customer_id=customer_id,
        amount=usd(100),
        reason="duplicate",
        outcome=CreditNoteOutcome.CREDIT_BALANCE,
        created_at=T0,
    )


def usage_record(
    record_id: str, *, subscription_id: str = "sub_1", quantity: int = 1, at: datetime = T0
) -> UsageRecord:
    """Return a usage record."""
    return UsageRecord(id=record_id, subscription_id=subscription_id, quantity=quantity, at=at)


def outbox_message(
    message_id: str, *, customer_id: str = "cus_1", created_at: datetime = T0
) -> OutboxMessage:
    """Return an undelivered ``subscription.created`` event."""
    event = DomainEvent(
        name=EventName.SUBSCRIPTION_CREATED,
        subject_id="sub_1",
        customer_id=customer_id,
        occurred_at=created_at,
    )
    return OutboxMessage(id=message_id, event=event, created_at=created_at)


def audit_entry(
    entry_id: str, *, subject_id: str = "sub_1", customer_id: str = "cus_1", at: datetime = T0
) -> AuditEntry:
    """Return an audit entry."""
    return AuditEntry(
        id=entry_id,
        actor="system",
        action="subscription.created",
        subject_type="subscription",
        subject_id=subject_id,
        at=at,
        customer_id=customer_id,
    )


def subscription_change(
    change_id: str, *, subscription_id: str = "sub_1", customer_id: str = "cus_1", at: datetime = T0
) -> SubscriptionChange:
    """Return a subscription history row."""
    return SubscriptionChange(
        id=change_id,
        subscription_id=subscription_id,
        customer_id=customer_id,
        kind="created",
        at=at,
        from_status=None,
        to_status="active",
        from_price_id=None,
        to_price_id="price_1",
        from_quantity=None,
        to_quantity=1,
        mrr=usd(1000),
    )


def analytics_event(
    event_id: str, *, customer_id: str | None = "cus_1", at: datetime = T0
) -> AnalyticsEvent:
    """Return an analytics event."""
    return AnalyticsEvent(
        id=event_id, name="subscription.created", customer_id=customer_id, occurred_at=at
    )


def email_delivery(
    message_id: str,
    *,
    event_id: str = "evt_1",
    template: str = "welcome",
    customer_id: str = "cus_1",
) -> EmailDelivery:
    """Return a sent email's delivery record."""
    return EmailDelivery(
        message_id=message_id,
        event_id=event_id,
        template=template,
        to="ada@example.com",
        status=DeliveryStatus.SENT,
        created_at=T0,
        customer_id=customer_id,
    )


def email_message(message_id: str = "evt_1.welcome") -> EmailMessage:
    """Return a welcome email."""
    return EmailMessage(
        message_id=message_id,
        to="ada@example.com",
        template="welcome",
        data={"name": "Ada"},
        customer_id="cus_1",
    )


def idempotency_record(
    key: str,
    *,
    created_at: datetime = T0,
    ttl: timedelta = timedelta(hours=24),
    fingerprint: str = "f1",
) -> IdempotencyRecord:
    """Return a record that expires ``ttl`` after ``created_at``."""
    return IdempotencyRecord(
        key=key,
        fingerprint=fingerprint,
        result={"id": "sub_1"},
        created_at=created_at,
        expires_at=created_at + ttl,
    )
