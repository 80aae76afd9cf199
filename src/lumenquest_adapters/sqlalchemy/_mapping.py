"""Rows to frozen domain objects and back, field by field.

Each ``*_row`` function returns the column values of one record; each ``*_from_row``
rebuilds the record from a row mapping. Nothing here touches a connection.

The records a billing run reads by the thousand (subscriptions, invoices and their lines,
payments) are rebuilt without re-running the domain's validators: their rows were
validated objects when written, and the schema's CHECK constraints hold them there.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from types import MappingProxyType
from typing import Any

import attrs
import orjson

from lumenquest_core._trusted import build_trusted
from lumenquest_core.catalog import Plan, Price, PricingScheme, Tier, UsageType
from lumenquest_core.coupons import Coupon, CouponDuration, Discount
from lumenquest_core.customers import Customer, Role
from lumenquest_core.events import DomainEvent, EventName
from lumenquest_core.invoicing import (
    BillingReason,
    CreditNote,
    CreditNoteOutcome,
    Invoice,
    InvoiceStatus,
    LineTax,
    Refund,
)
from lumenquest_core.lines import InvoiceLine, LineKind, TaxRate
from lumenquest_core.money import Money
from lumenquest_core.payments import (
    AuditEntry,
    Payment,
    PaymentStatus,
    SubscriptionChange,
    UsageRecord,
)
from lumenquest_core.periods import BillingCycle, Interval, Period
from lumenquest_core.ports import (
    AnalyticsEvent,
    AuditFields,
    ChangeFields,
    DeliveryStatus,
    EmailDelivery,
    IdempotencyRecord,
    MessageFields,
    OutboxMessage,
    PendingLine,
    message_fields,
)
from lumenquest_core.subscriptions import (
    PendingUpdate,
    ScheduledChange,
    Subscription,
    SubscriptionStatus,
    next_action_at,
)

Row = Mapping[Any, Any]
Values = dict[str, Any]


# -- JSON values ----------------------------------------------------------------------


_ATOMS = frozenset({str, int, bool, float, type(None)})
_MAPPINGS = frozenset({dict, MappingProxyType})
_SEQUENCES = frozenset({list, tuple})


def as_is(value: Any) -> Any:
    """Return ``value``: a history row's data kept as the domain gave it (see :func:`outbox_row`)."""
    return value


def domain_json_text(value: Any) -> str:
    """Return domain JSON data as its text; a str is that text already, encoded when queued.

    The domain's data in these columns are mappings (or None), never a bare string: a
    batch encodes a history row's data when it queues the row (``SqlAlchemyUnitOfWork.insert``).
    """
    return value if type(value) is str else json_dumps(value)


def plain(value: Any) -> Any:
    """Return ``value`` with read-only mappings and tuples turned into dicts and lists."""
    kind = type(value)
    if kind in _ATOMS:  # most values of event data and audit rows: answered first
        return value
    # Exact types before isinstance: an ABC check costs more than the copy it guards.
    if kind in _MAPPINGS or isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if kind in _SEQUENCES or isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def read_only_default(value: Any) -> Any:
    """Let json encode a read-only mapping (the domain's frozen data) as the dict it reads as."""
    # The exact type first: a registered ABC's isinstance is never cached for it (five a
    # renewal, the outbox's and audit rows' data).
    if type(value) is MappingProxyType or isinstance(value, Mapping):
        return {key if type(key) is str else str(key): item for key, item in value.items()}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_encoder(*, sort_keys: bool = False) -> Callable[[Any], str]:
    """Return ``json.dumps`` (its defaults, keys sorted if asked) that also takes read-only mappings.

    orjson encodes what the domain writes (str keys, 64-bit integers); what it refuses
    (other keys, larger integers, anything not JSON) goes to the standard library's
    encoder, which encodes it or raises as ``json.dumps`` does. The two differ only in
    spacing, which JSON ignores; in a float that is not finite, null here where the
    standard library writes ``NaN``, which is not JSON (PostgreSQL rejects it); and in an
    enum or UUID, which orjson writes as its value and ``json.dumps`` refuses.
    """
    option = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
    if sort_keys:
        option |= orjson.OPT_SORT_KEYS
    # A partial, not a closure: psycopg caches its JSON dumper per dumps function, and
    # for a closure it makes a new one at every value (and logs a warning about it).
    return functools.partial(_encoded, option, _standard_encoder(sort_keys=sort_keys))


def _encoded(option: int, standard: Callable[[Any], str], value: Any) -> str:
    # The domain's frozen data, as most history rows hold it: its dict, copied here, where
    # orjson would call _dict_of_proxy back for it (six a renewal). What orjson refuses
    # goes to the standard encoder as it came (its keys then written as read_only_default
    # writes them).
    data = value.copy() if type(value) is MappingProxyType else value
    try:
        return orjson.dumps(data, _dict_of_proxy, option).decode()
    except TypeError:
        return standard(value)


