"""Properties of the subscription lifecycle, over every state and operation."""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lumenquest_core import subscriptions as subs
from lumenquest_core.dunning import DunningPolicy, FinalAction
from lumenquest_core.errors import InvalidTransition
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval, Period, add_cycles
from lumenquest_core.proration import Granularity, ProrationBehavior
from lumenquest_core.subscriptions import (
    ScheduledChange,
    Subscription,
    SubscriptionStatus,
    Transition,
)
from tests.strategies import instants, prices

S = SubscriptionStatus
LIVE = frozenset(S) - {S.CANCELED, S.INCOMPLETE_EXPIRED}
small_cycles = st.builds(
    BillingCycle,
    interval=st.sampled_from(list(Interval)),
    count=st.integers(min_value=1, max_value=3),
)
quantities = st.integers(min_value=0, max_value=50)
granularities = st.sampled_from(list(Granularity))
policies = st.builds(
    DunningPolicy,
    retry_delays=st.lists(
        st.integers(min_value=1, max_value=30).map(lambda d: timedelta(days=d)), max_size=4
    ).map(tuple),
    final_action=st.sampled_from(list(FinalAction)),
)


def seconds(draw: st.DrawFn, up_to: timedelta) -> timedelta:
    """A whole number of seconds in [0, up_to)."""
    return timedelta(seconds=draw(st.integers(0, max(0, int(up_to.total_seconds()) - 1))))


@st.composite
def subscriptions(draw: st.DrawFn, status: SubscriptionStatus) -> Subscription:
    """A consistent subscription in ``status``, as the transitions would have left it."""
    price = draw(prices(cycle=draw(small_cycles), price_id="price_old"))
    begin = draw(instants)
    fields: dict[str, Any] = {
        "anchor": begin,
        "current_period": Period(begin, add_cycles(begin, price.cycle, 1)),
    }
    if status is S.TRIALING:
        trial_end = begin + timedelta(days=draw(st.integers(1, 30)))
        fields |= {"anchor": trial_end, "current_period": Period(begin, trial_end)}
        fields["trial_end"] = trial_end
        fields["trial_reminder_sent_at"] = draw(st.none() | st.just(begin))
    if status in (S.TRIALING, S.ACTIVE, S.PAST_DUE):
        fields["cancel_at_period_end"] = draw(st.booleans())
        if not fields["cancel_at_period_end"] and draw(st.booleans()):
            target = draw(prices(cycle=draw(small_cycles), price_id="price_next"))
            end = fields["current_period"].end
            fields["scheduled_change"] = ScheduledChange(target, draw(quantities), end)
    if status is S.PAST_DUE:
        fields["failed_payments"] = draw(st.integers(1, 3))
        fields["next_payment_retry_at"] = begin + timedelta(days=draw(st.integers(1, 7)))
    if status is S.UNPAID:
        fields["failed_payments"] = 4
    if status is S.PAUSED:
        fields["paused_at"] = begin
        fields["resumes_at"] = draw(st.none() | st.just(begin + timedelta(days=30)))
    if status in (S.CANCELED, S.INCOMPLETE_EXPIRED):
        fields |= {"canceled_at": begin, "ended_at": begin}
    return Subscription(
        id="sub_p",
        customer_id="cus_p",
        price=price,
        quantity=draw(quantities),
        status=status,
        created_at=begin,
        **fields,
    )


Op = Callable[[Subscription, datetime], Transition]


