"""The ports: what the core needs from the world, said in the core's own words.

Adapters implement these protocols; no adapter type appears in a signature here.
Repositories raise :class:`~lumenquest_core.errors.NotFound` for a missing id and
:class:`~lumenquest_core.errors.Conflict` when a uniqueness rule would be broken, exactly
as a database constraint would, so that every adapter behaves the same.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, Self

import attrs

from lumenquest_core.catalog import Plan, Price
from lumenquest_core.coupons import Coupon
from lumenquest_core.customers import Customer
from lumenquest_core.events import DomainEvent, EventName
from lumenquest_core.invoicing import CreditNote, Invoice, InvoiceStatus, Refund, TaxCalculator
from lumenquest_core.lines import InvoiceLine
from lumenquest_core.metrics import MrrMovements, MrrSnapshots, TrialOutcome
from lumenquest_core.money import Money
from lumenquest_core.payments import (
    AuditEntry,
    ChargeResult,
    Payment,
    SubscriptionChange,
    UsageRecord,
)
from lumenquest_core.periods import Period
from lumenquest_core.subscriptions import Subscription, SubscriptionStatus

__all__ = [
    "AnalyticsEvent",
    "AnalyticsRepository",
    "AuditFields",
    "AuditLog",
    "Cache",
    "ChangeFields",
    "Clock",
    "CouponRepository",
    "CreditNoteRepository",
    "CustomerRepository",
    "DeliveryStatus",
    "EmailDelivery",
    "EmailDeliveryRepository",
    "EmailMessage",
    "EmailSender",
    "HistoryWriter",
    "IdempotencyRecord",
    "IdempotencyStore",
    "InvoiceRepository",
    "Lock",
    "OutboxMessage",
    "OutboxRepository",
    "PaymentGateway",
    "PaymentRepository",
    "PendingLine",
    "PlanRepository",
    "PriceRepository",
    "RateLimitDecision",
    "RateLimiter",
    "SubscriptionChangeRepository",
    "SubscriptionRepository",
    "TaxCalculator",
    "UnitOfWork",
    "UsageRepository",
]


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


class Clock(Protocol):
    """Tells the time; the only source of "now" the core ever reads."""

    def now(self) -> datetime:
        """Return the current instant, timezone-aware, in UTC."""
        ...


# -- records that only exist at the boundary -------------------------------------------


# Dict-backed, not slotted: built for every event (see _trusted.build_trusted).
@attrs.frozen(slots=False)
class OutboxMessage:
    """A domain event waiting in the outbox to be delivered, at least once."""

    id: str
    event: DomainEvent
    created_at: datetime
    delivered_at: datetime | None = None
    attempts: int = 0


@attrs.frozen
class IdempotencyRecord:
    """The first result of a call made with an idempotency key."""

    key: str
    fingerprint: str
    result: Mapping[str, Any] = attrs.field(converter=_frozen, hash=False)
    created_at: datetime
    expires_at: datetime


@attrs.frozen
class PendingLine:
    """A proration line waiting for the subscription's next invoice."""

    id: str
    customer_id: str
    subscription_id: str
    line: InvoiceLine
    created_at: datetime


@attrs.frozen
class AnalyticsEvent:
    """An analytics event (the seed's analytics_events table)."""

    id: str
    name: str
    customer_id: str | None
    occurred_at: datetime
    properties: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, hash=False)


@attrs.frozen
class EmailMessage:
    """An email to send from a template: ``template`` names the notification kind."""

    message_id: str
    to: str
    template: str
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, hash=False)
    customer_id: str | None = None


class DeliveryStatus(enum.StrEnum):
    """What is known about an email after it left (SendGrid's event names)."""

    SENT = "sent"
    PROCESSED = "processed"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCE = "bounce"
    DROPPED = "dropped"
    OPEN = "open"
    CLICK = "click"


@attrs.frozen
class EmailDelivery:
    """One email sent for one event: unique per event and template, so a redelivery sends none."""

    message_id: str
    event_id: str
    template: str
    to: str
    status: DeliveryStatus
    created_at: datetime
    customer_id: str | None = None
    provider_id: str | None = None
    updated_at: datetime | None = None


@attrs.frozen
class RateLimitDecision:
    """Whether a request may pass, and what is left of the window."""

    allowed: bool
    limit: int
    remaining: int
    reset_after_seconds: int


# -- repositories ------------------------------------------------------------------------


