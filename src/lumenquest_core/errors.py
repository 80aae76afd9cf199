"""Every error lumenquest raises, each with a stable machine-readable ``code``.

The tree::

    LumenquestError                      code
    ├── ValidationError                  VALIDATION_ERROR
    │   ├── CurrencyMismatch             CURRENCY_MISMATCH
    │   ├── UnknownCurrency              UNKNOWN_CURRENCY
    │   └── NaiveDatetime                NAIVE_DATETIME
    ├── NotFound                         NOT_FOUND
    ├── Conflict                         CONFLICT
    │   ├── InvalidTransition            INVALID_STATE_TRANSITION
    │   └── IdempotencyConflict          IDEMPOTENCY_CONFLICT
    ├── PaymentDeclined                  PAYMENT_DECLINED
    ├── GatewayUnavailable               GATEWAY_UNAVAILABLE   (retryable)
    └── ConfigurationError               CONFIGURATION_ERROR

Codes are part of the public contract: hosts map them to HTTP statuses and
match on them, so a code never changes once released.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "Conflict",
    "ConfigurationError",
    "CurrencyMismatch",
    "GatewayUnavailable",
    "IdempotencyConflict",
    "InvalidTransition",
    "LumenquestError",
    "NaiveDatetime",
    "NotFound",
    "PaymentDeclined",
    "UnknownCurrency",
    "ValidationError",
]


class LumenquestError(Exception):
    """Base of every error lumenquest raises; carries a stable ``code``."""

    code: ClassVar[str] = "LUMENQUEST_ERROR"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        """Return the error as the seed's ``{code, message, details}`` shape."""
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationError(LumenquestError, ValueError):
    """An argument is malformed or out of range."""

    code = "VALIDATION_ERROR"


class CurrencyMismatch(ValidationError):
    """Two amounts in different currencies were combined."""

    code = "CURRENCY_MISMATCH"


class UnknownCurrency(ValidationError):
    """A currency code is not in the ISO 4217 table."""

    code = "UNKNOWN_CURRENCY"


class NaiveDatetime(ValidationError):
    """A datetime without a timezone was given where an instant is needed."""

    code = "NAIVE_DATETIME"


class NotFound(LumenquestError, LookupError):
    """A referenced object does not exist."""

    code = "NOT_FOUND"


class Conflict(LumenquestError):
    """The request breaks a business rule given the current state."""

    code = "CONFLICT"


class InvalidTransition(Conflict):
    """An operation is not allowed in the object's current state."""

    code = "INVALID_STATE_TRANSITION"


class IdempotencyConflict(Conflict):
    """An idempotency key was reused with different arguments."""

    code = "IDEMPOTENCY_CONFLICT"


class PaymentDeclined(LumenquestError):
    """The payment gateway declined a charge."""

    code = "PAYMENT_DECLINED"

    def __init__(
        self,
        message: str,
        *,
        decline_code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details={**(details or {}), "decline_code": decline_code})
        self.decline_code = decline_code


class GatewayUnavailable(LumenquestError):
    """A remote service could not be reached or answered with a transient fault."""

    code = "GATEWAY_UNAVAILABLE"
    retryable = True


class ConfigurationError(LumenquestError):
    """lumenquest or one of its adapters is set up wrongly."""

    code = "CONFIGURATION_ERROR"
