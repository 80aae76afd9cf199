"""The test clock, email senders, cache, rate limiter, lock and ids in memory."""

import io
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from lumenquest_adapters.memory import (
    ConsoleEmailSender,
    MemoryCache,
    MemoryLock,
    MemoryRateLimiter,
    RecordingEmailSender,
    SequentialIds,
    TestClock,
)
from lumenquest_adapters.testing.samples import T0, email_message
from lumenquest_core.errors import NaiveDatetime, ValidationError


def test_the_test_clock_starts_where_it_is_told_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    clock = TestClock(datetime(2026, 1, 1, 1, tzinfo=paris))
    assert clock.now() == T0
    assert clock.now().tzinfo is UTC


def test_the_test_clock_rejects_naive_datetimes() -> None:
    with pytest.raises(NaiveDatetime):
        TestClock(datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(NaiveDatetime):
        TestClock(T0).set(datetime(2026, 1, 1))  # noqa: DTZ001


def test_the_test_clock_advances_by_a_timedelta_or_keywords() -> None:
    clock = TestClock(T0)
    assert clock.advance(timedelta(days=1)) == T0 + timedelta(days=1)
    assert clock.advance(hours=2, minutes=30) == T0 + timedelta(days=1, hours=2, minutes=30)
    assert clock.now() == T0 + timedelta(days=1, hours=2, minutes=30)


def test_the_test_clock_never_advances_backwards() -> None:
    clock = TestClock(T0)
    with pytest.raises(ValidationError, match="set"):
        clock.advance(seconds=-1)
    with pytest.raises(ValidationError):
        clock.advance(timedelta(days=1), hours=1)
    assert clock.now() == T0


def test_the_test_clock_is_rewound_only_by_set() -> None:
    clock = TestClock(T0)
    assert clock.set(T0 - timedelta(days=3)) == T0 - timedelta(days=3)
    assert clock.now() == T0 - timedelta(days=3)


def test_the_recording_sender_keeps_every_message_and_may_echo_it() -> None:
    echo = io.StringIO()
    sender = RecordingEmailSender(echo=echo)
    assert sender.send(email_message("evt_1.welcome")) == "email_fake_1"
    assert [m.message_id for m in sender.sent] == ["evt_1.welcome"]
    assert sender.templates() == ["welcome"]
    assert echo.getvalue() == "email welcome to ada@example.com [email_fake_1]\n"


def test_the_console_sender_prints_one_line_per_email() -> None:
    stream = io.StringIO()
    sender = ConsoleEmailSender(stream)
    sender.send(email_message("evt_1.welcome"))
    sender.send(email_message("evt_2.welcome"))
    assert stream.getvalue().splitlines() == [
        "email welcome to ada@example.com [evt_1.welcome]",
        "email welcome to ada@example.com [evt_2.welcome]",
    ]


def test_the_console_sender_prints_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert ConsoleEmailSender().send(email_message()) == "console_1"
    assert "email welcome to ada@example.com" in capsys.readouterr().out


def test_a_cache_ttl_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        MemoryCache(TestClock(T0)).set("k", "v", ttl_seconds=0)


def test_rate_limit_windows_are_aligned_and_say_when_they_reset() -> None:
    clock = TestClock(T0 + timedelta(seconds=45))
    limiter = MemoryRateLimiter(clock)
    assert limiter.hit("k", limit=5, window_seconds=60).reset_after_seconds == 15
    clock.advance(seconds=15)
    decision = limiter.hit("k", limit=5, window_seconds=60)
    assert (decision.remaining, decision.reset_after_seconds) == (4, 60)


def test_rate_limits_must_be_positive() -> None:
    limiter = MemoryRateLimiter(TestClock(T0))
    with pytest.raises(ValidationError):
        limiter.hit("k", limit=0, window_seconds=60)
    with pytest.raises(ValidationError):
        limiter.hit("k", limit=1, window_seconds=0)


def test_a_lock_taken_over_after_expiry_is_not_released_by_its_first_holder() -> None:
    clock = TestClock(T0)
    lock = MemoryLock(clock)
    with lock.hold("run", ttl_seconds=10) as first:
        assert first
        clock.advance(seconds=11)
        second = lock.hold("run", ttl_seconds=60)
        assert second.__enter__()
    with lock.hold("run", ttl_seconds=60) as third:
        assert not third  # the second holder still has it
    second.__exit__(None, None, None)


def test_a_lock_ttl_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        MemoryLock(TestClock(T0)).hold("run", ttl_seconds=0)


def test_sequential_ids_count_per_prefix() -> None:
    ids = SequentialIds()
    assert [ids("cus"), ids("sub"), ids("cus")] == ["cus_1", "sub_1", "cus_2"]


def test_sequential_ids_are_the_plain_counter_across_thousands() -> None:
    ids = SequentialIds()
    assert [ids("evt") for _ in range(3100)] == [f"evt_{n}" for n in range(1, 3101)]
    assert [ids("cus") for _ in range(1001)][-2:] == ["cus_1000", "cus_1001"]
    ids._formatted["big"] = 999_998  # a prefix far along: past a million
    assert [ids("big") for _ in range(4)] == [f"big_{n}" for n in range(999_999, 1_000_003)]


def test_sequential_ids_run_on_past_each_block_and_never_repeat_across_threads() -> None:
    ids = SequentialIds()
    assert [ids("evt") for _ in range(1500)] == [f"evt_{n}" for n in range(1, 1501)]
    taken: list[list[str]] = [[] for _ in range(4)]

    def take(mine: list[str]) -> None:
        mine.extend(ids("inv") for _ in range(3000))

    threads = [threading.Thread(target=take, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for mine in taken for i in mine]
    assert sorted(every) == sorted(f"inv_{n}" for n in range(1, 12001))
    for mine in taken:  # each thread sees its ids in increasing order
        numbers = [int(i.removeprefix("inv_")) for i in mine]
        assert numbers == sorted(numbers)
