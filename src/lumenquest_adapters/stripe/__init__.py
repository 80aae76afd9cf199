"""Stripe: a ``PaymentGateway`` on the official SDK and the signed-webhook mapping.

Install with the ``stripe`` extra. Build the gateway from a secret key, attach a
payment method once, and let ``Billing`` charge::

    gateway = StripeGateway.from_api_key("sk_live_…")
    gateway.attach_payment_method(customer, "pm_…")

    # in the host's webhook route, with the raw body and the Stripe-Signature header:
    event = parse_stripe_webhook(body, signature, webhook_secret, now=billing.clock.now())
    if event is not None:
        billing.handle_gateway_event(event)

Errors are translated at the boundary (see ``_errors``): declines are results,
429/5xx/network faults raise GatewayUnavailable, key and request problems raise
ConfigurationError.
"""

from lumenquest_adapters.stripe._errors import translate_stripe_errors
from lumenquest_adapters.stripe._gateway import (
    METADATA_CUSTOMER_ID,
    METADATA_IDEMPOTENCY_KEY,
    NO_PAYMENT_METHOD,
    StripeGateway,
)
from lumenquest_adapters.stripe._webhooks import DEFAULT_TOLERANCE_SECONDS, parse_stripe_webhook

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "METADATA_CUSTOMER_ID",
    "METADATA_IDEMPOTENCY_KEY",
    "NO_PAYMENT_METHOD",
    "StripeGateway",
    "parse_stripe_webhook",
    "translate_stripe_errors",
]
