"""Compact rows: the history tables, and settled invoices and payments (see below).

A billing run writes several of these per subscription and keeps every one. As objects
(an event, its ``__dict__``, the read-only data proxy and its dict, nested dicts for
amounts, the audit snapshots) each costs half a dozen containers that the cyclic garbage
collector walks on every full collection, and a run over 10,000 subscriptions added
enough of them to set off one over the whole heap. Here each row is one plain tuple of
strings, numbers, datetimes and bytes: it refers to nothing the collector must follow,
so CPython stops tracking it at the first collection it meets.

JSON-like data (event data, audit before/after, change data) is kept marshalled, as a
database keeps a JSON column: a read returns a fresh copy, and a caller mutating what it
passed in or got back changes nothing stored. Data that ``marshal`` refuses (an object
that is not plain data) is kept as given, as the store kept every row before.
"""

from __future__ import annotations

import enum
import marshal
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

from lumenquest_core._trusted import build_trusted
from lumenquest_core.events import DomainEvent, EventName
from lumenquest_core.invoicing import BillingReason, Invoice, InvoiceStatus
from lumenquest_core.lines import InvoiceLine, LineKind
from lumenquest_core.money import Money, shared_money
from lumenquest_core.payments import AuditEntry, Payment, PaymentStatus, SubscriptionChange
from lumenquest_core.periods import trusted_period
from lumenquest_core.ports import AuditFields, ChangeFields, OutboxMessage

__all__ = [
    "VALUE_OF",
    "ChangeRow",
    "EntryRow",
    "InvoiceRow",
    "MessageRow",
    "PaymentRow",
    "change_from_row",
    "change_row",
    "change_row_of",
    "entry_from_row",
    "entry_row",
    "entry_row_of",
    "invoice_from_row",
    "invoice_row",
    "message_data",
    "message_delivered",
    "message_from_row",
    "message_row",
    "payment_from_row",
    "pack_mapping",
    "payment_row",
]

MessageRow = tuple[Any, ...]
"""(id, name, subject_id, customer_id, occurred_at, data, created_at, delivered_at, attempts)"""
EntryRow = tuple[Any, ...]
"""(id, actor, action, subject_type, subject_id, at, customer_id, before and after)"""
ChangeRow = tuple[Any, ...]
"""(id, subscription_id, customer_id, kind, at, from_status, to_status, from_price_id,
to_price_id, from_quantity, to_quantity, mrr amount, mrr currency, plan_id, data)"""

# Positions the store's key functions read.
MESSAGE_CUSTOMER = 3
MESSAGE_DELIVERED_AT = 7
ENTRY_SUBJECT = 4
ENTRY_CUSTOMER = 6
CHANGE_SUBSCRIPTION = 1
CHANGE_CUSTOMER = 2

_dumps: Callable[[Any], bytes] = marshal.dumps  # typed for any value: ValueError if not plain
_loads = marshal.loads
# The member of each wire name, read without EnumType.__call__'s overhead.
_EVENT_NAMES: Mapping[str, EventName] = {name.value: name for name in EventName}
_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Each member of the enums rows store, to its value as a plain str. A subscript of a dict:
# an enum member, a str subclass with an instance dict, gets no specialized attribute
# read in Python 3.11 (member._value_, ten a renewal; run_due over 3,000: see the commit).
# Members of two enums with the same value are equal keys of the same value: no clash.
VALUE_OF: Mapping[enum.Enum, str] = {
    member: member._value_
    for kind in (EventName, InvoiceStatus, BillingReason, LineKind, PaymentStatus)
    for member in kind
}


def pack_mapping(data: Mapping[str, Any]) -> Any:
    """Return a mapping marshalled as a plain dict, None when empty, or as given."""
    if not data:
        return None
    if type(data) is MappingProxyType:
        # Event and change data arrive read-only. The proxy's copy() is its dict's own
        # C-level copy; dict(proxy) goes through the generic mapping protocol (keys, then
        # a lookup per key): run_due over 3,000, 2,644 -> 2,590 million instructions.
        # The copy is made in the call, held by no name (see entry_row): run_due over
        # 3,000, 2,424 -> 2,418 million instructions.
        try:
            return _dumps(data.copy())
        except (AttributeError, ValueError):
            pass  # no copy(), a copy that is no plain dict, or data that is not plain
    try:
        return _dumps(data if type(data) is dict else dict(data))
    except ValueError:
        return data


