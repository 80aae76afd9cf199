from datetime import UTC, datetime, timedelta, timezone

import pytest
from dateutil.relativedelta import relativedelta
from hypothesis import given
from hypothesis import strategies as st

from lumenquest_core.errors import NaiveDatetime, ValidationError
from lumenquest_core.periods import (
    BillingCycle,
    Interval,
    Period,
    add_cycles,
    aware,
    iso_text,
    period_at,
    period_from,
)
from tests.strategies import cycles, instants

MONTHLY = BillingCycle(Interval.MONTH)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_jan_31_monthly_anchor_clamps_to_month_ends_without_drifting():
    anchor = utc(2026, 1, 31)
    assert [add_cycles(anchor, MONTHLY, n) for n in (1, 2, 3, 4)] == [
        utc(2026, 2, 28),
        utc(2026, 3, 31),
        utc(2026, 4, 30),
        utc(2026, 5, 31),
    ]


def test_a_jan_31_anchor_gives_feb_29_in_a_leap_year():
    assert add_cycles(utc(2028, 1, 31), MONTHLY, 1) == utc(2028, 2, 29)


def test_cycles_of_every_interval():
    anchor = utc(2024, 2, 29, 12)
    assert add_cycles(anchor, BillingCycle(Interval.YEAR), 1) == utc(2025, 2, 28, 12)
    assert add_cycles(anchor, BillingCycle(Interval.WEEK, 2), 1) == anchor + timedelta(weeks=2)
    assert add_cycles(anchor, BillingCycle(Interval.DAY, 3), -1) == anchor - timedelta(days=3)
    assert add_cycles(anchor, BillingCycle(Interval.MONTH, 3), 1) == utc(2024, 5, 29, 12)


def test_billing_cycle_normalises_to_months_and_reads_well():
    assert BillingCycle(Interval.YEAR).months == 12
    assert BillingCycle(Interval.MONTH, 3).months == 3
    assert str(BillingCycle(Interval.MONTH)) == "month"
    assert str(BillingCycle(Interval.WEEK, 2)) == "2 weeks"
    assert BillingCycle("month") == MONTHLY


@pytest.mark.parametrize("count", [0, -1, 1.0, True])
def test_a_cycle_count_must_be_a_positive_int(count):
    with pytest.raises(ValidationError):
        BillingCycle(Interval.MONTH, count)


def test_period_at_finds_the_period_containing_an_instant():
    anchor = utc(2026, 1, 31)
    assert period_at(anchor, MONTHLY, utc(2026, 3, 30)) == Period(
        utc(2026, 2, 28), utc(2026, 3, 31)
    )
    assert period_at(anchor, MONTHLY, utc(2026, 3, 31)) == Period(
        utc(2026, 3, 31), utc(2026, 4, 30)
    )
    assert period_at(anchor, MONTHLY, utc(2025, 3, 30)) == Period(
        utc(2025, 2, 28), utc(2025, 3, 31)
    )


def test_period_is_half_open_and_validated():
    period = Period(utc(2026, 1, 1), utc(2026, 2, 1))
    assert utc(2026, 1, 1) in period
    assert utc(2026, 2, 1) not in period
    assert period.duration == timedelta(days=31)
    assert period.overlaps(Period(utc(2026, 1, 31), utc(2026, 3, 1)))
    assert not period.overlaps(Period(utc(2026, 2, 1), utc(2026, 3, 1)))
    assert str(period) == "[2026-01-01T00:00:00+00:00, 2026-02-01T00:00:00+00:00)"
    with pytest.raises(ValidationError, match="must end after it starts"):
        Period(utc(2026, 2, 1), utc(2026, 2, 1))


def test_naive_datetimes_are_refused_with_a_typed_error():
    with pytest.raises(NaiveDatetime, match="has no timezone") as info:
        Period(datetime(2026, 1, 1), utc(2026, 2, 1))  # noqa: DTZ001
    assert info.value.code == "NAIVE_DATETIME"
    with pytest.raises(NaiveDatetime):
        add_cycles(datetime(2026, 1, 1), MONTHLY, 1)  # noqa: DTZ001
    with pytest.raises(ValidationError, match="must be a datetime"):
        aware("2026-01-01")  # type: ignore[arg-type]


def test_other_timezones_are_converted_to_utc():
    paris = timezone(timedelta(hours=1))
    assert aware(datetime(2026, 1, 1, 1, tzinfo=paris)) == utc(2026, 1, 1)
    assert aware(datetime(2026, 1, 1, 1, tzinfo=paris)).tzinfo is UTC


