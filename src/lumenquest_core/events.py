"""Domain events: the facts a change records, for the outbox, emails and analytics."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

__all__ = ["DomainEvent", "EventName"]


class EventName(enum.StrEnum):
    """Every kind of domain event; the value is the event's stable wire name."""

    SUBSCRIPTION_CREATED = "subscription.created"
    SUBSCRIPTION_ACTIVATED = "subscription.activated"  # incomplete → active: first payment
    SUBSCRIPTION_RENEWED = "subscription.renewed"
    SUBSCRIPTION_CHANGED = "subscription.changed"
    CHANGE_SCHEDULED = "subscription.change_scheduled"
    SCHEDULED_CHANGE_CANCELED = "subscription.scheduled_change_canceled"
    CANCELLATION_SCHEDULED = "subscription.cancellation_scheduled"
    CANCELLATION_UNDONE = "subscription.cancellation_undone"
    SUBSCRIPTION_CANCELED = "subscription.canceled"
    SUBSCRIPTION_PAUSED = "subscription.paused"
    SUBSCRIPTION_RESUMED = "subscription.resumed"
    SUBSCRIPTION_PAST_DUE = "subscription.past_due"
    SUBSCRIPTION_UNPAID = "subscription.unpaid"
    SUBSCRIPTION_EXPIRED = "subscription.incomplete_expired"
    TRIAL_WILL_END = "subscription.trial_will_end"
    TRIAL_ENDED = "subscription.trial_ended"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_RECOVERED = "payment.recovered"  # a past-due or unpaid subscription paid again
    # Referenced by the application service (service.py) for its own facts.
    CUSTOMER_CREATED = "customer.created"
    CUSTOMER_UPDATED = "customer.updated"
    CUSTOMER_ERASED = "customer.erased"
    INVOICE_FINALIZED = "invoice.finalized"
    INVOICE_PAID = "invoice.paid"
    INVOICE_VOIDED = "invoice.voided"
    INVOICE_UNCOLLECTIBLE = "invoice.marked_uncollectible"
    USAGE_RECORDED = "usage.recorded"
    REFUND_CREATED = "refund.created"
    CREDIT_NOTE_ISSUED = "credit_note.issued"
    DISPUTE_CREATED = "dispute.created"
    GATEWAY_EVENT_IGNORED = "gateway.event_ignored"


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


# Not slotted: events are built on every change, and a dict-backed object builds fastest.
@attrs.frozen(slots=False)
class DomainEvent:
    """Something that happened to ``subject_id`` at ``occurred_at``; ``data`` is JSON-ready."""

    name: EventName
    subject_id: str
    customer_id: str
    occurred_at: datetime
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, hash=False)
