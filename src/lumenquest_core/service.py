"""The ``Billing`` facade: every billing operation a host calls, built from ports.

Each mutating method runs in one unit of work: the state change, its domain events (to
the outbox), an audit row and, for subscriptions, a subscription-change row are written
together or not at all. Payments are collected after that commit, through the gateway,
with an idempotency key derived from the invoice and the attempt, and their outcome is
recorded in a second unit of work; a crash in between leaves a *pending* payment that
``run_due`` resolves by asking the gateway again with the same key, so nothing is ever
charged twice.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from lumenquest_core import invoicing, metrics
from lumenquest_core import subscriptions as lifecycle
from lumenquest_core._trusted import _new, _set, build_trusted, evolve_trusted
from lumenquest_core.catalog import Plan, Price, PricingScheme, Tier, UsageType
from lumenquest_core.codec import plan_from_dict, price_from_dict, to_jsonable
from lumenquest_core.coupons import Coupon, CouponDuration
from lumenquest_core.customers import Customer, Role, normalize_email
from lumenquest_core.dunning import DunningPolicy
from lumenquest_core.errors import (
    Conflict,
    CurrencyMismatch,
    GatewayUnavailable,
    IdempotencyConflict,
    InvalidTransition,
    LumenquestError,
    NotFound,
    PaymentDeclined,
    ValidationError,
)
from lumenquest_core.events import DomainEvent, EventName
from lumenquest_core.invoicing import (
    BillingReason,
    CreditNote,
    CreditNoteOutcome,
    Invoice,
    InvoiceStatus,
    Refund,
    TaxCalculator,
)
from lumenquest_core.lines import InvoiceLine, LineKind
from lumenquest_core.money import Money, currency_exponent
from lumenquest_core.payments import (
    AuditEntry,
    ChargeResult,
    ChargeStatus,
    Payment,
    PaymentStatus,
    SubscriptionChange,
    UsageRecord,
)
from lumenquest_core.periods import BillingCycle, Interval, Period, aware, iso_text, period_at
from lumenquest_core.ports import (
    AnalyticsEvent,
    AuditFields,
    Cache,
    ChangeFields,
    Clock,
    DeliveryStatus,
    EmailDelivery,
    EmailMessage,
    EmailSender,
    IdempotencyRecord,
    Lock,
    MessageFields,
    OutboxMessage,
    PaymentGateway,
    PendingLine,
    UnitOfWork,
    message_fields,
)
from lumenquest_core.proration import ChangeTiming, Granularity, ProrationBehavior
from lumenquest_core.subscriptions import Subscription, SubscriptionStatus, Transition

__all__ = [
    "Billing",
    "GatewayEvent",
    "GatewayEventType",
    "RunSummary",
    "new_id",
]

_Status = SubscriptionStatus
# Bound once: each Enum member lookup costs a metaclass hook in Python 3.11, and these are
# asked at every settled payment.
_ACTIVATED_BY_PAYMENT = frozenset({_Status.INCOMPLETE, _Status.PAST_DUE, _Status.UNPAID})
_PAYABLE = frozenset({InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE})
# The members the billing run asks for on every renewal, bound for the same reason: a
# metaclass hook costs about 1,000 instructions, and a renewal asked for seventeen.
_INCOMPLETE, _TRIALING, _PAUSED, _CANCELED = (
    _Status.INCOMPLETE,
    _Status.TRIALING,
    _Status.PAUSED,
    _Status.CANCELED,
)
_PAID, _OPEN = InvoiceStatus.PAID, InvoiceStatus.OPEN
_PENDING, _SUCCEEDED = PaymentStatus.PENDING, PaymentStatus.SUCCEEDED
_CHARGE_SUCCEEDED = ChargeStatus.SUCCEEDED
_CYCLE = BillingReason.SUBSCRIPTION_CYCLE
_METERED = UsageType.METERED
_INVOICE_FINALIZED, _PAYMENT_SUCCEEDED = EventName.INVOICE_FINALIZED, EventName.PAYMENT_SUCCEEDED
_INVOICE_PAID = EventName.INVOICE_PAID

_STATUS_VALUES: Mapping[SubscriptionStatus, str] = {m: m._value_ for m in SubscriptionStatus}

SYSTEM_ACTOR = "system"
_DISPATCH_LOCK = "lumenquest:dispatch-events"
_DISPATCH_LOCK_SECONDS = 300  # longer than any batch of emails takes to send
# How long a renewal run works on one subscription before moving on; a subscription this
# far behind finishes on the next run instead of holding a batch hostage.
_MAX_STEPS_PER_SUBSCRIPTION = 64

# Which email goes out for which event (the template names are the host's to map).
EMAIL_TEMPLATES: Mapping[EventName, str] = {
    EventName.CUSTOMER_CREATED: "welcome",
    EventName.TRIAL_WILL_END: "trial_ending",
    EventName.INVOICE_PAID: "invoice_paid",
    EventName.PAYMENT_FAILED: "payment_failed",
    EventName.SUBSCRIPTION_CHANGED: "subscription_changed",
    EventName.SUBSCRIPTION_CANCELED: "subscription_canceled",
}


def new_id(prefix: str) -> str:
    """Return a fresh id such as ``sub_019abc…``; ids of later milliseconds sort after it."""
    while True:
        try:
            entropy = _entropy.pop()  # one step under the GIL: no two callers share one
        except IndexError:
            _entropy.extend(_entropy_block())
        else:
            return _time_ordered_id(prefix, time.time_ns() // 1_000_000, entropy)


def _time_ordered_id(prefix: str, milliseconds: int, entropy: str) -> str:
    """Return the id made at ``milliseconds`` since the epoch with 20 hex digits of ``entropy``.

    32 hex digits, as UUIDv7 lays them out: 48 bits of milliseconds, then 80 random bits.
    """
    # Ordered by time, each new row's id lands at the right edge of its unique index, in
    # pages already cached, not on a random leaf page: a billing run of 100,000 on
    # PostgreSQL renews 13 % more a second (1,722 -> 1,957) and writes 10 % less WAL
    # than with 128 random bits. 80 random bits a millisecond keep ids unguessable.
    return f"{prefix}_{milliseconds:012x}{entropy}"


# Random bits for ids, drawn from the OS 512 ids' worth at a time: with an os.urandom
# call of its own, an id took 1.08 us instead of 0.56 (timeit), and a renewal makes ten.
_ENTROPY_PER_BLOCK = 512
_entropy: list[str] = []


def _entropy_block() -> list[str]:
    block = os.urandom(10 * _ENTROPY_PER_BLOCK).hex()
    return [block[start : start + 20] for start in range(0, len(block), 20)]


# A forked child must not hand out the ids its parent has left to hand out.
os.register_at_fork(after_in_child=_entropy.clear)


class GatewayEventType(enum.StrEnum):
    """The gateway notifications ``Billing`` understands, in the core's words."""

    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_FAILED = "payment_failed"
    CHARGE_REFUNDED = "charge_refunded"
    DISPUTE_CREATED = "dispute_created"


@attrs.frozen
class GatewayEvent:
    """A verified gateway notification; ``idempotency_key`` names our payment attempt."""

    id: str
    type: GatewayEventType
    occurred_at: datetime
    idempotency_key: str | None = None
    reference: str | None = None
    amount: Money | None = None
    decline_code: str | None = None
    message: str = ""


@attrs.define
class RunSummary:
    """What one ``run_due`` call did."""

    subscriptions: int = 0
    renewals: int = 0
    trials_ended: int = 0
    trial_reminders: int = 0
    resumed: int = 0
    canceled: int = 0
    expired: int = 0
    payment_retries: int = 0
    pending_updates_ended: int = 0  # changes paid first, applied or dropped at their expiry
    invoices: int = 0
    payments_succeeded: int = 0
    payments_failed: int = 0
    payments_pending: int = 0
    events_dispatched: int = 0


def _json_event(
    name: EventName, subject_id: str, customer_id: str, at: datetime, data: Mapping[str, Any]
) -> DomainEvent:
    """Return an event whose ``data`` is JSON data already: a fresh dict it adopts, or read-only."""
    return build_trusted(
        DomainEvent,
        {
            "name": name,
            "subject_id": subject_id,
            "customer_id": customer_id,
            "occurred_at": at,
            # What the event's converter makes of it, without the defensive copy: nothing
            # else holds the dict, or the mapping is read-only already.
            "data": data if type(data) is MappingProxyType else MappingProxyType(data),
        },
    )


def _paid_data(invoice: Invoice) -> dict[str, Any]:
    """Return the data of a paid invoice's ``invoice.paid`` event, a fresh dict."""
    # money_json's work spelled out, and a loop rather than a comprehension (a frame of its
    # own in Python 3.11): every settled renewal builds this data, and the four calls cost
    # more than the dictionaries they return (run_due over 3,000: see the commit).
    total, paid = invoice.total, invoice.amount_paid
    lines = []
    for line in invoice.lines:
        amount = line.amount
        lines.append(
            {
                "description": line.description,
                "amount": {"amount": amount.amount, "currency": amount.currency},
            }
        )
    return {
        "number": invoice.number,
        "total": {"amount": total.amount, "currency": total.currency},
        "amount_paid": {"amount": paid.amount, "currency": paid.currency},
        "lines": lines,
    }


_AUDIT_NAMES = tuple(field.name for field in attrs.fields(AuditEntry))
_CHANGE_NAMES = tuple(field.name for field in attrs.fields(SubscriptionChange))


def _write_history(
    uow: UnitOfWork,
    at: datetime,
    messages: Sequence[MessageFields],
    entry: AuditFields | None = None,
    change: ChangeFields | None = None,
) -> None:
    """Store a change's outbox messages, audit entry and change row (see HistoryWriter)."""
    # The optional port: one call, no object built per row. A store without it (a
    # host's own) gets the same rows through its repositories.
    add_history = getattr(uow, "add_history", None)
    if add_history is not None:
        add_history(at, messages, entry, change)
        return
    if messages:
        add = uow.outbox.add
        for message_id, name, subject_id, customer_id, occurred_at, data in messages:
            event = _json_event(name, subject_id, customer_id, occurred_at, data)
            add(
                build_trusted(
                    OutboxMessage,
                    {
                        "id": message_id,
                        "event": event,
                        "created_at": at,
                        "delivered_at": None,
                        "attempts": 0,
                    },
                )
            )
    if entry is not None:
        uow.audit_log.add(build_trusted(AuditEntry, dict(zip(_AUDIT_NAMES, entry, strict=True))))
    if change is not None:
        uow.subscription_changes.add(
            build_trusted(SubscriptionChange, dict(zip(_CHANGE_NAMES, change, strict=True)))
        )


def _messages(ids: Callable[[str], str], events: Iterable[DomainEvent]) -> list[MessageFields]:
    """Return the fields of a new outbox message for each event, each with a new id."""
    return [message_fields(ids("evt"), event) for event in events]


def _subscriber(uow: UnitOfWork, customer_id: str) -> Customer:
    """Return the customer subscribing; NotFound, or ValidationError if it was erased."""
    customer = uow.customers.get(customer_id)
    if customer.erased_at is not None:
        raise ValidationError(f"customer {customer_id} was erased")
    return customer


def _store_link(uow: UnitOfWork, linked: Customer) -> None:
    """Store a customer's gateway reference, unless another call stored one first."""
    current = uow.customers.get(linked.id)
    if current.gateway_customer_id is None:
        uow.customers.update(
            evolve_trusted(current, gateway_customer_id=linked.gateway_customer_id)
        )


_COUNTS = tuple(field.name for field in attrs.fields(RunSummary))


def _add_counts(summary: RunSummary, more: RunSummary) -> None:
    """Add ``more``'s counts to ``summary``."""
    for name in _COUNTS:
        setattr(summary, name, getattr(summary, name) + getattr(more, name))


# Private: not frozen, whose __init__ sets each field through object.__setattr__, twice the
# cost of a plain assignment (one a renewal).
@attrs.define
class _Charge:
    """A payment written as pending, to be sent to the gateway after commit.

    The gateway's answer, once it came, is kept on the charge itself (see ``_answer``): a
    billing run holds every charge of a batch until it settles, and one object per charge
    instead of a charge and its outcome is one object less for the garbage collector to
    walk (run_due over 3,000: see the commit).
    """

    payment: Payment
    customer: Customer
    description: str
    # The invoice as this process last wrote it: settling reuses it while it is unchanged.
    invoice: Invoice | None = None
    # The gateway's answer, set once by _answer.
    succeeded: bool = False
    reference: str | None = None
    decline_code: str | None = None
    message: str = ""


class _Busy(enum.Enum):
    """A claimed batch shares a customer with the batch settling meanwhile."""

    BUSY = "busy"


_BUSY = _Busy.BUSY


@attrs.define
class _Settling:
    """A batch's charges, being collected and recorded in the background."""

    future: Future[tuple[int, list[_Charge]]]
    charges: list[_Charge]
    customers: frozenset[str]  # whose rows the settlement may write


def _answer(charge: _Charge, result: ChargeResult) -> _Charge:
    """Return ``charge`` with the gateway's answer ``result`` kept on it."""
    charge.succeeded = result.status is _CHARGE_SUCCEEDED
    charge.reference = result.reference
    charge.decline_code = result.decline_code
    charge.message = result.message
    return charge


