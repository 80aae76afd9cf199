"""Invoices as pure values: building, taxes, discounts, credit, numbering and their states.

Every function here takes what it needs (the instant ``at``, ids, numbers) and returns new
values; nothing is generated or read from a clock. The amounts of an :class:`Invoice` obey
the invariant ``total = subtotal − discount + tax`` (exclusive tax only; inclusive tax is
already inside the line amounts) and, when built, ``amount_due = max(0, total −
credit_applied)``. Credit notes issued while an invoice is open lower ``amount_due``
further (Stripe's pre-payment credit notes).

States: ``draft → open → paid | void | uncollectible`` and ``uncollectible → paid``.
Anything else raises :class:`~lumenquest_core.errors.InvalidTransition`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Protocol, TypeVar

import attrs

from lumenquest_core._trusted import _new, _set, build_trusted, evolve_trusted
from lumenquest_core.catalog import Price, UsageType
from lumenquest_core.coupons import Discount
from lumenquest_core.errors import CurrencyMismatch, InvalidTransition, ValidationError
from lumenquest_core.lines import InvoiceLine, LineKind, TaxRate
from lumenquest_core.money import (
    CURRENCY_EXPONENTS,
    Money,
    _money,
    allocate,
    currency_exponent,
    round_half_even,
)
from lumenquest_core.periods import Period, aware

__all__ = [
    "InvoiceStatus",
    "BillingReason",
    "TaxCalculator",
    "NoTax",
    "FixedTaxRates",
    "LineTax",
    "Invoice",
    "build_invoice",
    "customer_balance_after",
    "finalize",
    "pay",
    "void",
    "mark_uncollectible",
    "format_invoice_number",
    "InvoiceNumbering",
    "CreditNoteOutcome",
    "CreditNote",
    "issue_credit_note",
    "Refund",
    "record_refund",
    "usage_line",
]


class InvoiceStatus(enum.StrEnum):
    """Where an invoice is in its life (Stripe's names)."""

    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


# Bound once: on Python 3.11 each ``InvoiceStatus.X`` goes through the enum metaclass's
# __getattr__ hook (about 1,000 instructions), and a renewal asks for five of them.
_DRAFT, _OPEN, _PAID = InvoiceStatus.DRAFT, InvoiceStatus.OPEN, InvoiceStatus.PAID
_PAYABLE = (_OPEN, InvoiceStatus.UNCOLLECTIBLE)


class BillingReason(enum.StrEnum):
    """Why an invoice was created (Stripe's names)."""

    SUBSCRIPTION_CREATE = "subscription_create"
    SUBSCRIPTION_CYCLE = "subscription_cycle"
    SUBSCRIPTION_UPDATE = "subscription_update"
    MANUAL = "manual"


_E = TypeVar("_E", bound=enum.StrEnum)


def _member(kind: type[_E], value: str, name: str) -> _E:
    if value.__class__ is kind:  # already a member: the enum lookup would return it unchanged
        return value
    try:
        return kind(value)
    except ValueError:
        raise ValidationError(
            f"{name} must be one of {[member.value for member in kind]}, not {value!r}",
            details={"field": name, "value": repr(value)},
        ) from None


def _status(value: InvoiceStatus | str) -> InvoiceStatus:
    return _member(InvoiceStatus, value, "status")


def _reason(value: BillingReason | str) -> BillingReason:
    return _member(BillingReason, value, "billing_reason")


# --- taxes -------------------------------------------------------------------------------


class TaxCalculator(Protocol):
    """The core's tax port: which rates apply to a line billed to a customer."""

    def rates_for(self, line: InvoiceLine, customer_id: str) -> Sequence[TaxRate]:
        """Return the tax rates that apply to ``line`` for ``customer_id``."""
        ...


@attrs.frozen
class NoTax:
    """A tax calculator that never taxes anything."""

    def rates_for(self, line: InvoiceLine, customer_id: str) -> Sequence[TaxRate]:
        """Return no rates."""
        return ()


@attrs.frozen
class FixedTaxRates:
    """A tax calculator that applies the same rates to every line."""

    rates: tuple[TaxRate, ...] = attrs.field(converter=tuple)

    def rates_for(self, line: InvoiceLine, customer_id: str) -> Sequence[TaxRate]:
        """Return the fixed rates."""
        return self.rates


@attrs.frozen
class LineTax:
    """The tax one rate adds to (exclusive) or contains in (inclusive) one line."""

    tax_rate: TaxRate
    taxable: Money
    amount: Money

    @property
    def inclusive(self) -> bool:
        """Whether the tax is already inside the line amount."""
        return self.tax_rate.inclusive


def _fraction(percentage: Decimal) -> Fraction:
    numerator, denominator = percentage.as_integer_ratio()
    return Fraction(numerator, denominator)


def _round(value: Fraction) -> int:
    return round_half_even(value.numerator, value.denominator)


def _line_taxes(taxable: Money, rates: Sequence[TaxRate]) -> tuple[LineTax, ...]:
    if not rates:
        return ()
    inclusive = [rate for rate in rates if rate.inclusive]
    if inclusive and len(inclusive) != len(rates):
        # The base of an exclusive rate would be ambiguous (gross or net of the inclusive tax).
        raise ValidationError(
            "a line's tax rates must be all inclusive or all exclusive",
            details={"tax_rate_ids": [rate.id for rate in rates]},
        )
    base = Fraction(taxable.amount)
    # With several inclusive rates each is a share of the same net amount:
    # gross = net × (100 + Σpct) / 100, so rate i holds gross × pct_i / (100 + Σpct).
    inclusive_divisor = 100 + sum((_fraction(rate.percentage) for rate in inclusive), Fraction(0))
    taxes = []
    for rate in rates:
        divisor = inclusive_divisor if rate.inclusive else Fraction(100)
        amount = _round(base * _fraction(rate.percentage) / divisor)
        taxes.append(LineTax(rate, taxable, _money(amount, taxable.currency)))
    return tuple(taxes)


# --- the invoice -------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return aware(value, "invoice timestamp")


def _optional_utc(value: datetime | None) -> datetime | None:
    return None if value is None else aware(value, "invoice timestamp")


def _lines_tuple(value: Iterable[InvoiceLine]) -> tuple[InvoiceLine, ...]:
    return tuple(value)


def _money_tuple(value: Iterable[Money]) -> tuple[Money, ...]:
    return tuple(value)


def _taxes_tuple(value: Iterable[Iterable[LineTax]]) -> tuple[tuple[LineTax, ...], ...]:
    return tuple(tuple(taxes) for taxes in value)


_MONEY_FIELDS = (
    "subtotal",
    "discount",
    "tax",
    "inclusive_tax",
    "total",
    "credit_applied",
    "amount_due",
    "amount_paid",
    "amount_credited",
    "amount_refunded",
)


# Not slotted: invoices are copied on every state change, and a dict copies at C speed.
@attrs.frozen(slots=False)
class Invoice:
    """A bill to a customer: its lines, its computed amounts and where it is in its life.

    Build one with :func:`build_invoice`; the constructor is for storage adapters that
    load a saved invoice, and checks the amounts' invariant and currencies.
    ``line_discounts`` and ``line_taxes`` are aligned with ``lines``.
    """

    id: str
    customer_id: str
    currency: str
    status: InvoiceStatus = attrs.field(converter=_status)
    lines: tuple[InvoiceLine, ...] = attrs.field(converter=_lines_tuple)
    billing_reason: BillingReason = attrs.field(converter=_reason)
    created_at: datetime = attrs.field(converter=_utc)
    subtotal: Money
    discount: Money
    tax: Money
    inclusive_tax: Money
    total: Money
    credit_applied: Money
    amount_due: Money
    amount_paid: Money
    amount_credited: Money
    amount_refunded: Money
    line_discounts: tuple[Money, ...] = attrs.field(converter=_money_tuple)
    line_taxes: tuple[tuple[LineTax, ...], ...] = attrs.field(converter=_taxes_tuple)
    subscription_id: str | None = None
    number: str | None = None
    period: Period | None = None
    discount_coupon_id: str | None = None
    due_at: datetime | None = attrs.field(default=None, converter=_optional_utc)
    finalized_at: datetime | None = attrs.field(default=None, converter=_optional_utc)
    paid_at: datetime | None = attrs.field(default=None, converter=_optional_utc)
    voided_at: datetime | None = attrs.field(default=None, converter=_optional_utc)
    marked_uncollectible_at: datetime | None = attrs.field(default=None, converter=_optional_utc)

    def __attrs_post_init__(self) -> None:
        details: dict[str, Any] = {"invoice_id": self.id}
        for name in _MONEY_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, Money) or value.currency != self.currency:
                raise CurrencyMismatch(
                    f"invoice {self.id} is in {self.currency} but {name} is {value!r}",
                    details={**details, "field": name},
                )
        if not len(self.lines) == len(self.line_discounts) == len(self.line_taxes):
            raise ValidationError(
                "line_discounts and line_taxes must be aligned with lines", details=details
            )
        if self.total != self.subtotal - self.discount + self.tax:
            raise ValidationError(
                f"invoice {self.id}: total {self.total} is not subtotal − discount + tax",
                details=details,
            )

    @property
    def credit_generated(self) -> Money:
        """The customer credit a negative total creates (zero otherwise)."""
        total = self.total.amount
        return _money(-total if total < 0 else 0, self.currency)  # no max(): a call less

    @property
    def amount_remaining(self) -> Money:
        """What is still to be paid: ``amount_due`` while open or uncollectible, else zero."""
        if self.status in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE):
            return self.amount_due
        return _money(0, self.currency)


