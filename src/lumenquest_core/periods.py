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
    "iso_text",
    "period_at",
    "period_from",
    "renewal_period",
    "trusted_period",
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


# isoformat costs a couple of thousand instructions (C printf underneath), and a billing
# run prints the same few period bounds for every subscription renewed on them.
_ISO_TEXT: dict[datetime, str] = {}


def iso_text(instant: datetime) -> str:
    """Return ``instant.isoformat()``, remembered for plain UTC datetimes."""
    # Equal instants in other zones print differently: only UTC ones are remembered.
    if instant.tzinfo is not UTC or type(instant) is not datetime:
        return instant.isoformat()
    text = _ISO_TEXT.get(instant)
    if text is None:
        if len(_ISO_TEXT) >= 1024:
            _ISO_TEXT.clear()  # bounded: a long run meets ever new instants
        text = _ISO_TEXT[instant] = _utc_text(instant)
    return text


# The parts of a UTC instant's ISO text, for _utc_text: isoformat costs about 12,000
# instructions (C printf, and the offset asked of the tzinfo and printed), and
# subscriptions with their own anchors (each due at its own instant) miss the memo above
# three times a renewal. Dates and microseconds repeat across instants; both bounded.
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))
_DATE_TEXT: dict[int, str] = {}  # "2026-02-01T" by proleptic ordinal
_MICROSECOND_TEXT: dict[int, str] = {}  # ".100000" by microsecond (never 0)
_PARTS_KEPT = 1024


def _utc_text(instant: datetime) -> str:
    """Return ``instant.isoformat()`` for a plain datetime in UTC, from remembered parts."""
    day = instant.toordinal()
    try:
        date = _DATE_TEXT[day]
    except KeyError:
        if len(_DATE_TEXT) >= _PARTS_KEPT:
            _DATE_TEXT.clear()
        date = _DATE_TEXT[day] = instant.date().isoformat() + "T"
    # Joined by an f-string of strings: one allocation, no format spec parsed.
    hour, minute = _TWO_DIGITS[instant.hour], _TWO_DIGITS[instant.minute]
    second = _TWO_DIGITS[instant.second]
    microsecond = instant.microsecond
    if not microsecond:
        return f"{date}{hour}:{minute}:{second}+00:00"
    try:
        fraction = _MICROSECOND_TEXT[microsecond]
    except KeyError:
        if len(_MICROSECOND_TEXT) >= _PARTS_KEPT:
            _MICROSECOND_TEXT.clear()
        fraction = _MICROSECOND_TEXT[microsecond] = "." + str(microsecond).zfill(6)
    return f"{date}{hour}:{minute}:{second}{fraction}+00:00"


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
        factor = _MONTHLY_FACTOR[self.interval]
        return factor if self.count == 1 else factor * self.count

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


_set_start = Period.__dict__["start"].__set__
_set_end = Period.__dict__["end"].__set__


def _unsafe_period(start: datetime, end: datetime) -> Period:
    """Build a Period from UTC bounds already known ordered, skipping validation."""
    # The slots' own setters skip the frozen __setattr__ and cost less than object's.
    period = object.__new__(Period)
    _set_start(period, start)
    _set_end(period, end)
    return period


# For storage adapters rebuilding a period they stored from a valid one: the same
# function, not a wrapper (a call more per rebuilt invoice line).
trusted_period = _unsafe_period


# Every month has at least 28 days: only the 29th to the 31st ever need clamping.
_SHORTEST_MONTH = 28
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAYS = tuple(timedelta(days=days) for days in range(32))  # a month's length, made once


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
    day = value.day
    if day > _SHORTEST_MONTH:
        day = min(day, _days_in_month(year, month))
    try:
        # Positional: datetime.replace parses keywords far more slowly than positions.
        return value.replace(year, month, day)
    except ValueError:
        raise ValidationError(
            f"{months} months from {value.isoformat()} is outside the supported years",
            details={"value": value.isoformat(), "months": months},
        ) from None


# Module constants: a global lookup is cheaper than an attribute of the enum class.
_MONTH = Interval.MONTH
_YEAR = Interval.YEAR
_WEEK = Interval.WEEK


