"""Redis adapters (redis-py): ``Cache``, ``RateLimiter``, ``IdempotencyStore`` and ``Lock``.

Build each from a ``redis.Redis`` client or a URL, under a key prefix::

    limiter = RedisRateLimiter.from_url("redis://127.0.0.1:6379/0", prefix="myapp:")
    decision = limiter.hit("auth:1.2.3.4", limit=5, window_seconds=60)

redis-py's connection and timeout errors become the retryable
``GatewayUnavailable``; see :func:`translate_errors` for the whole table.
"""

from lumenquest_adapters.redis._adapters import (
    DEFAULT_PREFIX,
    RedisCache,
    RedisIdempotencyStore,
    RedisLock,
    RedisRateLimiter,
    translate_errors,
)

__all__ = [
    "DEFAULT_PREFIX",
    "RedisCache",
    "RedisIdempotencyStore",
    "RedisLock",
    "RedisRateLimiter",
    "translate_errors",
]
