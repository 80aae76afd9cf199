"""Many threads, each with its own connection, against the real Redis at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from lumenquest_adapters.redis import RedisIdempotencyStore, RedisLock, RedisRateLimiter
from lumenquest_adapters.testing.samples import T0, idempotency_record
from lumenquest_core.errors import Conflict
from tests.adapters.redis.support import Namespace, in_threads

THREADS = 8


@pytest.fixture
def clients(redis_url: str) -> Iterator[list[redis.Redis]]:
    """One client (and so one connection pool) per thread, as separate processes would have."""
    clients = [redis.Redis.from_url(redis_url) for _ in range(THREADS)]
    yield clients
    for client in clients:
        client.close()


def test_200_concurrent_hits_admit_exactly_the_limit(
    clients: list[redis.Redis], namespace: Namespace
) -> None:
    limiters = [RedisRateLimiter(c, prefix=namespace.prefix) for c in clients]

    def hit_25_times(i: int) -> list[int]:
        decisions = [limiters[i].hit("api", limit=50, window_seconds=3600) for _ in range(25)]
        return [d.remaining for d in decisions if d.allowed]

    allowed = [r for remaining in in_threads(THREADS, hit_25_times) for r in remaining]
    assert len(allowed) == 50
    assert sorted(allowed) == list(range(50))  # every count from 1 to 50 handed out once
    assert int(namespace.client.get(f"{namespace.prefix}ratelimit:3600:api") or 0) == 200


def test_one_of_8_concurrent_writers_of_a_key_wins(
    clients: list[redis.Redis], namespace: Namespace
) -> None:
    stores = [RedisIdempotencyStore(c, prefix=namespace.prefix) for c in clients]

    def put(i: int) -> str:
        try:
            stores[i].put(idempotency_record("pay_1", fingerprint=f"writer-{i}"))
        except Conflict:
            return "conflict"
        return f"writer-{i}"

    outcomes = in_threads(THREADS, put)
    winners = [o for o in outcomes if o != "conflict"]
    assert len(winners) == 1
    stored = stores[0].get("pay_1", T0)
    assert stored is not None
    assert stored.fingerprint == winners[0]


def test_at_most_one_of_8_threads_holds_the_lock_at_any_moment(
    clients: list[redis.Redis], namespace: Namespace
) -> None:
    locks = [RedisLock(c, prefix=namespace.prefix) for c in clients]
    guard = threading.Lock()
    holders = 0
    most = 0
    acquisitions = 0

    def contend(i: int) -> None:
        nonlocal holders, most, acquisitions
        for _ in range(50):
            with locks[i].hold("billing-run", ttl_seconds=60) as held:
                if not held:
                    continue
                with guard:
                    holders += 1
                    most = max(most, holders)
                    acquisitions += 1
                clients[i].ping()  # work while holding, widening the window for an overlap
                with guard:
                    holders -= 1

    in_threads(THREADS, contend)
    assert most == 1
    assert acquisitions >= 1
    assert namespace.keys() == []
