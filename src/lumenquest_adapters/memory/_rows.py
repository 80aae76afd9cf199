"""Compact rows for the history tables: outbox messages, audit entries, subscription changes.

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

import marshal
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from lumenquest_core._trusted import build_trusted
from lumenquest_core.events import DomainEvent, EventName
from lumenquest_core.money import Money
from lumenquest_core.payments import AuditEntry, SubscriptionChange
from lumenquest_core.ports import OutboxMessage

__all__ = [
    "ChangeRow",
    "MessageRow",
    "EntryRow",
    "change_from_row",
    "change_row",
    "entry_from_row",
    "entry_row",
    "message_delivered",
    "message_from_row",
    "message_row",
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


def _pack_mapping(data: Mapping[str, Any]) -> Any:
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
        event.name._value_,  # the plain attribute: .value is a Python-level property
        event.subject_id,
        event.customer_id,
        event.occurred_at,
        _pack_mapping(event.data),
        message.created_at,
        message.delivered_at,
        message.attempts,
    )


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


def entry_row(entry: AuditEntry) -> EntryRow:
    """Return an audit entry as a compact row."""
    before, after = entry.before, entry.after
    packed: Any = None
    if before is not None or after is not None:
        try:  # marshalled, or kept as given if it is not plain data
            # The pair built in the call: held by a name, marshal would see it shared
            # and record it for back-references (9,000 entries: +10 million instructions).
            packed = _dumps((before, after))
        except ValueError:
            packed = (before, after)
    return (
        entry.id,
        entry.actor,
        entry.action,
        entry.subject_type,
        entry.subject_id,
        entry.at,
        entry.customer_id,
        packed,
    )


def entry_from_row(row: EntryRow) -> AuditEntry:
    """Rebuild an audit entry from its row."""
    entry_id, actor, action, subject_type, subject_id, at, customer_id, packed = row
    if packed is None:
        before = after = None
    elif type(packed) is bytes:
        before, after = _loads(packed)
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
    mrr = change.mrr
    return (
        change.id,
        change.subscription_id,
        change.customer_id,
        change.kind,
        change.at,
        change.from_status,
        change.to_status,
        change.from_price_id,
        change.to_price_id,
        change.from_quantity,
        change.to_quantity,
        mrr.amount,
        mrr.currency,
        change.plan_id,
        _pack_mapping(change.data),
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