def _dict_of_proxy(value: Any) -> Any:
    # The domain's frozen data are read-only views of dicts: their copy is that dict.
    if type(value) is MappingProxyType:
        return value.copy()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _standard_encoder(*, sort_keys: bool) -> Callable[[Any], str]:
    """Return the standard library's ``json.dumps`` that also takes read-only mappings.

    The C encoder is made once, here, not on every call as ``JSONEncoder.encode`` does,
    and without a circular-reference check: the domain's data are trees (a cycle would
    raise RecursionError, not ValueError).
    """
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return json.JSONEncoder(sort_keys=sort_keys, default=read_only_default).encode
    encode = c_make_encoder(
        None, read_only_default, encode_basestring_ascii, None, ": ", ", ", sort_keys, False, True
    )
    return functools.partial(_joined, encode)


def _joined(encode: Callable[[Any, int], Sequence[str]], value: Any) -> str:
    return "".join(encode(value, 0))


json_dumps = json_encoder()
"""``json.dumps`` that also takes read-only mappings, encoded in C: no Python walk."""


# JSON equal by ``==`` may still differ (1, 1.0 and true are equal): its canonical text
# tells, from the standard encoder, which tells NaN from null (met only where types differ).
_canonical = _standard_encoder(sort_keys=True)


def same_json(old: Any, new: Any) -> bool:
    """Say whether JSON values equal by ``==`` have the same canonical text.

    Equal values differ only where a leaf's type does (1, 1.0 and true), a float's sign
    (0.0 and -0.0) or a key's type (1 and true): dicts with str keys and lists of the
    same type are walked, str, int, bool and None leaves need no more, floats compare
    by repr, anything else by canonical text (which raises where the encoder would).
    """
    kind = type(old)
    if kind is not type(new):
        return bool(_canonical(old) == _canonical(new))  # 1 and true, a mapping and its proxy
    if kind is str or kind is int or kind is bool or old is None:
        return True
    if kind is dict:
        for name, value in old.items():
            if type(name) is not str:
                return bool(_canonical(old) == _canonical(new))
            other = new[name]
            if value is not other and type(value) is not str and not same_json(value, other):
                return False
        return True
    if kind is list:
        return all(map(same_json, old, new))
    if kind is float:
        return repr(old) == repr(new)
    return bool(_canonical(old) == _canonical(new))


# Columns holding the domain's own JSON data (read-only mappings and tuples), stored as
# they come: :func:`json_dumps` encodes them in C, on PostgreSQL's direct path and through
# the engines ``create_engine_for`` makes; the statements the unit of work has SQLAlchemy
# bind get them made plain first (:func:`plain_json`), whatever made the engine.
_DOMAIN_JSON: dict[str, tuple[str, ...]] = {
    "outbox": ("data",),
    "audit_logs": ("before", "after"),
    "subscription_changes": ("data",),
    "analytics_events": ("properties",),
}


DOMAIN_JSON_COLUMNS: Mapping[str, tuple[str, ...]] = _DOMAIN_JSON
"""The columns of each history table that hold the domain's JSON data, by table name."""


def plain_json(table: str, values: Values) -> Values:
    """Return a row's values with its domain JSON made plain, for SQLAlchemy to bind."""
    names = _DOMAIN_JSON.get(table)
    if names is None:
        return values
    return {**values, **{name: _plain_data(values[name]) for name in names if name in values}}


def _plain_data(value: Any) -> Any:
    # Text when a batch encoded it as it queued the row: decoded for SQLAlchemy's JSON
    # type, which encodes it again.
    return json.loads(value) if type(value) is str else plain(value)


_set = object.__setattr__
_new = object.__new__

# A row stores an enum member's value read as ``member._value_``, the attribute Enum keeps
# it in: ``member.value`` is a Python-level property of enum.py, a call per read (fourteen
# a renewal).

# Enum members by stored value, for the rows read by the thousand: a dict lookup where
# the enum's call costs 0.3 us (CHECK constraints hold the values to the members).
_ROLES = {member.value: member for member in Role}
_SUBSCRIPTION_STATUSES = {member.value: member for member in SubscriptionStatus}
_INVOICE_STATUSES = {member.value: member for member in InvoiceStatus}
_BILLING_REASONS = {member.value: member for member in BillingReason}
_PAYMENT_STATUSES = {member.value: member for member in PaymentStatus}


def _cash(amount: int, currency: str) -> Money:
    """Return Money read from a row, whose CHECK constraints already hold it valid."""
    money = _new(Money)
    _set(money, "amount", amount)
    _set(money, "currency", currency)
    return money


def _money(amount: int | None, currency: str | None) -> Money | None:
    return None if amount is None or currency is None else _cash(int(amount), currency)


def _money_json(value: Money | None) -> dict[str, Any] | None:
    return None if value is None else {"amount": value.amount, "currency": value.currency}


def _money_from_json(data: Mapping[str, Any] | None) -> Money | None:
    return None if data is None else Money(int(data["amount"]), data["currency"])


