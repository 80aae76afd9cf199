"""Instants, billing cycles and half-open billing periods, all in UTC."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import attrs

from lumenquest_core.errors import NaiveDatetime, ValidationError

__all__ = [
    "BillingCycle",
    "Interval",
    "Period",
    "add_cycles",
    "aware",
    "period_at",
    "period_from",
]


def aware(value: datetime, name: str = "datetime") -> datetime:
    """Return ``value`` in UTC, rejecting naive datetimes with a clear error."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime, not {type(value).__name__}")
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None or tz.utcoffset(value) is None:
        raise NaiveDatetime(
            f"{name} {value.isoformat()} has no timezone; pass an aware datetime"
            " such as datetime(2026, 1, 31, tzinfo=UTC)",
            details={"field": name, "value": value.isoformat()},
        )
    return value.astimezone(UTC)


class Interval(enum.StrEnum):
    """The unit of a billing cycle."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


_MONTHS_PER_YEAR = 12
# How many months one interval is worth, as ChartMogul normalises MRR.
_MONTHLY_FACTOR = {
    Interval.DAY: Fraction(12, 365),
    Interval.WEEK: Fraction(12, 52),
    Interval.MONTH: Fraction(1),
    Interval.YEAR: Fraction(12),
}


def _positive_count(_instance: object, _attribute: object, value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValidationError(
            f"a billing cycle count must be a positive int, not {value!r}",
            details={"count": repr(value)},
        )


@attrs.frozen
class BillingCycle:
    """How often a price bills: ``BillingCycle(Interval.MONTH, 3)`` is quarterly."""

    interval: Interval = attrs.field(converter=Interval)
    count: int = attrs.field(default=1, validator=_positive_count)

    @property
    def months(self) -> Fraction:
        """How many months one cycle spans, for normalising amounts to a month."""
        return _MONTHLY_FACTOR[self.interval] * self.count

    def __str__(self) -> str:
        return self.interval.value if self.count == 1 else f"{self.count} {self.interval.value}s"


def _check_period(instance: Period, _attribute: object, end: datetime) -> None:
    if end <= instance.start:
        raise ValidationError(
            f"a period must end after it starts: {instance.start.isoformat()} .. {end.isoformat()}",
            details={"start": instance.start.isoformat(), "end": end.isoformat()},
        )


def _start_converter(value: datetime) -> datetime:
    return aware(value, "period start")


def _end_converter(value: datetime) -> datetime:
    return aware(value, "period end")


@attrs.frozen
class Period:
    """A half-open span of time ``[start, end)`` in UTC."""

    start: datetime = attrs.field(converter=_start_converter)
    end: datetime = attrs.field(converter=_end_converter, validator=_check_period)

    def __contains__(self, at: datetime) -> bool:
        return self.start <= at < self.end

    @property
    def duration(self) -> timedelta:
        """How long the period lasts."""
        return self.end - self.start

    def overlaps(self, other: Period) -> bool:
        """Whether the two periods share any instant."""
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def _unsafe_period(start: datetime, end: datetime) -> Period:
    """Build a Period from UTC bounds already known ordered, skipping validation."""
    period = object.__new__(Period)
    object.__setattr__(period, "start", start)
    object.__setattr__(period, "end", end)
    return period


_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_in_month(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[month - 1]


def _add_months(value: datetime, months: int) -> datetime:
    # dateutil's relativedelta(months=n) semantics (clamp to the month's last day), at a
    # quarter of its cost; tests check the two agree on any anchor and count.
    index = value.month - 1 + months
    year = value.year + index // _MONTHS_PER_YEAR
    month = index % _MONTHS_PER_YEAR + 1
    try:
        return value.replace(
            year=year, month=month, day=min(value.day, _days_in_month(year, month))
        )
    except ValueError:
        raise ValidationError(
            f"{months} months from {value.isoformat()} is outside the supported years",
            details={"value": value.isoformat(), "months": months},
        ) from None


def _shift(anchor: datetime, cycle: BillingCycle, n: int) -> datetime:
    interval = cycle.interval
    if interval is Interval.MONTH:
        return _add_months(anchor, n * cycle.count)
    if interval is Interval.YEAR:
        return _add_months(anchor, n * cycle.count * _MONTHS_PER_YEAR)
    days = n * cycle.count * (7 if interval is Interval.WEEK else 1)
    return anchor + timedelta(days=days)


def add_cycles(anchor: datetime, cycle: BillingCycle, n: int) -> datetime:
    """Return the boundary ``n`` cycles after ``anchor``, computed from the anchor itself.

    Month ends clamp as Stripe's billing anchors do: from Jan 31 the boundaries are
    Feb 28 (29 in a leap year), Mar 31, Apr 30.
    """
    return _shift(aware(anchor, "anchor"), cycle, n)


def _estimate_cycles(anchor: datetime, cycle: BillingCycle, at: datetime) -> int:
    interval = cycle.interval
    if interval in (Interval.MONTH, Interval.YEAR):
        months = (at.year - anchor.year) * _MONTHS_PER_YEAR + at.month - anchor.month
        per_cycle = cycle.count * (_MONTHS_PER_YEAR if interval is Interval.YEAR else 1)
        return months // per_cycle
    days = cycle.count * (7 if interval is Interval.WEEK else 1)
    return (at - anchor) // timedelta(days=days)


def period_at(anchor: datetime, cycle: BillingCycle, at: datetime) -> Period:
    """Return the billing period anchored at ``anchor`` that contains ``at``."""
    anchor = aware(anchor, "anchor")
    at = aware(at, "at")
    n = _estimate_cycles(anchor, cycle, at)
    start = _shift(anchor, cycle, n)
    while start > at:
        n -= 1
        start = _shift(anchor, cycle, n)
    end = _shift(anchor, cycle, n + 1)
    while end <= at:
        n += 1
        start, end = end, _shift(anchor, cycle, n + 1)
    return _unsafe_period(start, end)


def period_from(anchor: datetime, cycle: BillingCycle, start: datetime) -> Period:
    """Return the period that begins at ``start``, a boundary of the anchor's grid."""
    anchor = aware(anchor, "anchor")
    start = aware(start, "start")
    # On the grid the estimate is exact, so one shift confirms it and one finds the end.
    n = _estimate_cycles(anchor, cycle, start)
    if _shift(anchor, cycle, n) != start:
        return period_at(anchor, cycle, start)
    return _unsafe_period(start, _shift(anchor, cycle, n + 1))
