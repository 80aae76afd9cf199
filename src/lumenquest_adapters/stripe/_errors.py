"""The one place where the Stripe SDK's exceptions become lumenquest's.

The table (``translate_stripe_errors``)::

    stripe error                              lumenquest error
    RateLimitError (429)                      GatewayUnavailable   (retryable)
    APIConnectionError (network, timeout)     GatewayUnavailable   (retryable)
    APIError (5xx and unexpected answers)     GatewayUnavailable   (retryable)
    IdempotencyError                          IdempotencyConflict
    AuthenticationError (401)                 ConfigurationError   (the API key)
    PermissionError (403)                     ConfigurationError   (the key's permissions)
    InvalidRequestError, resource_missing     NotFound
    InvalidRequestError, amount too large     ValidationError      (refunding more than is left)
    InvalidRequestError, anything else        ConfigurationError   (a request Stripe refuses)
    CardError (402) outside a charge          PaymentDeclined
    any other StripeError                     GatewayUnavailable

A card error during ``charge`` is not an exception: the gateway turns it into a
declined ``ChargeResult`` before this table is consulted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import stripe

from lumenquest_core.errors import (
    ConfigurationError,
    GatewayUnavailable,
    IdempotencyConflict,
    NotFound,
    PaymentDeclined,
    ValidationError,
)

__all__ = ["translate_stripe_errors"]

# Stripe's error codes for a refund the charge cannot cover.
_REFUND_TOO_LARGE = frozenset({"amount_too_large", "charge_already_refunded"})


def _message(exc: stripe.StripeError) -> str:
    return exc.user_message or str(exc) or type(exc).__name__


def _details(exc: stripe.StripeError, operation: str) -> dict[str, object]:
    return {
        "operation": operation,
        "stripe_error": type(exc).__name__,
        "stripe_code": exc.code,
        "http_status": exc.http_status,
        "request_id": exc.request_id,
    }


@contextmanager
def translate_stripe_errors(operation: str) -> Iterator[None]:
    """Re-raise the Stripe SDK's exceptions raised in the block as lumenquest errors."""
    try:
        yield
    except stripe.CardError as exc:
        raise PaymentDeclined(
            f"Stripe declined the card during {operation}: {_message(exc)}",
            decline_code=(exc.error.decline_code if exc.error else None) or exc.code,
            details=_details(exc, operation),
        ) from exc
    except stripe.IdempotencyError as exc:
        raise IdempotencyConflict(
            f"Stripe refused to reuse an idempotency key during {operation}: {_message(exc)}",
            details=_details(exc, operation),
        ) from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise ConfigurationError(
            f"Stripe rejected the API key during {operation} ({_message(exc)});"
            " check the secret key the Stripe gateway was configured with",
            details=_details(exc, operation),
        ) from exc
    except stripe.InvalidRequestError as exc:
        details = {**_details(exc, operation), "param": exc.param}
        if exc.code == "resource_missing" or exc.http_status == 404:
            raise NotFound(
                f"Stripe has no such object ({operation}): {_message(exc)}",
                details={**details, "kind": "stripe_object"},
            ) from exc
        if exc.code in _REFUND_TOO_LARGE:
            raise ValidationError(
                f"Stripe refused the refund: {_message(exc)}", details=details
            ) from exc
        raise ConfigurationError(
            f"Stripe refused the {operation} request: {_message(exc)}"
            f" (param {exc.param!r}); the request or the account's settings need fixing",
            details=details,
        ) from exc
    except (stripe.RateLimitError, stripe.APIConnectionError, stripe.APIError) as exc:
        raise GatewayUnavailable(
            f"Stripe is unavailable for {operation}: {_message(exc)}",
            details=_details(exc, operation),
        ) from exc
    except stripe.StripeError as exc:
        raise GatewayUnavailable(
            f"Stripe failed during {operation}: {_message(exc)}",
            details=_details(exc, operation),
        ) from exc
