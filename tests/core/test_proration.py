import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from lumenquest_core.catalog import Price
from lumenquest_core.errors import ValidationError
from lumenquest_core.lines import LineKind
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval, Period
from lumenquest_core.proration import Granularity, change_lines, prorate
from tests.strategies import instants_in, periods


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


JANUARY = Period(utc(2026, 1, 1), utc(2026, 2, 1))
MONTHLY = BillingCycle(Interval.MONTH)


def usd(amount: int) -> Money:
    return Money(amount, "USD")


def test_stripe_example_ten_to_twenty_dollars_half_way():
    """Stripe's documented case: $10 → $20 a month exactly half-way gives −$5.00 and +$10.00."""
    period = Period(utc(2026, 4, 1), utc(2026, 5, 1))
    old = Price("price_10", "plan", "USD", MONTHLY, unit_amount=usd(1000), nickname="Basic")
    new = Price("price_20", "plan", "USD", MONTHLY, unit_amount=usd(2000), nickname="Pro")
    credit, charge = change_lines(
        old_price=old,
        old_quantity=1,
        new_price=new,
        new_quantity=1,
        period=period,
        at=utc(2026, 4, 16),
        subscription_id="sub_1",
    )
    assert (credit.amount, charge.amount) == (usd(-500), usd(1000))
    assert credit.description == "Unused time on Basic"
    assert charge.description == "Remaining time on Pro"
    assert credit.kind is charge.kind is LineKind.PRORATION
    assert credit.proration
    assert credit.period == charge.period == Period(utc(2026, 4, 16), utc(2026, 5, 1))
    assert credit.subscription_id == "sub_1"


def test_quantities_appear_in_the_line_labels():
    old = Price("price_10", "plan", "USD", MONTHLY, unit_amount=usd(1000))
    credit, charge = change_lines(
        old_price=old,
        old_quantity=2,
        new_price=old,
        new_quantity=3,
        period=JANUARY,
        at=utc(2026, 1, 1),
    )
    assert credit.description == "Unused time on 2 × price_10"
    assert (credit.amount, charge.amount) == (usd(-2000), usd(3000))


def test_day_granularity_counts_whole_days_like_kill_bill_and_lago():
    assert prorate(usd(995), JANUARY, Period(utc(2026, 1, 2), JANUARY.end), Granularity.DAY) == usd(
        963
    )
    assert prorate(
        usd(5000), JANUARY, Period(utc(2026, 1, 10), JANUARY.end), Granularity.DAY
    ) == usd(3548)


def test_second_granularity_is_exact_to_the_second():
    half = Period(utc(2026, 1, 16, 12), JANUARY.end)
    assert prorate(usd(3100), JANUARY, half) == usd(1550)


def test_a_portion_outside_the_period_is_refused():
    with pytest.raises(ValidationError, match="outside the period"):
        prorate(usd(100), JANUARY, Period(utc(2025, 12, 31), utc(2026, 1, 2)))


def test_a_period_shorter_than_a_day_cannot_be_prorated_by_day():
    short = Period(utc(2026, 1, 1), utc(2026, 1, 1, 12))
    with pytest.raises(ValidationError, match="shorter than one day"):
        prorate(usd(100), short, short, Granularity.DAY)


def test_a_change_outside_the_period_is_refused():
    price = Price("p", "plan", "USD", MONTHLY, unit_amount=usd(1000))
    with pytest.raises(ValidationError, match="outside the period"):
        change_lines(
            old_price=price,
            old_quantity=1,
            new_price=price,
            new_quantity=1,
            period=JANUARY,
            at=utc(2026, 2, 1),
        )


@st.composite
def partitions(draw: st.DrawFn) -> tuple[Period, list[Period]]:
    period = draw(periods(min_seconds=2))
    seconds = int(period.duration.total_seconds())
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=seconds - 1), max_size=12)))
    bounds = [period.start, *(period.start + timedelta(seconds=c) for c in cuts), period.end]
    return period, [Period(a, b) for a, b in itertools.pairwise(bounds)]


@given(amount=st.integers(min_value=-(10**12), max_value=10**12), partition=partitions())
def test_the_shares_of_any_partition_sum_exactly_to_the_amount(amount, partition):
    period, parts = partition
    total = sum(prorate(usd(amount), period, part).amount for part in parts)
    assert total == amount


@given(amount=st.integers(min_value=-(10**12), max_value=10**12), partition=partitions())
def test_the_day_shares_of_any_partition_sum_exactly_to_the_amount(amount, partition):
    period, parts = partition
    assume(period.end.date() > period.start.date())
    total = sum(prorate(usd(amount), period, part, Granularity.DAY).amount for part in parts)
    assert total == amount


@given(
    data=st.data(), amount=st.integers(min_value=0, max_value=10**10), period=periods(min_seconds=2)
)
def test_proration_is_monotone_and_never_exceeds_the_amount(data, amount, period):
    earlier = data.draw(instants_in(period))
    later = data.draw(instants_in(period))
    earlier, later = min(earlier, later), max(earlier, later)
    from_earlier = prorate(usd(amount), period, Period(earlier, period.end)).amount
    from_later = prorate(usd(amount), period, Period(later, period.end)).amount
    assert 0 <= from_later <= from_earlier <= amount


@given(
    data=st.data(),
    old=st.integers(min_value=0, max_value=10**8),
    new=st.integers(min_value=0, max_value=10**8),
    period=periods(min_seconds=2),
)
def test_an_upgrade_and_the_reverse_downgrade_at_the_same_instant_net_to_zero(
    data, old, new, period
):
    at = data.draw(instants_in(period))
    a = Price("a", "plan", "USD", MONTHLY, unit_amount=usd(old))
    b = Price("b", "plan", "USD", MONTHLY, unit_amount=usd(new))
    up = change_lines(
        old_price=a, old_quantity=1, new_price=b, new_quantity=1, period=period, at=at
    )
    down = change_lines(
        old_price=b, old_quantity=1, new_price=a, new_quantity=1, period=period, at=at
    )
    assert sum(line.amount.amount for line in (*up, *down)) == 0