def _months_per_cycle(cycle: BillingCycle) -> int:
    """Return how many calendar months one cycle spans; 0 for day- and week-based cycles."""
    interval = cycle.interval
    if interval is _MONTH:
        return cycle.count
    if interval is _YEAR:
        return cycle.count * _MONTHS_PER_YEAR
    return 0


def _shift(anchor: datetime, cycle: BillingCycle, n: int) -> datetime:
    per = _months_per_cycle(cycle)
    if per:
        return _add_months(anchor, n * per)
    days = n * cycle.count * (7 if cycle.interval is _WEEK else 1)
    return anchor + timedelta(days=days)


def add_cycles(anchor: datetime, cycle: BillingCycle, n: int) -> datetime:
    """Return the boundary ``n`` cycles after ``anchor``, computed from the anchor itself.

    Month ends clamp as Stripe's billing anchors do: from Jan 31 the boundaries are
    Feb 28 (29 in a leap year), Mar 31, Apr 30.
    """
    return _shift(aware(anchor, "anchor"), cycle, n)


def _estimate_cycles(anchor: datetime, cycle: BillingCycle, at: datetime) -> int:
    per = _months_per_cycle(cycle)
    if per:
        months = (at.year - anchor.year) * _MONTHS_PER_YEAR + at.month - anchor.month
        return months // per
    days = cycle.count * (7 if cycle.interval is _WEEK else 1)
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
    return _period_from(aware(anchor, "anchor"), cycle, aware(start, "start"))


def _period_from(anchor: datetime, cycle: BillingCycle, start: datetime) -> Period:
    """:func:`period_from` for bounds already in UTC (a renewal's anchor and period end)."""
    per = _months_per_cycle(cycle)
    if per:
        # On the grid ``start`` is the anchor moved by whole cycles, with the anchor's day
        # (clamped to the month's length) and time of day. Checking those fields is exact,
        # as both are in UTC, and costs far less than building the boundary to compare.
        months = (start.year - anchor.year) * _MONTHS_PER_YEAR + start.month - anchor.month
        n, off_grid = divmod(months, per)
        day = anchor.day
        if day > _SHORTEST_MONTH:
            day = min(day, _days_in_month(start.year, start.month))
        if (
            off_grid
            or start.day != day
            or start.hour != anchor.hour
            or start.minute != anchor.minute
            or start.second != anchor.second
            or start.microsecond != anchor.microsecond
        ):
            return period_at(anchor, cycle, start)
        if per == 1 and anchor.day <= _SHORTEST_MONTH:  # not ``day``: clamped above
            # Monthly, on a day every month has: the next boundary is the days of start's
            # month later, one addition instead of _add_months' field reads and replace()
            # (subscriptions with their own anchors renew on no shared period).
            return _unsafe_period(start, start + _DAYS[_days_in_month(start.year, start.month)])
        return _unsafe_period(start, _add_months(anchor, (n + 1) * per))
    # On the grid the estimate is exact, so one shift confirms it and one finds the end.
    n = _estimate_cycles(anchor, cycle, start)
    if _shift(anchor, cycle, n) != start:
        return period_at(anchor, cycle, start)
    return _unsafe_period(start, _shift(anchor, cycle, n + 1))


# The last renewal's key and its period after ``end``, with its bounds' text.
# Subscriptions anchored together (calendar-aligned, a bulk import) fall due together and
# are renewed one after another: one computation and one shared Period serve them all
# (_period_from's datetime field reads and replace() are generic calls in Python 3.11:
# 15,500 instructions a renewal). One entry, not a table: subscriptions with their own
# anchors would only fill a table with objects that outlive young collections, and a
# table of 1,024 cost run_due over 10,000 of them a 120 ms full collection.
_last_renewal: tuple[tuple[datetime, datetime, Interval, int], tuple[Period, str, str]] | None = (
    None
)


def renewal_period(anchor: datetime, cycle: BillingCycle, end: datetime) -> tuple[Period, str, str]:
    """Return the period that begins at ``end`` and its bounds' ISO text (bounds in UTC)."""
    global _last_renewal  # noqa: PLW0603 - a one-entry memo, replaced whole (thread-safe)
    key = (anchor, end, cycle.interval, cycle.count)
    last = _last_renewal
    if last is not None and last[0] == key:
        return last[1]
    period = _period_from(anchor, cycle, end)
    found = (period, iso_text(period.start), iso_text(period.end))
    _last_renewal = (key, found)
    return found
