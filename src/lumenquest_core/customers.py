"""Customers: who subscribes and pays (the seed's users)."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

from lumenquest_core.errors import CurrencyMismatch, ValidationError
from lumenquest_core.money import Money, _money, currency_exponent

__all__ = ["Customer", "Role", "normalize_email"]

# Deliberately loose: the mailbox provider is the real judge; this catches typos and junk.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MAX_EMAIL_LENGTH = 254


class Role(enum.StrEnum):
    """What a customer's account may do (the seed's roles)."""

    USER = "user"
    ADMIN = "admin"


def normalize_email(email: str) -> str:
    """Return ``email`` trimmed and lower-cased, or raise ValidationError if it is not one."""
    if not isinstance(email, str):
        raise ValidationError("email must be a string", details={"field": "email"})
    normalized = email.strip().lower()
    if len(normalized) > _MAX_EMAIL_LENGTH or not _EMAIL.match(normalized):
        raise ValidationError(
            f"{email!r} is not a valid email address",
            details={"field": "email", "reason": "invalid format"},
        )
    return normalized


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _currency(value: str | None) -> str | None:
    if value is not None:
        currency_exponent(value)
    return value


@attrs.frozen
class Customer:
    """A customer; ``credit_balance`` is credit in the customer's favour, in its currency."""

    id: str
    email: str = attrs.field(converter=normalize_email)
    created_at: datetime
    name: str = ""
    currency: str | None = attrs.field(default=None, converter=_currency)
    credit_balance: Money | None = None
    role: Role = attrs.field(default=Role.USER, converter=Role)
    gateway_customer_id: str | None = None
    email_deliverable: bool = True
    erased_at: datetime | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, hash=False, eq=False)

    def __attrs_post_init__(self) -> None:
        balance = self.credit_balance
        if balance is not None and balance.currency != self.currency:
            raise CurrencyMismatch("a customer's credit balance is in the customer's currency")

    def balance(self) -> Money | None:
        """Return the credit balance, zero in the customer's currency when none is recorded."""
        if self.credit_balance is not None or self.currency is None:
            return self.credit_balance
        return _money(0, self.currency)  # the currency was checked when the customer was made

    def with_currency(self, currency: str) -> Customer:
        """Return the customer bound to ``currency``; a customer bills in one currency only."""
        if self.currency == currency:
            return self
        if self.currency is not None:
            raise CurrencyMismatch(
                f"customer {self.id} bills in {self.currency}, not {currency}",
                details={"customer_currency": self.currency, "currency": currency},
            )
        return attrs.evolve(self, currency=currency)
