"""Fixtures of the Redis adapter tests: a client on the test database and a private prefix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.adapters.redis.support import Namespace


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A redis-py client on the test database, as ``from_url`` gives it (bytes replies)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def namespace(client: redis.Redis) -> Iterator[Namespace]:
    """A key prefix of this test's own, emptied afterwards."""
    namespace = Namespace(client)
    yield namespace
    namespace.cleanup()