# A fresh draft's state, every field in field order, those that never vary for a draft
# set: build_invoice copies it and fills the rest. Python 3.11 builds a dict display of
# more than 15 entries in chunks, each merged into the first; the copy and the stores
# cost a third less (about 5,000 instructions an invoice).
_DRAFT_STATE: dict[str, Any] = dict.fromkeys(field.name for field in attrs.fields(Invoice))
_DRAFT_STATE["status"] = _DRAFT


def _check_id(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(
            f"{name} must be a non-empty string, not {value!r}", details={"field": name}
        )
    return value


def _check_money(value: object, name: str, currency: str) -> Money:
    if not isinstance(value, Money):
        raise ValidationError(
            f"{name} must be Money (int minor units), not {type(value).__name__}",
            details={"field": name, "value": repr(value)},
        )
    if value.currency != currency:
        raise CurrencyMismatch(
            f"{name} is in {value.currency} but the invoice is in {currency}",
            details={"field": name, "currencies": [value.currency, currency]},
        )
    return value


def _check_lines(lines: Iterable[InvoiceLine], currency: str) -> tuple[InvoiceLine, ...]:
    checked = tuple(lines)
    for line in checked:
        # The usual line passes these tests without a call; any other gets the full checks
        # below, which say what is wrong with it.
        if type(line) is not InvoiceLine:
            break
        amount = line.amount
        quantity = line.quantity
        if (
            type(amount) is not Money
            or amount.currency != currency
            or type(quantity) is not int
            or quantity < 0
        ):
            break
    else:
        return checked
    for index, line in enumerate(checked):
        if not isinstance(line, InvoiceLine):
            raise ValidationError(
                f"line {index} must be an InvoiceLine, not {type(line).__name__}",
                details={"line": index},
            )
        amount = line.amount
        # The message is only formatted for a line that fails: valid lines are the hot path.
        if not isinstance(amount, Money) or amount.currency != currency:
            _check_money(amount, f"line {index} amount", currency)
        quantity = line.quantity
        if type(quantity) is not int or quantity < 0:
            raise ValidationError(
                f"line {index} quantity must be a non-negative int, not {quantity!r}",
                details={"line": index, "quantity": repr(quantity)},
            )
    return checked


_ONE_UNDISCOUNTED: dict[str, tuple[Money]] = {}  # (zero,) per currency: see _line_discounts


def _line_discounts(
    lines: Sequence[InvoiceLine], zero: Money, discount: Discount | None
) -> tuple[Money, ...]:
    """Return each line's share of ``discount``, which applies to this invoice (or is None)."""
    if discount is None:
        if len(lines) == 1:
            # A renewal's case: one tuple per currency serves every such invoice, instead of
            # one more tuple per invoice for the garbage collector to walk.
            one = _ONE_UNDISCOUNTED.get(zero.currency)
            if one is None:
                one = _ONE_UNDISCOUNTED[zero.currency] = (zero,)
            return one
        return (zero,) * len(lines)
    currency = zero.currency
    # Only positive discountable lines are discounted: a credit line is never made larger.
    eligible = [i for i, line in enumerate(lines) if line.discountable and line.amount.amount > 0]
    base = _money(sum(lines[i].amount.amount for i in eligible), currency)
    off = discount.coupon.amount_off_of(base)
    parts = [zero] * len(lines)
    if off.amount:
        # allocate splits exactly, and no part exceeds its line because off ≤ base.
        shares = allocate(off, [lines[i].amount.amount for i in eligible])
        for index, share in zip(eligible, shares, strict=True):
            parts[index] = share
    return tuple(parts)


_ONE_UNTAXED: tuple[tuple[LineTax, ...], ...] = ((),)  # the taxes of one untaxed line


def _sums(
    lines: Sequence[InvoiceLine],
    discounts: Sequence[Money],
    tax_calculator: TaxCalculator | None,
    customer_id: str,
) -> tuple[int, int, int, int, tuple[tuple[LineTax, ...], ...]]:
    """Return the subtotal, discount, exclusive and inclusive tax, and each line's taxes."""
    if len(lines) == 1 and tax_calculator is None and not lines[0].tax_rates:
        # A renewal's invoice: one untaxed line, without the loop, zip's keyword and the
        # list (about 5,000 instructions), and one shared tuple of no taxes.
        return lines[0].amount.amount, discounts[0].amount, 0, 0, _ONE_UNTAXED
    # One pass over the lines instead of one sum() per figure.
    per_line: list[tuple[LineTax, ...]] = []
    subtotal = discount_total = exclusive = inclusive = 0
    for line, line_discount in zip(lines, discounts, strict=True):
        subtotal += line.amount.amount
        discount_total += line_discount.amount
        rates = line.tax_rates or (
            tax_calculator.rates_for(line, customer_id) if tax_calculator else ()
        )
        if not rates:
            per_line.append(())
            continue
        line_taxes = _line_taxes(line.amount - line_discount, rates)
        per_line.append(line_taxes)
        for tax in line_taxes:
            if tax.inclusive:
                inclusive += tax.amount.amount
            else:
                exclusive += tax.amount.amount
    return subtotal, discount_total, exclusive, inclusive, tuple(per_line)


def _check_header(invoice_id: object, customer_id: object, currency: object) -> None:
    _check_id(invoice_id, "invoice_id")
    _check_id(customer_id, "customer_id")
    currency_exponent(currency)  # type: ignore[arg-type]


def _due_at(at: datetime, days_until_due: int) -> datetime:
    if type(days_until_due) is not int or days_until_due < 0:
        raise ValidationError(
            f"days_until_due must be a non-negative int, not {days_until_due!r}",
            details={"days_until_due": repr(days_until_due)},
        )
    return at + timedelta(days=days_until_due)


def build_invoice(
    *,
    invoice_id: str,
    customer_id: str,
    currency: str,
    lines: Iterable[InvoiceLine],
    at: datetime,
    subscription_id: str | None = None,
    billing_reason: BillingReason = BillingReason.MANUAL,
    period: Period | None = None,
    discount: Discount | None = None,
    tax_calculator: TaxCalculator | None = None,
    credit_balance: Money | None = None,
    days_until_due: int | None = None,
    number: str | None = None,
) -> Invoice:
    """Return a draft invoice for ``lines`` with its discount, taxes and credit computed.

    Only manual invoices may have no lines. A discount applies when it is active and has
    started by ``at``; it covers positive discountable lines only. A line's own
    ``tax_rates`` win over the calculator's. ``credit_balance`` is the customer's credit
    (never negative; bill a debt as a line) and pays what it can of a positive total.
    ``due_at`` is ``days_until_due`` days after ``at`` (Stripe counts from creation).
    With ``number``, the invoice comes back finalized under it at ``at``, as
    :func:`finalize` would return the draft (one invoice built instead of two).
    """
    # The checks are called only for values that could fail them (valid values are the hot
    # path, and a call costs more than the tests): the same errors, fewer frames.
    if (
        type(invoice_id) is not str
        or not invoice_id.strip()
        or type(customer_id) is not str
        or not customer_id.strip()
        or type(currency) is not str
        or currency not in CURRENCY_EXPONENTS
    ):
        _check_header(invoice_id, customer_id, currency)
    if type(at) is not datetime or at.tzinfo is not UTC:
        at = aware(at, "at")
    if billing_reason.__class__ is not BillingReason:  # a member needs no lookup
        billing_reason = _reason(billing_reason)
    checked = _check_lines(lines, currency)
    if not checked and billing_reason is not BillingReason.MANUAL:
        raise ValidationError(
            f"a {billing_reason} invoice needs at least one line; only manual drafts may be empty",
            details={"invoice_id": invoice_id, "billing_reason": str(billing_reason)},
        )
    if period is not None and not isinstance(period, Period):
        raise ValidationError("period must be a Period or None", details={"field": "period"})
    due_at = None if days_until_due is None else _due_at(at, days_until_due)
    # One zero serves every zero amount: Money is immutable, so sharing it is safe.
    if credit_balance is None:
        zero = balance = _money(0, currency)
    else:
        balance = credit_balance
        if type(balance) is not Money or balance.currency != currency:
            balance = _check_money(balance, "credit_balance", currency)
        if balance.amount < 0:
            raise ValidationError(
                "credit_balance must not be negative; bill what the customer owes as a line",
                details={"credit_balance": balance.amount},
            )
        zero = balance if not balance.amount else _money(0, currency)

    applied = discount if discount is not None and discount.applies_at(at) else None
    if (
        applied is None
        and tax_calculator is None
        and len(checked) == 1
        and not checked[0].tax_rates
        and currency in _ONE_UNDISCOUNTED
    ):
        # A renewal's invoice, one line neither discounted nor taxed: what _line_discounts
        # and _sums return for it, without their two calls (the first such invoice in a
        # currency goes through them, and leaves the shared (zero,) for the rest).
        discounts: tuple[Money, ...] = _ONE_UNDISCOUNTED[currency]
        taxes = _ONE_UNTAXED
        subtotal, discount_total, exclusive, inclusive = checked[0].amount.amount, 0, 0, 0
    else:
        discounts = _line_discounts(checked, zero, applied)
        subtotal, discount_total, exclusive, inclusive, taxes = _sums(
            checked, discounts, tax_calculator, customer_id
        )
    total = subtotal - discount_total + exclusive
    # min(balance, max(total, 0)) and max(0, total - credit), without the builtins' calls.
    credit_applied = 0 if total <= 0 else (total if balance.amount >= total else balance.amount)
    amount_due = total - credit_applied if total > 0 else 0
    # Equal amounts share one Money: most invoices have no discount, tax or credit, so
    # subtotal, total and amount due are usually the same value.
    subtotal_money = _money(subtotal, currency) if subtotal else zero
    total_money = subtotal_money if total == subtotal else _money(total, currency)
    due_money = total_money if amount_due == total else _money(amount_due, currency)
    # Every field was checked above and the amounts are consistent by construction: the
    # state, a copy of the draft template with the fields that vary set, is adopted as the
    # invoice's __dict__.
    # (Three stores a statement compile to three stores, with no tuple built.)
    state = _DRAFT_STATE.copy()
    state["id"], state["customer_id"], state["currency"] = invoice_id, customer_id, currency
    state["lines"], state["billing_reason"], state["created_at"] = checked, billing_reason, at
    state["subtotal"], state["total"], state["amount_due"] = subtotal_money, total_money, due_money
    state["discount"], state["tax"], state["inclusive_tax"] = (
        _money(discount_total, currency) if discount_total else zero,
        _money(exclusive, currency) if exclusive else zero,
        _money(inclusive, currency) if inclusive else zero,
    )
    state["credit_applied"], state["line_discounts"], state["line_taxes"] = (
        _money(credit_applied, currency) if credit_applied else zero,
        discounts,
        taxes,
    )
    state["amount_paid"] = state["amount_credited"] = state["amount_refunded"] = zero
    state["subscription_id"], state["period"], state["due_at"] = subscription_id, period, due_at
    state["discount_coupon_id"] = None if applied is None else applied.coupon.id
    if number is not None:
        _finalize_state(state, number, at)
    invoice = _new(Invoice)
    _set(invoice, "__dict__", state)  # build_trusted's work, without its call
    return invoice


def customer_balance_after(invoice: Invoice, credit_balance: Money) -> Money:
    """Return the customer's credit balance once ``invoice`` is finalized."""
    balance = _check_money(credit_balance, "credit_balance", invoice.currency)
    if balance < invoice.credit_applied:
        raise ValidationError(
            f"the balance {balance} is smaller than the credit {invoice.credit_applied}"
            f" invoice {invoice.id} applies; pass the balance the invoice was built with",
            details={"invoice_id": invoice.id, "credit_balance": balance.amount},
        )
    return balance - invoice.credit_applied + invoice.credit_generated


# --- state machine -----------------------------------------------------------------------


def _refuse(invoice: Invoice, operation: str) -> InvalidTransition:
    return InvalidTransition(
        f"cannot {operation} invoice {invoice.id}: it is {invoice.status}",
        details={"invoice_id": invoice.id, "operation": operation, "status": str(invoice.status)},
    )


def _require(invoice: Invoice, operation: str, *allowed: InvoiceStatus) -> None:
    if invoice.status not in allowed:
        raise _refuse(invoice, operation)


def _paid(invoice: Invoice, at: datetime, **changes: Any) -> Invoice:
    return evolve_trusted(invoice, status=_PAID, paid_at=at, **changes)


_DRAFT_ONLY = (_DRAFT,)


def finalize(invoice: Invoice, *, number: str, at: datetime) -> Invoice:
    """Return the draft opened under ``number``; with nothing due it is paid at once, as Stripe does."""
    if invoice.status not in _DRAFT_ONLY:  # _require's test, without its call on the hot path
        raise _refuse(invoice, "finalize")
    # evolve_trusted, without packing and unpacking keywords (dict(), not copy(): see there).
    state = dict(invoice.__dict__)
    _finalize_state(state, number, aware(at, "at"))
    return build_trusted(Invoice, state)


def _finalize_state(state: dict[str, Any], number: str, at: datetime) -> None:
    """Turn a draft's state into the finalized invoice's: open, or paid when nothing is due."""
    if type(number) is not str or not number.strip():
        _check_id(number, "number")
    state["number"] = number
    state["finalized_at"] = at
    if state["amount_due"].amount:
        state["status"] = _OPEN
    else:
        state["status"] = _PAID  # opened and paid in one copy instead of two
        state["paid_at"] = at


def pay(invoice: Invoice, *, at: datetime, amount: Money | None = None) -> Invoice:
    """Return the open or uncollectible invoice paid in full at ``at``.

    Partial payments are not supported: ``amount``, when given, must equal ``amount_due``.
    """
    if invoice.status not in _PAYABLE:  # _require's test, without its call on the hot path
        raise _refuse(invoice, "pay")
    if type(at) is not datetime or at.tzinfo is not UTC:  # aware's test, without its call
        at = aware(at, "at")
    if amount is not None:
        _check_money(amount, "amount", invoice.currency)
        if amount != invoice.amount_due:
            raise ValidationError(
                f"invoice {invoice.id} is paid in full only: {amount} is not the"
                f" {invoice.amount_due} due",
                details={
                    "invoice_id": invoice.id,
                    "amount": amount.amount,
                    "amount_due": invoice.amount_due.amount,
                },
            )
    # _paid, without packing and unpacking keywords: every successful payment pays one
    # (dict(), not copy(): see evolve_trusted).
    state = dict(invoice.__dict__)
    state["status"] = _PAID
    state["paid_at"] = at
    state["amount_paid"] = invoice.amount_due
    paid = _new(Invoice)
    _set(paid, "__dict__", state)  # build_trusted's work, without its call
    return paid


def void(invoice: Invoice, at: datetime) -> Invoice:
    """Return the open invoice voided at ``at``; drafts are discarded, not voided."""
    _require(invoice, "void", InvoiceStatus.OPEN)
    return evolve_trusted(invoice, status=InvoiceStatus.VOID, voided_at=aware(at, "at"))


def mark_uncollectible(invoice: Invoice, at: datetime) -> Invoice:
    """Return the open invoice marked uncollectible (it can still be paid later)."""
    _require(invoice, "mark_uncollectible", InvoiceStatus.OPEN)
    return evolve_trusted(
        invoice, status=InvoiceStatus.UNCOLLECTIBLE, marked_uncollectible_at=aware(at, "at")
    )


# --- numbering ---------------------------------------------------------------------------

_PREFIX = re.compile(r"[A-Z0-9]{1,12}")


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValidationError(
            f"an invoice number prefix is 1 to 12 uppercase letters or digits, not {prefix!r}",
            details={"prefix": repr(prefix)},
        )
    return prefix


def _check_sequence(sequence: object) -> int:
    if type(sequence) is not int or sequence < 1:
        raise ValidationError(
            f"an invoice sequence number must be an int ≥ 1, not {sequence!r}",
            details={"sequence": repr(sequence)},
        )
    return sequence


def format_invoice_number(prefix: str, sequence: int) -> str:
    """Return the invoice number for ``sequence``: ``format_invoice_number("LQ", 42)`` is ``LQ-000042``."""
    # A prefix is checked once: a billing run numbers every invoice with the same one, and
    # the regular expression and two frames cost more than the formatting (run_due over
    # 3,000: 1,692M -> 1,684M instructions).
    if type(prefix) is not str or prefix not in _CHECKED_PREFIXES:
        _check_prefix(prefix)
        if len(_CHECKED_PREFIXES) < _PREFIXES_KEPT:
            _CHECKED_PREFIXES.add(prefix)
    if type(sequence) is not int or sequence < 1:
        _check_sequence(sequence)
    # No format spec: one goes through int.__format__'s parser, and zfill pads the same
    # digits for a sequence of at least 1 (about 2,000 instructions); an f-string of
    # strings joins them in one allocation (about 200 fewer than concatenating).
    return f"{prefix}-{str(sequence).zfill(6)}"


_CHECKED_PREFIXES: set[str] = set()  # a host uses one prefix, or a few
_PREFIXES_KEPT = 64


@attrs.frozen
class InvoiceNumbering:
    """A numbering sequence; keeping it gapless under concurrency is the store's job."""

    prefix: str = attrs.field(converter=_check_prefix)
    next_sequence: int = attrs.field(default=1, converter=_check_sequence)

    def take(self) -> tuple[str, InvoiceNumbering]:
        """Return the next number and the sequence after it."""
        number = format_invoice_number(self.prefix, self.next_sequence)
        return number, attrs.evolve(self, next_sequence=self.next_sequence + 1)


# --- credit notes and refunds ------------------------------------------------------------


class CreditNoteOutcome(enum.StrEnum):
    """What a credit note does with the amount it credits."""

    REFUND = "refund"  # money goes back through the gateway
    CREDIT_BALANCE = "credit_balance"  # the customer's credit balance grows
    REDUCE_AMOUNT_DUE = "reduce_amount_due"  # an open invoice asks for less


def _outcome(value: CreditNoteOutcome | str) -> CreditNoteOutcome:
    return _member(CreditNoteOutcome, value, "outcome")


def _positive_amount(_instance: object, _attribute: object, value: Money) -> None:
    if not isinstance(value, Money) or value.amount <= 0:
        raise ValidationError(f"amount must be a positive Money, not {value!r}")


@attrs.frozen
class CreditNote:
    """A document that credits part or all of an invoice."""

    id: str
    number: str
    invoice_id: str
    customer_id: str
    amount: Money = attrs.field(validator=_positive_amount)
    reason: str
    outcome: CreditNoteOutcome = attrs.field(converter=_outcome)
    created_at: datetime = attrs.field(converter=_utc)
    memo: str = ""


@attrs.frozen
class Refund:
    """Money returned to the customer for a payment of an invoice."""

    id: str
    payment_id: str
    invoice_id: str
    amount: Money = attrs.field(validator=_positive_amount)
    reason: str
    created_at: datetime = attrs.field(converter=_utc)


def _check_positive(amount: object, currency: str) -> Money:
    checked = _check_money(amount, "amount", currency)
    if checked.amount <= 0:
        raise ValidationError(
            f"amount must be positive, not {checked}", details={"amount": checked.amount}
        )
    return checked


def _over_limit(invoice: Invoice, amount: Money, limit: int, what: str) -> ValidationError:
    return ValidationError(
        f"cannot {what} {amount} on invoice {invoice.id}: at most"
        f" {_money(max(limit, 0), invoice.currency)} is left",
        details={"invoice_id": invoice.id, "amount": amount.amount, "limit": max(limit, 0)},
    )


def _credit_open(
    invoice: Invoice, amount: Money, outcome: CreditNoteOutcome | None, at: datetime
) -> tuple[CreditNoteOutcome, Invoice]:
    if outcome not in (None, CreditNoteOutcome.REDUCE_AMOUNT_DUE):
        raise ValidationError(
            f"an open invoice is credited by reducing its amount due, not by {outcome}",
            details={"invoice_id": invoice.id, "status": "open", "outcome": str(outcome)},
        )
    if amount > invoice.amount_due:
        raise _over_limit(invoice, amount, invoice.amount_due.amount, "credit")
    due = invoice.amount_due - amount
    updated = evolve_trusted(
        invoice, amount_due=due, amount_credited=invoice.amount_credited + amount
    )
    # Stripe marks an open invoice credited down to nothing as paid.
    return CreditNoteOutcome.REDUCE_AMOUNT_DUE, updated if due else _paid(updated, at)


def _credit_paid(
    invoice: Invoice, amount: Money, outcome: CreditNoteOutcome | None
) -> tuple[CreditNoteOutcome, Invoice]:
    if outcome is None or outcome is CreditNoteOutcome.REDUCE_AMOUNT_DUE:
        raise ValidationError(
            "a credit note on a paid invoice needs outcome refund or credit_balance",
            details={"invoice_id": invoice.id, "status": "paid", "outcome": str(outcome)},
        )
    credited = invoice.amount_credited + amount
    if credited > invoice.total:
        left = invoice.total.amount - invoice.amount_credited.amount
        raise _over_limit(invoice, amount, left, "credit")
    refunded = invoice.amount_refunded
    if outcome is CreditNoteOutcome.REFUND:
        refunded += amount
        # Only money actually paid can go back; credit applied from the balance cannot.
        if refunded > invoice.amount_paid:
            left = invoice.amount_paid.amount - invoice.amount_refunded.amount
            raise _over_limit(invoice, amount, left, "refund")
    return outcome, evolve_trusted(invoice, amount_credited=credited, amount_refunded=refunded)


def issue_credit_note(
    invoice: Invoice,
    *,
    credit_note_id: str,
    number: str,
    amount: Money,
    at: datetime,
    reason: str,
    outcome: CreditNoteOutcome | None = None,
    memo: str = "",
) -> tuple[CreditNote, Invoice]:
    """Return a credit note for ``amount`` of the invoice and the invoice it credits.

    On an open invoice the outcome is ``reduce_amount_due`` (the default) and the amount
    is at most ``amount_due``; credited down to zero the invoice is paid, as in Stripe.
    On a paid invoice the outcome (``refund`` or ``credit_balance``) is required; the
    total credited never exceeds the total, and a refund never exceeds what was paid and
    not yet refunded. A ``refund`` credit note also counts in ``amount_refunded``, so do
    not :func:`record_refund` it again.
    """
    _require(invoice, "issue_credit_note", InvoiceStatus.OPEN, InvoiceStatus.PAID)
    _check_id(credit_note_id, "credit_note_id")
    _check_id(number, "number")
    amount = _check_positive(amount, invoice.currency)
    at = aware(at, "at")
    chosen = None if outcome is None else _outcome(outcome)
    if invoice.status is InvoiceStatus.OPEN:
        chosen, updated = _credit_open(invoice, amount, chosen, at)
    else:
        chosen, updated = _credit_paid(invoice, amount, chosen)
    note = CreditNote(
        id=credit_note_id,
        number=number,
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        amount=amount,
        reason=reason,
        outcome=chosen,
        created_at=at,
        memo=memo,
    )
    return note, updated


def record_refund(invoice: Invoice, *, amount: Money, at: datetime) -> Invoice:
    """Return the paid invoice with ``amount`` more refunded; never more than was paid."""
    _require(invoice, "record_refund", InvoiceStatus.PAID)
    amount = _check_positive(amount, invoice.currency)
    aware(at, "at")
    refunded = invoice.amount_refunded + amount
    if refunded > invoice.amount_paid:
        left = invoice.amount_paid.amount - invoice.amount_refunded.amount
        raise _over_limit(invoice, amount, left, "refund")
    return evolve_trusted(invoice, amount_refunded=refunded)


# --- usage ---------------------------------------------------------------------------------


def usage_line(
    price: Price, *, quantity: int, period: Period, subscription_id: str | None = None
) -> InvoiceLine:
    """Return the in-arrears line for ``quantity`` units of a metered price used in ``period``."""
    if not isinstance(price, Price) or price.usage_type is not UsageType.METERED:
        raise ValidationError(
            "usage lines bill metered prices only",
            details={"price_id": getattr(price, "id", None)},
        )
    if not isinstance(period, Period):
        raise ValidationError("usage needs the Period it happened in", details={"field": "period"})
    amount = price.amount_for(quantity)
    name = price.nickname or price.id
    return InvoiceLine(
        kind=LineKind.USAGE,
        description=f"{quantity} × {name} (usage)",
        amount=amount,
        quantity=quantity,
        period=period,
        price_id=price.id,
        subscription_id=subscription_id,
    )