@st.composite
def operations(draw: st.DrawFn, name: str, sub: Subscription) -> Op:
    """Operation ``name`` with well-formed arguments drawn for ``sub``."""
    new_price = prices(currency=sub.currency, cycle=draw(small_cycles), price_id="price_new")
    other_quantity = quantities.filter(lambda q: q != sub.quantity)
    if name in ("change", "schedule_change"):
        price, quantity = draw(
            st.one_of(
                st.tuples(new_price, st.none() | quantities),
                st.tuples(st.none(), other_quantity),
            )
        )
        if name == "schedule_change":
            return lambda sub, at: subs.schedule_change(sub, price=price, quantity=quantity, at=at)
        behavior = draw(st.sampled_from(list(ProrationBehavior)))
        granularity = draw(granularities)
        return lambda sub, at: subs.change(
            sub,
            price=price,
            quantity=quantity,
            at=at,
            proration_behavior=behavior,
            granularity=granularity,
        )
    if name == "cancel":
        at_end, prorate, granularity = draw(st.tuples(st.booleans(), st.booleans(), granularities))
        return lambda sub, at: subs.cancel(
            sub, at=at, at_period_end=at_end, prorate=prorate, granularity=granularity
        )
    if name == "pause":
        later = draw(st.none() | st.integers(1, 90).map(lambda d: timedelta(days=d)))
        return lambda sub, at: subs.pause(
            sub, at=at, resumes_at=None if later is None else at + later
        )
    if name == "payment_failed":
        policy = draw(policies)
        return lambda sub, at: subs.payment_failed(sub, at=at, policy=policy)
    simple: Op = getattr(subs, name)
    return simple


OPERATIONS = [
    "end_trial",
    "trial_will_end",
    "renew",
    "change",
    "schedule_change",
    "cancel_scheduled_change",
    "cancel",
    "undo_cancel",
    "pause",
    "resume",
    "payment_failed",
    "payment_succeeded",
    "expire_incomplete",
]


def check(t: Transition, before: Subscription) -> None:
    """Invariants every transition result keeps."""
    sub = t.subscription
    assert sub.status in S
    assert sub.id == before.id
    assert sub.current_period.start < sub.current_period.end
    for line in t.lines:
        assert line.amount.currency == sub.currency
        assert line.subscription_id == sub.id
    for domain_event in t.events:
        assert domain_event.subject_id == sub.id
        json.dumps(dict(domain_event.data))
    if sub.status not in LIVE:
        assert subs.next_action_at(sub) is None


@pytest.mark.parametrize("name", OPERATIONS)
@pytest.mark.parametrize("status", list(S))
@settings(max_examples=12)
@given(data=st.data())
def test_every_operation_in_every_state_transitions_or_refuses(
    status: SubscriptionStatus, name: str, data: st.DataObject
) -> None:
    """A well-formed call either gives a valid transition or raises InvalidTransition."""
    sub = data.draw(subscriptions(status))
    op = data.draw(operations(name, sub))
    at = sub.current_period.start + data.draw(
        st.integers(0, 2 * int(sub.current_period.duration.total_seconds())).map(
            lambda s: timedelta(seconds=s)
        )
    )
    refusal: InvalidTransition | None = None
    try:
        t = op(sub, at)
    except InvalidTransition as error:
        refusal = error
    if refusal is not None:
        event("refused")
        assert refusal.details["status"] == status.value
        assert refusal.details["operation"]
        assert status.value in refusal.message
        return
    event("transitioned")
    check(t, sub)
    action = subs.next_action_at(t.subscription)
    assert action is None or action.tzinfo is not None


def total(lines: Any) -> Money:
    return sum((line.amount for line in lines), Money(0, "USD"))


@settings(max_examples=150)
@given(data=st.data())
def test_an_upgrade_and_the_reverse_downgrade_at_the_same_instant_net_to_zero(
    data: st.DataObject,
) -> None:
    sub = data.draw(subscriptions(S.ACTIVE))
    other = data.draw(prices(cycle=sub.cycle, price_id="price_new"))
    quantity = data.draw(quantities)
    granularity = data.draw(granularities)
    at = sub.current_period.start + seconds(data.draw, sub.current_period.duration)
    sub = attrs.evolve(sub, cancel_at_period_end=False)
    there = subs.change(sub, price=other, quantity=quantity, at=at, granularity=granularity)
    back = subs.change(
        there.subscription, price=sub.price, quantity=sub.quantity, at=at, granularity=granularity
    )
    assert total(there.lines + back.lines) == Money(0, "USD")
    assert back.subscription.price == sub.price
    assert back.subscription.current_period == sub.current_period