@given(anchor=instants, cycle=cycles, at=instants)
def test_period_at_contains_the_instant_and_sits_on_the_anchor_grid(anchor, cycle, at):
    period = period_at(anchor, cycle, at)
    assert at in period
    following = period_at(anchor, cycle, period.end)
    assert following.start == period.end


@given(anchor=instants, cycle=cycles, n=st.integers(min_value=-50, max_value=50))
def test_consecutive_periods_never_overlap_or_leave_gaps_and_keep_the_anchor_day(anchor, cycle, n):
    start, end = add_cycles(anchor, cycle, n), add_cycles(anchor, cycle, n + 1)
    assert start < end
    assert period_at(anchor, cycle, start) == Period(start, end)
    if cycle.interval in (Interval.MONTH, Interval.YEAR):
        # The day is the anchor's, or the month's last day when the month is shorter.
        assert start.day == anchor.day or (start + timedelta(days=1)).day == 1
        assert start.time() == anchor.time()


@given(anchor=instants, cycle=cycles, n=st.integers(min_value=-60, max_value=60))
def test_add_cycles_agrees_with_dateutil_relativedelta(anchor, cycle, n):
    """Our month clamp is dateutil's, at a fraction of the cost: the two never disagree."""
    steps = {
        Interval.DAY: relativedelta(days=n * cycle.count),
        Interval.WEEK: relativedelta(weeks=n * cycle.count),
        Interval.MONTH: relativedelta(months=n * cycle.count),
        Interval.YEAR: relativedelta(years=n * cycle.count),
    }
    assert add_cycles(anchor, cycle, n) == anchor + steps[cycle.interval]


def test_a_boundary_outside_the_supported_years_is_a_validation_error():
    with pytest.raises(ValidationError, match="outside the supported years"):
        add_cycles(utc(9999, 12, 1), MONTHLY, 1)


@given(anchor=instants, cycle=cycles, at=instants, on_grid=st.booleans())
def test_period_from_a_start_equals_the_period_at_that_start(anchor, cycle, at, on_grid):
    # period_from takes a shortcut for starts on the anchor's grid and falls back to
    # period_at for any other start: either way the answer is period_at's.
    start = period_at(anchor, cycle, at).start if on_grid else at
    try:
        expected = period_at(anchor, cycle, start)
    except ValidationError:
        return  # a boundary outside the supported years, tested above
    found = period_from(anchor, cycle, start)
    assert found == expected
    if on_grid:
        assert found.start == start


def test_iso_text_prints_as_isoformat_and_remembers_only_utc_instants():
    from lumenquest_core import periods  # noqa: PLC0415 - its one-entry memo

    utc = datetime(2026, 2, 1, 0, 30, tzinfo=UTC)
    paris = datetime(2026, 2, 1, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    assert utc == paris
    assert periods.iso_text(utc) == utc.isoformat() == "2026-02-01T00:30:00+00:00"
    assert periods.iso_text(paris) == paris.isoformat() == "2026-02-01T01:30:00+01:00"
    for minutes in range(1100):
        instant = utc + timedelta(minutes=minutes)
        assert periods.iso_text(instant) == instant.isoformat()
    assert len(periods._ISO_TEXT) <= 1024


@given(anchor=instants, cycle=cycles, at=instants)
def test_renewal_period_is_period_from_with_its_bounds_text_and_shared(anchor, cycle, at):
    from lumenquest_core import periods  # noqa: PLC0415 - its one-entry memo

    end = period_at(anchor, cycle, at).end
    try:
        expected = period_from(anchor, cycle, end)
    except ValidationError:
        return  # a boundary outside the supported years, tested above
    period, start_text, end_text = periods.renewal_period(anchor, cycle, end)
    assert period == expected
    assert (start_text, end_text) == (expected.start.isoformat(), expected.end.isoformat())
    # Subscriptions renewed one after another on the same anchor, cycle and end share one
    # Period object.
    again = periods.renewal_period(anchor, BillingCycle(cycle.interval, cycle.count), end)
    assert again[0] is period


@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
        max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),  # noqa: DTZ001
    )
)
def test_iso_text_is_isoformat(naive: datetime) -> None:
    instant = naive.replace(tzinfo=UTC)
    # Built from remembered parts for UTC: the very text isoformat prints.
    assert iso_text(instant) == instant.isoformat()
    assert iso_text(instant) == instant.isoformat()  # remembered
