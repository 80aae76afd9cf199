"""The cache, rate limiter, idempotency store and lock on Redis, through redis-py.

Every key lives under a prefix (``lumenquest:`` by default), then a namespace per
adapter: ``cache:``, ``ratelimit:<window>:``, ``idempotency:``, ``lock:``. Errors are
translated at this boundary by :func:`translate_errors`:

==========================================================  ======================
redis-py exception                                          lumenquest error
==========================================================  ======================
``AuthenticationError``, ``AuthorizationError``,            ``ConfigurationError``
``NoPermissionError`` (wrong password, ACL)
``ConnectionError``, ``TimeoutError`` (and so                ``GatewayUnavailable``
``BusyLoadingError``), ``ReadOnlyError``,                   (retryable)
``OutOfMemoryError``, ``TryAgainError``, ``ClusterDownError``
any other ``RedisError`` (``WRONGTYPE``: a key shared with   ``ConfigurationError``
another application, a server that is not Redis)
==========================================================  ======================

redis-py retries a command after a connection error, so a command may run twice on
the server: the lock and the idempotency store recognise their own earlier write, and
the rate limiter may count a retried hit twice (erring towards refusing).
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import redis
import redis.exceptions as redis_errors
from redis.commands.core import Script

from lumenquest_core.errors import (
    ConfigurationError,
    Conflict,
    GatewayUnavailable,
    ValidationError,
)
from lumenquest_core.periods import aware
from lumenquest_core.ports import IdempotencyRecord, RateLimitDecision

__all__ = [
    "DEFAULT_PREFIX",
    "RedisCache",
    "RedisIdempotencyStore",
    "RedisLock",
    "RedisRateLimiter",
    "translate_errors",
]

DEFAULT_PREFIX = "lumenquest:"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_MISCONFIGURED: tuple[type[Exception], ...] = (
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.NoPermissionError,
)
_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
)


@contextmanager
def translate_errors(operation: str) -> Iterator[None]:
    """Turn redis-py's exceptions raised in the block into lumenquest errors, ``from`` them."""
    try:
        yield
    except _MISCONFIGURED as exc:
        raise ConfigurationError(
            f"Redis refused {operation}: {exc}",
            details={"service": "redis", "operation": operation},
        ) from exc
    except _UNAVAILABLE as exc:
        raise GatewayUnavailable(
            f"Redis is unavailable for {operation}: {exc}",
            details={"service": "redis", "operation": operation},
        ) from exc
    except redis_errors.RedisError as exc:
        raise ConfigurationError(
            f"Redis failed {operation}: {exc}",
            details={"service": "redis", "operation": operation},
        ) from exc


def _positive(value: int, name: str) -> int:
    if type(value) is not int or value < 1:
        raise ValidationError(
            f"{name} must be a positive int, not {value!r}", details={name: value}
        )
    return value


def _text(value: object) -> str | None:
    """Return a reply as text, whether or not the client decodes responses."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


class _RedisAdapter:
    """What every Redis adapter shares: a client, a key prefix and a namespace."""

    namespace: ClassVar[str]

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str):
            raise ValidationError(f"prefix must be a str, not {prefix!r}")
        self.client = client
        self.prefix = prefix
        self._base = f"{prefix}{self.namespace}"

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, **options: Any) -> Self:
        """Connect to the Redis at ``url`` (``redis://``, ``rediss://``, ``unix://``).

        ``options`` go to ``redis.Redis.from_url`` (timeouts, ``retry``…). The client
        connects lazily, on the first command. A malformed URL raises ConfigurationError,
        whose message leaves the URL out since it may carry a password.
        """
        try:
            client = redis.Redis.from_url(url, **options)
        except ValueError as exc:
            raise ConfigurationError(
                f"not a usable Redis URL ({type(exc).__name__}); "
                "expected redis://[[user]:password@]host[:port][/db]",
                details={"service": "redis"},
            ) from exc
        return cls(client, prefix=prefix)

    def _key(self, key: str) -> str:
        return f"{self._base}{key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self.prefix!r})"


class RedisCache(_RedisAdapter):
    """A ``Cache`` on Redis strings: GET, SET with EX, DEL."""

    namespace = "cache:"

    def get(self, key: str) -> str | None:
        """Return the cached value, if present and unexpired."""
        with translate_errors("cache get"):
            return _text(self.client.get(self._key(key)))

    def set(self, key: str, value: str, *, ttl_seconds: int) -> None:
        """Cache ``value`` for ``ttl_seconds``."""
        _positive(ttl_seconds, "ttl_seconds")
        with translate_errors("cache set"):
            self.client.set(self._key(key), value, ex=ttl_seconds)

    def delete(self, *keys: str) -> None:
        """Forget the keys (missing ones are ignored)."""
        if not keys:
            return
        with translate_errors("cache delete"):
            self.client.delete(*(self._key(key) for key in keys))


# KEYS[1] the counter; ARGV[1] the window in ms. Returns {hits, ms until the window resets}.
_FIXED_WINDOW = """
local hits = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if hits == 1 or ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1])
end
return {hits, ttl}
"""


class RedisRateLimiter(_RedisAdapter):
    """A ``RateLimiter`` of fixed windows, each starting at its key's first hit.

    One Lua script increments the counter, starts the window's expiry on the first
    hit and reads what is left of it, so that concurrent hits never over-admit.
    Denied hits count too, as in the memory limiter.
    """

    namespace = "ratelimit:"

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(client, prefix=prefix)
        self._script: Script = client.register_script(_FIXED_WINDOW)

    def hit(self, key: str, *, limit: int, window_seconds: int) -> RateLimitDecision:
        """Count one hit; it is allowed while the window's hits stay within ``limit``."""
        _positive(limit, "limit")
        _positive(window_seconds, "window_seconds")
        with translate_errors("rate limit hit"):
            hits, ttl_ms = self._script(
                keys=[self._key(f"{window_seconds}:{key}")], args=[window_seconds * 1000]
            )
        hits, ttl_ms = int(hits), int(ttl_ms)
        return RateLimitDecision(
            allowed=hits <= limit,
            limit=limit,
            remaining=max(0, limit - hits),
            reset_after_seconds=max(1, math.ceil(ttl_ms / 1000)),
        )