def _clamped_day(anchor: datetime, moment: datetime) -> int:
    return min(anchor.day, calendar.monthrange(moment.year, moment.month)[1])


@settings(max_examples=150)
@given(data=st.data())
def test_renewals_give_consecutive_periods_on_the_anchor_day(data: st.DataObject) -> None:
    """Periods never overlap or leave gaps, and keep the anchor (month ends clamped)."""
    price = data.draw(prices(cycle=data.draw(small_cycles)))
    at = data.draw(instants)
    anchor = None
    if data.draw(st.booleans()):
        # A future anchor less than one cycle away, as Stripe's billing_cycle_anchor.
        anchor = at + seconds(data.draw, add_cycles(at, price.cycle, 1) - at)
    t = subs.start(subscription_id="s", customer_id="c", price=price, at=at, anchor=anchor)
    sub = subs.payment_succeeded(t.subscription, at).subscription
    fixed = sub.anchor
    # A future anchor starts the first full period; otherwise it starts the first period.
    skip = 1 if sub.current_period.start == fixed else 0
    periods = [sub.current_period]
    for n in range(data.draw(st.integers(1, 14))):
        t = subs.renew(sub, sub.current_period.end)
        sub = t.subscription
        assert sub.anchor == fixed
        period = sub.current_period
        assert period.start == periods[-1].end  # no gap, no overlap
        assert period.start == add_cycles(fixed, price.cycle, n + skip)
        assert period.start.time() == fixed.time()
        if price.cycle.interval in (Interval.MONTH, Interval.YEAR):
            assert period.start.day == _clamped_day(fixed, period.start)
        assert [line.amount for line in t.lines] == [price.amount_for(sub.quantity)]
        assert t.lines[0].period == period
        periods.append(period)


@settings(max_examples=200)
@given(data=st.data())
def test_a_proration_credit_never_exceeds_what_the_period_was_charged(
    data: st.DataObject,
) -> None:
    price = data.draw(prices(cycle=data.draw(small_cycles), price_id="price_a"))
    at = data.draw(instants)
    anchor = None
    if data.draw(st.booleans()):
        cycle_span = add_cycles(at, price.cycle, 1) - at
        anchor = at + timedelta(seconds=1) + seconds(data.draw, cycle_span - timedelta(seconds=1))
    # Credits are bounded by charges counted in the same unit; a host picks one granularity.
    granularity = data.draw(granularities)
    start = subs.start(
        subscription_id="s",
        customer_id="c",
        price=price,
        at=at,
        anchor=anchor,
        granularity=granularity,
    )
    sub = subs.payment_succeeded(start.subscription, at).subscription
    charged = total(start.lines)
    if data.draw(st.booleans()):
        renewed = subs.renew(sub, sub.current_period.end)
        sub, charged, at = renewed.subscription, total(renewed.lines), sub.current_period.end
    for step in range(data.draw(st.integers(0, 3))):
        at += seconds(data.draw, sub.current_period.end - at)
        target = data.draw(prices(cycle=data.draw(small_cycles), price_id=f"price_{step}"))
        t = subs.change(
            sub, price=target, quantity=data.draw(quantities), at=at, granularity=granularity
        )
        credits = [line for line in t.lines if line.description.startswith("Unused")]
        assert all(-line.amount <= charged for line in credits)
        charges = [line for line in t.lines if not line.description.startswith("Unused")]
        sub, charged = t.subscription, total(charges)
    at += seconds(data.draw, sub.current_period.end - at)
    final = subs.cancel(sub, at=at, prorate=True, granularity=granularity)
    assert all(Money(0, "USD") < -line.amount <= charged for line in final.lines)