def _unpack_mapping(packed: Any) -> Mapping[str, Any]:
    """Return the read-only mapping a packed one stands for."""
    if packed is None:
        return _EMPTY
    if type(packed) is bytes:
        return MappingProxyType(_loads(packed))
    return packed  # type: ignore[no-any-return]


def message_row(message: OutboxMessage) -> MessageRow:
    """Return an outbox message as a compact row."""
    event = message.event
    return (
        message.id,
        VALUE_OF[event.name],  # not .value, a Python-level property
        event.subject_id,
        event.customer_id,
        event.occurred_at,
        pack_mapping(event.data),
        message.created_at,
        message.delivered_at,
        message.attempts,
    )


def message_data(data: Mapping[str, Any]) -> Any:
    """Return an event's data as an outbox message row keeps it.

    Marshalled, or None when empty; data that is not plain is kept as a read-only copy, as
    the message's event would hold it. (``add_history`` packs a dict or a read-only proxy
    of plain data itself, the data the core passes, and calls this for the rest.)
    """
    if not data:
        return None
    if type(data) is dict:
        try:
            return _dumps(data)
        except ValueError:
            return MappingProxyType(dict(data))  # not plain data: kept read-only
    packed = pack_mapping(data)
    if type(packed) is not bytes:
        # Not plain data: kept read-only, as the message's event holds it.
        packed = MappingProxyType(dict(data))
    return packed


def message_from_row(row: MessageRow) -> OutboxMessage:
    """Rebuild an outbox message from its row."""
    message_id, name, subject_id, customer_id, occurred_at, data, created, delivered, tries = row
    # The row holds what a valid message held: the checks ran when it was first built.
    # The dispatcher reads every waiting message back: the data is unpacked inline.
    event = build_trusted(
        DomainEvent,
        {
            "name": _EVENT_NAMES[name],
            "subject_id": subject_id,
            "customer_id": customer_id,
            "occurred_at": occurred_at,
            "data": MappingProxyType(_loads(data))
            if type(data) is bytes
            else _unpack_mapping(data),
        },
    )
    return OutboxMessage(message_id, event, created, delivered, tries)


def message_delivered(row: MessageRow, at: datetime) -> MessageRow:
    """Return the row of a message delivered (one more attempt) at ``at``."""
    return (*row[:MESSAGE_DELIVERED_AT], at, row[8] + 1)