def _fingerprint(operation: str, arguments: Mapping[str, Any]) -> str:
    payload = json.dumps(
        {"operation": operation, "arguments": to_jsonable(arguments)}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


_NO_DATA: Mapping[str, Any] = MappingProxyType({})  # a change row's data, when it has none


def _snapshot(sub: Subscription) -> dict[str, Any]:
    """Return the audit view of a subscription: what changed, without personal data."""
    period = sub.current_period
    return {
        # A subscript, not .value (a Python-level property) nor ._value_ (an enum member's
        # instance attribute: no specialized read in Python 3.11).
        "status": _STATUS_VALUES[sub.status],
        "price_id": sub.price.id,
        "quantity": sub.quantity,
        # Built here rather than through to_jsonable: every renewal audits two snapshots.
        "period": {"start": iso_text(period.start), "end": iso_text(period.end)},
        "cancel_at_period_end": sub.cancel_at_period_end,
        "scheduled_change": None
        if sub.scheduled_change is None
        else {
            "price_id": sub.scheduled_change.price.id,
            "quantity": sub.scheduled_change.quantity,
        },
    }


class Billing:
    """The billing back office: customers, catalog, subscriptions, invoices, payments, metrics.

    Build it with the ports you want (``lumenquest_adapters`` wires ready-made sets, e.g.
    ``in_memory_billing``). Every mutating method takes ``idempotency_key``: the same key
    with the same arguments returns the first call's result (re-read from the store);
    with other arguments it raises ``IdempotencyConflict``.

    ``overlap_settlement=True`` lets ``run_due`` collect and record one batch's payments
    in a second thread while it bills the next batch. It needs a unit-of-work factory
    and a gateway that two threads may use at once (the SQLAlchemy store on PostgreSQL
    and the bundled gateways can); it pays where the store is a server that works while
    Python does, and gains nothing in memory or on SQLite, with its one writer.
    """

    def __init__(
        self,
        *,
        unit_of_work: Callable[[], UnitOfWork],
        clock: Clock,
        gateway: PaymentGateway,
        email: EmailSender,
        cache: Cache,
        tax: TaxCalculator | None = None,
        dunning: DunningPolicy | None = None,
        ids: Callable[[str], str] = new_id,
        invoice_prefix: str = "LQ",
        granularity: Granularity = Granularity.SECOND,
        change_timing: Callable[[Price, int, Price, int], ChangeTiming] = lifecycle.default_timing,
        idempotency_ttl: timedelta = timedelta(hours=24),
        cache_ttl_seconds: int = 300,
        batch_size: int = 500,
        pending_payment_grace: timedelta = timedelta(minutes=5),
        dispatch_immediately: bool = True,
        actor: str = SYSTEM_ACTOR,
        lock: Lock | None = None,
        overlap_settlement: bool = False,
    ) -> None:
        invoicing.format_invoice_number(invoice_prefix, 1)  # fail at start on a bad prefix
        if batch_size < 1:
            raise ValidationError("batch_size must be at least 1")
        self._uow = unit_of_work
        self.clock = clock
        self.gateway = gateway
        self.email = email
        self.cache = cache
        self._tax = tax
        self._dunning = dunning or DunningPolicy()
        self._ids = ids
        self._prefix = invoice_prefix
        self._granularity = granularity
        self._change_timing = change_timing
        self._idempotency_ttl = idempotency_ttl
        self._cache_ttl = cache_ttl_seconds
        self._batch_size = batch_size
        self._pending_grace = pending_payment_grace
        self._dispatch_immediately = dispatch_immediately
        self.actor = actor
        # With several processes dispatching, a shared lock keeps two of them from
        # sending the same email; one process alone needs none.
        self._lock = lock
        # run_due records a batch's payments in a second thread while it bills the next:
        # the database works on one while Python works on the other.
        self._overlap_settlement = overlap_settlement

    def as_actor(self, actor: str) -> Billing:
        """Return the same billing that records ``actor`` (e.g. ``"user:42"``) in the audit log."""
        other = object.__new__(Billing)
        other.__dict__.update(self.__dict__)
        other.actor = actor
        return other

    # -- plumbing -------------------------------------------------------------------

    def _now(self) -> datetime:
        return aware(self.clock.now(), "clock.now()")

    def _idempotent(
        self,
        uow: UnitOfWork,
        key: str | None,
        operation: str,
        arguments: Mapping[str, Any],
        at: datetime,
    ) -> str | None:
        """Return the id of the first result for ``key``, or None when the call is new."""
        if key is None:
            return None
        if not isinstance(key, str) or not key or len(key) > 255:
            raise ValidationError("idempotency_key must be a non-empty string of at most 255")
        record = uow.idempotency.get(key, at)
        if record is None:
            return None
        if record.fingerprint != _fingerprint(operation, arguments):
            raise IdempotencyConflict(
                f"idempotency key {key!r} was first used with other arguments",
                details={"idempotency_key": key, "operation": operation},
            )
        return str(record.result["id"])

    def _remember(
        self,
        uow: UnitOfWork,
        key: str | None,
        operation: str,
        arguments: Mapping[str, Any],
        result_id: str,
        at: datetime,
    ) -> None:
        if key is None:
            return
        uow.idempotency.put(
            IdempotencyRecord(
                key=key,
                fingerprint=_fingerprint(operation, arguments),
                result={"operation": operation, "id": result_id},
                created_at=at,
                expires_at=at + self._idempotency_ttl,
            )
        )

    def _emit(self, uow: UnitOfWork, events: Iterable[DomainEvent], at: datetime) -> None:
        _write_history(uow, at, _messages(self._ids, events))

    def _event(
        self, name: EventName, subject_id: str, customer_id: str, at: datetime, **data: Any
    ) -> DomainEvent:
        # Built without the converter's defensive copy: ``data`` is a fresh dict only the
        # event holds, so the read-only view over it is all the freezing it needs.
        return _json_event(name, subject_id, customer_id, at, to_jsonable(data))

    def _audit(
        self,
        uow: UnitOfWork,
        at: datetime,
        action: str,
        subject_type: str,
        subject_id: str,
        *,
        customer_id: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        json_ready: bool = False,
    ) -> None:
        """Add an audit row; ``json_ready``: before and after are JSON data already."""
        if not json_ready:
            before = None if before is None else to_jsonable(before)
            after = None if after is None else to_jsonable(after)
        entry = (
            self._ids("aud"),
            self.actor,
            action,
            subject_type,
            subject_id,
            at,
            customer_id,
            before,
            after,
        )
        _write_history(uow, at, (), entry)

    def _emit_data_and_audit(
        self,
        uow: UnitOfWork,
        at: datetime,
        messages: list[MessageFields],
        action: str,
        subject_type: str,
        subject_id: str,
        customer_id: str | None,
        after: dict[str, Any],
    ) -> None:
        """Write messages and the audit row of ``action`` at ``at``, in one history call.

        Each message comes as its fields, its event's data fresh JSON data, with an id the
        caller took before calling (the ids are taken in the order the rows are written:
        messages, then the entry). ``after`` (fresh JSON data too) may be one of the
        events' data: both then carry it.
        """
        # The events as fields, built by the callers: no DomainEvent built only for the
        # store to take it apart again, and no list of the events copied into one of
        # messages (run_due over 3,000: see the commits).
        ids = self._ids
        # The entry's fields spelled out, as in _audit and _apply: a shared helper building
        # them cost run_due over 3,000 8 million instructions more.
        entry = (
            ids("aud"),
            self.actor,
            action,
            subject_type,
            subject_id,
            at,
            customer_id,
            None,
            after,
        )
        # The writer called here rather than through _write_history: one call less.
        add_history = getattr(uow, "add_history", None)
        if add_history is None:
            _write_history(uow, at, messages, entry)
        else:
            add_history(at, messages, entry)

    def _apply(
        self,
        uow: UnitOfWork,
        before: Subscription | None,
        transition: Transition,
        action: str,
        at: datetime,
    ) -> Subscription:
        """Store a transition's subscription with its events, audit row and change row."""
        sub = transition.subscription
        if before is None:
            uow.subscriptions.add(sub)
        else:
            uow.subscriptions.update(sub)
        # Ids taken in the order the rows were written one by one: events, entry, change.
        ids = self._ids
        messages = []
        # A loop, not a comprehension (a frame of its own in Python 3.11), and
        # message_fields' tuple spelled out, without its call: every renewal has an event.
        for event in transition.events:
            messages.append(
                (
                    ids("evt"),
                    event.name,
                    event.subject_id,
                    event.customer_id,
                    event.occurred_at,
                    event.data,
                )
            )
        old = None if before is None else _snapshot(before)
        new = _snapshot(sub)
        sub_id, customer_id, price = sub.id, sub.customer_id, sub.price
        entry = (
            ids("aud"),
            self.actor,
            f"subscription.{action}",
            "subscription",
            sub_id,
            at,
            customer_id,
            old,
            new,
        )
        change = (
            ids("chg"),
            sub_id,
            customer_id,
            action,
            at,
            None if old is None else old["status"],
            new["status"],
            None if before is None else before.price.id,
            price.id,
            None if before is None else before.quantity,
            sub.quantity,
            metrics.subscription_mrr(sub),
            price.plan_id,
            _NO_DATA,
        )
        add_history = getattr(uow, "add_history", None)  # as in _emit_data_and_audit
        if add_history is None:
            _write_history(uow, at, messages, entry, change)
        else:
            add_history(at, messages, entry, change)
        return sub

    def _after_commit(
        self,
        charges: Sequence[_Charge],
        settled: dict[str, Subscription] | None = None,
        link: Customer | None = None,
    ) -> list[_Charge]:
        """Collect the charges, record their outcomes, and deliver the events.

        ``settled``, when given, receives each subscription whose payment this call recorded,
        as that record left it. ``link``: a customer just linked to the gateway, whose
        reference is stored with the outcomes (or alone, when there are none).
        """
        outcomes = self._collect(charges)
        if outcomes:
            self._settle(outcomes, settled, link)
        elif link is not None:
            with self._uow() as uow:
                _store_link(uow, link)
                uow.commit()
        self._dispatch_after_commit()
        return outcomes

    def _dispatch_after_commit(self) -> int:
        """Deliver the outbox now if so configured; a failing handler leaves it for later.

        The change is committed and its events wait in the outbox, so an email outage must
        not turn a successful call into an error (a retry without a key would repeat it).
        """
        if not self._dispatch_immediately:
            return 0
        try:
            return self.dispatch_events()
        except LumenquestError:
            return 0  # undelivered events stay pending for the next dispatch_events

    # -- customers ------------------------------------------------------------------

    def create_customer(
        self,
        *,
        email: str,
        name: str = "",
        currency: str | None = None,
        role: Role | str = Role.USER,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Customer:
        """Create a customer; emails are unique (case-insensitive)."""
        at = self._now()
        arguments = {
            "email": email,
            "name": name,
            "currency": currency,
            "role": str(role),
            "metadata": metadata,
        }
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "create_customer", arguments, at)
            if first is not None:
                return uow.customers.get(first)
            normalized = normalize_email(email)
            if uow.customers.find_by_email(normalized) is not None:
                raise Conflict(
                    "a customer with this email already exists", details={"field": "email"}
                )
            customer = Customer(
                id=self._ids("cus"),
                email=normalized,
                name=name,
                currency=currency,
                role=_choice(Role, role, "role"),
                created_at=at,
                metadata=metadata,
            )
            uow.customers.add(customer)
            self._emit(
                uow,
                [self._event(EventName.CUSTOMER_CREATED, customer.id, customer.id, at)],
                at,
            )
            self._audit(
                uow, at, "customer.created", "customer", customer.id, customer_id=customer.id
            )
            self._remember(uow, idempotency_key, "create_customer", arguments, customer.id, at)
            uow.commit()
        self._after_commit(())
        return customer

    def get_customer(self, customer_id: str) -> Customer:
        """Return the customer or raise NotFound."""
        with self._uow() as uow:
            return uow.customers.get(customer_id)

    def find_customer_by_email(self, email: str) -> Customer | None:
        """Return the customer with this email, if any."""
        with self._uow() as uow:
            return uow.customers.find_by_email(normalize_email(email))

    def list_customers(self, *, limit: int = 100, after: str | None = None) -> list[Customer]:
        """Return customers ordered by id, after the cursor ``after``."""
        with self._uow() as uow:
            return list(uow.customers.list(limit=_limit(limit), after=after))

    def update_customer(
        self,
        customer_id: str,
        *,
        email: str | None = None,
        name: str | None = None,
        role: Role | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Customer:
        """Change a customer's email, name, role or metadata."""
        at = self._now()
        arguments = {
            "id": customer_id,
            "email": email,
            "name": name,
            "role": role,
            "metadata": metadata,
        }
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "update_customer", arguments, at)
            if first is not None:
                return uow.customers.get(first)
            customer = uow.customers.get(customer_id)
            changes: dict[str, Any] = {}
            if email is not None:
                normalized = normalize_email(email)
                other = uow.customers.find_by_email(normalized)
                if other is not None and other.id != customer_id:
                    raise Conflict(
                        "a customer with this email already exists", details={"field": "email"}
                    )
                changes["email"] = normalized
            if name is not None:
                changes["name"] = name
            if role is not None:
                changes["role"] = _choice(Role, role, "role")
            if metadata is not None:
                changes["metadata"] = metadata
            updated = attrs.evolve(customer, **changes)
            uow.customers.update(updated)
            self._emit(
                uow,
                [
                    self._event(
                        EventName.CUSTOMER_UPDATED,
                        customer_id,
                        customer_id,
                        at,
                        fields=sorted(changes),
                    )
                ],
                at,
            )
            # Field names only: personal values stay out of the append-only audit log.
            self._audit(
                uow,
                at,
                "customer.updated",
                "customer",
                customer_id,
                customer_id=customer_id,
                after={"fields": sorted(changes)},
            )
            self._remember(uow, idempotency_key, "update_customer", arguments, customer_id, at)
            uow.commit()
        if updated.gateway_customer_id is not None and ("email" in changes or "name" in changes):
            # Keep the gateway's copy (receipts, card emails) in step; it is re-synced on
            # the next change if the gateway cannot be reached now.
            with contextlib.suppress(GatewayUnavailable):
                self.gateway.ensure_customer(updated)
        self._after_commit(())
        return updated

    # -- catalog --------------------------------------------------------------------

    def create_plan(
        self,
        *,
        name: str,
        features: Sequence[str] = (),
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Plan:
        """Create a plan with the features it grants."""
        at = self._now()
        arguments = {
            "name": name,
            "features": list(features),
            "description": description,
            "metadata": metadata,
        }
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "create_plan", arguments, at)
            if first is not None:
                return uow.plans.get(first)
            plan = Plan(
                id=self._ids("plan"),
                name=name,
                features=tuple(features),
                description=description,
                metadata=metadata,
            )
            uow.plans.add(plan)
            self._audit(uow, at, "plan.created", "plan", plan.id, after=to_jsonable(plan))
            self._remember(uow, idempotency_key, "create_plan", arguments, plan.id, at)
            uow.commit()
        self._forget_catalog(plan.id)
        return plan

    def update_plan(
        self,
        plan_id: str,
        *,
        name: str | None = None,
        features: Sequence[str] | None = None,
        description: str | None = None,
        active: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Plan:
        """Change a plan; archive it with ``active=False``."""
        at = self._now()
        arguments = {
            "id": plan_id,
            "name": name,
            "features": None if features is None else list(features),
            "description": description,
            "active": active,
            "metadata": metadata,
        }
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "update_plan", arguments, at)
            if first is not None:
                return uow.plans.get(first)
            before = uow.plans.get(plan_id)
            changes: dict[str, Any] = {
                key: value
                for key, value in {
                    "name": name,
                    "features": None if features is None else tuple(features),
                    "description": description,
                    "active": active,
                    "metadata": metadata,
                }.items()
                if value is not None
            }
            plan = attrs.evolve(before, **changes)
            uow.plans.update(plan)
            self._audit(
                uow,
                at,
                "plan.updated",
                "plan",
                plan.id,
                before=to_jsonable(before),
                after=to_jsonable(plan),
            )
            self._remember(uow, idempotency_key, "update_plan", arguments, plan.id, at)
            uow.commit()
        self._forget_catalog(plan.id)
        return plan

    def get_plan(self, plan_id: str) -> Plan:
        """Return a plan (read through the cache) or raise NotFound."""
        cached = self.cache.get(f"lq:plan:{plan_id}")
        if cached is not None:
            return plan_from_dict(json.loads(cached))
        with self._uow() as uow:
            plan = uow.plans.get(plan_id)
        self.cache.set(
            f"lq:plan:{plan_id}", json.dumps(to_jsonable(plan)), ttl_seconds=self._cache_ttl
        )
        return plan

    def list_plans(self, *, active_only: bool = False) -> list[Plan]:
        """Return plans (read through the cache), ordered by id."""
        key = f"lq:plans:{'active' if active_only else 'all'}"
        cached = self.cache.get(key)
        if cached is not None:
            return [plan_from_dict(item) for item in json.loads(cached)]
        with self._uow() as uow:
            plans = list(uow.plans.list(active_only=active_only))
        self.cache.set(key, json.dumps(to_jsonable(plans)), ttl_seconds=self._cache_ttl)
        return plans

    def create_price(
        self,
        *,
        plan_id: str,
        unit_amount: Money | None = None,
        cycle: BillingCycle | None = None,
        currency: str | None = None,
        scheme: PricingScheme | str = PricingScheme.PER_UNIT,
        tiers: Sequence[Tier] = (),
        usage_type: UsageType | str = UsageType.LICENSED,
        trial_days: int = 0,
        nickname: str = "",
        idempotency_key: str | None = None,
    ) -> Price:
        """Create a price for a plan; its amounts never change afterwards (archive and replace)."""
        at = self._now()
        cycle = cycle or BillingCycle(Interval.MONTH)
        if currency is None:
            if unit_amount is None and not tiers:
                raise ValidationError("a price needs unit_amount, tiers or a currency")
            currency = (
                unit_amount.currency if unit_amount is not None else tiers[0].unit_amount.currency
            )
        arguments = {
            "plan_id": plan_id,
            "unit_amount": unit_amount,
            "cycle": cycle,
            "currency": currency,
            "scheme": str(scheme),
            "tiers": list(tiers),
            "usage_type": str(usage_type),
            "trial_days": trial_days,
            "nickname": nickname,
        }
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "create_price", arguments, at)
            if first is not None:
                return uow.prices.get(first)
            plan = uow.plans.get(plan_id)
            if not plan.active:
                raise ValidationError(f"plan {plan_id} is archived", details={"plan_id": plan_id})
            price = Price(
                id=self._ids("price"),
                plan_id=plan_id,
                currency=currency,
                cycle=cycle,
                scheme=_choice(PricingScheme, scheme, "scheme"),
                unit_amount=unit_amount,
                tiers=tuple(tiers),
                usage_type=_choice(UsageType, usage_type, "usage_type"),
                trial_days=trial_days,
                nickname=nickname or plan.name,
            )
            uow.prices.add(price)
            self._audit(uow, at, "price.created", "price", price.id, after=to_jsonable(price))
            self._remember(uow, idempotency_key, "create_price", arguments, price.id, at)
            uow.commit()
        self._forget_catalog(plan_id, price.id)
        return price

    def archive_price(self, price_id: str, *, idempotency_key: str | None = None) -> Price:
        """Stop offering a price; existing subscriptions keep it."""
        at = self._now()
        arguments = {"id": price_id}
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "archive_price", arguments, at)
            if first is not None:
                return uow.prices.get(first)
            before = uow.prices.get(price_id)
            price = attrs.evolve(before, active=False)
            uow.prices.update(price)
            self._audit(
                uow,
                at,
                "price.archived",
                "price",
                price_id,
                before={"active": True},
                after={"active": False},
            )
            self._remember(uow, idempotency_key, "archive_price", arguments, price_id, at)
            uow.commit()
        self._forget_catalog(price.plan_id, price_id)
        return price

    def get_price(self, price_id: str) -> Price:
        """Return a price (read through the cache) or raise NotFound."""
        cached = self.cache.get(f"lq:price:{price_id}")
        if cached is not None:
            return price_from_dict(json.loads(cached))
        with self._uow() as uow:
            price = uow.prices.get(price_id)
        self.cache.set(
            f"lq:price:{price_id}", json.dumps(to_jsonable(price)), ttl_seconds=self._cache_ttl
        )
        return price

    def list_prices(self, *, plan_id: str | None = None, active_only: bool = False) -> list[Price]:
        """Return prices, optionally of one plan, ordered by id."""
        key = f"lq:prices:{plan_id or '*'}:{'active' if active_only else 'all'}"
        cached = self.cache.get(key)
        if cached is not None:
            return [price_from_dict(item) for item in json.loads(cached)]
        with self._uow() as uow:
            prices = list(uow.prices.list(plan_id=plan_id, active_only=active_only))
        self.cache.set(key, json.dumps(to_jsonable(prices)), ttl_seconds=self._cache_ttl)
        return prices

    def _forget_catalog(self, plan_id: str, price_id: str | None = None) -> None:
        keys = [
            f"lq:plan:{plan_id}",
            "lq:plans:active",
            "lq:plans:all",
            f"lq:prices:{plan_id}:active",
            f"lq:prices:{plan_id}:all",
            "lq:prices:*:active",
            "lq:prices:*:all",
        ]
        if price_id is not None:
            keys.append(f"lq:price:{price_id}")
        self.cache.delete(*keys)

    def create_coupon(
        self,
        *,
        percent_off: Any = None,
        amount_off: Money | None = None,
        duration: CouponDuration | str = CouponDuration.ONCE,
        duration_in_cycles: int | None = None,
        name: str = "",
        idempotency_key: str | None = None,
    ) -> Coupon:
        """Create a coupon: percent or amount off, once, for N invoices, or forever."""
        at = self._now()
        arguments = {
            "percent_off": percent_off,
            "amount_off": amount_off,
            "duration": str(duration),
            "duration_in_cycles": duration_in_cycles,
            "name": name,
        }
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "create_coupon", arguments, at)
            if first is not None:
                return uow.coupons.get(first)
            coupon = Coupon(
                id=self._ids("coupon"),
                name=name,
                percent_off=percent_off,
                amount_off=amount_off,
                duration=_choice(CouponDuration, duration, "duration"),
                duration_in_cycles=duration_in_cycles,
            )
            uow.coupons.add(coupon)
            self._audit(uow, at, "coupon.created", "coupon", coupon.id, after=to_jsonable(coupon))
            self._remember(uow, idempotency_key, "create_coupon", arguments, coupon.id, at)
            uow.commit()
        return coupon

    # -- subscriptions --------------------------------------------------------------

    def get_subscription(self, subscription_id: str) -> Subscription:
        """Return the subscription or raise NotFound."""
        with self._uow() as uow:
            return uow.subscriptions.get(subscription_id)

    def list_subscriptions(
        self,
        *,
        customer_id: str | None = None,
        status: SubscriptionStatus | str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Subscription]:
        """Return subscriptions ordered by id, optionally of one customer or status."""
        with self._uow() as uow:
            return list(
                uow.subscriptions.list(
                    customer_id=customer_id,
                    status=None
                    if status is None
                    else _choice(SubscriptionStatus, status, "status"),
                    limit=_limit(limit),
                    after=after,
                )
            )

    def subscribe(
        self,
        *,
        customer_id: str,
        price_id: str,
        quantity: int = 1,
        trial_days: int | None = None,
        trial_end: datetime | None = None,
        anchor: datetime | None = None,
        coupon_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Subscription:
        """Subscribe a customer to a price, charging the first period unless it is a trial.

        Without a trial the subscription is ``incomplete`` until its first invoice is paid;
        a successful charge makes it ``active`` before this method returns.
        """
        at = self._now()
        arguments = {
            "customer_id": customer_id,
            "price_id": price_id,
            "quantity": quantity,
            "trial_days": trial_days,
            "trial_end": trial_end,
            "anchor": anchor,
            "coupon_id": coupon_id,
        }
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "subscribe", arguments, at)
            if first is not None:
                return uow.subscriptions.get(first)
            # Every write below is new rows (and the customer's currency): queued, they go
            # to the store together at commit, where a broken rule still raises its Conflict.
            uow.prepare_batch(customers=[customer_id])
            # The price is asked for before the customer: a store may read the customer
            # with it (PostgreSQL: one statement for both, a round trip fewer). The errors
            # keep their order: a missing or erased customer before a missing price.
            try:
                price = uow.prices.get(price_id)
            except NotFound:
                _subscriber(uow, customer_id)
                raise
            customer = _subscriber(uow, customer_id)
            if not uow.plans.get(price.plan_id).active:
                raise ValidationError(f"the plan of price {price_id} is archived")
            coupon = None if coupon_id is None else uow.coupons.get(coupon_id)
            bound = customer.with_currency(price.currency)
            transition = lifecycle.start(
                subscription_id=self._ids("sub"),
                customer_id=customer_id,
                price=price,
                quantity=quantity,
                at=at,
                trial_days=trial_days,
                trial_end=trial_end,
                anchor=anchor,
                coupon=coupon,
                granularity=self._granularity,
            )
            if bound is not customer:
                uow.customers.update(bound)
            sub = self._apply(uow, None, transition, "created", at)
            sub, charges = self._bill(
                uow, sub, transition.lines, at, BillingReason.SUBSCRIPTION_CREATE, customer=bound
            )
            self._remember(uow, idempotency_key, "subscribe", arguments, sub.id, at)
            uow.commit()
        # Already linked when the transaction read it: the link is never undone, so no
        # need to read the customer again.
        linked = None if bound.gateway_customer_id is not None else self._gateway_link(bound)
        if linked is not None:
            charges = [attrs.evolve(charge, customer=linked) for charge in charges]
        settled: dict[str, Subscription] = {}
        self._after_commit(charges, settled, linked)
        if not charges:
            return sub  # nothing was charged: the subscription is as it was committed
        # As the payment's record left it; read again only if someone else recorded it.
        return settled.get(sub.id) or self.get_subscription(sub.id)

    def _gateway_link(self, customer: Customer) -> Customer | None:
        """Create the customer at the gateway before its first charge; return it linked, unstored.

        Stored with the charge's outcome (see :func:`_store_link`), not in a transaction of
        its own: ``ensure_customer`` finds the customer an earlier call made, so a link
        lost with a failed charge is made again, not twice.
        """
        try:
            reference = self.gateway.ensure_customer(customer)
        except GatewayUnavailable:
            return None  # the gateway finds or creates the customer when it charges
        return evolve_trusted(customer, gateway_customer_id=reference)

    def preview_change(
        self,
        subscription_id: str,
        *,
        price_id: str | None = None,
        quantity: int | None = None,
        timing: ChangeTiming | str | None = None,
        proration_behavior: ProrationBehavior | str = ProrationBehavior.CREATE_PRORATIONS,
    ) -> Invoice:
        """Return the upcoming invoice a change would produce; nothing is written.

        An immediate change shows its proration lines followed by the next period's
        charge at the new price; a change at period end shows the next renewal's invoice.
        """
        at = self._now()
        with self._uow() as uow:
            sub = uow.subscriptions.get(subscription_id)
            price = sub.price if price_id is None else uow.prices.get(price_id)
            customer = uow.customers.get(sub.customer_id)
            pending = [p.line for p in uow.invoices.take_pending_lines(sub.id)]
            uow.rollback()  # taking the pending lines was only a look
        new_quantity = sub.quantity if quantity is None else quantity
        chosen = self._timing(sub, price, new_quantity, timing)
        behavior = _choice(ProrationBehavior, proration_behavior, "proration_behavior")
        lines: list[InvoiceLine] = list(pending)
        if chosen is ChangeTiming.IMMEDIATE:
            changed = lifecycle.change(
                sub,
                price=price,
                quantity=new_quantity,
                at=at,
                proration_behavior=behavior,
                granularity=self._granularity,
            )
            lines += changed.lines
            after = changed.subscription
        else:
            after = attrs.evolve(sub, price=price, quantity=new_quantity)
        if after.price.usage_type is UsageType.LICENSED and not any(
            line.kind is LineKind.SUBSCRIPTION for line in lines
        ):
            next_period = period_at(after.anchor, after.cycle, after.current_period.end)
            lines.append(
                InvoiceLine(
                    kind=LineKind.SUBSCRIPTION,
                    description=f"{after.price.nickname or after.price.id}",
                    amount=after.price.amount_for(after.quantity),
                    quantity=after.quantity,
                    period=next_period,
                    price_id=after.price.id,
                    subscription_id=sub.id,
                )
            )
        return invoicing.build_invoice(
            invoice_id="upcoming",
            customer_id=sub.customer_id,
            currency=sub.currency,
            lines=lines,
            at=at,
            subscription_id=sub.id,
            billing_reason=BillingReason.SUBSCRIPTION_UPDATE,
            discount=after.discount,
            tax_calculator=self._tax,
            credit_balance=customer.balance(),
        )

    def _timing(
        self, sub: Subscription, price: Price, quantity: int, timing: ChangeTiming | str | None
    ) -> ChangeTiming:
        if timing is not None:
            return _choice(ChangeTiming, timing, "timing")
        return self._change_timing(sub.price, sub.quantity, price, quantity)

    def change_subscription(
        self,
        subscription_id: str,
        *,
        price_id: str | None = None,
        quantity: int | None = None,
        timing: ChangeTiming | str | None = None,
        proration_behavior: ProrationBehavior | str = ProrationBehavior.CREATE_PRORATIONS,
        payment_required: bool = False,
        idempotency_key: str | None = None,
    ) -> Subscription:
        """Change the price and/or quantity now or at period end (default: the change policy).

        With ``always_invoice`` the prorations are invoiced and charged at once. With
        ``payment_required=True`` as well, a declined charge leaves the old price in place
        and raises ``PaymentDeclined``; otherwise a declined charge opens dunning.
        """
        at = self._now()
        behavior = _choice(ProrationBehavior, proration_behavior, "proration_behavior")
        arguments = {
            "id": subscription_id,
            "price_id": price_id,
            "quantity": quantity,
            "timing": None if timing is None else str(timing),
            "behavior": behavior.value,
            "payment_required": payment_required,
        }
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "change_subscription", arguments, at)
            if first is not None:
                return uow.subscriptions.get(first)
            sub = uow.subscriptions.get(subscription_id)
            price = sub.price if price_id is None else uow.prices.get(price_id)
            if price.currency != sub.currency:
                raise CurrencyMismatch(
                    f"subscription {sub.id} bills in {sub.currency}, price {price.id} in {price.currency}"
                )
            new_quantity = sub.quantity if quantity is None else quantity
            chosen = self._timing(sub, price, new_quantity, timing)
            charges: list[_Charge] = []
            paid_first: _Charge | None = None
            if chosen is ChangeTiming.PERIOD_END:
                transition = lifecycle.schedule_change(
                    sub, price=price, quantity=new_quantity, at=at
                )
                self._apply(uow, sub, transition, "change_scheduled", at)
            else:
                transition = lifecycle.change(
                    sub,
                    price=price,
                    quantity=new_quantity,
                    at=at,
                    proration_behavior=behavior,
                    granularity=self._granularity,
                )
                invoice_now = behavior is ProrationBehavior.ALWAYS_INVOICE or any(
                    line.kind is LineKind.SUBSCRIPTION for line in transition.lines
                )
                pay_first = payment_required and invoice_now and sub.status is not _Status.TRIALING
                if pay_first:
                    # Invoice first and change only once paid; with nothing to pay, change now.
                    paid_first, transition = self._invoice_before_change(uow, sub, transition, at)
                    if paid_first is not None:
                        # Held with its invoice, in the same unit of work: whoever records
                        # the payment later (this call, run_due, a webhook) applies it.
                        self._hold_change(uow, sub, transition, paid_first, at)
                if paid_first is None:
                    changed = self._apply(uow, sub, transition, "changed", at)
                    if invoice_now and not pay_first:
                        changed, charges = self._bill(
                            uow, changed, transition.lines, at, BillingReason.SUBSCRIPTION_UPDATE
                        )
                    elif not invoice_now:
                        self._keep_pending(uow, changed, transition.lines, at)
            self._remember(uow, idempotency_key, "change_subscription", arguments, sub.id, at)
            uow.commit()
        if paid_first is not None:
            return self._complete_paid_change(paid_first, subscription_id, at)
        self._after_commit(charges)
        return self.get_subscription(subscription_id)

    def _invoice_before_change(
        self, uow: UnitOfWork, sub: Subscription, transition: Transition, at: datetime
    ) -> tuple[_Charge | None, Transition]:
        """Invoice a change's lines without applying it yet (payment comes first).

        Return the charge to collect (None when nothing is due) and the transition carrying
        the discount the invoice used: the stored subscription keeps its discount until the
        change applies, so a declined change uses up no coupon cycle.
        """
        customer = uow.customers.get(sub.customer_id)
        invoice, invoiced = self._finalized_invoice(
            uow, customer, sub, transition.lines, at, BillingReason.SUBSCRIPTION_UPDATE
        )
        if invoiced is not None and invoiced.discount != sub.discount:
            uow.subscriptions.update(sub)
            transition = attrs.evolve(
                transition,
                subscription=attrs.evolve(transition.subscription, discount=invoiced.discount),
            )
        if invoice is None or invoice.status is not InvoiceStatus.OPEN:
            return None, transition
        return self._new_payment(uow, invoice, customer, at), transition

    def _hold_change(
        self,
        uow: UnitOfWork,
        sub: Subscription,
        transition: Transition,
        charge: _Charge,
        at: datetime,
    ) -> None:
        """Store the change as the subscription's pending update, waiting for its invoice."""
        invoice_id = charge.payment.invoice_id
        held = lifecycle.hold_change(sub, transition, invoice_id=invoice_id, at=at)
        uow.subscriptions.update(held)
        pending = held.pending_update
        assert pending is not None
        self._audit(
            uow,
            at,
            "subscription.change_pending",
            "subscription",
            sub.id,
            customer_id=sub.customer_id,
            after={
                "price_id": pending.price.id,
                "quantity": pending.quantity,
                "invoice_id": invoice_id,
                "expires_at": pending.expires_at,
            },
        )

    def _complete_paid_change(self, charge: _Charge, sub_id: str, at: datetime) -> Subscription:
        """Charge a change's invoice; recording the payment applies or drops the change."""
        outcomes = self._collect([charge])
        if not outcomes:
            # The outcome is unknown: the payment stays pending for run_due to resolve with
            # the same idempotency key; the change applies if and when it is paid.
            self._dispatch_after_commit()
            raise GatewayUnavailable(
                "the payment gateway did not answer; the change applies once the payment"
                " is confirmed, or is dropped if it is not",
                details={"subscription_id": sub_id, "invoice_id": charge.payment.invoice_id},
            )
        outcome = outcomes[0]
        with self._uow() as uow:
            payment = uow.payments.get_for_update(charge.payment.id)
            if payment.status is PaymentStatus.PENDING:  # else a webhook recorded it first
                invoice = uow.invoices.get(charge.payment.invoice_id)
                if outcome.succeeded:
                    self._record_success(uow, payment, outcome.reference, invoice, at)
                else:
                    uow.payments.update(payment.failed(at, outcome.decline_code, outcome.message))
                    self._drop_pending_update(
                        uow, uow.subscriptions.get(sub_id), invoice, at, "payment_declined"
                    )
            uow.commit()
        self._dispatch_after_commit()
        if not outcome.succeeded:
            raise PaymentDeclined(
                outcome.message or "the payment for this change was declined; nothing changed",
                decline_code=outcome.decline_code,
                details={"subscription_id": sub_id, "invoice_id": charge.payment.invoice_id},
            )
        return self.get_subscription(sub_id)

    def cancel(
        self,
        subscription_id: str,
        *,
        at_period_end: bool = False,
        prorate: bool = False,
        idempotency_key: str | None = None,
    ) -> Subscription:
        """Cancel now or at period end; ``prorate`` credits the unused time to the customer."""
        at = self._now()
        arguments = {"id": subscription_id, "at_period_end": at_period_end, "prorate": prorate}
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "cancel", arguments, at)
            if first is not None:
                return uow.subscriptions.get(first)
            sub = uow.subscriptions.get(subscription_id)
            transition = lifecycle.cancel(
                sub,
                at=at,
                at_period_end=at_period_end,
                prorate=prorate,
                granularity=self._granularity,
            )
            canceled = self._apply(
                uow, sub, transition, "cancel_scheduled" if at_period_end else "canceled", at
            )
            charges: list[_Charge] = []
            if not at_period_end:
                lines = [
                    *transition.lines,
                    *self._final_usage(
                        uow,
                        sub,
                        Period(sub.current_period.start, at)
                        if at > sub.current_period.start
                        else None,
                        through=at,
                    ),
                ]
                lines += [p.line for p in uow.invoices.take_pending_lines(sub.id)]
                if lines:
                    canceled, charges = self._bill(
                        uow, canceled, lines, at, BillingReason.SUBSCRIPTION_UPDATE
                    )
            self._remember(uow, idempotency_key, "cancel", arguments, sub.id, at)
            uow.commit()
        self._after_commit(charges)
        return self.get_subscription(subscription_id)

    def reactivate(
        self, subscription_id: str, *, idempotency_key: str | None = None
    ) -> Subscription:
        """Undo a cancellation scheduled for the period end."""
        return self._simple(
            "reactivate",
            subscription_id,
            idempotency_key,
            lifecycle.undo_cancel,
            "reactivated",
        )

    def pause(
        self,
        subscription_id: str,
        *,
        resumes_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Subscription:
        """Pause collection: nothing renews or is invoiced until it resumes."""
        return self._simple(
            "pause",
            subscription_id,
            idempotency_key,
            lambda sub, at: lifecycle.pause(sub, at=at, resumes_at=resumes_at),
            "paused",
            resumes_at=resumes_at,
        )

    def resume(self, subscription_id: str, *, idempotency_key: str | None = None) -> Subscription:
        """Resume a paused subscription, billing a new period if the paid one has ended."""
        return self._simple(
            "resume",
            subscription_id,
            idempotency_key,
            lifecycle.resume,
            "resumed",
        )

    def _simple(
        self,
        operation: str,
        subscription_id: str,
        idempotency_key: str | None,
        step: Callable[[Subscription, datetime], Transition],
        action: str,
        **extra: Any,
    ) -> Subscription:
        at = self._now()
        arguments = {"id": subscription_id, **extra}
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, operation, arguments, at)
            if first is not None:
                return uow.subscriptions.get(first)
            sub = uow.subscriptions.get(subscription_id)
            transition = step(sub, at)
            changed = self._apply(uow, sub, transition, action, at)
            charges: list[_Charge] = []
            if transition.lines:
                changed, charges = self._bill(
                    uow, changed, transition.lines, at, BillingReason.SUBSCRIPTION_CYCLE
                )
            self._remember(uow, idempotency_key, operation, arguments, sub.id, at)
            uow.commit()
        self._after_commit(charges)
        return self.get_subscription(subscription_id)

    def record_usage(
        self,
        subscription_id: str,
        *,
        quantity: int,
        at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> UsageRecord:
        """Record usage of a metered subscription; it is billed in arrears at renewal."""
        now = self._now()
        when = now if at is None else aware(at, "at")
        arguments = {"id": subscription_id, "quantity": quantity, "at": when}
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "record_usage", arguments, now)
            if first is not None:
                return next(r for r in uow.usage.list(subscription_id) if r.id == first)
            sub = uow.subscriptions.get(subscription_id)
            if sub.price.usage_type is not UsageType.METERED:
                raise ValidationError(
                    f"subscription {subscription_id} has a licensed price; usage is for metered prices"
                )
            if sub.status in (_Status.CANCELED, _Status.INCOMPLETE_EXPIRED):
                raise InvalidTransition(
                    f"cannot record usage on a {sub.status} subscription",
                    details={"status": sub.status.value, "operation": "record_usage"},
                )
            if when > now:
                raise ValidationError("usage cannot be recorded in the future")
            if when < sub.current_period.start:
                # That period is invoiced already: accepting it would lose it silently.
                raise ValidationError(
                    "usage cannot be recorded before the current period, which is billed",
                    details={
                        "at": when.isoformat(),
                        "period_start": sub.current_period.start.isoformat(),
                    },
                )
            record = UsageRecord(
                id=self._ids("usage"), subscription_id=sub.id, quantity=quantity, at=when
            )
            uow.usage.add(record)
            self._emit(
                uow,
                [
                    self._event(
                        EventName.USAGE_RECORDED, sub.id, sub.customer_id, now, quantity=quantity
                    )
                ],
                now,
            )
            self._audit(
                uow,
                now,
                "usage.recorded",
                "subscription",
                sub.id,
                customer_id=sub.customer_id,
                after={"quantity": quantity},
            )
            self._remember(uow, idempotency_key, "record_usage", arguments, record.id, now)
            uow.commit()
        self._after_commit(())
        return record

    def list_usage(
        self, subscription_id: str, *, limit: int | None = None, after: str | None = None
    ) -> list[UsageRecord]:
        """Return a subscription's usage records, oldest first: ``limit`` of them after ``after``."""
        with self._uow() as uow:
            uow.subscriptions.get(subscription_id)
            return list(uow.usage.list(subscription_id, limit=limit, after=after))

    # -- invoicing ------------------------------------------------------------------

    def _final_usage(
        self,
        uow: UnitOfWork,
        sub: Subscription,
        period: Period | None,
        *,
        through: datetime | None = None,
    ) -> list[InvoiceLine]:
        """Return the in-arrears usage line for ``period``.

        ``through`` also counts usage recorded at that very instant: a cancellation ends the
        subscription then, so nothing recorded up to it may be left unbilled.
        """
        if period is None or sub.price.usage_type is not UsageType.METERED:
            return []
        counted = (
            period if through is None else Period(period.start, through + timedelta.resolution)
        )
        used = uow.usage.total(sub.id, counted)
        return [
            invoicing.usage_line(sub.price, quantity=used, period=period, subscription_id=sub.id)
        ]

    def _keep_pending(
        self, uow: UnitOfWork, sub: Subscription, lines: Iterable[InvoiceLine], at: datetime
    ) -> None:
        for line in lines:
            uow.invoices.add_pending_line(
                PendingLine(
                    id=self._ids("ii"),
                    customer_id=sub.customer_id,
                    subscription_id=sub.id,
                    line=line,
                    created_at=at,
                )
            )

    def _finalized_invoice(
        self,
        uow: UnitOfWork,
        customer: Customer,
        sub: Subscription | None,
        lines: Sequence[InvoiceLine],
        at: datetime,
        reason: BillingReason,
        period: Period | None = None,
    ) -> tuple[Invoice | None, Subscription | None]:
        """Build, number and store an invoice, applying credit and consuming the discount."""
        if not lines:
            return None, sub
        currency = lines[0].amount.currency
        balance = customer.balance() if customer.currency == currency else None
        # Numbered first and built finalized: one invoice object instead of a draft and
        # its copy (a number taken by a unit of work that fails is rolled back with it).
        number = invoicing.format_invoice_number(self._prefix, uow.invoices.next_number())
        invoice = invoicing.build_invoice(
            invoice_id=self._ids("in"),
            customer_id=customer.id,
            currency=currency,
            lines=lines,
            at=at,
            subscription_id=None if sub is None else sub.id,
            billing_reason=reason,
            period=period,
            discount=None if sub is None else sub.discount,
            tax_calculator=self._tax,
            credit_balance=balance,
            number=number,
        )
        uow.invoices.add(invoice)
        if balance is not None and (
            # A negative total generates credit: credit_generated's test, without the
            # property's call and the Money it builds.
            invoice.credit_applied.amount or invoice.total.amount < 0
        ):
            uow.customers.update(
                attrs.evolve(
                    customer, credit_balance=invoicing.customer_balance_after(invoice, balance)
                )
            )
        # The event and the audit row carry the same facts: converted to JSON data once,
        # and handed to both as the one mapping (a store may then keep it once).
        # (money_json's work spelled out, as in _paid_data.)
        total, due = invoice.total, invoice.amount_due
        finalized = {
            "number": number,
            "total": {"amount": total.amount, "currency": total.currency},
            "amount_due": {"amount": due.amount, "currency": due.currency},
        }
        ids = self._ids
        messages: list[MessageFields] = [
            (ids("evt"), _INVOICE_FINALIZED, invoice.id, customer.id, at, finalized)
        ]
        if invoice.status is _PAID:
            paid = _paid_data(invoice)
            messages.append((ids("evt"), _INVOICE_PAID, invoice.id, invoice.customer_id, at, paid))
        self._emit_data_and_audit(
            uow,
            at,
            messages,
            "invoice.finalized",
            "invoice",
            invoice.id,
            customer.id,
            finalized,
        )
        if sub is not None and invoice.discount_coupon_id is not None:
            used = lifecycle.discount_used(sub)
            if used != sub:
                uow.subscriptions.update(used)
                sub = used
        return invoice, sub

    def _paid_event(self, invoice: Invoice, at: datetime) -> DomainEvent:
        return _json_event(_INVOICE_PAID, invoice.id, invoice.customer_id, at, _paid_data(invoice))

    def _bill(
        self,
        uow: UnitOfWork,
        sub: Subscription,
        lines: Sequence[InvoiceLine],
        at: datetime,
        reason: BillingReason,
        *,
        customer: Customer | None = None,
    ) -> tuple[Subscription, list[_Charge]]:
        """Invoice ``lines`` for a subscription and queue the payment if anything is due.

        ``customer``: the subscription's customer as this unit of work already holds it.
        """
        charges: list[_Charge] = []
        return self._bill_into(uow, sub, lines, at, reason, None, charges, customer), charges

    def _bill_into(
        self,
        uow: UnitOfWork,
        sub: Subscription,
        lines: Sequence[InvoiceLine],
        at: datetime,
        reason: BillingReason,
        period: Period | None,
        charges: list[_Charge],
        customer: Customer | None = None,
    ) -> Subscription:
        """:meth:`_bill`, appending the payment to queue (if any) to ``charges``.

        The billing run's form: each renewal's charge goes straight to its batch's list,
        with no list of one and no tuple built on the way (run_due over 3,000: see the
        commit).
        """
        if customer is None:
            customer = uow.customers.get(sub.customer_id)
        invoice, updated = self._finalized_invoice(uow, customer, sub, lines, at, reason, period)
        assert updated is not None
        if invoice is None:
            return updated
        if invoice.status is not _OPEN:
            if updated.status is _INCOMPLETE:
                # Nothing left to pay (credit or a coupon covered it): the first invoice is paid.
                updated = self._apply(
                    uow, updated, lifecycle.payment_succeeded(updated, at), "payment_succeeded", at
                )
            return updated
        charges.append(self._new_payment(uow, invoice, customer, at, attempt=1))
        return updated

    def _new_payment(
        self,
        uow: UnitOfWork,
        invoice: Invoice,
        customer: Customer,
        at: datetime,
        *,
        attempt: int | None = None,
    ) -> _Charge:
        """Store a pending payment of the invoice's amount due; ``attempt=1`` for a new invoice."""
        if attempt is None:
            attempt = len(uow.payments.list(invoice_id=invoice.id)) + 1
        # _now's work, without its call and aware's for the usual UTC instant: every renewal
        # stores a payment.
        now = self.clock.now()
        if type(now) is not datetime or now.tzinfo is not UTC:
            now = aware(now, "clock.now()")
        # build_trusted's work, without its call: every renewal stores a payment.
        payment = _new(Payment)
        _set(
            payment,
            "__dict__",
            {
                "id": self._ids("pay"),
                "invoice_id": invoice.id,
                "customer_id": customer.id,
                "amount": invoice.amount_due,
                "status": _PENDING,
                "idempotency_key": f"{invoice.id}:{attempt}",
                "attempt": attempt,
                # When it was sent, not when the work was due: the pending-payment grace must
                # measure the time in flight, or a late run would hand its own charges to others.
                "created_at": now,
                "gateway_reference": None,
                "failure_code": None,
                "failure_message": "",
                "amount_refunded": None,
                "settled_at": None,
            },
        )
        uow.payments.add(payment)
        # Positional: attrs' __init__ takes keywords more slowly, and every renewal has one.
        return _Charge(payment, customer, f"Invoice {invoice.number}", invoice)

    def _collect(self, charges: Sequence[_Charge]) -> list[_Charge]:
        """Send each charge to the gateway; return those it answered, with their answers.

        An unreachable gateway leaves a charge pending, and out of the list.
        """
        outcomes = []
        for charge in charges:
            payment = charge.payment
            try:
                result = self.gateway.charge(
                    customer=charge.customer,
                    amount=payment.amount,
                    idempotency_key=payment.idempotency_key,
                    description=charge.description,
                    metadata={"invoice_id": payment.invoice_id, "payment_id": payment.id},
                )
            except GatewayUnavailable:
                continue  # stays pending; run_due asks again with the same idempotency key
            # _answer's body, without its call: every renewal's charge comes through here.
            charge.succeeded = result.status is _CHARGE_SUCCEEDED
            charge.reference = result.reference
            charge.decline_code = result.decline_code
            charge.message = result.message
            outcomes.append(charge)
        return outcomes

    def _settle(
        self,
        outcomes: Sequence[_Charge],
        settled: dict[str, Subscription] | None = None,
        link: Customer | None = None,
    ) -> list[_Charge]:
        """Record the outcomes still pending; return those this call recorded.

        ``settled``, when given, receives the subscription of each recorded payment as the
        record left it (the unit of work holds it already: no read). ``link``: a customer
        whose gateway reference is stored too.
        """
        at = self._now()
        recorded: list[_Charge] = []
        with self._uow() as uow:
            uow.prepare_batch(
                payments_for_update=[o.payment.id for o in outcomes],
                invoices={o.payment.invoice_id for o in outcomes},
                known_invoices=[o.invoice for o in outcomes if o.invoice],
                # Read in the batch, so that the link's update waits for the flush.
                customers=() if link is None else (link.id,),
            )
            if link is not None:
                _store_link(uow, link)
            # An invoice's subscription never changes: the invoice this process wrote
            # serves, with no read (a billing run's charges all carry theirs).
            uow.prepare_batch(
                subscriptions={
                    invoice.subscription_id
                    for invoice in (
                        o.invoice or uow.invoices.get(o.payment.invoice_id) for o in outcomes
                    )
                    if invoice.subscription_id is not None
                }
            )
            for outcome in outcomes:
                # Locked: a second run or a webhook settling the same payment waits here
                # and then finds it settled, instead of recording it twice.
                payment = uow.payments.get_for_update(outcome.payment.id)
                if payment.status is not _PENDING:
                    continue  # another worker or a webhook already recorded it
                recorded.append(outcome)
                invoice = uow.invoices.get(payment.invoice_id)
                if outcome.succeeded:
                    self._record_success(uow, payment, outcome.reference, invoice, at)
                else:
                    self._record_failure(
                        uow,
                        payment,
                        outcome.reference,
                        outcome.decline_code,
                        outcome.message,
                        invoice,
                        at,
                    )
                if settled is not None and invoice.subscription_id is not None:
                    settled[invoice.subscription_id] = uow.subscriptions.get(
                        invoice.subscription_id
                    )
            uow.commit()
        return recorded

    def _record_success(
        self,
        uow: UnitOfWork,
        payment: Payment,
        reference: str | None,
        invoice: Invoice,
        at: datetime,
    ) -> None:
        # What the payment does to its subscription is read before anything is written: a
        # read after a queued write makes a batch send its writes early, a second time.
        sub: Subscription | None = None
        transition: Transition | None = None
        action = "payment_succeeded"
        if invoice.subscription_id is not None:
            sub = uow.subscriptions.get(invoice.subscription_id)
            pending = sub.pending_update
            if pending is not None and pending.invoice_id == invoice.id:
                transition, action = lifecycle.apply_pending_update(sub), "changed"
            elif sub.status in _ACTIVATED_BY_PAYMENT and not self._other_open(uow, sub, invoice.id):
                transition = lifecycle.payment_succeeded(sub, at)
        # evolve_trusted, without packing and unpacking keywords: every renewal settles one.
        state = dict(payment.__dict__)
        state["status"], state["gateway_reference"], state["settled_at"] = _SUCCEEDED, reference, at
        settled = _new(Payment)
        _set(settled, "__dict__", state)  # build_trusted's work, without its call
        uow.payments.update(settled)
        # The event and the audit row carry the same facts, as the one mapping (see
        # _finalized_invoice): a store may keep it once (run_due over 3,000: see the commit).
        # (money_json's work spelled out, as in _paid_data.)
        amount = payment.amount
        succeeded = {
            "invoice_id": invoice.id,
            "amount": {"amount": amount.amount, "currency": amount.currency},
        }
        ids = self._ids
        messages: list[MessageFields] = [
            (ids("evt"), _PAYMENT_SUCCEEDED, payment.id, payment.customer_id, at, succeeded)
        ]
        if invoice.status in _PAYABLE:
            paid = invoicing.pay(invoice, at=at)
            uow.invoices.update(paid)
            data = _paid_data(paid)
            messages.append((ids("evt"), _INVOICE_PAID, paid.id, paid.customer_id, at, data))
        self._emit_data_and_audit(
            uow,
            at,
            messages,
            "payment.succeeded",
            "payment",
            payment.id,
            payment.customer_id,
            succeeded,
        )
        if sub is not None and transition is not None:
            self._apply(uow, sub, transition, action, at)

    def _drop_pending_update(
        self, uow: UnitOfWork, sub: Subscription, invoice: Invoice, at: datetime, reason: str
    ) -> None:
        """Void the pending update's unpaid invoice and forget the change it was for."""
        if invoice.status is InvoiceStatus.OPEN:
            _void_and_return_credit(uow, invoice, at)
            voided = self._event(
                EventName.INVOICE_VOIDED, invoice.id, invoice.customer_id, at, reason=reason
            )
            self._emit(uow, [voided], at)
        pending = sub.pending_update
        if pending is None or pending.invoice_id != invoice.id:
            return
        uow.subscriptions.update(lifecycle.drop_pending_update(sub))
        self._audit(
            uow,
            at,
            "subscription.change_dropped",
            "subscription",
            sub.id,
            customer_id=sub.customer_id,
            before={"price_id": pending.price.id, "quantity": pending.quantity},
            after={"reason": reason, "invoice_id": invoice.id},
        )

    def _end_pending_update(
        self, uow: UnitOfWork, sub: Subscription, due: datetime
    ) -> Subscription:
        """At its expiry, apply the pending update if its invoice got paid, else drop it."""
        pending = sub.pending_update
        assert pending is not None
        invoice = uow.invoices.get(pending.invoice_id)
        if invoice.status is InvoiceStatus.OPEN:
            paid = self._resolve_before_expiry(
                uow, invoice, due, "the change it paid for expired before the payment went through"
            )
            if paid is None:
                return sub  # the gateway cannot say yet: decide on a later run
            if paid:
                return uow.subscriptions.get(sub.id)
        if invoice.status is InvoiceStatus.PAID:
            return self._apply(uow, sub, lifecycle.apply_pending_update(sub), "changed", due)
        self._drop_pending_update(
            uow, sub, uow.invoices.get(invoice.id), due, "pending_update_expired"
        )
        return uow.subscriptions.get(sub.id)

    def _other_open(self, uow: UnitOfWork, sub: Subscription, paid_invoice_id: str) -> bool:
        return any(
            inv.id != paid_invoice_id
            for inv in uow.invoices.list(subscription_id=sub.id, status=InvoiceStatus.OPEN)
        )

    def _record_failure(
        self,
        uow: UnitOfWork,
        payment: Payment,
        reference: str | None,
        decline_code: str | None,
        message: str,
        invoice: Invoice,
        at: datetime,
    ) -> None:
        uow.payments.update(payment.failed(at, decline_code, message, reference))
        self._audit(
            uow,
            at,
            "payment.failed",
            "payment",
            payment.id,
            customer_id=payment.customer_id,
            after={"decline_code": decline_code},
        )
        if invoice.subscription_id is not None and invoice.status is InvoiceStatus.OPEN:
            sub = uow.subscriptions.get(invoice.subscription_id)
            pending = sub.pending_update
            if pending is not None and pending.invoice_id == invoice.id:
                # A change paid first opens no dunning: declined, it simply does not happen.
                self._drop_pending_update(uow, sub, invoice, at, "payment_declined")
                return
            if sub.status in (_Status.INCOMPLETE, _Status.ACTIVE, _Status.PAST_DUE):
                # The lifecycle's own payment.failed event carries the next retry date.
                self._apply(
                    uow,
                    sub,
                    lifecycle.payment_failed(sub, at=at, policy=self._dunning),
                    "payment_failed",
                    at,
                )
                return
        failed = self._event(
            EventName.PAYMENT_FAILED,
            payment.id,
            payment.customer_id,
            at,
            invoice_id=invoice.id,
            decline_code=decline_code,
            next_retry_at=None,
        )
        self._emit(uow, [failed], at)

    def get_invoice(self, invoice_id: str) -> Invoice:
        """Return the invoice or raise NotFound."""
        with self._uow() as uow:
            return uow.invoices.get(invoice_id)

    def list_invoices(
        self,
        *,
        customer_id: str | None = None,
        subscription_id: str | None = None,
        status: InvoiceStatus | str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Invoice]:
        """Return invoices in the order they were created."""
        with self._uow() as uow:
            return list(
                uow.invoices.list(
                    customer_id=customer_id,
                    subscription_id=subscription_id,
                    status=None if status is None else _choice(InvoiceStatus, status, "status"),
                    limit=_limit(limit),
                    after=after,
                )
            )

    def create_invoice(
        self,
        *,
        customer_id: str,
        items: Sequence[tuple[str, Money]],
        idempotency_key: str | None = None,
    ) -> Invoice:
        """Create and finalize a one-off invoice of ``(description, amount)`` items, and charge it."""
        at = self._now()
        arguments = {"customer_id": customer_id, "items": [list(item) for item in items]}
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "create_invoice", arguments, at)
            if first is not None:
                return uow.invoices.get(first)
            if not items:
                raise ValidationError("an invoice needs at least one item")
            customer = uow.customers.get(customer_id)
            currency = items[0][1].currency
            bound = customer.with_currency(currency)
            if bound is not customer:
                uow.customers.update(bound)
            lines = [
                InvoiceLine(kind=LineKind.ONE_OFF, description=description, amount=amount)
                for description, amount in items
            ]
            invoice, _ = self._finalized_invoice(uow, bound, None, lines, at, BillingReason.MANUAL)
            assert invoice is not None
            charges = (
                [self._new_payment(uow, invoice, bound, at)]
                if invoice.status is InvoiceStatus.OPEN
                else []
            )
            self._remember(uow, idempotency_key, "create_invoice", arguments, invoice.id, at)
            uow.commit()
        self._after_commit(charges)
        return self.get_invoice(invoice.id)

    def pay_invoice(self, invoice_id: str, *, idempotency_key: str | None = None) -> Invoice:
        """Charge an open or uncollectible invoice now; a decline raises ``PaymentDeclined``."""
        at = self._now()
        arguments = {"id": invoice_id}
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "pay_invoice", arguments, at)
            if first is not None:
                return uow.invoices.get(first)
            invoice = uow.invoices.get(invoice_id)
            if invoice.status not in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE):
                raise InvalidTransition(
                    f"cannot pay a {invoice.status} invoice",
                    details={"status": invoice.status.value, "operation": "pay"},
                )
            customer = uow.customers.get(invoice.customer_id)
            # A charge whose outcome is unknown may have gone through: send it again under
            # its own key (the gateway answers for it once), never a second charge beside it.
            pending = _pending_payment(uow, invoice_id)
            charge = (
                self._new_payment(uow, invoice, customer, at)
                if pending is None
                else _Charge(
                    payment=pending, customer=customer, description=f"Invoice {invoice.number}"
                )
            )
            self._remember(uow, idempotency_key, "pay_invoice", arguments, invoice_id, at)
            uow.commit()
        outcomes = self._after_commit([charge])
        if not outcomes:
            raise GatewayUnavailable(
                "the payment gateway did not answer; the payment will be retried"
            )
        if not outcomes[0].succeeded:
            raise PaymentDeclined(
                outcomes[0].message or "the payment was declined",
                decline_code=outcomes[0].decline_code,
                details={"invoice_id": invoice_id},
            )
        return self.get_invoice(invoice_id)

    def void_invoice(self, invoice_id: str, *, idempotency_key: str | None = None) -> Invoice:
        """Void an open invoice; any credit it used goes back to the customer."""
        return self._invoice_step(
            "void_invoice", invoice_id, idempotency_key, EventName.INVOICE_VOIDED
        )

    def mark_uncollectible(self, invoice_id: str, *, idempotency_key: str | None = None) -> Invoice:
        """Mark an open invoice as not expected to be paid (it can still be paid later)."""
        return self._invoice_step(
            "mark_uncollectible", invoice_id, idempotency_key, EventName.INVOICE_UNCOLLECTIBLE
        )

    def _invoice_step(
        self, operation: str, invoice_id: str, idempotency_key: str | None, name: EventName
    ) -> Invoice:
        at = self._now()
        arguments = {"id": invoice_id}
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, operation, arguments, at)
            if first is not None:
                return uow.invoices.get(first)
            before = uow.invoices.get(invoice_id)
            if operation == "void_invoice":
                # A pending charge may still go through (run_due resends it with its key):
                # voiding now would let the customer be charged for a void invoice.
                if _pending_payment(uow, invoice_id) is not None:
                    raise InvalidTransition(
                        f"invoice {invoice_id} has a payment whose outcome is not known yet;"
                        " void it once run_due has settled the payment",
                        details={"status": before.status.value, "operation": "void"},
                    )
                after = _void_and_return_credit(uow, before, at)
            else:
                after = invoicing.mark_uncollectible(before, at)
                uow.invoices.update(after)
            self._emit(uow, [self._event(name, invoice_id, before.customer_id, at)], at)
            self._audit(
                uow,
                at,
                f"invoice.{operation}",
                "invoice",
                invoice_id,
                customer_id=before.customer_id,
                before={"status": before.status.value},
                after={"status": after.status.value},
            )
            self._remember(uow, idempotency_key, operation, arguments, invoice_id, at)
            uow.commit()
        self._after_commit(())
        return after

    def list_payments(
        self,
        *,
        customer_id: str | None = None,
        invoice_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Payment]:
        """Return payments in the order they were made: ``limit`` of them after ``after``.

        ``after`` is the id of the last payment of the previous page; all of them when
        ``limit`` is None. The same paging holds for refunds, credit notes and usage.
        """
        with self._uow() as uow:
            return list(
                uow.payments.list(
                    customer_id=customer_id, invoice_id=invoice_id, limit=limit, after=after
                )
            )

    def list_credit_notes(
        self,
        *,
        customer_id: str | None = None,
        invoice_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[CreditNote]:
        """Return credit notes in the order they were issued, paged as payments are."""
        with self._uow() as uow:
            return list(
                uow.credit_notes.list(
                    customer_id=customer_id, invoice_id=invoice_id, limit=limit, after=after
                )
            )

    def list_refunds(
        self,
        *,
        invoice_id: str | None = None,
        payment_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Refund]:
        """Return refunds in the order they were made, paged as payments are."""
        with self._uow() as uow:
            return list(
                uow.payments.refunds(
                    invoice_id=invoice_id, payment_id=payment_id, limit=limit, after=after
                )
            )

    def refund(
        self,
        payment_id: str,
        *,
        amount: Money | None = None,
        reason: str = "requested_by_customer",
        idempotency_key: str | None = None,
    ) -> Refund:
        """Refund all or part of a successful payment through the gateway."""
        at = self._now()
        arguments = {"payment_id": payment_id, "amount": amount, "reason": reason}
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "refund", arguments, at)
            if first is not None:
                return next(r for r in uow.payments.refunds(payment_id=payment_id) if r.id == first)
            payment = uow.payments.get(payment_id)
            refundable = payment.refundable()
            wanted = refundable if amount is None else amount
            if wanted.currency != payment.amount.currency:
                raise CurrencyMismatch(f"payment {payment_id} is in {payment.amount.currency}")
            if wanted.amount <= 0 or wanted > refundable:
                raise ValidationError(
                    f"refund amount must be positive and at most {refundable}",
                    details={"refundable": to_jsonable(refundable), "amount": to_jsonable(wanted)},
                )
            invoice = uow.invoices.get(payment.invoice_id)
            invoicing.record_refund(
                invoice, amount=wanted, at=at
            )  # validate before the gateway call
            attempt = len(uow.payments.refunds(payment_id=payment_id)) + 1
            refund_id = self._ids("re")
        reference = self.gateway.refund(
            reference=payment.gateway_reference or payment.idempotency_key,
            amount=wanted,
            idempotency_key=f"refund:{payment.id}:{attempt}",
        )
        with self._uow() as uow:
            refund = self._store_refund(uow, refund_id, payment_id, wanted, reason, at, reference)
            self._remember(uow, idempotency_key, "refund", arguments, refund.id, at)
            uow.commit()
        self._after_commit(())
        return refund

    def _store_refund(
        self,
        uow: UnitOfWork,
        refund_id: str,
        payment_id: str,
        amount: Money,
        reason: str,
        at: datetime,
        reference: str,
        *,
        update_invoice: bool = True,
    ) -> Refund:
        payment = uow.payments.get(payment_id)
        refunded = payment.amount_refunded or Money(0, payment.amount.currency)
        uow.payments.update(attrs.evolve(payment, amount_refunded=refunded + amount))
        invoice = uow.invoices.get(payment.invoice_id)
        if update_invoice:
            uow.invoices.update(invoicing.record_refund(invoice, amount=amount, at=at))
        refund = Refund(
            id=refund_id,
            payment_id=payment_id,
            invoice_id=invoice.id,
            amount=amount,
            reason=reason,
            created_at=at,
        )
        uow.payments.add_refund(refund)
        self._emit(
            uow,
            [
                self._event(
                    EventName.REFUND_CREATED,
                    refund.id,
                    payment.customer_id,
                    at,
                    amount=amount,
                    invoice_id=invoice.id,
                    reference=reference,
                )
            ],
            at,
        )
        self._audit(
            uow,
            at,
            "refund.created",
            "payment",
            payment_id,
            customer_id=payment.customer_id,
            after={"amount": amount, "reason": reason},
        )
        return refund

    def issue_credit_note(
        self,
        invoice_id: str,
        *,
        amount: Money,
        reason: str = "",
        outcome: CreditNoteOutcome | str | None = None,
        idempotency_key: str | None = None,
    ) -> CreditNote:
        """Reduce an invoice: lower what is due, refund through the gateway, or credit the balance."""
        at = self._now()
        arguments = {
            "invoice_id": invoice_id,
            "amount": amount,
            "reason": reason,
            "outcome": None if outcome is None else str(outcome),
        }
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "issue_credit_note", arguments, at)
            if first is not None:
                return next(
                    n for n in uow.credit_notes.list(invoice_id=invoice_id) if n.id == first
                )
            invoice = uow.invoices.get(invoice_id)
            if (
                invoice.status is InvoiceStatus.OPEN
                and _pending_payment(uow, invoice_id) is not None
            ):
                # The pending charge is for the amount due before the note: it could still
                # take the full amount from the customer.
                raise InvalidTransition(
                    f"invoice {invoice_id} has a payment whose outcome is not known yet;"
                    " credit it once run_due has settled the payment",
                    details={"status": "open", "operation": "issue_credit_note"},
                )
            note_id = self._ids("cn")
            number = f"{invoice.number}-CN{len(uow.credit_notes.list(invoice_id=invoice_id)) + 1}"
            note, credited = invoicing.issue_credit_note(
                invoice,
                credit_note_id=note_id,
                number=number,
                amount=amount,
                at=at,
                reason=reason,
                outcome=None if outcome is None else _choice(CreditNoteOutcome, outcome, "outcome"),
            )
            payment = None
            if note.outcome is CreditNoteOutcome.REFUND:
                payment = next(
                    (
                        p
                        for p in uow.payments.list(invoice_id=invoice_id)
                        if p.refundable().amount >= amount.amount
                    ),
                    None,
                )
                if payment is None:
                    raise ValidationError(
                        "no single payment of this invoice can refund that amount"
                    )
        reference = None
        if payment is not None:
            reference = self.gateway.refund(
                reference=payment.gateway_reference or payment.idempotency_key,
                amount=amount,
                idempotency_key=f"credit_note:{note_id}",
            )
        with self._uow() as uow:
            uow.invoices.update(credited)
            uow.credit_notes.add(note)
            if payment is not None and reference is not None:
                self._store_refund(
                    uow,
                    self._ids("re"),
                    payment.id,
                    amount,
                    reason or "credit_note",
                    at,
                    reference,
                    update_invoice=False,
                )
            if note.outcome is CreditNoteOutcome.CREDIT_BALANCE:
                _credit_customer(uow, invoice.customer_id, amount)
            events = [
                self._event(
                    EventName.CREDIT_NOTE_ISSUED,
                    note.id,
                    invoice.customer_id,
                    at,
                    invoice_id=invoice_id,
                    amount=amount,
                    outcome=note.outcome.value,
                )
            ]
            if credited.status is InvoiceStatus.PAID and invoice.status is not InvoiceStatus.PAID:
                events.append(self._paid_event(credited, at))
            self._emit(uow, events, at)
            self._audit(
                uow,
                at,
                "credit_note.issued",
                "invoice",
                invoice_id,
                customer_id=invoice.customer_id,
                after={"amount": amount, "outcome": note.outcome.value},
            )
            self._remember(uow, idempotency_key, "issue_credit_note", arguments, note.id, at)
            uow.commit()
        self._after_commit(())
        return note

    # -- gateway notifications ----------------------------------------------------------

    def handle_gateway_event(self, event: GatewayEvent) -> bool:
        """Apply a verified gateway notification once; return False for a duplicate."""
        at = self._now()
        key = f"gateway-event:{event.id}"
        with self._uow() as uow:
            if uow.idempotency.get(key, at) is not None:
                return False
            self._apply_gateway_event(uow, event, at)
            uow.idempotency.put(
                IdempotencyRecord(
                    key=key,
                    fingerprint=event.type.value,
                    result={"id": event.id},
                    created_at=at,
                    # Stripe retries a webhook for three days; remember it longer than that.
                    expires_at=at + timedelta(days=30),
                )
            )
            uow.commit()
        self._after_commit(())
        return True

    def _payment_for(self, uow: UnitOfWork, event: GatewayEvent) -> Payment | None:
        """Return the still-pending payment a gateway event is about, if any."""
        payment = None
        if event.idempotency_key is not None:
            payment = uow.payments.find(idempotency_key=event.idempotency_key)
        if payment is None and event.reference is not None:
            payment = uow.payments.find(gateway_reference=event.reference)
        if payment is None or payment.status is not PaymentStatus.PENDING:
            return None
        return payment

    def _apply_gateway_event(self, uow: UnitOfWork, event: GatewayEvent, at: datetime) -> None:
        if event.type in (GatewayEventType.PAYMENT_SUCCEEDED, GatewayEventType.PAYMENT_FAILED):
            payment = self._payment_for(uow, event)
            if payment is None:
                return  # already settled by our own call, or not ours: out-of-order delivery is fine
            invoice = uow.invoices.get(payment.invoice_id)
            if event.type is GatewayEventType.PAYMENT_SUCCEEDED:
                self._record_success(uow, payment, event.reference, invoice, at)
            else:
                self._record_failure(
                    uow, payment, event.reference, event.decline_code, event.message, invoice, at
                )
            return
        if event.type is GatewayEventType.CHARGE_REFUNDED and event.reference and event.amount:
            payment = uow.payments.find(gateway_reference=event.reference)
            if payment is not None:
                already = payment.amount_refunded or Money(0, payment.amount.currency)
                extra = event.amount - already  # the event carries the charge's total refunded
                if extra.amount > 0:
                    self._store_refund(
                        uow, self._ids("re"), payment.id, extra, "gateway", at, event.id
                    )
                return
        name = (
            EventName.DISPUTE_CREATED
            if event.type is GatewayEventType.DISPUTE_CREATED
            else EventName.GATEWAY_EVENT_IGNORED
        )
        # No customer: the event names a charge we may not know (yet).
        noted = self._event(
            name, event.id, "", at, reference=event.reference, type=event.type.value
        )
        self._emit(uow, [noted], at)

    # -- the billing run ------------------------------------------------------------

    def run_due(self, *, limit: int = 10_000, summary: RunSummary | None = None) -> RunSummary:
        """Do every piece of time-driven work due now, in batches; safe to run anywhere, any time.

        Trial reminders and trial ends, renewals with their invoices and payments,
        scheduled changes and cancellations, dunning retries and final actions, pause
        ends, and expiry of incomplete subscriptions. Work is claimed per batch so
        concurrent runs never process the same subscription.

        ``summary``, when given, receives the counts as each batch commits and is returned:
        a caller that catches an error (a lost connection) still knows what was done.
        """
        if limit < 1:
            raise ValidationError("limit must be at least 1")
        summary = RunSummary() if summary is None else summary
        now = self._now()
        self._retry_pending_payments(now, summary)
        waiting: set[str] = set()  # claimed this run, but waiting on something outside
        claimed_so_far = 0
        settling: _Settling | None = None  # a batch's payments, collected in the background
        background: ThreadPoolExecutor | None = None
        try:
            while claimed_so_far < limit:
                batch_limit = min(self._batch_size, limit - claimed_so_far)
                busy = frozenset() if settling is None else settling.customers
                billed = self._bill_batch(now, batch_limit, waiting, busy)
                if isinstance(billed, tuple):  # committed: counted before anything can fail
                    batch, charges, counted = billed
                    claimed_so_far += len(batch)
                    counted.subscriptions = len(batch)
                    _add_counts(summary, counted)
                if settling is not None:
                    # At most one batch in flight: the next waits for it to settle.
                    done, settling = settling, None
                    self._tally(done.future.result(), done.charges, summary)
                if billed is None:
                    break
                if billed is _BUSY:
                    continue  # nothing was written: claim again, now that none is in flight
                if (
                    not self._overlap_settlement
                    or len(batch) < batch_limit
                    or claimed_so_far >= limit
                ):
                    # No next batch to bill meanwhile (or overlap is off): settle here.
                    self._tally(self._collect_and_settle(charges), charges, summary)
                    continue
                background = background or ThreadPoolExecutor(1, "lumenquest-settle")
                settling = _Settling(
                    # The host's context variables (a request id for its logs) go along.
                    background.submit(
                        contextvars.copy_context().run, self._collect_and_settle, charges
                    ),
                    charges,
                    frozenset(charge.customer.id for charge in charges),
                )
        except BaseException as exc:
            if settling is not None:
                self._drain(settling, summary, exc)
            raise
        finally:
            if background is not None:
                background.shutdown()
        summary.events_dispatched += self._dispatch_after_commit()
        return summary

    def _bill_batch(
        self, now: datetime, batch_limit: int, waiting: set[str], busy: frozenset[str]
    ) -> tuple[list[Subscription], list[_Charge], RunSummary] | _Busy | None:
        """Claim up to ``batch_limit`` due subscriptions and do their work in one transaction.

        Return the batch, its charges to collect and its counts; None when nothing is due;
        ``_BUSY``, with nothing written, when one of the batch's customers is in ``busy``
        (a batch settling meanwhile may write their rows: waiting on each other's row
        locks, the two transactions could deadlock).
        """
        charges: list[_Charge] = []
        # Counted apart until the batch commits: a batch that fails leaves no counts.
        counted = RunSummary()
        with self._uow() as uow:
            # Waiting subscriptions stay due: claim past them so they neither come back
            # in every batch nor crowd out the rest.
            claimed = uow.subscriptions.claim_due(now, limit=batch_limit + len(waiting))
            batch = [sub for sub in claimed if sub.id not in waiting][:batch_limit]
            if not batch:
                return None
            if busy and not busy.isdisjoint([sub.customer_id for sub in batch]):
                return _BUSY  # rolled back: the claim's locks go with it
            uow.prepare_batch(
                customers={sub.customer_id for sub in batch},
                subscriptions=[sub.id for sub in batch],
                pending_lines_of=[sub.id for sub in batch],
            )
            for sub in batch:
                if not self._advance(uow, sub, now, counted, charges):
                    waiting.add(sub.id)
            uow.commit()
        return batch, charges, counted

    def _drain(self, settling: _Settling, summary: RunSummary, error: BaseException) -> None:
        """Wait for ``settling`` while ``error`` stops the run: no thread outlives run_due."""
        failure = settling.future.exception()
        if failure is None:
            self._tally(settling.future.result(), settling.charges, summary)
        else:
            error.add_note(f"A batch settling meanwhile failed too: {failure!r}")

    def _collect_and_settle(self, charges: Sequence[_Charge]) -> tuple[int, list[_Charge]]:
        """Send ``charges`` to the gateway and record what came back.

        Return how many the gateway answered and the outcomes this call recorded.
        """
        return self._answered(self._collect(charges))

    def _answered(self, outcomes: Sequence[_Charge]) -> tuple[int, list[_Charge]]:
        """Record the gateway's answers still pending: return how many came and those recorded."""
        return len(outcomes), (self._settle(outcomes) if outcomes else [])

    def _tally(
        self,
        settled: tuple[int, list[_Charge]],
        charges: Sequence[_Charge],
        summary: RunSummary,
    ) -> None:
        answered, recorded = settled
        summary.payments_succeeded += sum(1 for o in recorded if o.succeeded)
        summary.payments_failed += sum(1 for o in recorded if not o.succeeded)
        summary.payments_pending += len(charges) - answered

    def _retry_pending_payments(self, now: datetime, summary: RunSummary) -> None:
        """Resolve payments left pending by a timeout or a crash, never charging twice.

        The gateway is asked first what it did with the payment's idempotency key (it
        forgets keys after a while); only a charge it never made is sent again, and only
        while the invoice can still be paid.
        """
        with self._uow() as uow:
            pending = uow.payments.pending(
                created_before=now - self._pending_grace, limit=self._batch_size
            )
            found_work = [
                (p, uow.customers.get(p.customer_id), uow.invoices.get(p.invoice_id))
                for p in pending
            ]
        outcomes: list[_Charge] = []
        resend: list[_Charge] = []
        never_charged: list[Payment] = []
        for payment, customer, invoice in found_work:
            charge = _Charge(
                payment=payment, customer=customer, description=f"Invoice {invoice.number}"
            )
            try:
                found = self.gateway.find_charge(customer, payment.idempotency_key)
            except GatewayUnavailable:
                summary.payments_pending += 1
                continue
            if found is not None:
                outcomes.append(_answer(charge, found))
            elif invoice.status in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE):
                resend.append(charge)
            else:
                never_charged.append(payment)
        if never_charged:
            with self._uow() as uow:
                for payment in never_charged:
                    uow.payments.update(
                        payment.failed(
                            now,
                            "invoice_not_payable",
                            "never charged, and its invoice is no longer open",
                        )
                    )
                uow.commit()
        sent = self._collect(resend)
        charges = [*outcomes, *resend]
        self._tally(self._answered([*outcomes, *sent]), charges, summary)

    def _advance(
        self,
        uow: UnitOfWork,
        sub: Subscription,
        now: datetime,
        summary: RunSummary,
        charges: list[_Charge],
    ) -> bool:
        """Apply every transition due for one subscription, oldest first; say if any was.

        The payments the transitions queue are appended to ``charges``.
        """
        progressed = False
        for _ in range(_MAX_STEPS_PER_SUBSCRIPTION):
            due = lifecycle.next_action_at(sub)
            if due is None or due > now:
                break
            stepped = self._step(uow, sub, due, summary, charges)
            if stepped is sub:
                break  # the step is waiting for something outside (a pending payment)
            sub, progressed = stepped, True
        return progressed

    def _step(
        self,
        uow: UnitOfWork,
        sub: Subscription,
        due: datetime,
        summary: RunSummary,
        charges: list[_Charge],
    ) -> Subscription:
        """Apply the transition due at ``due``; append the payment it queues to ``charges``."""
        pending = sub.pending_update
        if pending is not None and due >= pending.expires_at:
            summary.pending_updates_ended += 1
            return self._end_pending_update(uow, sub, due)
        status = sub.status
        if status is _INCOMPLETE:
            open_invoices = uow.invoices.list(subscription_id=sub.id, status=InvoiceStatus.OPEN)
            for invoice in open_invoices:
                resolved = self._resolve_before_expiry(uow, invoice, due)
                if resolved is None:
                    return sub  # the gateway cannot say yet: expire on a later run
                if resolved:
                    return uow.subscriptions.get(sub.id)  # it was paid in time after all
            summary.expired += 1
            for invoice in open_invoices:
                _void_and_return_credit(uow, invoice, due)
            return self._apply(uow, sub, lifecycle.expire_incomplete(sub, due), "expired", due)
        if status is _TRIALING:
            reminder = lifecycle.trial_reminder_at(sub)
            if (
                sub.trial_reminder_sent_at is None
                and reminder is not None
                and reminder <= due
                and reminder < sub.current_period.end
            ):
                summary.trial_reminders += 1
                return self._apply(
                    uow, sub, lifecycle.trial_will_end(sub, due), "trial_reminder", due
                )
            summary.trials_ended += 1
            transition = lifecycle.end_trial(sub, due)
            sub = self._apply(uow, sub, transition, "trial_ended", due)
            return self._bill_step(uow, sub, transition.lines, due, summary, charges)
        if status is _PAUSED:
            summary.resumed += 1
            transition = lifecycle.resume(sub, due)
            sub = self._apply(uow, sub, transition, "resumed", due)
            return self._bill_step(uow, sub, transition.lines, due, summary, charges)
        if due == sub.next_payment_retry_at and due < sub.current_period.end:
            return self._retry(uow, sub, due, summary, charges)
        before = sub
        transition = lifecycle.renew(sub, due)
        renewed = transition.subscription
        canceled = renewed.status is _CANCELED
        summary.renewals += not canceled
        summary.canceled += canceled
        sub = self._apply(uow, before, transition, "canceled" if canceled else "renewed", due)
        # Usage of the period that ended is billed at the price it was used under (asked
        # here first: only a metered price has any).
        usage = (
            self._final_usage(uow, before, before.current_period)
            if before.price.usage_type is _METERED
            else None
        )
        waiting = uow.invoices.take_pending_lines(sub.id)
        # The usual renewal has its own line alone: the transition's tuple as it is (the
        # invoice adopts a tuple without copying it), no list built and copied.
        lines: Sequence[InvoiceLine] = (
            [*(usage or ()), *(p.line for p in waiting), *transition.lines]
            if usage or waiting
            else transition.lines
        )
        if not lines:
            return sub
        # _bill_step's body, without its call: every renewal comes through here.
        summary.invoices += 1
        return self._bill_into(
            uow, sub, lines, due, _CYCLE, None if canceled else renewed.current_period, charges
        )

    def _resolve_before_expiry(
        self,
        uow: UnitOfWork,
        invoice: Invoice,
        at: datetime,
        why: str = "the subscription expired before its first payment went through",
    ) -> bool | None:
        """Settle the first invoice's pending charge by asking the gateway, never by resending.

        Return True if it was paid, False if it was not (the attempt is closed for good),
        None if the gateway cannot be asked right now.
        """
        payment = _pending_payment(uow, invoice.id)
        if payment is None:
            return False
        customer = uow.customers.get(payment.customer_id)
        try:
            found = self.gateway.find_charge(customer, payment.idempotency_key)
        except GatewayUnavailable:
            return None
        if found is not None and found.status is ChargeStatus.SUCCEEDED:
            self._record_success(uow, payment, found.reference, invoice, at)
            return True
        uow.payments.update(
            payment.failed(
                at,
                "invoice_voided" if found is None else found.decline_code,
                why,
                None if found is None else found.reference,
            )
        )
        return False

    def _bill_step(
        self,
        uow: UnitOfWork,
        sub: Subscription,
        lines: Sequence[InvoiceLine],
        at: datetime,
        summary: RunSummary,
        charges: list[_Charge],
    ) -> Subscription:
        if not lines:
            return sub
        summary.invoices += 1
        return self._bill_into(uow, sub, lines, at, _CYCLE, None, charges)

    def _retry(
        self,
        uow: UnitOfWork,
        sub: Subscription,
        due: datetime,
        summary: RunSummary,
        charges: list[_Charge],
    ) -> Subscription:
        """Retry the oldest open invoice of a past-due subscription (a dunning step)."""
        summary.payment_retries += 1
        # Clear the retry date while the attempt is in flight; its outcome sets the next one.
        waiting = attrs.evolve(sub, next_payment_retry_at=None)
        uow.subscriptions.update(waiting)
        open_invoices = uow.invoices.list(subscription_id=sub.id, status=InvoiceStatus.OPEN)
        if not open_invoices:
            return self._apply(
                uow, waiting, lifecycle.payment_succeeded(waiting, due), "payment_succeeded", due
            )
        # An invoice whose charge is still pending may be paid already: run_due resolves it
        # with its own idempotency key, and a new attempt under a new key could charge twice.
        unsettled = [
            invoice
            for invoice in open_invoices
            if not any(
                p.status is PaymentStatus.PENDING for p in uow.payments.list(invoice_id=invoice.id)
            )
        ]
        if not unsettled:
            return waiting  # the pending charge's outcome sets the next retry
        customer = uow.customers.get(sub.customer_id)
        charges.append(self._new_payment(uow, unsettled[0], customer, due))
        return waiting

    # -- events -----------------------------------------------------------------------

    def dispatch_events(self, *, limit: int = 1000) -> int:
        """Deliver outbox events to the email and analytics handlers; return how many.

        Delivery is at least once and each handler deduplicates by event id: an analytics
        row per event id, an email per (event id, template). A batch takes three units of
        work whatever its size. If sending an email fails, the events whose email was not
        sent stay in the outbox for the next call and the error is raised. With a ``lock``,
        one dispatcher runs at a time across processes; the others return 0 at once.
        """
        if self._lock is None:
            return self._dispatch(limit)
        with self._lock.hold(_DISPATCH_LOCK, ttl_seconds=_DISPATCH_LOCK_SECONDS) as acquired:
            return self._dispatch(limit) if acquired else 0

    def _dispatch(self, limit: int) -> int:
        delivered = 0
        while True:
            with self._uow() as uow:
                messages = list(uow.outbox.pending(limit=limit))
                if not messages:
                    return delivered
                emails = self._track_and_plan_emails(uow, messages)
                uow.commit()
            sent: list[tuple[OutboxMessage, EmailMessage, str]] = []
            failure: LumenquestError | None = None
            for message, email in emails:
                try:
                    sent.append((message, email, self.email.send(email)))
                except LumenquestError as exc:
                    failure = exc
                    break
            unsent = {message.id for message, _ in emails[len(sent) :]}
            done = [m.id for m in messages if m.id not in unsent]
            at = self._now()
            with self._uow() as uow:
                # A delivery already stored was recorded by another dispatcher first.
                uow.email_deliveries.add_new(
                    [
                        self._delivery(message, email, reference, at)
                        for message, email, reference in sent
                    ]
                )
                if done:
                    uow.outbox.mark_delivered(done, at)
                uow.commit()
            delivered += len(done)
            if failure is not None:
                raise failure
            if len(messages) < limit:
                return delivered

    def _track_and_plan_emails(
        self, uow: UnitOfWork, messages: Sequence[OutboxMessage]
    ) -> list[tuple[OutboxMessage, EmailMessage]]:
        """Record each event's analytics row (once) and list the emails still to send."""
        # Rows already stored were delivered before (at least once): add_new skips them.
        uow.analytics.add_new(
            [
                AnalyticsEvent(
                    id=message.id,
                    name=message.event.name.value,
                    customer_id=message.event.customer_id or None,
                    occurred_at=message.event.occurred_at,
                    properties=message.event.data,
                )
                for message in messages
            ]
        )
        wanted = [
            (message, template)
            for message in messages
            if message.event.customer_id
            and (template := EMAIL_TEMPLATES.get(message.event.name)) is not None
        ]
        if not wanted:
            return []
        sent = uow.email_deliveries.sent({(message.id, template) for message, template in wanted})
        to_send = [(m, t) for m, t in wanted if (m.id, t) not in sent]
        if not to_send:
            return []
        uow.prepare_batch(customers={message.event.customer_id for message, _ in to_send})
        emails: list[tuple[OutboxMessage, EmailMessage]] = []
        for message, template in to_send:
            event = message.event
            customer = uow.customers.get(event.customer_id)
            if customer.erased_at is not None or not customer.email_deliverable:
                continue
            emails.append(
                (
                    message,
                    EmailMessage(
                        message_id=f"{message.id}.{template}",
                        to=customer.email,
                        template=template,
                        data={"name": customer.name, "event": event.name.value, **event.data},
                        customer_id=customer.id,
                    ),
                )
            )
        return emails

    @staticmethod
    def _delivery(
        message: OutboxMessage, email: EmailMessage, provider_id: str, at: datetime
    ) -> EmailDelivery:
        return EmailDelivery(
            message_id=email.message_id,
            event_id=message.id,
            template=email.template,
            to=email.to,
            status=DeliveryStatus.SENT,
            created_at=at,
            customer_id=email.customer_id,
            provider_id=provider_id,
        )

    def record_email_event(self, message_id: str, status: DeliveryStatus | str) -> EmailDelivery:
        """Record what the email provider reported; a bounce marks the address undeliverable."""
        at = self._now()
        with self._uow() as uow:
            delivery = uow.email_deliveries.get(message_id)
            updated = attrs.evolve(
                delivery, status=_choice(DeliveryStatus, status, "status"), updated_at=at
            )
            uow.email_deliveries.update(updated)
            if (
                updated.status in (DeliveryStatus.BOUNCE, DeliveryStatus.DROPPED)
                and delivery.customer_id
            ):
                customer = uow.customers.get(delivery.customer_id)
                uow.customers.update(attrs.evolve(customer, email_deliverable=False))
            uow.commit()
        return updated

    def list_email_deliveries(self, *, customer_id: str | None = None) -> list[EmailDelivery]:
        """Return the notification emails sent and what became of them, oldest first."""
        with self._uow() as uow:
            return list(uow.email_deliveries.list(customer_id=customer_id))

    def list_outbox(self, *, customer_id: str | None = None) -> list[OutboxMessage]:
        """Return the outbox, oldest first."""
        with self._uow() as uow:
            return list(uow.outbox.list(customer_id=customer_id))

    def audit_log(
        self, *, subject_id: str | None = None, customer_id: str | None = None
    ) -> list[AuditEntry]:
        """Return audit entries, oldest first."""
        with self._uow() as uow:
            return list(uow.audit_log.list(subject_id=subject_id, customer_id=customer_id))

    def list_analytics_events(
        self, *, customer_id: str | None = None, since: datetime | None = None
    ) -> list[AnalyticsEvent]:
        """Return analytics events, oldest first."""
        with self._uow() as uow:
            return list(uow.analytics.list(customer_id=customer_id, since=since))

    # -- GDPR -------------------------------------------------------------------------

    def export_customer(self, customer_id: str) -> dict[str, Any]:
        """Return everything lumenquest holds about a customer, as JSON-ready data."""
        with self._uow() as uow:
            customer = uow.customers.get(customer_id)
            subs = list(uow.subscriptions.list(customer_id=customer_id, limit=10_000))
            invoices = list(uow.invoices.list(customer_id=customer_id, limit=10_000))
            data = {
                "customer": customer,
                "subscriptions": subs,
                "subscription_changes": uow.subscription_changes.list(customer_id=customer_id),
                "usage": [r for s in subs for r in uow.usage.list(s.id)],
                "invoices": invoices,
                "payments": uow.payments.list(customer_id=customer_id),
                "refunds": [r for i in invoices for r in uow.payments.refunds(invoice_id=i.id)],
                "credit_notes": uow.credit_notes.list(customer_id=customer_id),
                "emails": uow.email_deliveries.list(customer_id=customer_id),
                "analytics_events": uow.analytics.list(customer_id=customer_id),
                "audit_log": uow.audit_log.list(customer_id=customer_id),
            }
        return {"exported_at": self._now().isoformat(), **to_jsonable(data)}

    def erase_customer(self, customer_id: str, *, idempotency_key: str | None = None) -> Customer:
        """Erase a customer's personal data, cancelling their subscriptions; invoices stay, anonymised."""
        at = self._now()
        arguments = {"id": customer_id}
        with self._uow() as uow:
            first = self._idempotent(uow, idempotency_key, "erase_customer", arguments, at)
            if first is not None:
                return uow.customers.get(first)
            customer = uow.customers.get(customer_id)
            for sub in uow.subscriptions.list(customer_id=customer_id, limit=10_000):
                if sub.status not in (_Status.CANCELED, _Status.INCOMPLETE_EXPIRED):
                    self._apply(uow, sub, lifecycle.cancel(sub, at=at), "canceled", at)
            for delivery in uow.email_deliveries.list(customer_id=customer_id):
                uow.email_deliveries.update(attrs.evolve(delivery, to=_erased_email(customer_id)))
            erased = attrs.evolve(
                customer,
                email=_erased_email(customer_id),
                name="",
                metadata={},
                erased_at=at,
                email_deliverable=False,
            )
            uow.customers.update(erased)
            self._emit(
                uow, [self._event(EventName.CUSTOMER_ERASED, customer_id, customer_id, at)], at
            )
            self._audit(
                uow, at, "customer.erased", "customer", customer_id, customer_id=customer_id
            )
            self._remember(uow, idempotency_key, "erase_customer", arguments, customer_id, at)
            uow.commit()
        self._after_commit(())
        return erased

    # -- metrics ------------------------------------------------------------------------

    def metrics(
        self,
        *,
        start: datetime,
        end: datetime,
        currency: str = "USD",
        marketing_spend: Money | None = None,
        gross_margin: Any = None,
    ) -> metrics.MetricsReport:
        """Return MRR, ARR, movements, churn, NRR, ARPA, LTV, CAC and conversions for ``[start, end]``.

        The store classifies its customers and returns only the movement totals (no change
        row or per-customer MRR is loaded here); the result equals
        :func:`metrics_from_changes` over the same rows.
        """
        period = Period(start, end)
        currency_exponent(currency)
        with self._uow() as uow:
            history = uow.subscription_changes
            movements = history.mrr_movements(period, currency)
            outcomes = history.trial_outcomes(period, currency)
        return metrics.report_from_movements(
            period=period,
            movements=movements,
            marketing_spend=marketing_spend,
            trial_outcomes=outcomes,
            gross_margin=Decimal(1) if gross_margin is None else gross_margin,
        )


