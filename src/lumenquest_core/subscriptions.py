"""The subscription lifecycle as pure transitions.

Every operation takes a subscription, its arguments and the instant ``at``, and returns
a :class:`Transition`: the new subscription, the invoice lines the change causes and the
domain events it records. An operation that the current state does not allow raises
:class:`~lumenquest_core.errors.InvalidTransition`; a malformed argument raises
:class:`~lumenquest_core.errors.ValidationError`.

Nothing here reads the clock or makes ids: both come in as arguments. Lines are only
proposals for the invoice builder; this module never invoices, charges or consumes a
discount (see :func:`discount_used`).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import attrs

from lumenquest_core._trusted import _new, _set, build_trusted, evolve_trusted
from lumenquest_core.catalog import PlanChange, Price, UsageType, compare
from lumenquest_core.codec import money_json
from lumenquest_core.coupons import Coupon, Discount
from lumenquest_core.dunning import DunningPolicy, FinalAction, next_retry_at
from lumenquest_core.errors import CurrencyMismatch, InvalidTransition, ValidationError
from lumenquest_core.events import DomainEvent, EventName
from lumenquest_core.lines import InvoiceLine, LineKind
from lumenquest_core.money import Money
from lumenquest_core.periods import (
    BillingCycle,
    Period,
    add_cycles,
    aware,
    period_at,
    renewal_period,
)
from lumenquest_core.proration import (
    ChangeTiming,
    Granularity,
    ProrationBehavior,
    _label,
    change_lines,
)
from lumenquest_core.proration import prorate as _prorate

__all__ = [
    "PendingUpdate",
    "ScheduledChange",
    "Subscription",
    "SubscriptionStatus",
    "Transition",
    "start",
    "end_trial",
    "trial_will_end",
    "trial_reminder_at",
    "renew",
    "discount_used",
    "change",
    "schedule_change",
    "cancel_scheduled_change",
    "default_timing",
    "cancel",
    "undo_cancel",
    "pause",
    "resume",
    "payment_failed",
    "payment_succeeded",
    "expire_incomplete",
    "hold_change",
    "apply_pending_update",
    "drop_pending_update",
    "next_action_at",
]


class SubscriptionStatus(enum.StrEnum):
    """The eight states of a subscription (Stripe's names)."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    UNPAID = "unpaid"
    CANCELED = "canceled"


@attrs.frozen
class ScheduledChange:
    """A price or quantity change waiting for ``effective_at`` (the period end)."""

    price: Price
    quantity: int
    effective_at: datetime


@attrs.frozen
class PendingUpdate:
    """An immediate change invoiced first and applied only once ``invoice_id`` is paid.

    Stripe's pending update: the change made at ``changed_at`` waits for its payment
    and is dropped (its invoice voided) if not paid by ``expires_at``.
    """

    price: Price
    quantity: int
    invoice_id: str
    changed_at: datetime
    expires_at: datetime
    discount: Discount | None = None  # the discount once the change applies


# A change awaiting payment is dropped after this long at most, as Stripe's are.
PENDING_UPDATE_LIFETIME = timedelta(hours=23)


# Not slotted: every transition copies the subscription, and a dict copies at C speed.
@attrs.frozen(slots=False)
class Subscription:
    """A customer's subscription to one price; immutable, changed only by transitions."""

    id: str
    customer_id: str
    price: Price
    quantity: int
    status: SubscriptionStatus
    anchor: datetime
    current_period: Period
    created_at: datetime
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    paused_at: datetime | None = None
    resumes_at: datetime | None = None
    scheduled_change: ScheduledChange | None = None
    discount: Discount | None = None
    failed_payments: int = 0
    next_payment_retry_at: datetime | None = None
    # Recorded so that next_action_at stops reporting a reminder that was already sent.
    trial_reminder_sent_at: datetime | None = None
    pending_update: PendingUpdate | None = None

    @property
    def cycle(self) -> BillingCycle:
        """The billing cycle of the current price."""
        return self.price.cycle

    @property
    def currency(self) -> str:
        """The currency the subscription bills in."""
        return self.price.currency


@attrs.frozen
class Transition:
    """The result of a lifecycle operation."""

    subscription: Subscription
    lines: tuple[InvoiceLine, ...] = ()
    events: tuple[DomainEvent, ...] = ()


# The slots' own setters: renew builds its Transition without the attrs __init__.
_set_subscription = Transition.__dict__["subscription"].__set__
_set_lines = Transition.__dict__["lines"].__set__
_set_events = Transition.__dict__["events"].__set__


_Status = SubscriptionStatus

# Stripe lets an incomplete subscription's first invoice be paid for 23 hours.
_INCOMPLETE_EXPIRY = timedelta(hours=23)
_TERMINAL = frozenset({_Status.CANCELED, _Status.INCOMPLETE_EXPIRED})
_BILLED = frozenset({_Status.ACTIVE, _Status.PAST_DUE})  # the states that renew
_CHANGEABLE = frozenset({_Status.ACTIVE, _Status.PAST_DUE, _Status.TRIALING})


# ---------------------------------------------------------------- helpers


def _invalid(sub: Subscription, operation: str, why: str = "") -> InvalidTransition:
    message = f"cannot {operation} a subscription that is {sub.status.value}"
    return InvalidTransition(
        f"{message}: {why}" if why else message,
        details={"status": sub.status.value, "operation": operation, "subscription_id": sub.id},
    )


def _require(sub: Subscription, operation: str, allowed: frozenset[_Status]) -> None:
    if sub.status not in allowed:
        raise _invalid(sub, operation)


def _not_before_period(sub: Subscription, at: datetime, operation: str) -> None:
    # Transitions are applied in time order; an instant before the current period is a bug.
    if at < sub.current_period.start:
        raise ValidationError(
            f"{operation} at {at.isoformat()} is before the current period,"
            f" which starts at {sub.current_period.start.isoformat()}",
            details={"at": at.isoformat(), "period_start": sub.current_period.start.isoformat()},
        )


def _no_pending_update(sub: Subscription, operation: str) -> None:
    if sub.pending_update is not None:
        raise _invalid(
            sub,
            operation,
            f"a change waits for the payment of invoice {sub.pending_update.invoice_id}",
        )


def _not_overdue(sub: Subscription, at: datetime, operation: str) -> None:
    # A billed period that has ended must be renewed first, or the time after it goes unbilled.
    end = sub.current_period.end
    if sub.status in _BILLED and at >= end:
        raise _invalid(sub, operation, f"its period ended at {end.isoformat()}; renew it first")


def _check_id(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string", details={"field": name})
    return value


def _check_quantity(value: object) -> int:
    # bool is an int subclass; True seats is a bug, never a quantity.
    if type(value) is not int or value < 0:
        raise ValidationError(
            f"quantity must be a non-negative int, not {value!r}",
            details={"quantity": repr(value)},
        )
    return value


def _check_price(value: object, *, require_active: bool = True) -> Price:
    if not isinstance(value, Price):
        raise ValidationError(f"price must be a Price, not {type(value).__name__}")
    if require_active and not value.active:
        raise ValidationError(
            f"price {value.id} is archived; new subscriptions and changes need an active price",
            details={"price_id": value.id},
        )
    return value


def _check_behavior(value: Any) -> ProrationBehavior:
    try:
        return ProrationBehavior(value)
    except ValueError:
        raise ValidationError(
            f"proration_behavior must be one of {[b.value for b in ProrationBehavior]},"
            f" not {value!r}"
        ) from None


def _check_granularity(value: Any) -> Granularity:
    try:
        return Granularity(value)
    except ValueError:
        raise ValidationError(
            f"granularity must be one of {[g.value for g in Granularity]}, not {value!r}"
        ) from None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _money_json(value: Money | None) -> dict[str, Any] | None:
    return None if value is None else money_json(value)


def _event(sub: Subscription, name: EventName, at: datetime, **data: Any) -> DomainEvent:
    # ``data`` is a fresh dict of JSON-ready values: freeze it without another copy.
    return build_trusted(
        DomainEvent,
        {
            "name": name,
            "subject_id": sub.id,
            "customer_id": sub.customer_id,
            "occurred_at": at,
            "data": MappingProxyType(data),
        },
    )


_LICENSED = UsageType.LICENSED
# Bound once: each ``Enum.X`` costs a metaclass hook in Python 3.11 (~1,000 instructions).
_SUBSCRIPTION_LINE = LineKind.SUBSCRIPTION
_RENEWED = EventName.SUBSCRIPTION_RENEWED


def _licensed(price: Price) -> bool:
    return price.usage_type is _LICENSED


# The last (price, quantity) charged in advance, with its line's description and amount:
# subscriptions renewed together mostly share both (the same Price object, read from the
# catalog once), and a Price is immutable. One entry, replaced whole (thread-safe).
_last_charge: tuple[Price, int, str, Money] | None = None


def _advance_lines(sub: Subscription) -> tuple[InvoiceLine, ...]:
    """Return the in-advance charge for the whole current period (none when metered)."""
    global _last_charge  # noqa: PLW0603 - a one-entry memo, replaced whole
    price = sub.price
    # Metered usage is billed in arrears by the invoice builder, never here.
    if price.usage_type is not _LICENSED:
        return ()
    quantity = sub.quantity
    last = _last_charge
    if last is not None and last[0] is price and last[1] == quantity:
        description, amount = last[2], last[3]
    else:
        description, amount = _label(price, quantity), price.amount_for(quantity)
        _last_charge = (price, quantity, description, amount)
    line = _new(InvoiceLine)
    # build_trusted's work without its call, as in renew: every renewal makes one line.
    _set(
        line,
        "__dict__",
        {
            "kind": _SUBSCRIPTION_LINE,
            "description": description,
            "amount": amount,
            "quantity": quantity,
            "period": sub.current_period,
            "price_id": price.id,
            "subscription_id": sub.id,
            "discountable": True,
            "tax_rates": (),
        },
    )
    return (line,)


def _full_period(sub: Subscription) -> Period:
    """Return the whole billing cycle the current period belongs to.

    It differs from the current period only for a first period cut short by a future
    anchor; prorating over the whole cycle keeps credits within what was charged.
    """
    return period_at(sub.anchor, sub.cycle, sub.current_period.start)


def _unused_credit(
    sub: Subscription, at: datetime, granularity: Granularity
) -> tuple[InvoiceLine, ...]:
    """Return the credit for the unused rest of the current period, if any is left."""
    end = sub.current_period.end
    if not _licensed(sub.price) or at >= end:
        return ()
    remaining = Period(at, end)
    credit = _prorate(sub.price.amount_for(sub.quantity), _full_period(sub), remaining, granularity)
    if not credit:
        return ()
    return (
        InvoiceLine(
            kind=LineKind.PRORATION,
            description=f"Unused time on {_label(sub.price, sub.quantity)}",
            amount=-credit,
            quantity=sub.quantity,
            period=remaining,
            price_id=sub.price.id,
            subscription_id=sub.id,
        ),
    )


def _target(sub: Subscription, price: Price | None, quantity: int | None) -> tuple[Price, int]:
    """Return the price and quantity a change asks for, validated."""
    if price is None and quantity is None:
        raise ValidationError("a change needs a new price, a new quantity or both")
    new_price = sub.price if price is None else price
    # An archived price may keep its subscribers and their quantity changes (as in Stripe).
    _check_price(new_price, require_active=new_price.id != sub.price.id)
    if new_price.currency != sub.currency:
        raise CurrencyMismatch(
            f"the subscription bills in {sub.currency}; price {new_price.id} is in"
            f" {new_price.currency}",
            details={"currencies": [sub.currency, new_price.currency]},
        )
    new_quantity = sub.quantity if quantity is None else _check_quantity(quantity)
    if new_price == sub.price and new_quantity == sub.quantity:
        raise ValidationError(
            "the change changes nothing: the price and quantity are already the current ones",
            details={"price_id": new_price.id, "quantity": new_quantity},
        )
    return new_price, new_quantity


def _change_data(
    old_price: Price, old_quantity: int, new_price: Price, new_quantity: int
) -> dict[str, Any]:
    return {
        "from_price_id": old_price.id,
        "to_price_id": new_price.id,
        "from_quantity": old_quantity,
        "to_quantity": new_quantity,
        "direction": compare(old_price, new_price, old_quantity, new_quantity).value,
    }


def _apply_scheduled(
    sub: Subscription, boundary: datetime, at: datetime
) -> tuple[Subscription, tuple[DomainEvent, ...]]:
    """Apply a waiting change at the period boundary; a new cycle re-anchors there."""
    change = sub.scheduled_change
    if change is None:
        return sub, ()
    anchor = sub.anchor if change.price.cycle == sub.cycle else boundary
    updated = evolve_trusted(
        sub, price=change.price, quantity=change.quantity, anchor=anchor, scheduled_change=None
    )
    data = _change_data(sub.price, sub.quantity, change.price, change.quantity)
    event = _event(
        sub,
        EventName.SUBSCRIPTION_CHANGED,
        at,
        timing=ChangeTiming.PERIOD_END.value,
        effective_at=boundary.isoformat(),
        **data,
    )
    return updated, (event,)


def _begin_period(sub: Subscription, start: datetime, at: datetime) -> Transition:
    """Start a fresh cycle anchored at ``start``, applying any scheduled change first."""
    changed, events = _apply_scheduled(sub, start, at)
    updated = evolve_trusted(
        changed, anchor=start, current_period=Period(start, add_cycles(start, changed.cycle, 1))
    )
    return Transition(updated, _advance_lines(updated), events)


# ---------------------------------------------------------------- start and trial


def _trial_end(
    price: Price, at: datetime, trial_days: int | None, trial_end: datetime | None
) -> datetime | None:
    if trial_end is not None:
        end = aware(trial_end, "trial_end")
        if end <= at:
            raise ValidationError(
                f"trial_end {end.isoformat()} must be after the start {at.isoformat()}",
                details={"trial_end": end.isoformat(), "at": at.isoformat()},
            )
        return end
    days = price.trial_days if trial_days is None else trial_days
    if type(days) is not int or days < 0:
        raise ValidationError(
            f"trial_days must be a non-negative int, not {days!r}",
            details={"trial_days": repr(days)},
        )
    return at + timedelta(days=days) if days else None


def start(
    *,
    subscription_id: str,
    customer_id: str,
    price: Price,
    quantity: int = 1,
    at: datetime,
    trial_days: int | None = None,
    trial_end: datetime | None = None,
    anchor: datetime | None = None,
    coupon: Coupon | None = None,
    granularity: Granularity = Granularity.SECOND,
) -> Transition:
    """Create a subscription, trialing or billed from its anchor, with its first charge."""
    at = aware(at, "at")
    _check_id(subscription_id, "subscription_id")
    _check_id(customer_id, "customer_id")
    _check_price(price)
    _check_quantity(quantity)
    granularity = _check_granularity(granularity)
    if coupon is not None:
        if not isinstance(coupon, Coupon):
            raise ValidationError(f"coupon must be a Coupon, not {type(coupon).__name__}")
        if coupon.amount_off is not None and coupon.amount_off.currency != price.currency:
            raise CurrencyMismatch(
                f"coupon {coupon.id} is in {coupon.amount_off.currency},"
                f" the price in {price.currency}",
                details={"currencies": [price.currency, coupon.amount_off.currency]},
            )
    trial_until = _trial_end(price, at, trial_days, trial_end)
    anchor = None if anchor is None else aware(anchor, "anchor")
    if anchor is not None and trial_until is not None:
        raise ValidationError(
            "anchor cannot be combined with a trial: the billing cycle is anchored at the trial end"
        )
    if anchor is not None and anchor < at:
        raise ValidationError(
            f"anchor {anchor.isoformat()} is before the start {at.isoformat()}",
            details={"anchor": anchor.isoformat(), "at": at.isoformat()},
        )
    sub = Subscription(
        id=subscription_id,
        customer_id=customer_id,
        price=price,
        quantity=quantity,
        status=_Status.TRIALING,
        anchor=at,
        current_period=Period(at, add_cycles(at, price.cycle, 1)),
        created_at=at,
        discount=None if coupon is None else Discount.begin(coupon, at),
    )
    lines: tuple[InvoiceLine, ...] = ()
    if trial_until is not None:
        sub = evolve_trusted(
            sub, anchor=trial_until, current_period=Period(at, trial_until), trial_end=trial_until
        )
    elif anchor is not None and anchor > at:
        sub, lines = _anchored_start(sub, anchor, granularity)
    else:
        lines = _advance_lines(sub)
    if trial_until is None:
        due = sum((line.amount for line in lines), Money.zero(price.currency))
        if coupon is not None:
            due -= coupon.amount_off_of(due)
        # Stripe's default_incomplete: a subscription with something to pay waits for it.
        sub = evolve_trusted(sub, status=_Status.INCOMPLETE if due.amount > 0 else _Status.ACTIVE)
    event = _event(
        sub,
        EventName.SUBSCRIPTION_CREATED,
        at,
        price_id=price.id,
        quantity=quantity,
        status=sub.status.value,
        period_start=sub.current_period.start.isoformat(),
        period_end=sub.current_period.end.isoformat(),
        trial_end=_iso(sub.trial_end),
        coupon_id=None if coupon is None else coupon.id,
    )
    return Transition(sub, lines, (event,))


def _anchored_start(
    sub: Subscription, anchor: datetime, granularity: Granularity
) -> tuple[Subscription, tuple[InvoiceLine, ...]]:
    """Cut the first period short at a future anchor and charge it pro rata."""
    at = sub.created_at
    full = period_at(anchor, sub.cycle, at)
    if full.end != anchor:
        raise ValidationError(
            f"anchor {anchor.isoformat()} must be less than one {sub.cycle} after the start",
            details={"anchor": anchor.isoformat(), "at": at.isoformat()},
        )
    sub = evolve_trusted(sub, anchor=anchor, current_period=Period(at, anchor))
    if not _licensed(sub.price):
        return sub, ()
    line = InvoiceLine(
        kind=LineKind.PRORATION,
        description=f"Remaining time on {_label(sub.price, sub.quantity)}",
        amount=_prorate(sub.price.amount_for(sub.quantity), full, sub.current_period, granularity),
        quantity=sub.quantity,
        period=sub.current_period,
        price_id=sub.price.id,
        subscription_id=sub.id,
    )
    return sub, (line,)


def end_trial(sub: Subscription, at: datetime) -> Transition:
    """End the trial, at its end or early, and start the first paid period."""
    _require(sub, "end the trial of", frozenset({_Status.TRIALING}))
    at = aware(at, "at")
    _not_before_period(sub, at, "end_trial")
    trial_over = sub.current_period.end
    # A late billing run still starts the paid period at the trial end, the anchor promised
    # at start; ending early moves the anchor to the moment the trial ends.
    begin = min(at, trial_over)
    ended = _event(
        sub, EventName.TRIAL_ENDED, at, trial_end=begin.isoformat(), early=at < trial_over
    )
    if sub.cancel_at_period_end and at >= trial_over:
        canceled = evolve_trusted(
            sub,
            status=_Status.CANCELED,
            trial_end=begin,
            ended_at=trial_over,
            scheduled_change=None,
        )
        gone = _event(
            canceled,
            EventName.SUBSCRIPTION_CANCELED,
            at,
            ended_at=trial_over.isoformat(),
            reason="cancel_at_period_end",
        )
        return Transition(canceled, (), (ended, gone))
    result = _begin_period(evolve_trusted(sub, status=_Status.ACTIVE, trial_end=begin), begin, at)
    return Transition(result.subscription, result.lines, (ended, *result.events))


def trial_reminder_at(sub: Subscription, days: int = 3) -> datetime | None:
    """Return when to remind the customer that the trial ends, or None without a trial."""
    if type(days) is not int or days < 0:
        raise ValidationError(f"days must be a non-negative int, not {days!r}")
    if sub.status is not _Status.TRIALING or sub.trial_end is None:
        return None
    # A trial shorter than the notice is reminded at once, as Stripe does.
    return max(sub.trial_end - timedelta(days=days), sub.current_period.start)


def trial_will_end(sub: Subscription, at: datetime) -> Transition:
    """Record the reminder that the trial is about to end (an event, once per trial)."""
    _require(sub, "send the trial reminder of", frozenset({_Status.TRIALING}))
    at = aware(at, "at")
    if sub.trial_reminder_sent_at is not None:
        raise _invalid(sub, "send the trial reminder of", "the reminder was already sent")
    updated = evolve_trusted(sub, trial_reminder_sent_at=at)
    event = _event(sub, EventName.TRIAL_WILL_END, at, trial_end=_iso(sub.trial_end))
    return Transition(updated, (), (event,))


# ---------------------------------------------------------------- renewal


def renew(sub: Subscription, at: datetime) -> Transition:
    """Move to the next period once the current one has ended, and charge it in advance.

    One call renews one period; a caller that is several periods late calls it until
    :func:`next_action_at` is in the future, so every period is billed exactly once.
    Metered usage for the period that ended is the invoice builder's to add.
    """
    if sub.status not in _BILLED:
        raise _invalid(sub, "renew")
    if type(at) is not datetime or at.tzinfo is not UTC:  # aware's test, without its call
        at = aware(at, "at")
    end = sub.current_period.end
    if at < end:
        raise _invalid(sub, "renew", f"the current period runs until {end.isoformat()}")
    if sub.cancel_at_period_end:
        canceled = evolve_trusted(
            sub,
            status=_Status.CANCELED,
            ended_at=end,
            next_payment_retry_at=None,
            scheduled_change=None,
        )
        event = _event(
            canceled,
            EventName.SUBSCRIPTION_CANCELED,
            at,
            ended_at=end.isoformat(),
            reason="cancel_at_period_end",
        )
        return Transition(canceled, (), (event,))
    changed, events = (sub, ()) if sub.scheduled_change is None else _apply_scheduled(sub, end, at)
    price = changed.price
    # The anchor and the period's end are UTC already: validated when they were built.
    period, start_text, end_text = renewal_period(changed.anchor, price.cycle, end)
    # evolve_trusted(changed, current_period=period), without packing and unpacking kwargs
    # (dict(), not copy(): see evolve_trusted).
    state = dict(changed.__dict__)
    state["current_period"] = period
    # build_trusted's and _transition's work is done inline here: a call costs more than
    # the two statements it runs (run_due over 3,000: see the commit).
    updated = _new(Subscription)
    _set(updated, "__dict__", state)
    lines = _advance_lines(updated)
    amount = lines[0].amount if lines else None
    # _event's and money_json's work, without their calls and _event's keyword arguments.
    data = {
        "price_id": price.id,
        "quantity": changed.quantity,
        "period_start": start_text,
        "period_end": end_text,
        "amount": None
        if amount is None
        else {"amount": amount.amount, "currency": amount.currency},
    }
    renewed = _new(DomainEvent)
    _set(
        renewed,
        "__dict__",
        {
            "name": _RENEWED,
            "subject_id": changed.id,
            "customer_id": changed.customer_id,
            "occurred_at": at,
            "data": MappingProxyType(data),
        },
    )
    transition = _new(Transition)
    _set_subscription(transition, updated)
    _set_lines(transition, lines)
    _set_events(transition, (*events, renewed) if events else (renewed,))
    return transition


def discount_used(sub: Subscription) -> Subscription:
    """Return the subscription after its discount was applied to one invoice."""
    # The invoice builder applies the discount, so only it knows when one was used up.
    if sub.discount is None:
        return sub
    used = sub.discount.used()
    return evolve_trusted(sub, discount=used if used.active else None)


# ---------------------------------------------------------------- price and quantity changes


def default_timing(
    old_price: Price, old_quantity: int, new_price: Price, new_quantity: int
) -> ChangeTiming:
    """Return the default policy's timing: upgrades now, downgrades and sideways moves later."""
    direction = compare(old_price, new_price, old_quantity, new_quantity)
    return ChangeTiming.IMMEDIATE if direction is PlanChange.UPGRADE else ChangeTiming.PERIOD_END


def change(
    sub: Subscription,
    *,
    price: Price | None = None,
    quantity: int | None = None,
    at: datetime,
    proration_behavior: ProrationBehavior = ProrationBehavior.CREATE_PRORATIONS,
    granularity: Granularity = Granularity.SECOND,
) -> Transition:
    """Change the price or quantity now, with Stripe's proration lines.

    ``create_prorations`` and ``always_invoice`` give the same lines; whether they are
    invoiced now or with the next renewal is the caller's choice.
    """
    _require(sub, "change", _CHANGEABLE)
    _no_pending_update(sub, "change")
    at = aware(at, "at")
    behavior = _check_behavior(proration_behavior)
    granularity = _check_granularity(granularity)
    new_price, new_quantity = _target(sub, price, quantity)
    _not_before_period(sub, at, "change")
    _not_overdue(sub, at, "change")
    swapped = evolve_trusted(sub, price=new_price, quantity=new_quantity, scheduled_change=None)
    lines: tuple[InvoiceLine, ...] = ()
    if sub.status is _Status.TRIALING:
        pass  # nothing was paid during the trial, so there is nothing to prorate
    elif new_price.cycle == sub.cycle:
        if behavior is not ProrationBehavior.NONE:
            lines = _change_lines(sub, new_price, new_quantity, at, granularity)
    else:
        # A new cycle restarts billing now, as Stripe resets the anchor on an interval change.
        credit = () if behavior is ProrationBehavior.NONE else _unused_credit(sub, at, granularity)
        swapped = evolve_trusted(
            swapped, anchor=at, current_period=Period(at, add_cycles(at, new_price.cycle, 1))
        )
        lines = (*credit, *_advance_lines(swapped))
    event = _event(
        sub,
        EventName.SUBSCRIPTION_CHANGED,
        at,
        timing=ChangeTiming.IMMEDIATE.value,
        proration_behavior=behavior.value,
        **_change_data(sub.price, sub.quantity, new_price, new_quantity),
    )
    return Transition(swapped, lines, (event,))


def _change_lines(
    sub: Subscription, new_price: Price, new_quantity: int, at: datetime, granularity: Granularity
) -> tuple[InvoiceLine, ...]:
    credit, charge = change_lines(
        old_price=sub.price,
        old_quantity=sub.quantity,
        new_price=new_price,
        new_quantity=new_quantity,
        period=_full_period(sub),
        at=at,
        subscription_id=sub.id,
        granularity=granularity,
    )
    # Metered prices were never paid in advance, so they are neither credited nor charged.
    return (credit,) * _licensed(sub.price) + (charge,) * _licensed(new_price)


def schedule_change(
    sub: Subscription, *, price: Price | None = None, quantity: int | None = None, at: datetime
) -> Transition:
    """Schedule a price or quantity change for the end of the current period."""
    _require(sub, "schedule a change of", _CHANGEABLE)
    _no_pending_update(sub, "schedule a change of")
    at = aware(at, "at")
    new_price, new_quantity = _target(sub, price, quantity)
    _not_before_period(sub, at, "schedule_change")
    _not_overdue(sub, at, "schedule a change of")
    if sub.cancel_at_period_end:
        raise _invalid(sub, "schedule a change of", "it is set to cancel at the period end")
    scheduled = ScheduledChange(new_price, new_quantity, sub.current_period.end)
    event = _event(
        sub,
        EventName.CHANGE_SCHEDULED,
        at,
        effective_at=scheduled.effective_at.isoformat(),
        **_change_data(sub.price, sub.quantity, new_price, new_quantity),
    )
    return Transition(evolve_trusted(sub, scheduled_change=scheduled), (), (event,))


def cancel_scheduled_change(sub: Subscription, at: datetime) -> Transition:
    """Drop the change waiting for the period end."""
    at = aware(at, "at")
    if sub.status in _TERMINAL or sub.scheduled_change is None:
        raise _invalid(sub, "cancel the scheduled change of", "no change is scheduled")
    event = _event(
        sub,
        EventName.SCHEDULED_CHANGE_CANCELED,
        at,
        to_price_id=sub.scheduled_change.price.id,
        to_quantity=sub.scheduled_change.quantity,
    )
    return Transition(evolve_trusted(sub, scheduled_change=None), (), (event,))


# ---------------------------------------------------------------- cancellation


def cancel(
    sub: Subscription,
    *,
    at: datetime,
    at_period_end: bool = False,
    prorate: bool = False,
    granularity: Granularity = Granularity.SECOND,
) -> Transition:
    """Cancel now (optionally crediting the unused time) or at the end of the period."""
    _no_pending_update(sub, "cancel")
    at = aware(at, "at")
    granularity = _check_granularity(granularity)
    if at_period_end:
        return _cancel_at_period_end(sub, at)
    _require(
        sub,
        "cancel",
        frozenset(
            {
                _Status.INCOMPLETE,
                _Status.TRIALING,
                _Status.ACTIVE,
                _Status.PAST_DUE,
                _Status.UNPAID,
                _Status.PAUSED,
            }
        ),
    )
    _not_before_period(sub, at, "cancel")
    # Only a paid, running period has unused time; trials, pauses and unpaid ones do not.
    credit = _unused_credit(sub, at, granularity) if prorate and sub.status in _BILLED else ()
    canceled = evolve_trusted(
        sub,
        status=_Status.CANCELED,
        canceled_at=at,
        ended_at=at,
        next_payment_retry_at=None,
        resumes_at=None,
        scheduled_change=None,
    )
    event = _event(
        canceled,
        EventName.SUBSCRIPTION_CANCELED,
        at,
        ended_at=at.isoformat(),
        previous_status=sub.status.value,
        reason="requested",
        credit=_money_json(-credit[0].amount if credit else None),
    )
    return Transition(canceled, credit, (event,))


def _cancel_at_period_end(sub: Subscription, at: datetime) -> Transition:
    operation = "cancel at period end"
    # Paused and unpaid subscriptions do not renew, so a period-end cancel would never happen.
    _require(sub, operation, _CHANGEABLE)
    if sub.cancel_at_period_end:
        raise _invalid(sub, operation, "a cancellation is already scheduled")
    _not_before_period(sub, at, "cancel")
    _not_overdue(sub, at, operation)
    updated = evolve_trusted(sub, cancel_at_period_end=True, canceled_at=at)
    event = _event(
        sub, EventName.CANCELLATION_SCHEDULED, at, cancel_at=sub.current_period.end.isoformat()
    )
    return Transition(updated, (), (event,))


def undo_cancel(sub: Subscription, at: datetime) -> Transition:
    """Keep a subscription that was set to cancel at the end of its period."""
    at = aware(at, "at")
    if sub.status in _TERMINAL or not sub.cancel_at_period_end:
        raise _invalid(sub, "undo the cancellation of", "no cancellation is scheduled")
    updated = evolve_trusted(sub, cancel_at_period_end=False, canceled_at=None)
    return Transition(updated, (), (_event(sub, EventName.CANCELLATION_UNDONE, at),))


# ---------------------------------------------------------------- pause and resume


def pause(sub: Subscription, *, at: datetime, resumes_at: datetime | None = None) -> Transition:
    """Pause collection; nothing renews until :func:`resume`.

    The period already paid is not credited: resuming before its end simply continues it.
    """
    _require(sub, "pause", frozenset({_Status.ACTIVE}))
    _no_pending_update(sub, "pause")
    at = aware(at, "at")
    _not_before_period(sub, at, "pause")
    _not_overdue(sub, at, "pause")
    if sub.cancel_at_period_end:
        raise _invalid(sub, "pause", "it is set to cancel at the period end")
    if resumes_at is not None:
        resumes_at = aware(resumes_at, "resumes_at")
        if resumes_at <= at:
            raise ValidationError(
                f"resumes_at {resumes_at.isoformat()} must be after the pause {at.isoformat()}",
                details={"resumes_at": resumes_at.isoformat(), "at": at.isoformat()},
            )
    updated = evolve_trusted(sub, status=_Status.PAUSED, paused_at=at, resumes_at=resumes_at)
    event = _event(
        sub,
        EventName.SUBSCRIPTION_PAUSED,
        at,
        resumes_at=_iso(resumes_at),
        paid_until=sub.current_period.end.isoformat(),
    )
    return Transition(updated, (), (event,))


def resume(sub: Subscription, at: datetime) -> Transition:
    """Resume collection: continue the paid period, or start a new one anchored now."""
    _require(sub, "resume", frozenset({_Status.PAUSED}))
    at = aware(at, "at")
    paused_at = sub.paused_at or sub.current_period.start
    if at < paused_at:
        raise ValidationError(
            f"resume at {at.isoformat()} is before the pause at {paused_at.isoformat()}",
            details={"at": at.isoformat(), "paused_at": paused_at.isoformat()},
        )
    active = evolve_trusted(sub, status=_Status.ACTIVE, paused_at=None, resumes_at=None)
    # Past the paid period, billing restarts from the resume: no invoice covers paused time.
    paid = at < sub.current_period.end
    result = Transition(active) if paid else _begin_period(active, at, at)
    event = _event(
        result.subscription,
        EventName.SUBSCRIPTION_RESUMED,
        at,
        period_start=result.subscription.current_period.start.isoformat(),
        period_end=result.subscription.current_period.end.isoformat(),
    )
    return Transition(result.subscription, result.lines, (*result.events, event))


# ---------------------------------------------------------------- payments and dunning


def payment_failed(sub: Subscription, *, at: datetime, policy: DunningPolicy) -> Transition:
    """Record a failed payment: past due with a retry date, or the policy's final action."""
    _require(
        sub,
        "record a failed payment for",
        frozenset({_Status.INCOMPLETE, _Status.ACTIVE, _Status.PAST_DUE, _Status.UNPAID}),
    )
    at = aware(at, "at")
    if not isinstance(policy, DunningPolicy):
        raise ValidationError(f"policy must be a DunningPolicy, not {type(policy).__name__}")
    if sub.status in (_Status.INCOMPLETE, _Status.UNPAID):
        # Neither is retried automatically: incomplete waits to expire, unpaid for the customer.
        event = _event(
            sub, EventName.PAYMENT_FAILED, at, attempt=sub.failed_payments, next_retry_at=None
        )
        return Transition(sub, (), (event,))
    failures = sub.failed_payments + 1
    retry = next_retry_at(policy, failures, at)
    failed = _event(sub, EventName.PAYMENT_FAILED, at, attempt=failures, next_retry_at=_iso(retry))
    updated = evolve_trusted(sub, failed_payments=failures, next_payment_retry_at=retry)
    if retry is not None:
        updated = evolve_trusted(updated, status=_Status.PAST_DUE)
        if sub.status is _Status.PAST_DUE:
            return Transition(updated, (), (failed,))
        past_due = _event(updated, EventName.SUBSCRIPTION_PAST_DUE, at, attempt=failures)
        return Transition(updated, (), (failed, past_due))
    if policy.final_action is FinalAction.UNPAID:
        updated = evolve_trusted(updated, status=_Status.UNPAID)
        return Transition(updated, (), (failed, _event(updated, EventName.SUBSCRIPTION_UNPAID, at)))
    updated = evolve_trusted(
        updated, status=_Status.CANCELED, canceled_at=at, ended_at=at, scheduled_change=None
    )
    gone = _event(
        updated,
        EventName.SUBSCRIPTION_CANCELED,
        at,
        ended_at=at.isoformat(),
        reason="payment_failed",
    )
    return Transition(updated, (), (failed, gone))


def payment_succeeded(sub: Subscription, at: datetime) -> Transition:
    """Record a successful payment: activate, recover from dunning, or just note it."""
    _require(
        sub,
        "record a payment for",
        frozenset(
            {_Status.INCOMPLETE, _Status.TRIALING, _Status.ACTIVE, _Status.PAST_DUE, _Status.UNPAID}
        ),
    )
    at = aware(at, "at")
    paid = _event(sub, EventName.PAYMENT_SUCCEEDED, at)
    if sub.status is _Status.INCOMPLETE:
        active = evolve_trusted(sub, status=_Status.ACTIVE)
        return Transition(active, (), (paid, _event(active, EventName.SUBSCRIPTION_ACTIVATED, at)))
    if sub.status in (_Status.PAST_DUE, _Status.UNPAID):
        # An unpaid subscription did not renew; next_action_at now reports the missed renewals.
        recovered = evolve_trusted(
            sub, status=_Status.ACTIVE, failed_payments=0, next_payment_retry_at=None
        )
        event = _event(
            recovered,
            EventName.PAYMENT_RECOVERED,
            at,
            previous_status=sub.status.value,
            failed_attempts=sub.failed_payments,
        )
        return Transition(recovered, (), (event,))
    return Transition(sub, (), (paid,))


def expire_incomplete(sub: Subscription, at: datetime) -> Transition:
    """Expire a subscription whose first payment never came (after 23 hours, as Stripe)."""
    _require(sub, "expire", frozenset({_Status.INCOMPLETE}))
    at = aware(at, "at")
    deadline = sub.created_at + _INCOMPLETE_EXPIRY
    if at < deadline:
        raise _invalid(sub, "expire", f"it can be paid until {deadline.isoformat()}")
    expired = evolve_trusted(sub, status=_Status.INCOMPLETE_EXPIRED, ended_at=at)
    return Transition(expired, (), (_event(expired, EventName.SUBSCRIPTION_EXPIRED, at),))


# ---------------------------------------------------------------- pending updates


def hold_change(
    sub: Subscription, changed: Transition, *, invoice_id: str, at: datetime
) -> Subscription:
    """Return ``sub`` holding ``changed`` as a pending update until ``invoice_id`` is paid.

    ``changed`` is what :func:`change` returned at ``at``; the update expires at the period
    end or 23 hours later, whichever comes first.
    """
    at = aware(at, "at")
    _no_pending_update(sub, "change")
    target = changed.subscription
    pending = PendingUpdate(
        price=target.price,
        quantity=target.quantity,
        invoice_id=invoice_id,
        changed_at=at,
        expires_at=min(sub.current_period.end, at + PENDING_UPDATE_LIFETIME),
        discount=target.discount,
    )
    return evolve_trusted(sub, pending_update=pending)


def apply_pending_update(sub: Subscription) -> Transition:
    """Apply the pending update as the change it was when made (its invoice is paid)."""
    pending = sub.pending_update
    if pending is None:
        raise _invalid(sub, "apply the pending update of", "it has none")
    waiting = evolve_trusted(sub, pending_update=None)
    made = change(
        waiting,
        price=pending.price,
        quantity=pending.quantity,
        at=pending.changed_at,
        proration_behavior=ProrationBehavior.ALWAYS_INVOICE,
    )
    applied = evolve_trusted(made.subscription, discount=pending.discount)
    return Transition(applied, (), made.events)


def drop_pending_update(sub: Subscription) -> Subscription:
    """Return ``sub`` without its pending update (declined, or expired unpaid)."""
    if sub.pending_update is None:
        raise _invalid(sub, "drop the pending update of", "it has none")
    return evolve_trusted(sub, pending_update=None)


# ---------------------------------------------------------------- scheduling


def next_action_at(sub: Subscription) -> datetime | None:
    """Return the earliest instant time-driven work is due, or None if none ever will be."""
    status = sub.status
    # The billed states first: nearly every subscription a billing run meets is one, and
    # each Enum member lookup on the way (Status.X) costs a metaclass hook in Python 3.11.
    if status in _BILLED and sub.pending_update is None:
        # The usual case, without the lists below: asked three times a renewal.
        end = sub.current_period.end
        retry = sub.next_payment_retry_at
        return end if retry is None or end <= retry else retry
    candidates: list[datetime | None] = []
    if status in _BILLED:
        candidates += [sub.current_period.end, sub.next_payment_retry_at]
    elif status is _Status.INCOMPLETE:
        candidates.append(sub.created_at + _INCOMPLETE_EXPIRY)
    elif status is _Status.TRIALING:
        if sub.trial_reminder_sent_at is None:
            candidates.append(trial_reminder_at(sub))
        candidates.append(sub.current_period.end)
    elif status is _Status.PAUSED:
        candidates.append(sub.resumes_at)
    if sub.pending_update is not None:
        candidates.append(sub.pending_update.expires_at)
    # Unpaid waits for the customer; canceled and incomplete_expired are over.
    due = [instant for instant in candidates if instant is not None]
    return min(due) if due else None