class CustomerRepository(Protocol):
    """Customers, unique by id and by email."""

    def add(self, customer: Customer) -> None:
        """Store a new customer."""
        ...

    def get(self, customer_id: str) -> Customer:
        """Return the customer or raise NotFound."""
        ...

    def find_by_email(self, email: str) -> Customer | None:
        """Return the customer with this (normalised) email, if any."""
        ...

    def update(self, customer: Customer) -> None:
        """Replace a stored customer."""
        ...

    def list(self, *, limit: int = 100, after: str | None = None) -> Sequence[Customer]:
        """Return customers ordered by id, after the cursor ``after``."""
        ...


class PlanRepository(Protocol):
    """Plans."""

    def add(self, plan: Plan) -> None:
        """Store a new plan."""
        ...

    def get(self, plan_id: str) -> Plan:
        """Return the plan or raise NotFound."""
        ...

    def update(self, plan: Plan) -> None:
        """Replace a stored plan."""
        ...

    def list(self, *, active_only: bool = False) -> Sequence[Plan]:
        """Return plans ordered by id."""
        ...


class PriceRepository(Protocol):
    """Prices; a price's amounts never change once created (as in Stripe)."""

    def add(self, price: Price) -> None:
        """Store a new price."""
        ...

    def get(self, price_id: str) -> Price:
        """Return the price or raise NotFound."""
        ...

    def update(self, price: Price) -> None:
        """Replace a stored price (its active flag or nickname)."""
        ...

    def list(self, *, plan_id: str | None = None, active_only: bool = False) -> Sequence[Price]:
        """Return prices ordered by id."""
        ...


class CouponRepository(Protocol):
    """Coupons."""

    def add(self, coupon: Coupon) -> None:
        """Store a new coupon."""
        ...

    def get(self, coupon_id: str) -> Coupon:
        """Return the coupon or raise NotFound."""
        ...

    def list(self) -> Sequence[Coupon]:
        """Return coupons ordered by id."""
        ...