def metrics_from_changes(
    changes: Sequence[SubscriptionChange],
    *,
    period: Period,
    currency: str,
    marketing_spend: Money | None = None,
    gross_margin: Any = None,
) -> metrics.MetricsReport:
    """Compute the metrics report for ``period`` from subscription history rows (oldest first)."""
    return metrics.report_from_history(
        [
            metrics.HistoryPoint(
                subscription_id=c.subscription_id,
                customer_id=c.customer_id,
                at=c.at,
                mrr=c.mrr,
                from_status=c.from_status,
                to_status=c.to_status,
                plan_id=c.plan_id,
            )
            for c in changes
        ],
        period=period,
        currency=currency,
        marketing_spend=marketing_spend,
        gross_margin=gross_margin,
    )


def _erased_email(customer_id: str) -> str:
    return f"erased+{customer_id.lower()}@erased.invalid"


def _credit_customer(uow: UnitOfWork, customer_id: str, amount: Money) -> None:
    """Add ``amount`` to the customer's credit balance."""
    customer = uow.customers.get(customer_id)
    balance = customer.balance()
    assert balance is not None  # a customer with invoices has a currency
    uow.customers.update(attrs.evolve(customer, credit_balance=balance + amount))


def _void_and_return_credit(uow: UnitOfWork, invoice: Invoice, at: datetime) -> Invoice:
    """Void an open invoice and give back the credit balance it had used."""
    voided = invoicing.void(invoice, at)
    uow.invoices.update(voided)
    if invoice.credit_applied.amount:
        _credit_customer(uow, invoice.customer_id, invoice.credit_applied)
    return voided


def _pending_payment(uow: UnitOfWork, invoice_id: str) -> Payment | None:
    """Return the invoice's payment whose outcome is not known yet, if any."""
    return next(
        (p for p in uow.payments.list(invoice_id=invoice_id) if p.status is PaymentStatus.PENDING),
        None,
    )


_E = TypeVar("_E", bound=enum.Enum)


def _choice(kind: type[_E], value: object, field: str) -> _E:
    """Return ``value`` as a member of ``kind``, or raise ValidationError listing the choices."""
    try:
        return kind(value)
    except ValueError:
        choices = [member.value for member in kind]
        raise ValidationError(
            f"{field} must be one of {choices}, not {value!r}",
            details={"field": field, "choices": choices},
        ) from None


def _limit(limit: int) -> int:
    if type(limit) is not int or not 1 <= limit <= 1000:
        raise ValidationError("limit must be an int from 1 to 1000", details={"limit": repr(limit)})
    return limit