def _instant(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _period(start: datetime | None, end: datetime | None) -> Period | None:
    return None if start is None or end is None else _span(start, end)


def _span(start: datetime, end: datetime) -> Period:
    """Return a Period read from a row (aware UTC instants, start before end by CHECK)."""
    period = _new(Period)
    _set(period, "start", start)
    _set(period, "end", end)
    return period


# -- catalog ----------------------------------------------------------------------------


def plan_row(plan: Plan) -> Values:
    """Return the columns of a plan."""
    return {
        "id": plan.id,
        "name": plan.name,
        "features": list(plan.features),
        "active": plan.active,
        "description": plan.description,
        "metadata": plain(plan.metadata),
    }


def plan_from_row(row: Row) -> Plan:
    """Rebuild a plan."""
    return Plan(
        id=row["id"],
        name=row["name"],
        features=tuple(row["features"]),
        active=bool(row["active"]),
        description=row["description"],
        metadata=row["metadata"],
    )


def _tier_json(tier: Tier) -> dict[str, Any]:
    return {
        "up_to": tier.up_to,
        "unit_amount": tier.unit_amount.amount,
        "flat_amount": None if tier.flat_amount is None else tier.flat_amount.amount,
    }


def _tier_from_json(data: Mapping[str, Any], currency: str) -> Tier:
    flat = data["flat_amount"]
    return Tier(
        up_to=data["up_to"],
        unit_amount=Money(int(data["unit_amount"]), currency),
        flat_amount=None if flat is None else Money(int(flat), currency),
    )


def price_row(price: Price) -> Values:
    """Return the columns of a price."""
    return {
        "id": price.id,
        "plan_id": price.plan_id,
        "currency": price.currency,
        "interval": price.cycle.interval._value_,
        "interval_count": price.cycle.count,
        "scheme": price.scheme._value_,
        "unit_amount": None if price.unit_amount is None else price.unit_amount.amount,
        "tiers": [_tier_json(t) for t in price.tiers],
        "usage_type": price.usage_type._value_,
        "trial_days": price.trial_days,
        "active": price.active,
        "nickname": price.nickname,
    }


# A billing run reads the same few prices in every subscription's JSON: the last Price
# built from each id is reused while its stored JSON is equal (prices are immutable),
# and so is that JSON (see shared_price_json and price_snapshot).
_PRICES: dict[str, tuple[Row, Price]] = {}
_PRICES_KEPT = 256


def price_from_row(row: Row) -> Price:
    """Rebuild a price (from its row, or from the JSON a subscription keeps of it)."""
    cached = _PRICES.get(row["id"])
    if cached is not None and (cached[0] is row or cached[0] == row):
        return cached[1]
    price = _price_from_row(row)
    _keep_price(row, price)
    return price


def _keep_price(row: Row, price: Price) -> Row:
    """Keep a copy of ``row`` with plain str keys (same_json's quick walk needs them)."""
    kept = {str(name): value for name, value in row.items()}
    if len(_PRICES) >= _PRICES_KEPT:
        _PRICES.clear()
    _PRICES[price.id] = (kept, price)
    return kept


def shared_price_json(value: Row) -> Row:
    """Return a subscription's price JSON as read: the kept equal one, when there is one.

    Of a batch's thousands of subscriptions, most keep one of a few prices: one shared
    dict each, rather than one a row that the batch holds (and the garbage collector
    follows) until it commits. Only the very same JSON is shared (1 and 1.0 are equal,
    not the same). Nothing changes the dicts of a read row.
    """
    cached = _PRICES.get(value["id"])
    if cached is None:  # kept, with its Price, for the rows that follow
        return _keep_price(value, _price_from_row(value))
    if cached[0] is value or (cached[0] == value and same_json(cached[0], value)):
        return cached[0]
    return value


# Each price JSON text read (a subscription's column cast to text) -> the value
# shared_price_json gave for it. The same text is the same JSON: no decoding, no walk.
_PRICE_TEXTS: dict[str, Row] = {}
_decode = json.JSONDecoder().decode


def shared_price_text(text: str) -> Row:
    """Return a subscription's price JSON from its text, as :func:`shared_price_json` would."""
    shared = _PRICE_TEXTS.get(text)
    if shared is None:
        if len(_PRICE_TEXTS) >= _PRICES_KEPT:
            _PRICE_TEXTS.clear()
        shared = _PRICE_TEXTS[text] = shared_price_json(_decode(text))
    return shared


def price_snapshot(price: Price) -> Row:
    """Return the JSON a subscription keeps of ``price``: the kept one, for a kept price."""
    cached = _PRICES.get(price.id)
    if cached is not None and cached[1] is price:
        return cached[0]
    return _keep_price(price_row(price), price)


def _price_from_row(row: Row) -> Price:
    currency = row["currency"]
    return Price(
        id=row["id"],
        plan_id=row["plan_id"],
        currency=currency,
        cycle=BillingCycle(Interval(row["interval"]), int(row["interval_count"])),
        scheme=PricingScheme(row["scheme"]),
        unit_amount=_money(row["unit_amount"], currency),
        tiers=tuple(_tier_from_json(t, currency) for t in row["tiers"]),
        usage_type=UsageType(row["usage_type"]),
        trial_days=int(row["trial_days"]),
        active=bool(row["active"]),
        nickname=row["nickname"],
    )


def _coupon_json(coupon: Coupon) -> dict[str, Any]:
    return {
        "id": coupon.id,
        "name": coupon.name,
        "percent_off": None if coupon.percent_off is None else str(coupon.percent_off),
        "amount_off": None if coupon.amount_off is None else coupon.amount_off.amount,
        "amount_off_currency": None if coupon.amount_off is None else coupon.amount_off.currency,
        "duration": coupon.duration._value_,
        "duration_in_cycles": coupon.duration_in_cycles,
    }


coupon_row = _coupon_json


def coupon_from_row(row: Row) -> Coupon:
    """Rebuild a coupon."""
    percent = row["percent_off"]
    return Coupon(
        id=row["id"],
        name=row["name"],
        percent_off=None if percent is None else Decimal(percent),
        amount_off=_money(row["amount_off"], row["amount_off_currency"]),
        duration=CouponDuration(row["duration"]),
        duration_in_cycles=row["duration_in_cycles"],
    )


# -- customers and subscriptions --------------------------------------------------------


def customer_row(customer: Customer) -> Values:
    """Return the columns of a customer."""
    balance = customer.credit_balance
    return {
        "id": customer.id,
        "email": customer.email,
        "name": customer.name,
        "role": customer.role._value_,
        "currency": customer.currency,
        "credit_balance": None if balance is None else balance.amount,
        "gateway_customer_id": customer.gateway_customer_id,
        "email_deliverable": customer.email_deliverable,
        "erased_at": customer.erased_at,
        "metadata": plain(customer.metadata),
        "created_at": customer.created_at,
    }


def customer_from_row(row: Row) -> Customer:
    """Rebuild a customer, without its validators (a batch loads one per renewal).

    Its row was a valid customer when written: the email normalised (a regex the
    constructor runs again), role and currency held by CHECK constraints.
    """
    currency = row["currency"]
    # Slotted: each field set in turn, every one of them (new_trusted's keyword call and
    # its walk over the fields' defaults cost more than the setting).
    customer: Customer = _new(Customer)
    _set(customer, "id", row["id"])
    _set(customer, "email", row["email"])
    _set(customer, "created_at", row["created_at"])
    _set(customer, "name", row["name"])
    _set(customer, "currency", currency)
    _set(customer, "credit_balance", _money(row["credit_balance"], currency))
    _set(customer, "role", _ROLES[row["role"]])
    _set(customer, "gateway_customer_id", row["gateway_customer_id"])
    _set(customer, "email_deliverable", bool(row["email_deliverable"]))
    _set(customer, "erased_at", row["erased_at"])
    # As the constructor keeps it: a read-only view of its own copy.
    _set(customer, "metadata", MappingProxyType(dict(row["metadata"] or {})))
    return customer


def _discount_json(discount: Discount) -> dict[str, Any]:
    return {
        "coupon": _coupon_json(discount.coupon),
        "start": discount.start.isoformat(),
        "invoices_left": discount.invoices_left,
    }


def _discount_from_json(data: Mapping[str, Any]) -> Discount:
    start = _instant(data["start"])
    assert start is not None
    return Discount(
        coupon=coupon_from_row(data["coupon"]), start=start, invoices_left=data["invoices_left"]
    )


def _scheduled_json(change: ScheduledChange) -> dict[str, Any]:
    return {
        "price": price_row(change.price),
        "quantity": change.quantity,
        "effective_at": change.effective_at.isoformat(),
    }


def _scheduled_from_json(data: Mapping[str, Any]) -> ScheduledChange:
    effective_at = _instant(data["effective_at"])
    assert effective_at is not None
    return ScheduledChange(
        price=price_from_row(data["price"]), quantity=data["quantity"], effective_at=effective_at
    )


def _pending_json(pending: PendingUpdate) -> dict[str, Any]:
    discount = pending.discount
    return {
        "price": price_row(pending.price),
        "quantity": pending.quantity,
        "invoice_id": pending.invoice_id,
        "changed_at": pending.changed_at.isoformat(),
        "expires_at": pending.expires_at.isoformat(),
        "discount": None if discount is None else _discount_json(discount),
    }


def _pending_from_json(data: Mapping[str, Any]) -> PendingUpdate:
    discount = data["discount"]
    return PendingUpdate(
        price=price_from_row(data["price"]),
        quantity=int(data["quantity"]),
        invoice_id=data["invoice_id"],
        changed_at=datetime.fromisoformat(data["changed_at"]),
        expires_at=datetime.fromisoformat(data["expires_at"]),
        discount=None if discount is None else _discount_from_json(discount),
    )


def subscription_row(sub: Subscription) -> Values:
    """Return the columns of a subscription, with ``next_action_at`` computed from it."""
    scheduled = sub.scheduled_change
    discount = sub.discount
    return {
        "id": sub.id,
        "customer_id": sub.customer_id,
        "price_id": sub.price.id,
        "price": price_snapshot(sub.price),
        "quantity": sub.quantity,
        "status": sub.status._value_,
        "anchor": sub.anchor,
        "current_period_start": sub.current_period.start,
        "current_period_end": sub.current_period.end,
        "created_at": sub.created_at,
        "trial_end": sub.trial_end,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "canceled_at": sub.canceled_at,
        "ended_at": sub.ended_at,
        "paused_at": sub.paused_at,
        "resumes_at": sub.resumes_at,
        "scheduled_price_id": None if scheduled is None else scheduled.price.id,
        "scheduled_change": None if scheduled is None else _scheduled_json(scheduled),
        "discount_coupon_id": None if discount is None else discount.coupon.id,
        "discount": None if discount is None else _discount_json(discount),
        "failed_payments": sub.failed_payments,
        "next_payment_retry_at": sub.next_payment_retry_at,
        "trial_reminder_sent_at": sub.trial_reminder_sent_at,
        "next_action_at": next_action_at(sub),
        "pending_update": None if sub.pending_update is None else _pending_json(sub.pending_update),
    }


def subscription_from_row(row: Row) -> Subscription:
    """Rebuild a subscription."""
    scheduled = row["scheduled_change"]
    discount = row["discount"]
    pending = row["pending_update"]
    sub: Subscription = build_trusted(
        Subscription,
        {
            "id": row["id"],
            "customer_id": row["customer_id"],
            "price": price_from_row(row["price"]),
            "quantity": int(row["quantity"]),
            "status": _SUBSCRIPTION_STATUSES[row["status"]],
            "anchor": row["anchor"],
            "current_period": _span(row["current_period_start"], row["current_period_end"]),
            "created_at": row["created_at"],
            "trial_end": row["trial_end"],
            "cancel_at_period_end": bool(row["cancel_at_period_end"]),
            "canceled_at": row["canceled_at"],
            "ended_at": row["ended_at"],
            "paused_at": row["paused_at"],
            "resumes_at": row["resumes_at"],
            "scheduled_change": None if scheduled is None else _scheduled_from_json(scheduled),
            "discount": None if discount is None else _discount_from_json(discount),
            "failed_payments": int(row["failed_payments"]),
            "next_payment_retry_at": row["next_payment_retry_at"],
            "trial_reminder_sent_at": row["trial_reminder_sent_at"],
            "pending_update": None if pending is None else _pending_from_json(pending),
        },
    )
    return sub


# -- invoices ---------------------------------------------------------------------------


def _tax_rate_json(rate: TaxRate) -> dict[str, Any]:
    return {
        "id": rate.id,
        "name": rate.name,
        "percentage": str(rate.percentage),
        "inclusive": rate.inclusive,
        "jurisdiction": rate.jurisdiction,
    }


def _tax_rate_from_json(data: Mapping[str, Any]) -> TaxRate:
    return TaxRate(
        id=data["id"],
        name=data["name"],
        percentage=Decimal(data["percentage"]),
        inclusive=data["inclusive"],
        jurisdiction=data["jurisdiction"],
    )


def line_values(line: InvoiceLine) -> Values:
    """Return the columns an invoice line and a pending line share."""
    period = line.period
    return {
        "kind": line.kind._value_,
        "description": line.description,
        "amount": line.amount.amount,
        "currency": line.amount.currency,
        "quantity": line.quantity,
        "period_start": None if period is None else period.start,
        "period_end": None if period is None else period.end,
        "price_id": line.price_id,
        "line_subscription_id": line.subscription_id,
        "discountable": line.discountable,
        # Tuples, not lists: the empty one (most lines) is shared, and a row holding only
        # such values is left alone by the garbage collector while a batch holds it.
        "tax_rates": tuple([_tax_rate_json(r) for r in line.tax_rates]),
    }


def line_from_row(row: Row) -> InvoiceLine:
    """Rebuild an invoice line."""
    line: InvoiceLine = build_trusted(
        InvoiceLine,
        {
            "kind": LineKind(row["kind"]),
            "description": row["description"],
            "amount": _cash(int(row["amount"]), row["currency"]),
            "quantity": int(row["quantity"]),
            "period": _period(row["period_start"], row["period_end"]),
            "price_id": row["price_id"],
            "subscription_id": row["line_subscription_id"],
            "discountable": bool(row["discountable"]),
            "tax_rates": tuple(_tax_rate_from_json(r) for r in row["tax_rates"]),
        },
    )
    return line


def _line_tax_json(tax: LineTax) -> dict[str, Any]:
    return {
        "tax_rate": _tax_rate_json(tax.tax_rate),
        "taxable": _money_json(tax.taxable),
        "amount": _money_json(tax.amount),
    }


def _line_tax_from_json(data: Mapping[str, Any]) -> LineTax:
    taxable = _money_from_json(data["taxable"])
    amount = _money_from_json(data["amount"])
    assert taxable is not None
    assert amount is not None
    return LineTax(tax_rate=_tax_rate_from_json(data["tax_rate"]), taxable=taxable, amount=amount)


_INVOICE_AMOUNTS = (
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


def invoice_row(invoice: Invoice) -> Values:
    """Return the columns of an invoice (its lines are :func:`invoice_line_rows`)."""
    period = invoice.period
    values: Values = {
        "id": invoice.id,
        "customer_id": invoice.customer_id,
        "subscription_id": invoice.subscription_id,
        "number": invoice.number,
        "currency": invoice.currency,
        "status": invoice.status._value_,
        "billing_reason": invoice.billing_reason._value_,
        "created_at": invoice.created_at,
        "period_start": None if period is None else period.start,
        "period_end": None if period is None else period.end,
        "discount_coupon_id": invoice.discount_coupon_id,
        "due_at": invoice.due_at,
        "finalized_at": invoice.finalized_at,
        "paid_at": invoice.paid_at,
        "voided_at": invoice.voided_at,
        "marked_uncollectible_at": invoice.marked_uncollectible_at,
        # Spelled out, not a loop of getattr over _INVOICE_AMOUNTS: three invoice rows a
        # renewal (its insert, its update, the settlement's check of the stored row).
        "subtotal": invoice.subtotal.amount,
        "discount": invoice.discount.amount,
        "tax": invoice.tax.amount,
        "inclusive_tax": invoice.inclusive_tax.amount,
        "total": invoice.total.amount,
        "credit_applied": invoice.credit_applied.amount,
        "amount_due": invoice.amount_due.amount,
        "amount_paid": invoice.amount_paid.amount,
        "amount_credited": invoice.amount_credited.amount,
        "amount_refunded": invoice.amount_refunded.amount,
    }
    return values


def invoice_line_rows(invoice: Invoice) -> list[Values]:
    """Return the rows of an invoice's lines, with each line's discount and taxes."""
    return [
        {
            "invoice_id": invoice.id,
            "position": position,
            **line_values(line),
            "discount_amount": discount.amount,
            "taxes": tuple([_line_tax_json(t) for t in taxes]),  # as tax_rates
        }
        for position, (line, discount, taxes) in enumerate(
            zip(invoice.lines, invoice.line_discounts, invoice.line_taxes, strict=True)
        )
    ]


def invoice_from_rows(row: Row, lines: Sequence[Row]) -> Invoice:
    """Rebuild an invoice from its row and its line rows in position order."""
    currency = row["currency"]
    state: dict[str, Any] = {
        "id": row["id"],
        "customer_id": row["customer_id"],
        "currency": currency,
        "status": _INVOICE_STATUSES[row["status"]],
        "lines": tuple(line_from_row(line) for line in lines),
        "billing_reason": _BILLING_REASONS[row["billing_reason"]],
        "created_at": row["created_at"],
        "line_discounts": tuple(_cash(int(line["discount_amount"]), currency) for line in lines),
        "line_taxes": tuple(tuple(_line_tax_from_json(t) for t in line["taxes"]) for line in lines),
        "subscription_id": row["subscription_id"],
        "number": row["number"],
        "period": _period(row["period_start"], row["period_end"]),
        "discount_coupon_id": row["discount_coupon_id"],
        "due_at": row["due_at"],
        "finalized_at": row["finalized_at"],
        "paid_at": row["paid_at"],
        "voided_at": row["voided_at"],
        "marked_uncollectible_at": row["marked_uncollectible_at"],
    }
    for name in _INVOICE_AMOUNTS:
        state[name] = _cash(int(row[name]), currency)
    invoice: Invoice = build_trusted(Invoice, state)
    return invoice


def pending_line_row(pending: PendingLine) -> Values:
    """Return the columns of a pending line."""
    return {
        "id": pending.id,
        "customer_id": pending.customer_id,
        "subscription_id": pending.subscription_id,
        "created_at": pending.created_at,
        **line_values(pending.line),
    }


def pending_line_from_row(row: Row) -> PendingLine:
    """Rebuild a pending line."""
    return PendingLine(
        id=row["id"],
        customer_id=row["customer_id"],
        subscription_id=row["subscription_id"],
        line=line_from_row(row),
        created_at=row["created_at"],
    )


# -- payments, refunds, credit notes, usage ----------------------------------------------


def payment_row(payment: Payment) -> Values:
    """Return the columns of a payment."""
    refunded = payment.amount_refunded
    return {
        "id": payment.id,
        "invoice_id": payment.invoice_id,
        "customer_id": payment.customer_id,
        "amount": payment.amount.amount,
        "currency": payment.amount.currency,
        "status": payment.status._value_,
        "idempotency_key": payment.idempotency_key,
        "attempt": payment.attempt,
        "created_at": payment.created_at,
        "gateway_reference": payment.gateway_reference,
        "failure_code": payment.failure_code,
        "failure_message": payment.failure_message,
        "amount_refunded": None if refunded is None else refunded.amount,
        "settled_at": payment.settled_at,
    }


def payment_from_row(row: Row) -> Payment:
    """Rebuild a payment (dict-backed: its state built whole, every field named)."""
    currency = row["currency"]
    payment: Payment = build_trusted(
        Payment,
        {
            "id": row["id"],
            "invoice_id": row["invoice_id"],
            "customer_id": row["customer_id"],
            "amount": _cash(int(row["amount"]), currency),
            "status": _PAYMENT_STATUSES[row["status"]],
            "idempotency_key": row["idempotency_key"],
            "attempt": int(row["attempt"]),
            "created_at": row["created_at"],
            "gateway_reference": row["gateway_reference"],
            "failure_code": row["failure_code"],
            "failure_message": row["failure_message"],
            "amount_refunded": _money(row["amount_refunded"], currency),
            "settled_at": row["settled_at"],
        },
    )
    return payment


def refund_row(refund: Refund) -> Values:
    """Return the columns of a refund."""
    return {
        "id": refund.id,
        "payment_id": refund.payment_id,
        "invoice_id": refund.invoice_id,
        "amount": refund.amount.amount,
        "currency": refund.amount.currency,
        "reason": refund.reason,
        "created_at": refund.created_at,
    }


def refund_from_row(row: Row) -> Refund:
    """Rebuild a refund."""
    return Refund(
        id=row["id"],
        payment_id=row["payment_id"],
        invoice_id=row["invoice_id"],
        amount=Money(int(row["amount"]), row["currency"]),
        reason=row["reason"],
        created_at=row["created_at"],
    )


def credit_note_row(note: CreditNote) -> Values:
    """Return the columns of a credit note."""
    return {
        "id": note.id,
        "number": note.number,
        "invoice_id": note.invoice_id,
        "customer_id": note.customer_id,
        "amount": note.amount.amount,
        "currency": note.amount.currency,
        "reason": note.reason,
        "outcome": note.outcome._value_,
        "created_at": note.created_at,
        "memo": note.memo,
    }


def credit_note_from_row(row: Row) -> CreditNote:
    """Rebuild a credit note."""
    return CreditNote(
        id=row["id"],
        number=row["number"],
        invoice_id=row["invoice_id"],
        customer_id=row["customer_id"],
        amount=Money(int(row["amount"]), row["currency"]),
        reason=row["reason"],
        outcome=CreditNoteOutcome(row["outcome"]),
        created_at=row["created_at"],
        memo=row["memo"],
    )


def usage_row(record: UsageRecord) -> Values:
    """Return the columns of a usage record."""
    return {
        "id": record.id,
        "subscription_id": record.subscription_id,
        "quantity": record.quantity,
        "at": record.at,
    }


def usage_from_row(row: Row) -> UsageRecord:
    """Rebuild a usage record."""
    return UsageRecord(
        id=row["id"],
        subscription_id=row["subscription_id"],
        quantity=int(row["quantity"]),
        at=row["at"],
    )


# -- outbox, audit, history, analytics, emails, idempotency ---------------------------


def outbox_row(message: OutboxMessage, encode: Callable[[Any], Any] = as_is) -> Values:
    """Return the columns of an outbox message; an event without customer stores NULL.

    ``encode`` gives the data's column value: its JSON text on PostgreSQL (see
    :func:`domain_json_text`), the data itself for SQLAlchemy to encode.
    """
    return new_outbox_row(
        message_fields(message.id, message.event),
        message.created_at,
        encode,
        delivered_at=message.delivered_at,
        attempts=message.attempts,
    )


def new_outbox_row(
    fields: MessageFields,
    created_at: datetime,
    encode: Callable[[Any], Any] = as_is,
    *,
    delivered_at: datetime | None = None,
    attempts: int = 0,
) -> Values:
    """Return the columns of the message with these fields (undelivered: a new one's)."""
    message_id, name, subject_id, customer_id, occurred_at, data = fields
    return {
        "id": message_id,
        "name": name._value_,
        "subject_id": subject_id,
        "customer_id": customer_id or None,
        "occurred_at": occurred_at,
        "data": encode(data),
        "created_at": created_at,
        "delivered_at": delivered_at,
        "attempts": attempts,
    }


_EVENT_NAMES = {member.value: member for member in EventName}


def outbox_from_row(row: Row) -> OutboxMessage:
    """Rebuild an outbox message.

    Built trusted (a delivery round reads every pending message): the event's data is a
    read-only copy, as its converter makes, and its name the member the stored value is
    (an unknown one raises as ``EventName(…)`` does).
    """
    name = row["name"]
    event = build_trusted(
        DomainEvent,
        {
            "name": _EVENT_NAMES.get(name) or EventName(name),
            "subject_id": row["subject_id"],
            "customer_id": row["customer_id"] or "",
            "occurred_at": row["occurred_at"],
            "data": MappingProxyType(dict(row["data"] or {})),
        },
    )
    message: OutboxMessage = build_trusted(
        OutboxMessage,
        {
            "id": row["id"],
            "event": event,
            "created_at": row["created_at"],
            "delivered_at": row["delivered_at"],
            "attempts": int(row["attempts"]),
        },
    )
    return message


def audit_row(entry: AuditEntry, encode: Callable[[Any], Any] = as_is) -> Values:
    """Return the columns of an audit entry; ``encode`` as for :func:`outbox_row`."""
    return audit_row_of(_fields_of(entry), encode)


def _fields_of(record: AuditEntry | SubscriptionChange) -> Any:
    """Return a record's fields in their order, as ``add_history`` takes them."""
    return attrs.astuple(record, recurse=False)


def audit_row_of(fields: AuditFields, encode: Callable[[Any], Any] = as_is) -> Values:
    """Return the columns of the audit entry with these fields: ``audit_row``'s."""
    entry_id, actor, action, subject_type, subject_id, at, customer_id, before, after = fields
    return {
        "id": entry_id,
        "actor": actor,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "at": at,
        "customer_id": customer_id,
        "before": None if before is None else encode(before),
        "after": None if after is None else encode(after),
    }


def audit_from_row(row: Row) -> AuditEntry:
    """Rebuild an audit entry."""
    return AuditEntry(
        id=row["id"],
        actor=row["actor"],
        action=row["action"],
        subject_type=row["subject_type"],
        subject_id=row["subject_id"],
        at=row["at"],
        customer_id=row["customer_id"],
        before=row["before"],
        after=row["after"],
    )


def change_row(change: SubscriptionChange, encode: Callable[[Any], Any] = as_is) -> Values:
    """Return the columns of a subscription change; no plan stores NULL.

    ``encode`` as for :func:`outbox_row`.
    """
    return change_row_of(_fields_of(change), encode)


def change_row_of(fields: ChangeFields, encode: Callable[[Any], Any] = as_is) -> Values:
    """Return the columns of the subscription change with these fields: ``change_row``'s."""
    (
        change_id,
        subscription_id,
        customer_id,
        kind,
        at,
        from_status,
        to_status,
        from_price_id,
        to_price_id,
        from_quantity,
        to_quantity,
        mrr,
        plan_id,
        data,
    ) = fields
    return {
        "id": change_id,
        "subscription_id": subscription_id,
        "customer_id": customer_id,
        "kind": kind,
        "at": at,
        "from_status": from_status,
        "to_status": to_status,
        "from_price_id": from_price_id,
        "to_price_id": to_price_id,
        "from_quantity": from_quantity,
        "to_quantity": to_quantity,
        "mrr": mrr.amount,
        "mrr_currency": mrr.currency,
        "plan_id": plan_id or None,
        "data": encode(data),
    }


def change_from_row(row: Row) -> SubscriptionChange:
    """Rebuild a subscription change."""
    return SubscriptionChange(
        id=row["id"],
        subscription_id=row["subscription_id"],
        customer_id=row["customer_id"],
        kind=row["kind"],
        at=row["at"],
        from_status=row["from_status"],
        to_status=row["to_status"],
        from_price_id=row["from_price_id"],
        to_price_id=row["to_price_id"],
        from_quantity=row["from_quantity"],
        to_quantity=int(row["to_quantity"]),
        mrr=Money(int(row["mrr"]), row["mrr_currency"]),
        plan_id=row["plan_id"] or "",
        data=row["data"],
    )


def analytics_row(event: AnalyticsEvent) -> Values:
    """Return the columns of an analytics event."""
    return {
        "id": event.id,
        "name": event.name,
        "customer_id": event.customer_id,
        "occurred_at": event.occurred_at,
        "properties": event.properties,
    }


def analytics_from_row(row: Row) -> AnalyticsEvent:
    """Rebuild an analytics event."""
    return AnalyticsEvent(
        id=row["id"],
        name=row["name"],
        customer_id=row["customer_id"],
        occurred_at=row["occurred_at"],
        properties=row["properties"],
    )


def delivery_row(delivery: EmailDelivery) -> Values:
    """Return the columns of an email delivery."""
    return {
        "message_id": delivery.message_id,
        "event_id": delivery.event_id,
        "template": delivery.template,
        "recipient": delivery.to,
        "status": delivery.status._value_,
        "created_at": delivery.created_at,
        "customer_id": delivery.customer_id,
        "provider_id": delivery.provider_id,
        "updated_at": delivery.updated_at,
    }


def delivery_from_row(row: Row) -> EmailDelivery:
    """Rebuild an email delivery."""
    return EmailDelivery(
        message_id=row["message_id"],
        event_id=row["event_id"],
        template=row["template"],
        to=row["recipient"],
        status=DeliveryStatus(row["status"]),
        created_at=row["created_at"],
        customer_id=row["customer_id"],
        provider_id=row["provider_id"],
        updated_at=row["updated_at"],
    )


def idempotency_row(record: IdempotencyRecord) -> Values:
    """Return the columns of an idempotency record."""
    return {
        "key": record.key,
        "fingerprint": record.fingerprint,
        "result": plain(record.result),
        "created_at": record.created_at,
        "expires_at": record.expires_at,
    }


def idempotency_from_row(row: Row) -> IdempotencyRecord:
    """Rebuild an idempotency record."""
    return IdempotencyRecord(
        key=row["key"],
        fingerprint=row["fingerprint"],
        result=row["result"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )
