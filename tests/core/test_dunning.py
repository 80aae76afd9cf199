"""Dunning policy: retry dates and validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lumenquest_core.dunning import DunningPolicy, FinalAction, next_retry_at, retry_schedule
from lumenquest_core.errors import NaiveDatetime, ValidationError

DAY0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def days(n: int) -> timedelta:
    return timedelta(days=n)


def test_default_policy_retries_after_3_5_and_7_days_then_cancels() -> None:
    policy = DunningPolicy()
    assert policy.retry_delays == (days(3), days(5), days(7))
    assert policy.final_action is FinalAction.CANCEL
    assert policy.max_failures == 4


def test_retry_schedule_counts_each_delay_from_the_previous_failure() -> None:
    assert retry_schedule(DunningPolicy(), DAY0) == (
        DAY0 + days(3),
        DAY0 + days(8),
        DAY0 + days(15),
    )


def test_next_retry_follows_the_attempt_number() -> None:
    policy = DunningPolicy()
    assert next_retry_at(policy, 1, DAY0) == DAY0 + days(3)
    assert next_retry_at(policy, 2, DAY0 + days(3)) == DAY0 + days(8)
    assert next_retry_at(policy, 3, DAY0 + days(8)) == DAY0 + days(15)


def test_retries_are_exhausted_after_the_last_delay() -> None:
    assert next_retry_at(DunningPolicy(), 4, DAY0 + days(15)) is None


def test_a_late_retry_pushes_the_next_one_back() -> None:
    late = DAY0 + days(4)
    assert next_retry_at(DunningPolicy(), 2, late) == late + days(5)


def test_a_policy_without_retries_has_an_empty_schedule() -> None:
    policy = DunningPolicy(retry_delays=(), final_action=FinalAction.UNPAID)
    assert retry_schedule(policy, DAY0) == ()
    assert next_retry_at(policy, 1, DAY0) is None
    assert policy.final_action is FinalAction.UNPAID


def test_final_action_accepts_its_wire_name() -> None:
    assert DunningPolicy(final_action="unpaid").final_action is FinalAction.UNPAID  # type: ignore[arg-type]


def test_a_list_of_delays_becomes_a_tuple() -> None:
    assert DunningPolicy(retry_delays=[days(1)]).retry_delays == (days(1),)  # type: ignore[arg-type]


@pytest.mark.parametrize("delays", [(days(0),), (days(-1),), (3,), "3 days", None], ids=repr)
def test_non_positive_or_non_timedelta_delays_are_refused(delays: object) -> None:
    with pytest.raises(ValidationError):
        DunningPolicy(retry_delays=delays)  # type: ignore[arg-type]


def test_an_unknown_final_action_is_refused() -> None:
    with pytest.raises(ValidationError, match="final_action"):
        DunningPolicy(final_action="shrug")  # type: ignore[arg-type]


@pytest.mark.parametrize("attempts", [0, -1, True, 1.0], ids=repr)
def test_failed_attempts_must_be_a_positive_int(attempts: object) -> None:
    with pytest.raises(ValidationError, match="failed_attempts"):
        next_retry_at(DunningPolicy(), attempts, DAY0)  # type: ignore[arg-type]


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 3, 1)  # noqa: DTZ001
    with pytest.raises(NaiveDatetime):
        next_retry_at(DunningPolicy(), 1, naive)
    with pytest.raises(NaiveDatetime):
        retry_schedule(DunningPolicy(), naive)