def _pack_pair(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> Any:
    """Return an entry's before and after marshalled, None when both are, or as given.

    An entry with an ``after`` alone (most of them) keeps it packed as a mapping is, as
    a dict where a pair would be a tuple: the bytes an outbox row holds for the same
    data then serve both rows (see :func:`entry_row_of`).
    """
    if before is None:
        if after is None:
            return None
        packed = pack_mapping(after)
        if type(packed) is bytes:
            return packed
        # An empty after, or one marshal refuses: packed as the pair below.
    try:  # marshalled, or kept as given if it is not plain data
        # The pair built in the call: held by a name, marshal would see it shared
        # and record it for back-references (9,000 entries: +10 million instructions).
        return _dumps((before, after))
    except ValueError:
        return (before, after)


def entry_row(entry: AuditEntry) -> EntryRow:
    """Return an audit entry as a compact row."""
    return entry_row_of(attrs.astuple(entry, recurse=False))


def entry_row_of(fields: AuditFields, after_packed: bytes | None = None) -> EntryRow:
    """Return the row of the audit entry with these fields: ``entry_row``'s.

    ``after_packed``: the entry's ``after`` (its ``before`` None) as :func:`pack_mapping`
    packed it already for another row, shared rather than marshalled again.
    """
    entry_id, actor, action, subject_type, subject_id, at, customer_id, before, after = fields
    # _pack_pair's two common cases inlined, a pair and an after alone that is a dict:
    # three entries a renewal, with no call for them (run_due over 3,000: see the commit).
    packed: Any
    if after_packed is not None:
        packed = after_packed
    elif before is not None:
        try:  # the pair built in the call, as _pack_pair builds it
            packed = _dumps((before, after))
        except ValueError:
            packed = (before, after)
    elif type(after) is dict and after:
        try:
            packed = _dumps(after)
        except ValueError:
            packed = _pack_pair(before, after)
    else:
        packed = _pack_pair(before, after)
    return (entry_id, actor, action, subject_type, subject_id, at, customer_id, packed)


def entry_from_row(row: EntryRow) -> AuditEntry:
    """Rebuild an audit entry from its row."""
    entry_id, actor, action, subject_type, subject_id, at, customer_id, packed = row
    if packed is None:
        before = after = None
    elif type(packed) is bytes:
        unpacked = _loads(packed)
        # A dict is an after alone (see _pack_pair); a pair is a tuple.
        before, after = (None, unpacked) if type(unpacked) is dict else unpacked
    else:
        before, after = packed
    return AuditEntry(
        id=entry_id,
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        at=at,
        customer_id=customer_id,
        before=before,
        after=after,
    )


def change_row(change: SubscriptionChange) -> ChangeRow:
    """Return a subscription change as a compact row."""
    return change_row_of(attrs.astuple(change, recurse=False))


def change_row_of(fields: ChangeFields) -> ChangeRow:
    """Return the row of the subscription change with these fields: ``change_row``'s."""
    # Unpacked and rebuilt field by field: built from slices of the fields instead,
    # run_due over 3,000 took 6 million instructions more (callgrind).
    (
        change_id,
        subscription_id,
        customer_id,
        kind,
        at,
        from_status,
        to_status,
        from_price_id,
        to_price_id,
        from_quantity,
        to_quantity,
        mrr,
        plan_id,
        data,
    ) = fields
    return (
        change_id,
        subscription_id,
        customer_id,
        kind,
        at,
        from_status,
        to_status,
        from_price_id,
        to_price_id,
        from_quantity,
        to_quantity,
        mrr.amount,
        mrr.currency,
        plan_id,
        pack_mapping(data) if data else None,  # a renewal's change has none: no call
    )


def change_from_row(row: ChangeRow) -> SubscriptionChange:
    """Rebuild a subscription change from its row."""
    return SubscriptionChange(
        id=row[0],
        subscription_id=row[1],
        customer_id=row[2],
        kind=row[3],
        at=row[4],
        from_status=row[5],
        to_status=row[6],
        from_price_id=row[7],
        to_price_id=row[8],
        from_quantity=row[9],
        to_quantity=row[10],
        mrr=Money(row[11], row[12]),
        plan_id=row[13],
        data=_unpack_mapping(row[14]),
    )


# -- invoices and payments ---------------------------------------------------------------
#
# Every renewal leaves an invoice (with its line, period and lines tuple) and a payment in
# the store for good: as objects, eight containers the collector tracks (each object and
# its __dict__), walked on every collection of their generation and, once the heap has
# grown by a quarter, on a full collection over the whole store (run_due over 10,000: one
# full collection, 28-30 % of its time in the collector). As rows they are plain tuples
# of strings, ints and datetimes, untracked at the first collection they meet, as the
# history rows above. The store keeps settled invoices and payments as rows (see
# _store); an object is rebuilt on read. Amounts are kept in the minor units of the
# invoice's (payment's) currency, as the SQL adapter keeps them: the constructors hold
# every amount to that currency.

InvoiceRow = tuple[Any, ...]
"""(id, customer_id, subscription_id, billing_reason, period start, period end, status,
currency, created_at, number, discount_coupon_id, due_at, finalized_at, paid_at, voided_at,
marked_uncollectible_at, the ten amounts of an invoice, line taxes (None when no line has
any), then each line's twelve fields: kind, description, amount, currency, quantity,
period start, period end, price_id, subscription_id, discountable, tax_rates, discount).

Flat, lines included: a tuple inside a tuple keeps the outer one tracked past the first
collection it meets (the collector finds the inner one reachable through the outer and
moves it behind the outer before its untracking pass), and a row that outlives that
collection reaches an older generation, where it stays tracked for long."""
PaymentRow = tuple[Any, ...]
"""(id, invoice_id, customer_id, amount, currency, status, idempotency_key, attempt,
created_at, gateway_reference, failure_code, failure_message, amount_refunded, settled_at)"""

# Positions the store's key functions read.
INVOICE_CUSTOMER = 1
INVOICE_SUBSCRIPTION = 2
INVOICE_REASON = 3
INVOICE_PERIOD_START = 4
INVOICE_STATUS = 6
_INVOICE_LINES = 27  # where the first line's fields begin
_LINE_FIELDS = 12
PAYMENT_INVOICE = 1
PAYMENT_CUSTOMER = 2
PAYMENT_STATUS = 5
PAYMENT_KEY = 6
PAYMENT_CREATED_AT = 8
PAYMENT_REFERENCE = 9

_INVOICE_STATUSES: Mapping[str, InvoiceStatus] = {m.value: m for m in InvoiceStatus}
_BILLING_REASONS: Mapping[str, BillingReason] = {m.value: m for m in BillingReason}
_LINE_KINDS: Mapping[str, LineKind] = {m.value: m for m in LineKind}
_PAYMENT_STATUSES: Mapping[str, PaymentStatus] = {m.value: m for m in PaymentStatus}


def _line_fields(line: InvoiceLine, discount: Money) -> tuple[Any, ...]:
    amount, period = line.amount, line.period
    return (
        VALUE_OF[line.kind],
        line.description,
        amount.amount,
        amount.currency,
        line.quantity,
        None if period is None else period.start,
        None if period is None else period.end,
        line.price_id,
        line.subscription_id,
        line.discountable,
        line.tax_rates,
        discount.amount,
    )


def invoice_row(invoice: Invoice) -> InvoiceRow:
    """Return an invoice as a compact row."""
    period = invoice.period
    lines = invoice.lines
    taxes = invoice.line_taxes
    fields = (
        invoice.id,
        invoice.customer_id,
        invoice.subscription_id,
        VALUE_OF[invoice.billing_reason],
        None if period is None else period.start,
        None if period is None else period.end,
        VALUE_OF[invoice.status],
        invoice.currency,
        invoice.created_at,
        invoice.number,
        invoice.discount_coupon_id,
        invoice.due_at,
        invoice.finalized_at,
        invoice.paid_at,
        invoice.voided_at,
        invoice.marked_uncollectible_at,
        invoice.subtotal.amount,
        invoice.discount.amount,
        invoice.tax.amount,
        invoice.inclusive_tax.amount,
        invoice.total.amount,
        invoice.credit_applied.amount,
        invoice.amount_due.amount,
        invoice.amount_paid.amount,
        invoice.amount_credited.amount,
        invoice.amount_refunded.amount,
        # None for no tax on any line, the common case: the invoice's own tuple of empty
        # tuples is tracked, and would keep the row tracked too.
        taxes if any(taxes) else None,
    )
    if len(lines) == 1:  # a renewal's invoice
        return fields + _line_fields(lines[0], invoice.line_discounts[0])
    flat: list[Any] = list(fields)
    for line, discount in zip(lines, invoice.line_discounts, strict=True):
        flat += _line_fields(line, discount)
    return tuple(flat)


def invoice_from_row(row: InvoiceRow) -> Invoice:
    """Rebuild an invoice from its row."""
    (
        invoice_id,
        customer_id,
        subscription_id,
        reason,
        start,
        end,
        status,
        currency,
        created_at,
        number,
        coupon_id,
        due_at,
        finalized_at,
        paid_at,
        voided_at,
        uncollectible_at,
        subtotal,
        discount,
        tax,
        inclusive_tax,
        total,
        credit_applied,
        amount_due,
        amount_paid,
        amount_credited,
        amount_refunded,
        line_taxes,
    ) = row[:_INVOICE_LINES]
    money = shared_money(currency)
    period = None if start is None else trusted_period(start, end)
    lines = []
    discounts = []
    for at in range(_INVOICE_LINES, len(row), _LINE_FIELDS):
        (
            kind,
            text,
            amount,
            line_currency,
            quantity,
            line_start,
            line_end,
            price_id,
            line_subscription_id,
            discountable,
            tax_rates,
            line_discount,
        ) = row[at : at + _LINE_FIELDS]
        if line_start is None:
            line_period = None
        elif period is not None and line_start == start and line_end == end:
            line_period = period  # a renewal's line covers the invoice's period: one object
        else:
            line_period = trusted_period(line_start, line_end)
        lines.append(
            build_trusted(
                InvoiceLine,
                {
                    "kind": _LINE_KINDS[kind],
                    "description": text,
                    "amount": money[amount]
                    if line_currency == currency
                    else shared_money(line_currency)[amount],
                    "quantity": quantity,
                    "period": line_period,
                    "price_id": price_id,
                    "subscription_id": line_subscription_id,
                    "discountable": discountable,
                    "tax_rates": tax_rates,
                },
            )
        )
        discounts.append(money[line_discount])
    invoice: Invoice = build_trusted(
        Invoice,
        {
            "id": invoice_id,
            "customer_id": customer_id,
            "currency": currency,
            "status": _INVOICE_STATUSES[status],
            "lines": tuple(lines),
            "billing_reason": _BILLING_REASONS[reason],
            "created_at": created_at,
            "subtotal": money[subtotal],
            "discount": money[discount],
            "tax": money[tax],
            "inclusive_tax": money[inclusive_tax],
            "total": money[total],
            "credit_applied": money[credit_applied],
            "amount_due": money[amount_due],
            "amount_paid": money[amount_paid],
            "amount_credited": money[amount_credited],
            "amount_refunded": money[amount_refunded],
            "line_discounts": tuple(discounts),
            "line_taxes": ((),) * len(lines) if line_taxes is None else line_taxes,
            "subscription_id": subscription_id,
            "number": number,
            "period": period,
            "discount_coupon_id": coupon_id,
            "due_at": due_at,
            "finalized_at": finalized_at,
            "paid_at": paid_at,
            "voided_at": voided_at,
            "marked_uncollectible_at": uncollectible_at,
        },
    )
    return invoice


def payment_row(payment: Payment) -> PaymentRow:
    """Return a payment as a compact row."""
    amount, refunded = payment.amount, payment.amount_refunded
    currency = amount.currency
    return (
        payment.id,
        payment.invoice_id,
        payment.customer_id,
        amount.amount,
        currency,
        VALUE_OF[payment.status],
        payment.idempotency_key,
        payment.attempt,
        payment.created_at,
        payment.gateway_reference,
        payment.failure_code,
        payment.failure_message,
        # In the payment's currency, kept as given in any other (no constructor forbids it).
        None
        if refunded is None
        else refunded.amount
        if refunded.currency == currency
        else refunded,
        payment.settled_at,
    )


def payment_from_row(row: PaymentRow) -> Payment:
    """Rebuild a payment from its row."""
    refunded = row[12]
    payment: Payment = build_trusted(
        Payment,
        {
            "id": row[0],
            "invoice_id": row[1],
            "customer_id": row[2],
            "amount": shared_money(row[4])[row[3]],
            "status": _PAYMENT_STATUSES[row[5]],
            "idempotency_key": row[6],
            "attempt": row[7],
            "created_at": row[8],
            "gateway_reference": row[9],
            "failure_code": row[10],
            "failure_message": row[11],
            "amount_refunded": shared_money(row[4])[refunded]
            if type(refunded) is int
            else refunded,
            "settled_at": row[13],
        },
    )
    return payment
