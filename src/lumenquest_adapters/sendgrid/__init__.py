"""SendGrid: an ``EmailSender`` on the official SDK and the signed Event Webhook.

Install with the ``sendgrid`` extra::

    sender = SendGridEmailSender.from_api_key(
        "SG.…", from_email="billing@example.com",
        templates={"welcome": "d-…", "invoice_paid": "d-…", "payment_failed": "d-…"},
    )

    # in the host's event-webhook route, with the raw body and the two headers:
    for message_id, status in parse_sendgrid_events(body, signature, timestamp, public_key):
        billing.record_email_event(message_id, status)
"""

from lumenquest_adapters.sendgrid._sender import (
    CUSTOM_ARG_MESSAGE_ID,
    SendGridEmailSender,
    translate_sendgrid_errors,
)
from lumenquest_adapters.sendgrid._webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    parse_sendgrid_events,
)

__all__ = [
    "CUSTOM_ARG_MESSAGE_ID",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SendGridEmailSender",
    "parse_sendgrid_events",
    "translate_sendgrid_errors",
]