class SubscriptionRepository(Protocol):
    """Subscriptions, indexed by when time-driven work is next due for them."""

    def add(self, subscription: Subscription) -> None:
        """Store a new subscription."""
        ...

    def get(self, subscription_id: str) -> Subscription:
        """Return the subscription or raise NotFound."""
        ...

    def update(self, subscription: Subscription) -> None:
        """Replace a stored subscription."""
        ...

    def list(
        self,
        *,
        customer_id: str | None = None,
        status: SubscriptionStatus | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[Subscription]:
        """Return subscriptions ordered by id, after the cursor ``after``."""
        ...

    def claim_due(self, at: datetime, *, limit: int) -> Sequence[Subscription]:
        """Return up to ``limit`` subscriptions with work due at ``at``, locked for this unit of work.

        Two units of work running at once never claim the same subscription.
        """
        ...


class InvoiceRepository(Protocol):
    """Invoices (one subscription-cycle invoice per subscription and period), numbers and pending lines.

    Invoices list in creation order; a cursor is an invoice id, and an unknown cursor
    raises NotFound.
    """

    def add(self, invoice: Invoice) -> None:
        """Store a new invoice; a second cycle invoice for the same period raises Conflict."""
        ...

    def get(self, invoice_id: str) -> Invoice:
        """Return the invoice or raise NotFound."""
        ...

    def update(self, invoice: Invoice) -> None:
        """Replace a stored invoice."""
        ...

    def list(
        self,
        *,
        customer_id: str | None = None,
        subscription_id: str | None = None,
        status: InvoiceStatus | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[Invoice]:
        """Return invoices in creation order, after the invoice ``after``."""
        ...

    def next_number(self) -> int:
        """Take the next invoice number of a gapless sequence (rolled back with the unit of work)."""
        ...

    def add_pending_line(self, pending: PendingLine) -> None:
        """Keep a proration line for the subscription's next invoice."""
        ...

    def take_pending_lines(self, subscription_id: str) -> Sequence[PendingLine]:
        """Remove and return the lines waiting for the subscription's next invoice."""
        ...


class PaymentRepository(Protocol):
    """Payments (unique by idempotency key) and refunds."""

    def add(self, payment: Payment) -> None:
        """Store a new payment; a reused idempotency key raises Conflict."""
        ...

    def get(self, payment_id: str) -> Payment:
        """Return the payment or raise NotFound."""
        ...

    def find(
        self, *, idempotency_key: str | None = None, gateway_reference: str | None = None
    ) -> Payment | None:
        """Return the payment with this idempotency key or gateway reference, if any."""
        ...

    def get_for_update(self, payment_id: str) -> Payment:
        """Return the payment locked until the unit of work ends, so settlements serialize.

        A second unit of work asking for the same payment waits, then sees what the first
        one committed.
        """
        ...

    def update(self, payment: Payment) -> None:
        """Replace a stored payment."""
        ...

    def list(
        self,
        *,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Payment]:
        """Return payments ordered by creation: at most ``limit``, those after ``after``.

        ``after`` is the id of a payment of the same list (a cursor); an unknown one raises
        NotFound. ``limit=None`` returns them all.
        """
        ...

    def pending(self, *, created_before: datetime, limit: int) -> Sequence[Payment]:
        """Return payments still pending that were created before ``created_before``."""
        ...

    def add_refund(self, refund: Refund) -> None:
        """Store a refund."""
        ...

    def refunds(
        self,
        *,
        payment_id: str | None = None,
        invoice_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Refund]:
        """Return refunds ordered by creation, paged as :meth:`list` pages payments."""
        ...


class CreditNoteRepository(Protocol):
    """Credit notes."""

    def add(self, note: CreditNote) -> None:
        """Store a credit note."""
        ...

    def list(
        self,
        *,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[CreditNote]:
        """Return credit notes ordered by creation, paged as payments are."""
        ...


class UsageRepository(Protocol):
    """Usage records of metered subscriptions."""

    def add(self, record: UsageRecord) -> None:
        """Store a usage record; a reused id raises Conflict."""
        ...

    def total(self, subscription_id: str, period: Period) -> int:
        """Return the quantity used in ``period`` (half-open)."""
        ...

    def list(
        self, subscription_id: str, *, limit: int | None = None, after: str | None = None
    ) -> Sequence[UsageRecord]:
        """Return the subscription's usage records ordered by time, paged as payments are."""
        ...


class OutboxRepository(Protocol):
    """Domain events waiting for delivery, written in the same unit of work as the change."""

    def add(self, message: OutboxMessage) -> None:
        """Store an event; a reused id raises Conflict."""
        ...

    def pending(self, *, limit: int) -> Sequence[OutboxMessage]:
        """Return undelivered messages, oldest first."""
        ...

    def mark_delivered(self, message_ids: Sequence[str], at: datetime) -> None:
        """Record that the messages were delivered; the first delivery time is kept.

        An unknown id raises NotFound.
        """
        ...

    def list(self, *, customer_id: str | None = None) -> Sequence[OutboxMessage]:
        """Return every message, oldest first."""
        ...


class AuditLog(Protocol):
    """The audit trail: append only, listed in the order entries were added."""

    def add(self, entry: AuditEntry) -> None:
        """Append an entry."""
        ...

    def list(
        self, *, subject_id: str | None = None, customer_id: str | None = None
    ) -> Sequence[AuditEntry]:
        """Return entries oldest first."""
        ...


class SubscriptionChangeRepository(Protocol):
    """Every subscription's history with its MRR, the source of historical metrics."""

    def add(self, change: SubscriptionChange) -> None:
        """Append a change."""
        ...

    def list(
        self,
        *,
        subscription_id: str | None = None,
        customer_id: str | None = None,
        until: datetime | None = None,
    ) -> Sequence[SubscriptionChange]:
        """Return changes oldest first, up to and including ``until``."""
        ...

    # The aggregates below read only the changes whose MRR is in ``currency``. A
    # subscription's MRR at an instant is the MRR of its last such change at or before it
    # (ties broken by the order the changes were added); every change of a subscription
    # names the subscription's customer. They equal what
    # :func:`~lumenquest_core.metrics.report_from_history` derives from ``list()``.

    def mrr_snapshots(self, period: Period, currency: str) -> MrrSnapshots:
        """Return each customer's MRR at ``period.start`` and at ``period.end``, and who came back."""
        ...

    def mrr_movements(self, period: Period, currency: str) -> MrrMovements:
        """Return the MRR movements over ``period``: ``snapshot_movements(mrr_snapshots(...))``.

        Only the totals come back, so a store can classify its customers where the data is.
        """
        ...

    def trial_outcomes(self, period: Period, currency: str) -> Sequence[TrialOutcome]:
        """Return ``(plan_id, converted)`` of each change in ``[start, end)`` leaving ``trialing``."""
        ...


AuditFields = tuple[
    str,  # id
    str,  # actor
    str,  # action
    str,  # subject_type
    str,  # subject_id
    datetime,  # at
    str | None,  # customer_id
    Mapping[str, Any] | None,  # before
    Mapping[str, Any] | None,  # after
]
"""An :class:`AuditEntry`'s fields, in its order, valid together and JSON-ready."""

ChangeFields = tuple[
    str,  # id
    str,  # subscription_id
    str,  # customer_id
    str,  # kind
    datetime,  # at
    str | None,  # from_status
    str,  # to_status
    str | None,  # from_price_id
    str,  # to_price_id
    int | None,  # from_quantity
    int,  # to_quantity
    Money,  # mrr
    str,  # plan_id
    Mapping[str, Any],  # data
]
"""A :class:`SubscriptionChange`'s fields, in its order, valid together."""


MessageFields = tuple[
    str,  # the message's id
    EventName,  # its event's name
    str,  # subject_id
    str,  # customer_id
    datetime,  # occurred_at
    Mapping[str, Any],  # data: JSON-ready, a mapping nothing else changes (the store may keep it)
]
"""An undelivered :class:`OutboxMessage`'s fields: its id, then its event's, in their order."""


def message_fields(message_id: str, event: DomainEvent) -> MessageFields:
    """Return the fields of the message ``message_id`` carrying ``event``."""
    return (
        message_id,
        event.name,
        event.subject_id,
        event.customer_id,
        event.occurred_at,
        event.data,
    )


class HistoryWriter(Protocol):
    """What a unit of work may also offer: a change's history rows written in one call.

    Optional: ``Billing`` looks for ``add_history`` on its unit of work and, without
    it, writes the same rows one by one through ``outbox``, ``audit_log`` and
    ``subscription_changes``. The rows come as fields, not objects: a renewal writes
    eight of them, and building each object only for a store to take it apart again
    cost more than storing it.
    """

    def add_history(
        self,
        at: datetime,
        messages: Sequence[MessageFields],
        entry: AuditFields | None = None,
        change: ChangeFields | None = None,
    ) -> None:
        """Store as ``outbox.add``, ``audit_log.add`` and ``subscription_changes.add`` would.

        ``messages``: each an undelivered ``OutboxMessage`` created at ``at``, stored in
        this order; then the audit entry; then the change. A reused id raises Conflict.
        """
        ...


class AnalyticsRepository(Protocol):
    """Analytics events."""

    def add(self, event: AnalyticsEvent) -> None:
        """Store an event; a reused id raises Conflict."""
        ...

    def add_new(self, events: Sequence[AnalyticsEvent]) -> None:
        """Store each event whose id is not stored yet; skip the others."""
        ...

    def list(
        self, *, customer_id: str | None = None, since: datetime | None = None
    ) -> Sequence[AnalyticsEvent]:
        """Return events oldest first."""
        ...


class EmailDeliveryRepository(Protocol):
    """Emails sent, unique per (event id, template), with their delivery status."""

    def add(self, delivery: EmailDelivery) -> None:
        """Store a delivery; the same event and template twice raises Conflict."""
        ...

    def add_new(self, deliveries: Sequence[EmailDelivery]) -> None:
        """Store each delivery whose event and template (and message id) are new; skip the others."""
        ...

    def find(self, event_id: str, template: str) -> EmailDelivery | None:
        """Return the delivery of this event's email, if it was sent."""
        ...

    def sent(self, keys: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Return the (event id, template) pairs among ``keys`` that have a delivery."""
        ...

    def get(self, message_id: str) -> EmailDelivery:
        """Return the delivery or raise NotFound."""
        ...

    def update(self, delivery: EmailDelivery) -> None:
        """Replace a stored delivery."""
        ...

    def list(self, *, customer_id: str | None = None) -> Sequence[EmailDelivery]:
        """Return deliveries oldest first."""
        ...


class IdempotencyStore(Protocol):
    """First results of idempotent calls, by key; kept until they expire."""

    def get(self, key: str, at: datetime) -> IdempotencyRecord | None:
        """Return the unexpired record for ``key``, if any."""
        ...

    def put(self, record: IdempotencyRecord) -> None:
        """Store a record; a record with the same key unexpired at ``record.created_at`` raises Conflict."""
        ...


class UnitOfWork(Protocol):
    """One transaction over every repository: nothing is kept unless ``commit`` is called."""

    @property
    def customers(self) -> CustomerRepository:
        """The customers of this unit of work."""
        ...

    @property
    def plans(self) -> PlanRepository:
        """The plans of this unit of work."""
        ...

    @property
    def prices(self) -> PriceRepository:
        """The prices of this unit of work."""
        ...

    @property
    def coupons(self) -> CouponRepository:
        """The coupons of this unit of work."""
        ...

    @property
    def subscriptions(self) -> SubscriptionRepository:
        """The subscriptions of this unit of work."""
        ...

    @property
    def invoices(self) -> InvoiceRepository:
        """The invoices of this unit of work."""
        ...

    @property
    def payments(self) -> PaymentRepository:
        """The payments of this unit of work."""
        ...

    @property
    def credit_notes(self) -> CreditNoteRepository:
        """The credit notes of this unit of work."""
        ...

    @property
    def usage(self) -> UsageRepository:
        """The usage of this unit of work."""
        ...

    @property
    def outbox(self) -> OutboxRepository:
        """The outbox of this unit of work."""
        ...

    @property
    def audit_log(self) -> AuditLog:
        """The audit log of this unit of work."""
        ...

    @property
    def subscription_changes(self) -> SubscriptionChangeRepository:
        """The subscription changes of this unit of work."""
        ...

    @property
    def analytics(self) -> AnalyticsRepository:
        """The analytics of this unit of work."""
        ...

    @property
    def email_deliveries(self) -> EmailDeliveryRepository:
        """The email deliveries of this unit of work."""
        ...

    @property
    def idempotency(self) -> IdempotencyStore:
        """The idempotency of this unit of work."""
        ...

    def __enter__(self) -> Self:
        """Begin the transaction."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Roll back whatever was not committed."""
        ...

    def prepare_batch(
        self,
        *,
        customers: Collection[str] = (),
        subscriptions: Collection[str] = (),
        invoices: Collection[str] = (),
        payments_for_update: Collection[str] = (),
        pending_lines_of: Collection[str] = (),
        known_invoices: Collection[Invoice] = (),
    ) -> None:
        """Announce that this unit of work processes many rows, so the store may batch it.

        Results never change, only when work happens: the named rows may be read now in
        a few statements (the payments locked as ``get_for_update`` would), and until the
        transaction ends, writes may be held back and sent in bulk before a read that
        needs them or at ``commit``; a broken constraint may then raise from ``commit``
        instead of from the write (nothing is kept either way). Unknown ids are no error
        here. ``known_invoices`` are invoices as the caller last saw them (it wrote them
        in an earlier unit of work): the store may answer with one of them, instead of
        reading its lines again, while its stored row is still exactly that invoice's.
        A store with nothing to gain implements it as a no-op.
        """
        ...

    def commit(self) -> None:
        """Keep every change made in this unit of work."""
        ...

    def rollback(self) -> None:
        """Discard every change not yet committed."""
        ...


# -- services beyond storage -------------------------------------------------------------


class PaymentGateway(Protocol):
    """Collects money. Declines are results; transient faults raise GatewayUnavailable.

    As Stripe does: the same idempotency key with other arguments raises
    IdempotencyConflict, an unknown reference raises NotFound, and refunding more than
    was charged raises ValidationError.
    """

    def ensure_customer(self, customer: Customer) -> str:
        """Create or update the customer at the gateway and return its reference there."""
        ...

    def charge(
        self,
        *,
        customer: Customer,
        amount: Money,
        idempotency_key: str,
        description: str,
        metadata: Mapping[str, str],
    ) -> ChargeResult:
        """Charge the customer's default payment method once per idempotency key."""
        ...

    def refund(self, *, reference: str, amount: Money, idempotency_key: str) -> str:
        """Refund part or all of a charge once per idempotency key; return the refund reference."""
        ...

    def find_charge(self, customer: Customer, idempotency_key: str) -> ChargeResult | None:
        """Return what the gateway did with the charge made under ``idempotency_key``, if any.

        ``None`` means no charge was ever made with that key. Billing asks this before
        sending a pending payment again, because a gateway forgets idempotency keys after a
        while (Stripe: 24 hours) and a late resend could otherwise charge twice.
        """
        ...


class EmailSender(Protocol):
    """Sends templated emails."""

    def send(self, message: EmailMessage) -> str:
        """Send the message and return the provider's id for it."""
        ...


class Cache(Protocol):
    """A string cache with expiry; a TTL below one second raises ValidationError."""

    def get(self, key: str) -> str | None:
        """Return the cached value, if present and unexpired."""
        ...

    def set(self, key: str, value: str, *, ttl_seconds: int) -> None:
        """Cache a value for ``ttl_seconds``."""
        ...

    def delete(self, *keys: str) -> None:
        """Forget the keys."""
        ...


class RateLimiter(Protocol):
    """Counts hits per key in fixed windows, atomically; a limit or window below 1 raises ValidationError."""

    def hit(self, key: str, *, limit: int, window_seconds: int) -> RateLimitDecision:
        """Count one hit and say whether it is within the limit."""
        ...


class Lock(Protocol):
    """A named mutual-exclusion lock that can span processes; a TTL below 1 raises ValidationError."""

    def hold(self, name: str, *, ttl_seconds: int) -> AbstractContextManager[bool]:
        """Hold the lock for the ``with`` block; the value says whether it was acquired."""
        ...
