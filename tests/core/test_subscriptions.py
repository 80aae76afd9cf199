"""The subscription lifecycle: every operation, its lines and events, and every refusal."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import pytest

from lumenquest_core import subscriptions as subs
from lumenquest_core.catalog import Price, UsageType
from lumenquest_core.coupons import Coupon, CouponDuration
from lumenquest_core.dunning import DunningPolicy, FinalAction
from lumenquest_core.errors import (
    CurrencyMismatch,
    InvalidTransition,
    NaiveDatetime,
    ValidationError,
)
from lumenquest_core.events import EventName
from lumenquest_core.lines import LineKind
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval, Period
from lumenquest_core.proration import ChangeTiming, Granularity, ProrationBehavior
from lumenquest_core.subscriptions import (
    ScheduledChange,
    Subscription,
    SubscriptionStatus,
    Transition,
)

S = SubscriptionStatus
MONTH = BillingCycle(Interval.MONTH)
YEAR = BillingCycle(Interval.YEAR)
T0 = datetime(2026, 1, 31, tzinfo=UTC)
APR = datetime(2026, 4, 1, tzinfo=UTC)
NAIVE = datetime(2026, 4, 1)  # noqa: DTZ001 - the point of the tests that use it


def usd(cents: int) -> Money:
    return Money(cents, "USD")


def price(
    pid: str = "p10",
    cents: int = 1000,
    cycle: BillingCycle = MONTH,
    currency: str = "USD",
    **kw: Any,
) -> Price:
    return Price(pid, "plan", currency, cycle, unit_amount=Money(cents, currency), **kw)


P10 = price("p10", 1000)
P20 = price("p20", 2000)
FREE = price("free", 0)
YEARLY = price("yearly", 10000, YEAR)
METERED = price("meter", 5, usage_type=UsageType.METERED)


def started(p: Price = P10, at: datetime = T0, **kw: Any) -> Transition:
    return subs.start(subscription_id="sub_1", customer_id="cus_1", price=p, at=at, **kw)


def active(p: Price = P10, at: datetime = T0, quantity: int = 1) -> Subscription:
    sub = started(p, at, quantity=quantity).subscription
    return subs.payment_succeeded(sub, at).subscription if sub.status is S.INCOMPLETE else sub


def april(p: Price = P10) -> Subscription:
    """An active subscription in its period [Apr 1, May 1)."""
    return active(p, APR)


def trialing(days: int = 14) -> Subscription:
    return started(trial_days=days).subscription


def names(t: Transition) -> list[EventName]:
    return [e.name for e in t.events]


def in_status(status: SubscriptionStatus) -> Subscription:
    """A subscription brought to ``status`` by transitions, in its period from Apr 1."""
    sub = april()
    unpaid = DunningPolicy(retry_delays=(), final_action=FinalAction.UNPAID)
    at = APR + timedelta(days=1)
    incomplete = started(at=APR).subscription
    builders: dict[SubscriptionStatus, Callable[[], Subscription]] = {
        S.INCOMPLETE: lambda: incomplete,
        S.INCOMPLETE_EXPIRED: lambda: subs.expire_incomplete(incomplete, at).subscription,
        S.TRIALING: lambda: started(at=APR, trial_days=7).subscription,
        S.ACTIVE: lambda: sub,
        S.PAST_DUE: lambda: subs.payment_failed(sub, at=at, policy=DunningPolicy()).subscription,
        S.PAUSED: lambda: subs.pause(sub, at=at).subscription,
        S.UNPAID: lambda: subs.payment_failed(sub, at=at, policy=unpaid).subscription,
        S.CANCELED: lambda: subs.cancel(sub, at=at).subscription,
    }
    return builders[status]()


# ---------------------------------------------------------------- start


def test_start_charges_the_full_first_period_and_waits_for_the_first_payment() -> None:
    t = started()
    sub = t.subscription
    assert sub.status is S.INCOMPLETE
    assert sub.anchor == T0
    assert sub.created_at == T0
    assert sub.current_period == Period(T0, datetime(2026, 2, 28, tzinfo=UTC))
    (line,) = t.lines
    assert line.kind is LineKind.SUBSCRIPTION
    assert line.amount == usd(1000)
    assert line.period == sub.current_period
    assert line.price_id == "p10"
    assert line.subscription_id == "sub_1"
    assert names(t) == [EventName.SUBSCRIPTION_CREATED]
    assert t.events[0].data["status"] == "incomplete"


def test_start_bills_the_quantity() -> None:
    t = started(quantity=3)
    assert t.lines[0].amount == usd(3000)
    assert t.lines[0].quantity == 3
    assert t.lines[0].description == "3 × p10"


def test_a_free_price_is_active_at_once() -> None:
    t = started(FREE)
    assert t.subscription.status is S.ACTIVE
    assert t.lines[0].amount == usd(0)


def test_zero_quantity_is_allowed_and_owes_nothing() -> None:
    assert started(quantity=0).subscription.status is S.ACTIVE


def test_a_metered_price_bills_nothing_in_advance_and_is_active() -> None:
    t = started(METERED)
    assert t.lines == ()
    assert t.subscription.status is S.ACTIVE


def test_a_coupon_is_stored_as_a_discount_from_the_start() -> None:
    coupon = Coupon("c10", percent_off=Decimal(10), duration=CouponDuration.FOREVER)
    t = started(coupon=coupon)
    assert t.subscription.discount is not None
    assert t.subscription.discount.start == T0
    assert t.subscription.status is S.INCOMPLETE
    assert t.events[0].data["coupon_id"] == "c10"


def test_a_full_discount_leaves_nothing_due_so_the_start_is_active() -> None:
    coupon = Coupon("free_month", percent_off=Decimal(100))
    assert started(coupon=coupon).subscription.status is S.ACTIVE


def test_an_amount_off_coupon_in_another_currency_is_refused() -> None:
    coupon = Coupon("eur5", amount_off=Money(500, "EUR"))
    with pytest.raises(CurrencyMismatch):
        started(coupon=coupon)


def test_an_amount_off_coupon_in_the_same_currency_is_accepted() -> None:
    coupon = Coupon("usd5", amount_off=usd(500))
    assert started(coupon=coupon).subscription.status is S.INCOMPLETE


def test_the_price_trial_days_start_a_trial() -> None:
    t = started(price("trial", 1000, trial_days=14))
    sub = t.subscription
    end = T0 + timedelta(days=14)
    assert sub.status is S.TRIALING
    assert sub.trial_end == end
    assert sub.anchor == end
    assert sub.current_period == Period(T0, end)
    assert t.lines == ()


def test_zero_trial_days_override_the_price_trial() -> None:
    assert (
        started(price("trial", 1000, trial_days=14), trial_days=0).subscription.status
        is S.INCOMPLETE
    )


def test_an_explicit_trial_end_overrides_trial_days() -> None:
    end = T0 + timedelta(days=3, hours=5)
    sub = started(trial_days=30, trial_end=end).subscription
    assert sub.trial_end == end
    assert sub.current_period.end == end


def test_a_future_anchor_gives_a_prorated_first_period() -> None:
    """Like Stripe's billing_cycle_anchor: 17 of January's 31 days of $31 is $17."""
    at = datetime(2026, 1, 15, tzinfo=UTC)
    anchor = datetime(2026, 2, 1, tzinfo=UTC)
    t = started(price("p31", 3100), at, anchor=anchor)
    sub = t.subscription
    assert sub.anchor == anchor
    assert sub.current_period == Period(at, anchor)
    (line,) = t.lines
    assert line.kind is LineKind.PRORATION
    assert line.amount == usd(1700)
    assert line.period == Period(at, anchor)
    assert sub.status is S.INCOMPLETE
    renewed = subs.renew(subs.payment_succeeded(sub, at).subscription, anchor)
    assert renewed.subscription.current_period == Period(anchor, datetime(2026, 3, 1, tzinfo=UTC))
    assert renewed.lines[0].amount == usd(3100)


def test_a_future_anchor_can_be_prorated_by_whole_days() -> None:
    at = datetime(2026, 1, 10, 18, tzinfo=UTC)
    anchor = datetime(2026, 2, 1, tzinfo=UTC)
    t = started(price("p31", 3100), at, anchor=anchor, granularity=Granularity.DAY)
    assert t.lines[0].amount == usd(2200)


def test_an_anchor_equal_to_the_start_is_a_plain_start() -> None:
    t = started(anchor=T0)
    assert t.subscription.anchor == T0
    assert t.lines[0].kind is LineKind.SUBSCRIPTION


def test_a_metered_price_with_a_future_anchor_bills_nothing() -> None:
    t = started(METERED, anchor=T0 + timedelta(days=5))
    assert t.lines == ()
    assert t.subscription.status is S.ACTIVE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"anchor": T0 - timedelta(days=1)}, "before the start"),
        ({"anchor": T0 + timedelta(days=40)}, "less than one month"),
        ({"anchor": T0 + timedelta(days=5), "trial_days": 7}, "trial"),
        ({"trial_end": T0}, "trial_end"),
        ({"trial_days": -1}, "trial_days"),
        ({"trial_days": True}, "trial_days"),
        ({"quantity": -1}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"granularity": "hour"}, "granularity"),
        ({"coupon": "SAVE10"}, "Coupon"),
    ],
    ids=str,
)
def test_bad_start_arguments_raise_validation_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        started(**kwargs)


def test_an_archived_price_cannot_be_subscribed_to() -> None:
    with pytest.raises(ValidationError, match="archived"):
        started(price("old", 1000, active=False))


def test_the_price_must_be_a_price() -> None:
    with pytest.raises(ValidationError, match="Price"):
        started("p10")  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["subscription_id", "customer_id"])
def test_ids_must_be_non_empty(field: str) -> None:
    kwargs: dict[str, Any] = {"subscription_id": "s", "customer_id": "c", field: " "}
    with pytest.raises(ValidationError, match=field):
        subs.start(price=P10, at=T0, **kwargs)


def test_naive_datetimes_raise_a_typed_error() -> None:
    with pytest.raises(NaiveDatetime):
        started(at=NAIVE)
    with pytest.raises(NaiveDatetime):
        started(anchor=NAIVE)
    with pytest.raises(NaiveDatetime):
        subs.renew(april(), NAIVE)
    with pytest.raises(NaiveDatetime):
        subs.change(april(), price=P20, at=NAIVE)


def test_events_carry_json_ready_data() -> None:
    sub = april()
    transitions = [
        started(coupon=Coupon("c", percent_off=10)),
        subs.change(sub, price=P20, at=APR + timedelta(days=3)),
        subs.renew(sub, datetime(2026, 5, 1, tzinfo=UTC)),
        subs.cancel(sub, at=APR + timedelta(days=3), prorate=True),
        subs.payment_failed(sub, at=APR, policy=DunningPolicy()),
    ]
    for t in transitions:
        for event in t.events:
            json.dumps(dict(event.data))
            assert event.subject_id == "sub_1"
            assert event.customer_id == "cus_1"


# ---------------------------------------------------------------- trial


def test_a_trial_converts_at_its_end() -> None:
    sub = trialing()
    end = sub.current_period.end
    t = subs.end_trial(sub, end)
    new = t.subscription
    assert new.status is S.ACTIVE
    assert new.anchor == end
    assert new.trial_end == end
    assert new.current_period == Period(end, datetime(2026, 3, 14, tzinfo=UTC))
    (line,) = t.lines
    assert line.kind is LineKind.SUBSCRIPTION
    assert line.amount == usd(1000)
    assert names(t) == [EventName.TRIAL_ENDED]
    assert t.events[0].data["early"] is False


def test_ending_a_trial_early_anchors_the_cycle_then() -> None:
    sub = trialing()
    early = T0 + timedelta(days=2)
    t = subs.end_trial(sub, early)
    assert t.subscription.anchor == early
    assert t.subscription.trial_end == early
    assert t.subscription.current_period.start == early
    assert t.events[0].data["early"] is True


def test_a_late_billing_run_still_starts_the_paid_period_at_the_trial_end() -> None:
    sub = trialing()
    end = sub.current_period.end
    t = subs.end_trial(sub, end + timedelta(hours=2))
    assert t.subscription.current_period.start == end


def test_a_trial_set_to_cancel_ends_canceled_without_a_charge() -> None:
    sub = subs.cancel(trialing(), at=T0 + timedelta(days=1), at_period_end=True).subscription
    end = sub.current_period.end
    t = subs.end_trial(sub, end)
    assert t.subscription.status is S.CANCELED
    assert t.subscription.ended_at == end
    assert t.lines == ()
    assert names(t) == [EventName.TRIAL_ENDED, EventName.SUBSCRIPTION_CANCELED]


def test_ending_early_a_trial_set_to_cancel_moves_the_cancel_to_the_first_period_end() -> None:
    sub = subs.cancel(trialing(), at=T0 + timedelta(days=1), at_period_end=True).subscription
    t = subs.end_trial(sub, T0 + timedelta(days=2))
    assert t.subscription.status is S.ACTIVE
    assert t.subscription.cancel_at_period_end


def test_a_change_scheduled_during_the_trial_applies_when_it_ends() -> None:
    sub = subs.schedule_change(trialing(), price=YEARLY, at=T0).subscription
    end = sub.current_period.end
    t = subs.end_trial(sub, end)
    assert t.subscription.price == YEARLY
    assert t.subscription.scheduled_change is None
    assert t.subscription.current_period == Period(end, datetime(2027, 2, 14, tzinfo=UTC))
    assert t.lines[0].amount == usd(10000)
    assert names(t) == [EventName.TRIAL_ENDED, EventName.SUBSCRIPTION_CHANGED]


def test_end_trial_is_refused_when_not_trialing() -> None:
    with pytest.raises(InvalidTransition, match="trial"):
        subs.end_trial(april(), APR)


def test_end_trial_before_the_trial_started_is_refused() -> None:
    with pytest.raises(ValidationError, match="before the current period"):
        subs.end_trial(trialing(), T0 - timedelta(seconds=1))


def test_the_trial_reminder_is_three_days_before_the_end() -> None:
    sub = trialing()
    assert subs.trial_reminder_at(sub) == sub.current_period.end - timedelta(days=3)
    assert subs.trial_reminder_at(sub, days=7) == sub.current_period.end - timedelta(days=7)


def test_a_trial_shorter_than_the_notice_is_reminded_at_once() -> None:
    assert subs.trial_reminder_at(trialing(days=2)) == T0


def test_there_is_no_trial_reminder_without_a_trial() -> None:
    assert subs.trial_reminder_at(april()) is None


def test_the_reminder_notice_must_be_a_non_negative_int() -> None:
    with pytest.raises(ValidationError, match="days"):
        subs.trial_reminder_at(trialing(), days=-1)


def test_trial_will_end_emits_the_reminder_once() -> None:
    sub = trialing()
    at = T0 + timedelta(days=11)
    t = subs.trial_will_end(sub, at)
    assert names(t) == [EventName.TRIAL_WILL_END]
    assert t.subscription.trial_reminder_sent_at == at
    assert t.subscription.status is S.TRIALING
    with pytest.raises(InvalidTransition, match="already sent"):
        subs.trial_will_end(t.subscription, at)


def test_trial_will_end_is_refused_when_not_trialing() -> None:
    with pytest.raises(InvalidTransition):
        subs.trial_will_end(april(), APR)


# ---------------------------------------------------------------- renewal


def test_a_jan_31_anchor_renews_on_feb_28_mar_31_and_apr_30_at_full_price() -> None:
    sub = active()
    starts = []
    for _ in range(3):
        t = subs.renew(sub, sub.current_period.end)
        sub = t.subscription
        starts.append(sub.current_period.start)
        assert [line.amount for line in t.lines] == [usd(1000)]
        assert t.lines[0].period == sub.current_period
        assert names(t) == [EventName.SUBSCRIPTION_RENEWED]
    assert starts == [datetime(2026, m, d, tzinfo=UTC) for m, d in ((2, 28), (3, 31), (4, 30))]
    assert sub.current_period.end == datetime(2026, 5, 31, tzinfo=UTC)


def test_renewal_before_the_period_end_is_not_due() -> None:
    sub = april()
    with pytest.raises(InvalidTransition, match="runs until") as info:
        subs.renew(sub, sub.current_period.end - timedelta(seconds=1))
    assert info.value.details["operation"] == "renew"
    assert info.value.details["status"] == "active"


def test_a_past_due_subscription_keeps_renewing() -> None:
    sub = in_status(S.PAST_DUE)
    t = subs.renew(sub, sub.current_period.end)
    assert t.subscription.status is S.PAST_DUE
    assert len(t.lines) == 1


@pytest.mark.parametrize(
    "status", [S.INCOMPLETE, S.INCOMPLETE_EXPIRED, S.TRIALING, S.PAUSED, S.UNPAID, S.CANCELED]
)
def test_renew_is_refused_outside_active_and_past_due(status: SubscriptionStatus) -> None:
    sub = in_status(status)
    with pytest.raises(InvalidTransition, match=f"renew a subscription that is {status.value}"):
        subs.renew(sub, datetime(2030, 1, 1, tzinfo=UTC))


def test_a_cancel_at_period_end_takes_effect_at_renewal() -> None:
    sub = subs.cancel(april(), at=APR, at_period_end=True).subscription
    end = sub.current_period.end
    t = subs.renew(sub, end)
    assert t.subscription.status is S.CANCELED
    assert t.subscription.ended_at == end
    assert t.lines == ()
    assert names(t) == [EventName.SUBSCRIPTION_CANCELED]


def test_a_downgrade_waits_for_the_period_end() -> None:
    sub = active(P20, APR)
    t = subs.schedule_change(sub, price=P10, at=APR + timedelta(days=10))
    assert t.lines == ()
    assert t.subscription.price == P20
    assert t.subscription.scheduled_change == ScheduledChange(P10, 1, sub.current_period.end)
    assert names(t) == [EventName.CHANGE_SCHEDULED]
    assert t.events[0].data["direction"] == "downgrade"
    renewed = subs.renew(t.subscription, sub.current_period.end)
    assert renewed.subscription.price == P10
    assert renewed.subscription.scheduled_change is None
    assert renewed.subscription.anchor == APR
    assert [line.amount for line in renewed.lines] == [usd(1000)]
    assert names(renewed) == [EventName.SUBSCRIPTION_CHANGED, EventName.SUBSCRIPTION_RENEWED]


def test_a_scheduled_cycle_change_re_anchors_at_the_old_period_end() -> None:
    sub = subs.schedule_change(april(), price=YEARLY, at=APR).subscription
    end = sub.current_period.end
    t = subs.renew(sub, end)
    assert t.subscription.anchor == end
    assert t.subscription.current_period == Period(end, datetime(2027, 5, 1, tzinfo=UTC))
    assert t.lines[0].amount == usd(10000)


def test_a_metered_renewal_has_no_advance_line() -> None:
    sub = active(METERED, APR)
    t = subs.renew(sub, sub.current_period.end)
    assert t.lines == ()
    assert t.events[0].data["amount"] is None


def test_discount_used_counts_down_and_drops_an_exhausted_discount() -> None:
    once = started(coupon=Coupon("once", percent_off=10)).subscription
    assert subs.discount_used(once).discount is None
    twice = Coupon("twice", percent_off=10, duration="repeating", duration_in_cycles=2)
    sub = subs.discount_used(started(coupon=twice).subscription)
    assert sub.discount is not None
    assert sub.discount.invoices_left == 1
    forever = started(coupon=Coupon("f", percent_off=10, duration="forever")).subscription
    assert subs.discount_used(forever) == forever
    plain = april()
    assert subs.discount_used(plain) is plain


# ---------------------------------------------------------------- immediate changes


def test_stripe_upgrade_half_way_credits_5_and_charges_10() -> None:
    sub = april()
    half = APR + (sub.current_period.end - APR) / 2
    t = subs.change(sub, price=P20, at=half)
    credit, charge = t.lines
    assert credit.amount == usd(-500)
    assert credit.description == "Unused time on p10"
    assert charge.amount == usd(1000)
    assert charge.description == "Remaining time on p20"
    assert t.subscription.price == P20
    assert t.subscription.anchor == APR
    assert t.subscription.current_period == sub.current_period
    event = t.events[0]
    assert event.name is EventName.SUBSCRIPTION_CHANGED
    assert event.data["direction"] == "upgrade"
    assert event.data["from_price_id"] == "p10"
    assert event.data["to_price_id"] == "p20"
    assert event.data["timing"] == "immediate"


def test_a_quantity_change_prorates_the_difference() -> None:
    sub = april()
    half = APR + (sub.current_period.end - APR) / 2
    t = subs.change(sub, quantity=3, at=half)
    assert [line.amount for line in t.lines] == [usd(-500), usd(1500)]
    assert t.subscription.quantity == 3
    assert t.events[0].data["to_quantity"] == 3


def test_always_invoice_gives_the_same_lines_as_create_prorations() -> None:
    sub = april()
    at = APR + timedelta(days=9)
    now = subs.change(sub, price=P20, at=at, proration_behavior=ProrationBehavior.ALWAYS_INVOICE)
    later = subs.change(sub, price=P20, at=at)
    assert now.lines == later.lines
    assert now.events[0].data["proration_behavior"] == "always_invoice"


def test_proration_behavior_none_swaps_without_lines() -> None:
    t = subs.change(april(), price=P20, at=APR + timedelta(days=9), proration_behavior="none")  # type: ignore[arg-type]
    assert t.lines == ()
    assert t.subscription.price == P20


def test_a_change_while_trialing_is_a_plain_swap() -> None:
    t = subs.change(trialing(), price=P20, quantity=2, at=T0 + timedelta(days=1))
    assert t.lines == ()
    assert t.subscription.price == P20
    assert t.subscription.quantity == 2
    assert t.subscription.status is S.TRIALING


def test_a_cycle_change_resets_the_anchor_and_charges_a_full_new_period() -> None:
    sub = april()
    half = APR + (sub.current_period.end - APR) / 2
    t = subs.change(sub, price=YEARLY, at=half)
    new = t.subscription
    assert new.anchor == half
    assert new.current_period == Period(half, half.replace(year=2027))
    credit, charge = t.lines
    assert credit.kind is LineKind.PRORATION
    assert credit.amount == usd(-500)
    assert charge.kind is LineKind.SUBSCRIPTION
    assert charge.amount == usd(10000)
    assert charge.period == new.current_period


def test_a_cycle_change_without_proration_still_charges_the_new_period() -> None:
    t = subs.change(april(), price=YEARLY, at=APR + timedelta(days=3), proration_behavior="none")  # type: ignore[arg-type]
    assert [line.kind for line in t.lines] == [LineKind.SUBSCRIPTION]


def test_a_cycle_change_at_the_period_start_credits_the_whole_period() -> None:
    t = subs.change(april(), price=YEARLY, at=APR)
    assert t.lines[0].amount == usd(-1000)


def test_a_cycle_change_from_a_free_price_has_no_zero_credit() -> None:
    t = subs.change(active(FREE, APR), price=YEARLY, at=APR + timedelta(days=3))
    assert [line.kind for line in t.lines] == [LineKind.SUBSCRIPTION]


def test_a_change_clears_a_scheduled_change() -> None:
    sub = subs.schedule_change(april(), price=FREE, at=APR).subscription
    assert subs.change(sub, price=P20, at=APR).subscription.scheduled_change is None


def test_moving_to_a_metered_price_only_credits_the_unused_time() -> None:
    t = subs.change(april(), price=METERED, at=APR + timedelta(days=15))
    assert [line.amount.amount < 0 for line in t.lines] == [True]


def test_moving_from_a_metered_price_only_charges_the_remaining_time() -> None:
    t = subs.change(active(METERED, APR), price=P10, at=APR + timedelta(days=15))
    assert [line.amount.amount > 0 for line in t.lines] == [True]


def test_a_change_in_a_prorated_first_period_credits_no_more_than_was_charged() -> None:
    at = datetime(2026, 1, 15, tzinfo=UTC)
    t0 = started(price("p31", 3100), at, anchor=datetime(2026, 2, 1, tzinfo=UTC))
    sub = subs.payment_succeeded(t0.subscription, at).subscription
    t = subs.change(sub, price=price("p62", 6200), at=at)
    assert t.lines[0].amount == -t0.lines[0].amount
    assert t.lines[1].amount == usd(3400)


def test_a_quantity_change_on_an_archived_price_is_allowed() -> None:
    old = price("old", 1000, active=False)
    sub = attrs.evolve(april(), price=old)
    assert subs.change(sub, quantity=2, at=APR).subscription.quantity == 2


def test_a_change_to_an_archived_price_is_refused() -> None:
    with pytest.raises(ValidationError, match="archived"):
        subs.change(april(), price=price("old", 1000, active=False), at=APR)


def test_a_change_to_another_currency_is_refused() -> None:
    with pytest.raises(CurrencyMismatch):
        subs.change(april(), price=price("eur", 1000, currency="EUR"), at=APR)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a new price"),
        ({"price": P10}, "changes nothing"),
        ({"quantity": 1}, "changes nothing"),
        ({"quantity": -2}, "quantity"),
        ({"price": P20, "proration_behavior": "sometimes"}, "proration_behavior"),
        ({"price": P20, "granularity": "minute"}, "granularity"),
    ],
    ids=str,
)
def test_bad_change_arguments_raise_validation_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        subs.change(april(), at=APR, **kwargs)


def test_a_change_before_the_current_period_is_refused() -> None:
    with pytest.raises(ValidationError, match="before the current period"):
        subs.change(april(), price=P20, at=APR - timedelta(seconds=1))


def test_a_change_after_the_period_ended_needs_a_renewal_first() -> None:
    sub = april()
    with pytest.raises(InvalidTransition, match="renew it first"):
        subs.change(sub, price=P20, at=sub.current_period.end)


@pytest.mark.parametrize(
    "status", [S.INCOMPLETE, S.INCOMPLETE_EXPIRED, S.PAUSED, S.UNPAID, S.CANCELED]
)
def test_change_is_refused_outside_active_past_due_and_trialing(
    status: SubscriptionStatus,
) -> None:
    with pytest.raises(InvalidTransition, match="change"):
        subs.change(in_status(status), price=P20, at=APR + timedelta(days=2))
    with pytest.raises(InvalidTransition, match="schedule a change"):
        subs.schedule_change(in_status(status), price=P20, at=APR + timedelta(days=2))


def test_a_change_cannot_be_scheduled_on_a_subscription_set_to_cancel() -> None:
    sub = subs.cancel(april(), at=APR, at_period_end=True).subscription
    with pytest.raises(InvalidTransition, match="cancel at the period end"):
        subs.schedule_change(sub, price=P20, at=APR)


def test_a_scheduled_change_can_be_canceled() -> None:
    sub = subs.schedule_change(april(), quantity=4, at=APR).subscription
    t = subs.cancel_scheduled_change(sub, APR + timedelta(days=1))
    assert t.subscription.scheduled_change is None
    assert names(t) == [EventName.SCHEDULED_CHANGE_CANCELED]
    assert t.events[0].data["to_quantity"] == 4


def test_canceling_a_scheduled_change_needs_one() -> None:
    with pytest.raises(InvalidTransition, match="no change is scheduled"):
        subs.cancel_scheduled_change(april(), APR)


def test_the_default_timing_upgrades_now_and_downgrades_at_period_end() -> None:
    assert subs.default_timing(P10, 1, P20, 1) is ChangeTiming.IMMEDIATE
    assert subs.default_timing(P20, 1, P10, 1) is ChangeTiming.PERIOD_END
    assert subs.default_timing(P10, 2, P20, 1) is ChangeTiming.PERIOD_END
    assert subs.default_timing(P10, 1, YEARLY, 1) is ChangeTiming.PERIOD_END  # $8.33 a month


# ---------------------------------------------------------------- cancellation


def test_cancel_now_ends_the_subscription_without_a_credit() -> None:
    at = APR + timedelta(days=5)
    t = subs.cancel(april(), at=at)
    sub = t.subscription
    assert sub.status is S.CANCELED
    assert sub.canceled_at == at
    assert sub.ended_at == at
    assert t.lines == ()
    assert names(t) == [EventName.SUBSCRIPTION_CANCELED]
    assert t.events[0].data["credit"] is None


def test_cancel_with_proration_credits_the_unused_time() -> None:
    sub = april()
    half = APR + (sub.current_period.end - APR) / 2
    t = subs.cancel(sub, at=half, prorate=True)
    (line,) = t.lines
    assert line.kind is LineKind.PRORATION
    assert line.amount == usd(-500)
    assert line.period == Period(half, sub.current_period.end)
    assert line.description == "Unused time on p10"
    assert t.events[0].data["credit"] == {"amount": 500, "currency": "USD"}


def test_cancel_with_proration_by_day_counts_whole_days() -> None:
    sub = active(price("p50", 5000, BillingCycle(Interval.MONTH)), datetime(2026, 1, 1, tzinfo=UTC))
    t = subs.cancel(sub, at=datetime(2026, 1, 10, 15, tzinfo=UTC), prorate=True, granularity="day")  # type: ignore[arg-type]
    assert t.lines[0].amount == usd(-3548)  # 22 of 31 days of $50


def test_no_credit_while_trialing() -> None:
    assert subs.cancel(trialing(), at=T0 + timedelta(days=1), prorate=True).lines == ()


def test_no_credit_once_the_period_is_over() -> None:
    sub = april()
    assert subs.cancel(sub, at=sub.current_period.end, prorate=True).lines == ()


def test_no_zero_credit_for_a_free_price() -> None:
    assert subs.cancel(active(FREE, APR), at=APR + timedelta(days=1), prorate=True).lines == ()


def test_no_credit_for_a_metered_price() -> None:
    assert subs.cancel(active(METERED, APR), at=APR + timedelta(days=1), prorate=True).lines == ()


def test_cancel_at_period_end_keeps_the_subscription_running() -> None:
    at = APR + timedelta(days=5)
    t = subs.cancel(april(), at=at, at_period_end=True)
    sub = t.subscription
    assert sub.status is S.ACTIVE
    assert sub.cancel_at_period_end
    assert sub.canceled_at == at
    assert sub.ended_at is None
    assert names(t) == [EventName.CANCELLATION_SCHEDULED]
    assert t.events[0].data["cancel_at"] == sub.current_period.end.isoformat()


def test_a_second_cancel_at_period_end_is_refused() -> None:
    sub = subs.cancel(april(), at=APR, at_period_end=True).subscription
    with pytest.raises(InvalidTransition, match="already scheduled"):
        subs.cancel(sub, at=APR, at_period_end=True)


@pytest.mark.parametrize("status", [S.INCOMPLETE, S.PAUSED, S.UNPAID])
def test_only_running_subscriptions_cancel_at_period_end(status: SubscriptionStatus) -> None:
    with pytest.raises(InvalidTransition, match="cancel at period end"):
        subs.cancel(in_status(status), at=APR + timedelta(days=2), at_period_end=True)


@pytest.mark.parametrize("status", [S.INCOMPLETE, S.TRIALING, S.PAST_DUE, S.PAUSED, S.UNPAID])
def test_cancel_now_is_allowed_from_every_live_state(status: SubscriptionStatus) -> None:
    at = APR + timedelta(days=2)
    t = subs.cancel(in_status(status), at=at, prorate=True)
    assert t.subscription.status is S.CANCELED
    assert t.subscription.next_payment_retry_at is None
    assert t.events[0].data["previous_status"] == status.value


@pytest.mark.parametrize("status", [S.CANCELED, S.INCOMPLETE_EXPIRED])
def test_an_ended_subscription_cannot_be_canceled(status: SubscriptionStatus) -> None:
    with pytest.raises(InvalidTransition) as info:
        subs.cancel(in_status(status), at=APR + timedelta(days=2))
    assert info.value.details == {
        "status": status.value,
        "operation": "cancel",
        "subscription_id": "sub_1",
    }
    assert f"cannot cancel a subscription that is {status.value}" in info.value.message


def test_a_scheduled_cancel_can_be_undone() -> None:
    sub = subs.cancel(april(), at=APR, at_period_end=True).subscription
    t = subs.undo_cancel(sub, APR + timedelta(days=1))
    assert not t.subscription.cancel_at_period_end
    assert t.subscription.canceled_at is None
    assert names(t) == [EventName.CANCELLATION_UNDONE]


def test_undo_cancel_needs_a_scheduled_cancel() -> None:
    with pytest.raises(InvalidTransition, match="no cancellation is scheduled"):
        subs.undo_cancel(april(), APR)


def test_undo_cancel_is_refused_once_canceled() -> None:
    sub = subs.cancel(april(), at=APR, at_period_end=True).subscription
    ended = subs.renew(sub, sub.current_period.end).subscription
    with pytest.raises(InvalidTransition):
        subs.undo_cancel(ended, sub.current_period.end)


# ---------------------------------------------------------------- pause and resume


def test_pause_stops_renewals_without_a_credit() -> None:
    at = APR + timedelta(days=10)
    back = at + timedelta(days=30)
    t = subs.pause(april(), at=at, resumes_at=back)
    sub = t.subscription
    assert sub.status is S.PAUSED
    assert sub.paused_at == at
    assert sub.resumes_at == back
    assert t.lines == ()
    assert names(t) == [EventName.SUBSCRIPTION_PAUSED]
    with pytest.raises(InvalidTransition):
        subs.renew(sub, sub.current_period.end)


def test_resuming_inside_the_paid_period_bills_nothing() -> None:
    sub = subs.pause(april(), at=APR + timedelta(days=1)).subscription
    t = subs.resume(sub, APR + timedelta(days=2))
    assert t.subscription.status is S.ACTIVE
    assert t.subscription.current_period == sub.current_period
    assert t.subscription.paused_at is None
    assert t.lines == ()
    assert names(t) == [EventName.SUBSCRIPTION_RESUMED]


def test_resuming_after_the_paid_period_starts_a_new_one_then() -> None:
    sub = subs.pause(april(), at=APR + timedelta(days=1)).subscription
    back = datetime(2026, 7, 17, 8, tzinfo=UTC)
    t = subs.resume(sub, back)
    new = t.subscription
    assert new.anchor == back
    assert new.current_period == Period(back, datetime(2026, 8, 17, 8, tzinfo=UTC))
    assert [line.period for line in t.lines] == [new.current_period]
    assert t.lines[0].amount == usd(1000)


def test_resuming_late_applies_a_scheduled_change() -> None:
    sub = subs.schedule_change(april(), price=P20, at=APR).subscription
    sub = subs.pause(sub, at=APR + timedelta(days=1)).subscription
    t = subs.resume(sub, datetime(2026, 6, 1, tzinfo=UTC))
    assert t.subscription.price == P20
    assert t.lines[0].amount == usd(2000)
    assert names(t) == [EventName.SUBSCRIPTION_CHANGED, EventName.SUBSCRIPTION_RESUMED]


def test_resume_before_the_pause_is_refused() -> None:
    sub = subs.pause(april(), at=APR + timedelta(days=3)).subscription
    with pytest.raises(ValidationError, match="before the pause"):
        subs.resume(sub, APR + timedelta(days=2))


def test_resumes_at_must_follow_the_pause() -> None:
    with pytest.raises(ValidationError, match="resumes_at"):
        subs.pause(april(), at=APR, resumes_at=APR)


def test_a_subscription_set_to_cancel_cannot_be_paused() -> None:
    sub = subs.cancel(april(), at=APR, at_period_end=True).subscription
    with pytest.raises(InvalidTransition, match="pause"):
        subs.pause(sub, at=APR)


@pytest.mark.parametrize("status", [S.TRIALING, S.PAST_DUE, S.PAUSED, S.CANCELED])
def test_only_an_active_subscription_can_be_paused(status: SubscriptionStatus) -> None:
    with pytest.raises(InvalidTransition, match="pause"):
        subs.pause(in_status(status), at=APR + timedelta(days=2))


def test_only_a_paused_subscription_can_be_resumed() -> None:
    with pytest.raises(InvalidTransition, match="resume"):
        subs.resume(april(), APR)


# ---------------------------------------------------------------- payments and dunning


def test_a_failed_first_payment_leaves_the_subscription_incomplete() -> None:
    sub = started(at=APR).subscription
    t = subs.payment_failed(sub, at=APR, policy=DunningPolicy())
    assert t.subscription == sub
    assert names(t) == [EventName.PAYMENT_FAILED]
    assert t.events[0].data["next_retry_at"] is None


def test_a_failed_renewal_payment_makes_the_subscription_past_due() -> None:
    at = APR + timedelta(hours=1)
    t = subs.payment_failed(april(), at=at, policy=DunningPolicy())
    sub = t.subscription
    assert sub.status is S.PAST_DUE
    assert sub.failed_payments == 1
    assert sub.next_payment_retry_at == at + timedelta(days=3)
    assert names(t) == [EventName.PAYMENT_FAILED, EventName.SUBSCRIPTION_PAST_DUE]
    assert t.events[0].data["next_retry_at"] == (at + timedelta(days=3)).isoformat()


def run_dunning(policy: DunningPolicy) -> tuple[Subscription, list[Transition]]:
    sub = april()
    at = APR
    transitions = []
    while sub.status in (S.ACTIVE, S.PAST_DUE):
        t = subs.payment_failed(sub, at=at, policy=policy)
        transitions.append(t)
        sub = t.subscription
        at = sub.next_payment_retry_at or at
    return sub, transitions


def test_dunning_retries_on_days_3_8_and_15_then_cancels() -> None:
    sub, transitions = run_dunning(DunningPolicy())
    retries = [t.subscription.next_payment_retry_at for t in transitions]
    assert retries == [APR + timedelta(days=d) for d in (3, 8, 15)] + [None]
    assert sub.status is S.CANCELED
    assert sub.ended_at == APR + timedelta(days=15)
    assert sub.failed_payments == 4
    assert names(transitions[1]) == [EventName.PAYMENT_FAILED]
    assert names(transitions[-1]) == [EventName.PAYMENT_FAILED, EventName.SUBSCRIPTION_CANCELED]


def test_dunning_can_end_in_unpaid() -> None:
    sub, transitions = run_dunning(DunningPolicy(final_action=FinalAction.UNPAID))
    assert sub.status is S.UNPAID
    assert sub.next_payment_retry_at is None
    assert names(transitions[-1]) == [EventName.PAYMENT_FAILED, EventName.SUBSCRIPTION_UNPAID]
    assert subs.next_action_at(sub) is None


def test_a_failed_payment_of_an_unpaid_subscription_changes_nothing() -> None:
    sub = in_status(S.UNPAID)
    t = subs.payment_failed(sub, at=APR + timedelta(days=9), policy=DunningPolicy())
    assert t.subscription == sub
    assert names(t) == [EventName.PAYMENT_FAILED]


@pytest.mark.parametrize("status", [S.TRIALING, S.PAUSED, S.CANCELED, S.INCOMPLETE_EXPIRED])
def test_payment_failed_is_refused_where_nothing_is_collected(status: SubscriptionStatus) -> None:
    with pytest.raises(InvalidTransition, match="failed payment"):
        subs.payment_failed(in_status(status), at=APR + timedelta(days=2), policy=DunningPolicy())


def test_payment_failed_needs_a_policy() -> None:
    with pytest.raises(ValidationError, match="DunningPolicy"):
        subs.payment_failed(april(), at=APR, policy="default")  # type: ignore[arg-type]


def test_the_first_payment_activates_an_incomplete_subscription() -> None:
    t = subs.payment_succeeded(started().subscription, T0)
    assert t.subscription.status is S.ACTIVE
    assert names(t) == [EventName.PAYMENT_SUCCEEDED, EventName.SUBSCRIPTION_ACTIVATED]


@pytest.mark.parametrize("status", [S.PAST_DUE, S.UNPAID])
def test_a_payment_recovers_a_subscription_in_dunning(status: SubscriptionStatus) -> None:
    t = subs.payment_succeeded(in_status(status), APR + timedelta(days=3))
    sub = t.subscription
    assert sub.status is S.ACTIVE
    assert sub.failed_payments == 0
    assert sub.next_payment_retry_at is None
    assert names(t) == [EventName.PAYMENT_RECOVERED]
    assert t.events[0].data["previous_status"] == status.value


@pytest.mark.parametrize("status", [S.ACTIVE, S.TRIALING])
def test_a_payment_on_a_healthy_subscription_is_only_recorded(status: SubscriptionStatus) -> None:
    sub = in_status(status)
    t = subs.payment_succeeded(sub, APR + timedelta(days=3))
    assert t.subscription == sub
    assert names(t) == [EventName.PAYMENT_SUCCEEDED]


@pytest.mark.parametrize("status", [S.PAUSED, S.CANCELED, S.INCOMPLETE_EXPIRED])
def test_payment_succeeded_is_refused_on_ended_or_paused_subscriptions(
    status: SubscriptionStatus,
) -> None:
    with pytest.raises(InvalidTransition, match="record a payment"):
        subs.payment_succeeded(in_status(status), APR + timedelta(days=3))


def test_an_unpaid_first_invoice_expires_after_23_hours() -> None:
    sub = started(at=APR).subscription
    with pytest.raises(InvalidTransition, match="can be paid until"):
        subs.expire_incomplete(sub, APR + timedelta(hours=22, minutes=59))
    t = subs.expire_incomplete(sub, APR + timedelta(hours=23))
    assert t.subscription.status is S.INCOMPLETE_EXPIRED
    assert t.subscription.ended_at == APR + timedelta(hours=23)
    assert names(t) == [EventName.SUBSCRIPTION_EXPIRED]


def test_only_an_incomplete_subscription_expires() -> None:
    with pytest.raises(InvalidTransition, match="expire"):
        subs.expire_incomplete(april(), APR + timedelta(days=2))


# ---------------------------------------------------------------- next action


def test_next_action_of_each_state() -> None:
    end = datetime(2026, 5, 1, tzinfo=UTC)
    assert subs.next_action_at(in_status(S.INCOMPLETE)) == APR + timedelta(hours=23)
    assert subs.next_action_at(in_status(S.ACTIVE)) == end
    assert subs.next_action_at(in_status(S.PAST_DUE)) == APR + timedelta(days=4)
    assert subs.next_action_at(in_status(S.PAUSED)) is None
    for status in (S.UNPAID, S.CANCELED, S.INCOMPLETE_EXPIRED):
        assert subs.next_action_at(in_status(status)) is None


def test_next_action_of_a_past_due_subscription_is_its_renewal_if_sooner() -> None:
    sub = attrs.evolve(in_status(S.PAST_DUE), next_payment_retry_at=None)
    assert subs.next_action_at(sub) == sub.current_period.end


def test_next_action_of_a_paused_subscription_is_its_resume_date() -> None:
    back = APR + timedelta(days=40)
    sub = subs.pause(april(), at=APR, resumes_at=back).subscription
    assert subs.next_action_at(sub) == back


def test_next_action_of_a_trial_is_the_reminder_then_the_end() -> None:
    sub = trialing()
    end = sub.current_period.end
    assert subs.next_action_at(sub) == end - timedelta(days=3)
    reminded = subs.trial_will_end(sub, end - timedelta(days=3)).subscription
    assert subs.next_action_at(reminded) == end


def test_next_action_of_a_billed_subscription_is_the_sooner_of_its_renewal_and_retry() -> None:
    # The billed states' short path must agree with the general one it skips.
    sub = in_status(S.PAST_DUE)
    end = sub.current_period.end
    later = attrs.evolve(sub, next_payment_retry_at=end + timedelta(days=1))
    same = attrs.evolve(sub, next_payment_retry_at=end)
    assert subs.next_action_at(later) == end
    assert subs.next_action_at(same) == end
    assert subs.next_action_at(sub) == sub.next_payment_retry_at < end
