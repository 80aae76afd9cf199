"""Email senders, cache, rate limiter, lock, idempotency store and ids, all in memory."""

from __future__ import annotations

import itertools
import math
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import TextIO

from lumenquest_adapters.memory._clock import SystemClock
from lumenquest_core.errors import Conflict, ValidationError
from lumenquest_core.periods import aware
from lumenquest_core.ports import Clock, EmailMessage, IdempotencyRecord, RateLimitDecision

__all__ = [
    "ConsoleEmailSender",
    "MemoryCache",
    "MemoryIdempotencyStore",
    "MemoryLock",
    "MemoryRateLimiter",
    "RecordingEmailSender",
    "SequentialIds",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _positive(value: int, name: str) -> int:
    if type(value) is not int or value < 1:
        raise ValidationError(
            f"{name} must be a positive int, not {value!r}", details={name: value}
        )
    return value


def _seconds(clock: Clock) -> float:
    return (aware(clock.now(), "clock.now()") - _EPOCH).total_seconds()


class RecordingEmailSender:
    """An ``EmailSender`` that keeps every message in ``sent`` (and may echo them)."""

    def __init__(self, echo: TextIO | None = None) -> None:
        self.sent: list[EmailMessage] = []
        self._echo = echo
        self._lock = threading.Lock()

    def send(self, message: EmailMessage) -> str:
        """Record the message and return a fake provider id."""
        with self._lock:
            self.sent.append(message)
            provider_id = f"email_fake_{len(self.sent)}"
        if self._echo is not None:
            print(f"email {message.template} to {message.to} [{provider_id}]", file=self._echo)
        return provider_id

    def templates(self) -> list[str]:
        """Return the template of every message sent, in order."""
        return [message.template for message in self.sent]


class ConsoleEmailSender:
    """An ``EmailSender`` that prints one line per email (the embedded default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        # Resolved at send time by default, so that a redirected sys.stdout is honoured.
        self._stream = stream
        self._ids = itertools.count(1)

    def send(self, message: EmailMessage) -> str:
        """Print the message's template and recipient; return a console id."""
        provider_id = f"console_{next(self._ids)}"
        stream = self._stream if self._stream is not None else sys.stdout
        print(
            f"email {message.template} to {message.to} [{message.message_id}]",
            file=stream,
            flush=True,
        )
        return provider_id


class MemoryCache:
    """A ``Cache`` in a dict, expiring entries against ``clock``."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        """Return the cached value, if present and unexpired."""
        now = _seconds(self._clock)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[1] <= now:
                del self._entries[key]
                return None
            return entry[0]

    def set(self, key: str, value: str, *, ttl_seconds: int) -> None:
        """Cache ``value`` for ``ttl_seconds``."""
        expires = _seconds(self._clock) + _positive(ttl_seconds, "ttl_seconds")
        with self._lock:
            self._entries[key] = (value, expires)

    def delete(self, *keys: str) -> None:
        """Forget the keys (missing ones are ignored)."""
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)


class MemoryRateLimiter:
    """A ``RateLimiter`` counting hits in fixed windows aligned to the epoch."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._windows: dict[tuple[str, int], tuple[int, int]] = {}  # → (window index, hits)
        self._lock = threading.Lock()

    def hit(self, key: str, *, limit: int, window_seconds: int) -> RateLimitDecision:
        """Count one hit; it is allowed while the window's hits stay within ``limit``."""
        _positive(limit, "limit")
        _positive(window_seconds, "window_seconds")
        now = _seconds(self._clock)
        window = math.floor(now / window_seconds)
        with self._lock:
            index, hits = self._windows.get((key, window_seconds), (window, 0))
            if index != window:
                hits = 0
            hits += 1  # denied hits count too, as Redis INCR does
            self._windows[(key, window_seconds)] = (window, hits)
        reset_after = max(1, math.ceil((window + 1) * window_seconds - now))
        return RateLimitDecision(
            allowed=hits <= limit,
            limit=limit,
            remaining=max(0, limit - hits),
            reset_after_seconds=reset_after,
        )


class MemoryLock:
    """A ``Lock`` for one process: non-blocking, expiring after its ttl against ``clock``."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._held: dict[str, tuple[object, float]] = {}  # name → (owner token, expires)
        self._lock = threading.Lock()

    def hold(self, name: str, *, ttl_seconds: int) -> AbstractContextManager[bool]:
        """Hold ``name`` for the block if it is free; the value says whether it was."""
        _positive(ttl_seconds, "ttl_seconds")
        return self._hold(name, ttl_seconds)

    @contextmanager
    def _hold(self, name: str, ttl_seconds: int) -> Iterator[bool]:
        token = object()
        now = _seconds(self._clock)
        with self._lock:
            current = self._held.get(name)
            acquired = current is None or current[1] <= now
            if acquired:
                self._held[name] = (token, now + ttl_seconds)
        try:
            yield acquired
        finally:
            if acquired:
                with self._lock:
                    # After expiry another holder may own it now: release only our own.
                    current = self._held.get(name)
                    if current is not None and current[0] is token:
                        del self._held[name]


class MemoryIdempotencyStore:
    """A standalone ``IdempotencyStore`` (e.g. for an HTTP layer), outside any transaction."""

    def __init__(self) -> None:
        self._records: dict[str, IdempotencyRecord] = {}
        self._lock = threading.Lock()

    def get(self, key: str, at: datetime) -> IdempotencyRecord | None:
        """Return the unexpired record for ``key``, if any."""
        at = aware(at, "at")
        with self._lock:
            record = self._records.get(key)
            return record if record is not None and record.expires_at > at else None

    def put(self, record: IdempotencyRecord) -> None:
        """Store a record; an unexpired record with the same key raises Conflict."""
        with self._lock:
            existing = self._records.get(record.key)
            if existing is not None and existing.expires_at > record.created_at:
                raise Conflict(
                    f"idempotency key {record.key!r} is already in use",
                    details={"kind": "idempotency record", "key": record.key},
                )
            self._records[record.key] = record


# "999" down to "000": the last three digits of the ids of a thousand, the next one last.
_LAST_DIGITS_DOWN = tuple(f"{n:03d}" for n in range(999, -1, -1))


class SequentialIds:
    """Readable, deterministic ids: a counter per prefix (``cus_1``, ``sub_1``, ``cus_2``)."""

    def __init__(self) -> None:
        # Each prefix's next ids, formatted a block at a time, the next one last: a billing
        # run takes ten ids a renewal, and a list's pop costs a third of formatting one
        # (run_due over 3,000: see the commit).
        self._ready: dict[str, list[str]] = {}
        self._formatted: dict[str, int] = {}  # how many ids of each prefix were formatted
        self._lock = threading.Lock()

    def __call__(self, prefix: str) -> str:
        """Return the next id for ``prefix``."""
        try:
            return self._ready[prefix].pop()  # atomic under the GIL: no lock per id
        except (KeyError, IndexError):
            return self._refill(prefix)

    def _refill(self, prefix: str) -> str:
        """Format the prefix's next block of ids and return the first of them."""
        with self._lock:
            ready = self._ready.get(prefix)
            if ready:
                return ready.pop()  # another thread refilled it meanwhile
            done = self._formatted.get(prefix, 0)
            start = done + 1
            if start < 1000:
                # Small blocks for the few ids a test takes, up to 512, stopping at 999.
                size = min(max(done, 8), 512, 1000 - start)
                head = prefix + "_"
                block = [head + str(n) for n in range(done + size, done, -1)]
            else:
                # From 1000 on, a block runs to the end of its thousand: each id is one
                # concatenation of the thousands' head and ready last three digits, where
                # formatting the number took a temporary string and twice the instructions
                # (run_due over 3,000: see the commit).
                thousands, low = divmod(start, 1000)
                size = 1000 - low
                head = f"{prefix}_{thousands}"
                block = [head + digits for digits in _LAST_DIGITS_DOWN[:size]]
            self._formatted[prefix] = done + size
            first = block.pop()
            self._ready[prefix] = block
            return first
