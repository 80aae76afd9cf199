"""Verify Stripe's signed webhooks and map the events ``Billing`` understands."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import stripe

from lumenquest_adapters.stripe._gateway import METADATA_IDEMPOTENCY_KEY
from lumenquest_core.errors import UnknownCurrency, ValidationError
from lumenquest_core.money import Money
from lumenquest_core.service import GatewayEvent, GatewayEventType

__all__ = ["DEFAULT_TOLERANCE_SECONDS", "parse_stripe_webhook"]

DEFAULT_TOLERANCE_SECONDS = 300
"""How far a signature's timestamp may be from ``now``, either way (Stripe's default)."""

_TYPES: Mapping[str, GatewayEventType] = {
    "payment_intent.succeeded": GatewayEventType.PAYMENT_SUCCEEDED,
    "payment_intent.payment_failed": GatewayEventType.PAYMENT_FAILED,
    "charge.refunded": GatewayEventType.CHARGE_REFUNDED,
    "charge.dispute.created": GatewayEventType.DISPUTE_CREATED,
}


def _rejected(reason: str, message: str) -> ValidationError:
    return ValidationError(f"Stripe webhook rejected: {message}", details={"reason": reason})


def _timestamp(header: str) -> int:
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            return int(value)
    raise ValueError("no t= in the header")


def parse_stripe_webhook(
    payload: bytes,
    signature_header: str,
    secret: str,
    *,
    now: datetime,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> GatewayEvent | None:
    """Verify a Stripe webhook and return the event it carries, in the core's words.

    ``payload`` is the raw request body and ``signature_header`` the ``Stripe-Signature``
    header. The HMAC-SHA256 signature is checked by the SDK
    (``stripe.WebhookSignature.verify_header``); the timestamp is checked here against
    ``now``, and is refused when more than ``tolerance`` seconds old *or* ahead. A
    forged, stale, future-dated or unparsable webhook raises ValidationError (its
    ``details["reason"]`` says which: ``signature``, ``stale``, ``future``,
    ``payload``). Event types lumenquest does not handle return None: acknowledge them
    and move on. Pass the result to ``Billing.handle_gateway_event``, which applies
    each event id once, in any order.
    """
    if now.tzinfo is None:
        raise ValidationError("now must be timezone-aware")
    try:
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance=None)
        signed_at = _timestamp(signature_header)
    except (stripe.SignatureVerificationError, ValueError, UnicodeDecodeError) as exc:
        raise _rejected("signature", f"the Stripe-Signature does not match ({exc})") from exc
    age = int(now.timestamp()) - signed_at
    if age > tolerance:
        raise _rejected("stale", f"signed {age} s ago, more than the {tolerance} s tolerance")
    if -age > tolerance:
        raise _rejected("future", f"signed {-age} s in the future, beyond {tolerance} s")
    try:
        event = json.loads(payload)
        kind = _TYPES.get(event["type"])
        if kind is None:
            return None
        return _event(event, kind)
    except (ValueError, KeyError, TypeError, UnknownCurrency) as exc:
        raise _rejected("payload", f"the event cannot be read ({exc!r})") from exc


def _money(amount: Any, currency: Any) -> Money:
    if type(amount) is not int:
        raise TypeError(f"amount {amount!r} is not an integer")
    return Money(amount, str(currency).upper())


def _event(event: Mapping[str, Any], kind: GatewayEventType) -> GatewayEvent:
    obj: Mapping[str, Any] = event["data"]["object"]
    event_id = str(event["id"])
    occurred_at = datetime.fromtimestamp(int(event["created"]), UTC)
    metadata: Mapping[str, Any] = obj.get("metadata") or {}
    key = metadata.get(METADATA_IDEMPOTENCY_KEY)
    if kind is GatewayEventType.PAYMENT_SUCCEEDED:
        received = obj.get("amount_received") or obj["amount"]
        return GatewayEvent(
            id=event_id,
            type=kind,
            occurred_at=occurred_at,
            idempotency_key=key,
            reference=obj["id"],
            amount=_money(received, obj["currency"]),
        )
    if kind is GatewayEventType.PAYMENT_FAILED:
        error: Mapping[str, Any] = obj.get("last_payment_error") or {}
        return GatewayEvent(
            id=event_id,
            type=kind,
            occurred_at=occurred_at,
            idempotency_key=key,
            reference=obj["id"],
            amount=_money(obj["amount"], obj["currency"]),
            decline_code=error.get("decline_code") or error.get("code") or "card_declined",
            message=error.get("message") or "",
        )
    # A charge (refunded) or a dispute: our reference is the PaymentIntent's id.
    reference = obj.get("payment_intent") or obj.get("charge") or obj["id"]
    amount = obj["amount_refunded"] if kind is GatewayEventType.CHARGE_REFUNDED else obj["amount"]
    return GatewayEvent(
        id=event_id,
        type=kind,
        occurred_at=occurred_at,
        idempotency_key=key,
        reference=str(reference),
        amount=_money(amount, obj["currency"]),
        message=str(obj.get("reason") or ""),
    )
