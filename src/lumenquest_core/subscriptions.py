"""The subscription lifecycle as pure transitions.

Every operation takes a subscription, its arguments and the instant ``at``, and returns
a :class:`Transition`: the new subscription, the invoice lines the change causes and the
domain events it records. An operation that the current state does not allow raises
:class:`~lumenquest_core.errors.InvalidTransition`.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from lumenquest_core.catalog import Price
from lumenquest_core.coupons import Discount
from lumenquest_core.events import DomainEvent
from lumenquest_core.lines import InvoiceLine
from lumenquest_core.periods import BillingCycle, Period

__all__ = [
    "ScheduledChange",
    "Subscription",
    "SubscriptionStatus",
    "Transition",
]


class SubscriptionStatus(enum.StrEnum):
    """The eight states of a subscription (Stripe's names)."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    UNPAID = "unpaid"
    CANCELED = "canceled"


@attrs.frozen
class ScheduledChange:
    """A price or quantity change waiting for ``effective_at`` (the period end)."""

    price: Price
    quantity: int
    effective_at: datetime


@attrs.frozen
class Subscription:
    """A customer's subscription to one price; immutable, changed only by transitions."""

    id: str
    customer_id: str
    price: Price
    quantity: int
    status: SubscriptionStatus
    anchor: datetime
    current_period: Period
    created_at: datetime
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    paused_at: datetime | None = None
    resumes_at: datetime | None = None
    scheduled_change: ScheduledChange | None = None
    discount: Discount | None = None
    failed_payments: int = 0
    next_payment_retry_at: datetime | None = None

    @property
    def cycle(self) -> BillingCycle:
        """The billing cycle of the current price."""
        return self.price.cycle

    @property
    def currency(self) -> str:
        """The currency the subscription bills in."""
        return self.price.currency


@attrs.frozen
class Transition:
    """The result of a lifecycle operation."""

    subscription: Subscription
    lines: tuple[InvoiceLine, ...] = ()
    events: tuple[DomainEvent, ...] = ()
