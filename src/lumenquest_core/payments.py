"""Payments against invoices, usage records and the history rows every change leaves."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

from lumenquest_core.errors import ValidationError
from lumenquest_core.money import Money

__all__ = [
    "AuditEntry",
    "ChargeResult",
    "ChargeStatus",
    "Payment",
    "PaymentStatus",
    "SubscriptionChange",
    "UsageRecord",
]


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


class PaymentStatus(enum.StrEnum):
    """Where a payment attempt stands."""

    PENDING = "pending"  # sent to the gateway, outcome not yet known
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ChargeStatus(enum.StrEnum):
    """What the gateway said about a charge."""

    SUCCEEDED = "succeeded"
    DECLINED = "declined"


@attrs.frozen
class ChargeResult:
    """The gateway's answer to a charge: its reference and, when declined, why."""

    status: ChargeStatus
    reference: str
    decline_code: str | None = None
    message: str = ""


# Dict-backed, not slotted: every renewal builds one and settles it (see _trusted).
@attrs.frozen(slots=False)
class Payment:
    """One attempt to collect an invoice; ``idempotency_key`` makes its charge happen once."""

    id: str
    invoice_id: str
    customer_id: str
    amount: Money
    status: PaymentStatus
    idempotency_key: str
    attempt: int
    created_at: datetime
    gateway_reference: str | None = None
    failure_code: str | None = None
    failure_message: str = ""
    amount_refunded: Money | None = None
    settled_at: datetime | None = None

    def failed(
        self, at: datetime, code: str | None, message: str, reference: str | None = None
    ) -> Payment:
        """Return the payment settled as failed at ``at``."""
        return attrs.evolve(
            self,
            status=PaymentStatus.FAILED,
            gateway_reference=reference or self.gateway_reference,
            failure_code=code,
            failure_message=message,
            settled_at=at,
        )

    def refundable(self) -> Money:
        """Return how much of the payment can still be refunded."""
        if self.status is not PaymentStatus.SUCCEEDED:
            return Money(0, self.amount.currency)
        refunded = self.amount_refunded or Money(0, self.amount.currency)
        return self.amount - refunded


@attrs.frozen
class UsageRecord:
    """A quantity of a metered price used by a subscription at an instant."""

    id: str
    subscription_id: str
    quantity: int
    at: datetime

    def __attrs_post_init__(self) -> None:
        if type(self.quantity) is not int or self.quantity < 0:
            raise ValidationError(
                f"usage quantity must be a non-negative int, not {self.quantity!r}",
                details={"quantity": repr(self.quantity)},
            )


# Dict-backed, not slotted: a renewal builds several, and adopting a ready dict is the
# fastest way to make one (lumenquest_core._trusted.build_trusted).
@attrs.frozen(slots=False)
class AuditEntry:
    """Who did what to which object, with the state before and after."""

    id: str
    actor: str
    action: str
    subject_type: str
    subject_id: str
    at: datetime
    customer_id: str | None = None
    before: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    after: Mapping[str, Any] | None = attrs.field(default=None, hash=False)


# Dict-backed, not slotted: a renewal builds several, and adopting a ready dict is the
# fastest way to make one (lumenquest_core._trusted.build_trusted).
@attrs.frozen(slots=False)
class SubscriptionChange:
    """One row of a subscription's history, with the MRR it contributed from then on."""

    id: str
    subscription_id: str
    customer_id: str
    kind: str
    at: datetime
    from_status: str | None
    to_status: str
    from_price_id: str | None
    to_price_id: str
    from_quantity: int | None
    to_quantity: int
    mrr: Money
    plan_id: str = ""
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, hash=False)
