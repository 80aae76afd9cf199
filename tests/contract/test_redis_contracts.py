"""The cache, rate limiter, lock and idempotency contracts, run on the real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from lumenquest_adapters.redis import RedisCache, RedisIdempotencyStore, RedisLock, RedisRateLimiter
from lumenquest_adapters.testing import (
    CacheContract,
    IdempotencyStoreContract,
    LockContract,
    RateLimiterContract,
)
from tests.adapters.redis.support import Namespace


class _OnRedis:
    """Gives each test its own key prefix, deleted afterwards; ``advance_time`` ages its keys."""

    namespace: Namespace

    @pytest.fixture(autouse=True)
    def _namespace(self, redis_url: str) -> Iterator[None]:
        client = redis.Redis.from_url(redis_url)
        self.namespace = Namespace(client)
        yield
        self.namespace.cleanup()
        assert self.namespace.keys() == []
        client.close()

    def advance_time(self, seconds: int) -> None:
        self.namespace.advance(seconds)

    @property
    def client(self) -> redis.Redis:
        return self.namespace.client


class TestRedisCache(_OnRedis, CacheContract):
    def make_cache(self) -> RedisCache:
        return RedisCache(self.client, prefix=self.namespace.prefix)


class TestRedisRateLimiter(_OnRedis, RateLimiterContract):
    def make_limiter(self) -> RedisRateLimiter:
        return RedisRateLimiter(self.client, prefix=self.namespace.prefix)


class TestRedisLock(_OnRedis, LockContract):
    def make_lock(self) -> RedisLock:
        return RedisLock(self.client, prefix=self.namespace.prefix)


class TestRedisIdempotencyStore(_OnRedis, IdempotencyStoreContract):
    def make_store(self) -> RedisIdempotencyStore:
        return RedisIdempotencyStore(self.client, prefix=self.namespace.prefix)
