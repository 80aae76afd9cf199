"""Verify SendGrid's signed Event Webhook and read the delivery events of our emails."""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook  # type: ignore[import-untyped]

from lumenquest_adapters.sendgrid._sender import CUSTOM_ARG_MESSAGE_ID
from lumenquest_core.errors import ConfigurationError, ValidationError
from lumenquest_core.ports import DeliveryStatus

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "parse_sendgrid_events"]

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_STATUSES: Mapping[str, DeliveryStatus] = {
    "processed": DeliveryStatus.PROCESSED,
    "delivered": DeliveryStatus.DELIVERED,
    "deferred": DeliveryStatus.DEFERRED,
    "bounce": DeliveryStatus.BOUNCE,
    "dropped": DeliveryStatus.DROPPED,
    "open": DeliveryStatus.OPEN,
    "click": DeliveryStatus.CLICK,
}


def _rejected(reason: str, message: str) -> ValidationError:
    return ValidationError(
        f"SendGrid event webhook rejected: {message}", details={"reason": reason}
    )


def parse_sendgrid_events(
    payload: bytes, signature: str, timestamp: str, public_key: str
) -> list[tuple[str, DeliveryStatus]]:
    """Verify a signed Event Webhook post and return ``(message_id, status)`` per event.

    ``payload`` is the raw body, ``signature`` and ``timestamp`` the
    ``X-Twilio-Email-Event-Webhook-Signature`` and ``-Timestamp`` headers, and
    ``public_key`` the verification key from SendGrid's Mail Settings (base64 DER). The
    ECDSA signature is checked with the SDK's ``EventWebhook`` helper; a forged or
    unreadable post raises ValidationError, a malformed key ConfigurationError. Events
    of other types (spam reports, unsubscribes) and of emails lumenquest did not send
    (no ``lumenquest_message_id`` custom arg) are left out. Feed each pair to
    ``Billing.record_email_event``.
    """
    helper = EventWebhook()
    try:
        key = helper.convert_public_key_to_ecdsa(public_key)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            "the SendGrid event webhook verification key is not a valid EC public key"
        ) from exc
    try:
        body = payload.decode("utf-8")
        verified = helper.verify_signature(body, signature, timestamp, public_key=key)
    except (UnicodeDecodeError, binascii.Error, ValueError, TypeError) as exc:
        raise _rejected("signature", f"the signature cannot be read ({exc})") from exc
    if not verified:
        raise _rejected("signature", "the ECDSA signature does not match the payload")
    try:
        events: Any = json.loads(body)
    except ValueError as exc:
        raise _rejected("payload", f"the body is not JSON ({exc})") from exc
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise _rejected("payload", "the body is not a list of events")
    found: list[tuple[str, DeliveryStatus]] = []
    for event in events:
        status = _STATUSES.get(str(event.get("event")))
        message_id = event.get(CUSTOM_ARG_MESSAGE_ID)
        if status is not None and isinstance(message_id, str) and message_id:
            found.append((message_id, status))
    return found