# KEYS[1] the record; ARGV: the new record's JSON, its creation time (µs since the
# epoch), its retention (ms), and its writer token. 1 when stored, 0 on conflict.
_PUT_RECORD = """
local current = redis.call('GET', KEYS[1])
if current then
    local stored = cjson.decode(current)
    if stored.writer == ARGV[4] then
        return 1
    end
    if tonumber(stored.expires_at_us) > tonumber(ARGV[2]) then
        return 0
    end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""


def _micros(at: datetime) -> int:
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class RedisIdempotencyStore(_RedisAdapter):
    """A standalone ``IdempotencyStore`` keeping each record as JSON until it expires.

    Expiry follows the record's own times, not the server's clock: ``get`` compares
    ``expires_at`` with ``at``, and ``put`` replaces a record only if it had expired at
    the new record's ``created_at`` (checked and written by one Lua script, so exactly
    one of many concurrent writers wins). Redis drops the key once the record's
    retention (``expires_at - created_at``) has passed on the server.
    ``result`` must be JSON-serialisable; it comes back as JSON gives it (lists, not
    tuples). A record that expires no later than it was created raises ValidationError.
    """

    namespace = "idempotency:"

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(client, prefix=prefix)
        self._script: Script = client.register_script(_PUT_RECORD)

    def get(self, key: str, at: datetime) -> IdempotencyRecord | None:
        """Return the unexpired record for ``key``, if any."""
        at = aware(at, "at")
        with translate_errors("idempotency get"):
            raw = _text(self.client.get(self._key(key)))
        if raw is None:
            return None
        record = _record_from_json(raw)
        return record if record.expires_at > at else None

    def put(self, record: IdempotencyRecord) -> None:
        """Store a record; an unexpired record with the same key raises Conflict."""
        created_at = aware(record.created_at, "record.created_at")
        expires_at = aware(record.expires_at, "record.expires_at")
        retention_us = _micros(expires_at) - _micros(created_at)
        if retention_us <= 0:
            raise ValidationError(
                "an idempotency record must expire after it is created",
                details={"key": record.key},
            )
        writer = secrets.token_hex(16)
        payload = _record_to_json(record, writer=writer)
        with translate_errors("idempotency put"):
            stored = self._script(
                keys=[self._key(record.key)],
                args=[
                    payload,
                    _micros(created_at),
                    max(1, math.ceil(retention_us / 1000)),
                    writer,
                ],
            )
        if not int(stored):
            raise Conflict(
                f"idempotency key {record.key!r} is already in use",
                details={"kind": "idempotency record", "key": record.key},
            )


def _record_to_json(record: IdempotencyRecord, *, writer: str) -> str:
    try:
        return json.dumps(
            {
                "key": record.key,
                "fingerprint": record.fingerprint,
                "result": dict(record.result),
                "created_at": record.created_at.isoformat(),
                "expires_at": record.expires_at.isoformat(),
                "expires_at_us": _micros(record.expires_at),
                "writer": writer,
            },
            separators=(",", ":"),
        )
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"the result of idempotency key {record.key!r} is not JSON-serialisable: {exc}",
            details={"key": record.key},
        ) from exc


def _record_from_json(raw: str) -> IdempotencyRecord:
    try:
        data: Mapping[str, Any] = json.loads(raw)
        return IdempotencyRecord(
            key=data["key"],
            fingerprint=data["fingerprint"],
            result=data["result"],
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            "an idempotency record in Redis is unreadable; is the key prefix shared?",
            details={"service": "redis"},
        ) from exc


# KEYS[1] the lock; ARGV[1] the holder's token. Deletes the lock only if it is ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLock(_RedisAdapter):
    """A ``Lock`` across processes: SET NX PX with a random token, non-blocking.

    The lock expires after its TTL even if its holder dies; the release is a
    compare-and-delete script, so a holder whose lock expired never frees the lock of
    the one who took it next.
    """

    namespace = "lock:"

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(client, prefix=prefix)
        self._release: Script = client.register_script(_RELEASE)

    def hold(self, name: str, *, ttl_seconds: int) -> AbstractContextManager[bool]:
        """Hold ``name`` for the block if it is free; the value says whether it was."""
        _positive(ttl_seconds, "ttl_seconds")
        return self._hold(self._key(name), ttl_seconds)

    @contextmanager
    def _hold(self, key: str, ttl_seconds: int) -> Iterator[bool]:
        token = secrets.token_hex(16)
        with translate_errors("lock acquire"):
            acquired = bool(self.client.set(key, token, nx=True, px=ttl_seconds * 1000))
            if not acquired:
                # A retried SET finds the key that its first, lost-reply attempt wrote.
                acquired = _text(self.client.get(key)) == token
        try:
            yield acquired
        finally:
            if acquired:
                with translate_errors("lock release"):
                    self._release(keys=[key], args=[token])
