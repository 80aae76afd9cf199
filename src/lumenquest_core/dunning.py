"""Dunning: when a failed payment is retried, and what happens when the retries run out."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

import attrs

from lumenquest_core.errors import ValidationError
from lumenquest_core.periods import aware

__all__ = ["DunningPolicy", "FinalAction", "next_retry_at", "retry_schedule"]


class FinalAction(enum.StrEnum):
    """What happens to a subscription once the last payment retry has failed."""

    CANCEL = "cancel"  # the subscription ends
    UNPAID = "unpaid"  # it stays in place, unpaid, and is no longer retried


_DEFAULT_DELAYS = (timedelta(days=3), timedelta(days=5), timedelta(days=7))


def _delays(value: object) -> tuple[timedelta, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list):
        raise ValidationError(
            "retry_delays must be a tuple of timedeltas", details={"retry_delays": repr(value)}
        )
    delays = tuple(value)
    for delay in delays:
        if not isinstance(delay, timedelta) or delay <= timedelta(0):
            raise ValidationError(
                f"every retry delay must be a positive timedelta, not {delay!r}",
                details={"retry_delays": [repr(d) for d in delays]},
            )
    return delays


def _final_action(value: Any) -> FinalAction:
    try:
        return FinalAction(value)
    except ValueError:
        raise ValidationError(
            f"final_action must be one of {[a.value for a in FinalAction]}, not {value!r}",
            details={"final_action": repr(value)},
        ) from None


@attrs.frozen
class DunningPolicy:
    """Retry a failed payment after each delay in turn, then apply ``final_action``.

    The default retries 3, 5 and 7 days after the previous failure: a failure on day 0
    is retried on days 3, 8 and 15, and if the day-15 retry fails the subscription is canceled.
    An empty ``retry_delays`` applies the final action on the first failure.
    """

    retry_delays: tuple[timedelta, ...] = attrs.field(default=_DEFAULT_DELAYS, converter=_delays)
    final_action: FinalAction = attrs.field(default=FinalAction.CANCEL, converter=_final_action)

    @property
    def max_failures(self) -> int:
        """How many failed attempts the policy tolerates before its final action."""
        return len(self.retry_delays) + 1


def next_retry_at(
    policy: DunningPolicy, failed_attempts: int, last_failed_at: datetime
) -> datetime | None:
    """Return when to retry after ``failed_attempts`` failures, or None once retries run out."""
    if type(failed_attempts) is not int or failed_attempts < 1:
        raise ValidationError(
            f"failed_attempts must be a positive int, not {failed_attempts!r}",
            details={"failed_attempts": repr(failed_attempts)},
        )
    last_failed_at = aware(last_failed_at, "last_failed_at")
    if failed_attempts > len(policy.retry_delays):
        return None
    # Each delay counts from the previous failure, so a late retry pushes the next one back.
    return last_failed_at + policy.retry_delays[failed_attempts - 1]


def retry_schedule(policy: DunningPolicy, first_failed_at: datetime) -> tuple[datetime, ...]:
    """Return every retry date after a first failure, assuming each retry fails on time."""
    at = aware(first_failed_at, "first_failed_at")
    schedule: list[datetime] = []
    for delay in policy.retry_delays:
        at += delay
        schedule.append(at)
    return tuple(schedule)
