"""Clocks: a controllable one for tests and demos, and the real one."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from lumenquest_core.errors import ValidationError
from lumenquest_core.periods import aware

__all__ = ["SystemClock", "TestClock"]


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> datetime:
        """Return the current instant in UTC."""
        return datetime.now(UTC)


class TestClock:
    """A clock that only moves when told to.

    ``advance`` only moves forward (a negative step raises ValidationError), so code
    under test never sees time run backwards by accident; ``set`` jumps to any instant,
    earlier ones included, because rewinding is sometimes exactly what a test means.
    Naive datetimes are rejected everywhere.
    """

    __test__ = False  # a helper, not a test class for pytest to collect

    def __init__(self, now: datetime | None = None) -> None:
        start = datetime.now(UTC).replace(microsecond=0) if now is None else now
        self._now = aware(start, "now")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """Return the clock's current instant, in UTC."""
        return self._now

    def set(self, now: datetime) -> datetime:
        """Jump to ``now`` (forward or backward) and return it in UTC."""
        moved = aware(now, "now")
        with self._lock:
            self._now = moved
        return moved

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**kwargs)``; return the new instant."""
        if delta is not None and kwargs:
            raise ValidationError("advance takes a timedelta or keywords, not both")
        step = delta if delta is not None else timedelta(**kwargs)
        if not isinstance(step, timedelta):
            raise ValidationError(f"advance needs a timedelta, not {type(step).__name__}")
        if step < timedelta(0):
            raise ValidationError(
                "a TestClock never moves backwards with advance; use set() to rewind",
                details={"delta_seconds": step.total_seconds()},
            )
        with self._lock:
            self._now += step
            return self._now
