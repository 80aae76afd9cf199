"""The Redis adapters beyond their contracts: key layout, expiry on the server, validation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import redis

from lumenquest_adapters.redis import (
    DEFAULT_PREFIX,
    RedisCache,
    RedisIdempotencyStore,
    RedisLock,
    RedisRateLimiter,
)
from lumenquest_adapters.testing.samples import T0, idempotency_record
from lumenquest_core.errors import (
    ConfigurationError,
    Conflict,
    NaiveDatetime,
    ValidationError,
)
from lumenquest_core.ports import IdempotencyRecord
from tests.adapters.redis.support import Namespace

BAD_POSITIVE_INTS = [0, -1, True, 1.5, "60"]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- construction -------------------------------------------------------------------------


def test_the_default_prefix_is_lumenquest(client: redis.Redis) -> None:
    assert DEFAULT_PREFIX == "lumenquest:"
    assert RedisCache(client).prefix == "lumenquest:"
    assert repr(RedisLock(client)) == "RedisLock(prefix='lumenquest:')"


def test_from_url_builds_a_working_adapter(redis_url: str, namespace: Namespace) -> None:
    cache = RedisCache.from_url(redis_url, prefix=namespace.prefix, decode_responses=True)
    cache.set("k", "v", ttl_seconds=60)
    assert cache.get("k") == "v"
    cache.client.close()


def test_a_malformed_url_is_a_configuration_error_that_hides_the_url() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisCache.from_url("http://user:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in json.dumps(caught.value.to_dict())


def test_a_prefix_must_be_text(client: redis.Redis) -> None:
    with pytest.raises(ValidationError):
        RedisCache(client, prefix=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("decode_responses", [False, True])
def test_adapters_work_whether_or_not_the_client_decodes(
    redis_url: str, namespace: Namespace, decode_responses: bool
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=decode_responses)
    cache = RedisCache(client, prefix=namespace.prefix)
    cache.set("k", "é", ttl_seconds=60)
    assert cache.get("k") == "é"
    store = RedisIdempotencyStore(client, prefix=namespace.prefix)
    store.put(idempotency_record("k1"))
    assert store.get("k1", T0) == idempotency_record("k1")
    with RedisLock(client, prefix=namespace.prefix).hold("n", ttl_seconds=5) as held:
        assert held
    client.close()


# -- cache --------------------------------------------------------------------------------


def test_cache_keys_live_under_the_prefix_with_the_ttl(
    client: redis.Redis, namespace: Namespace
) -> None:
    cache = RedisCache(client, prefix=namespace.prefix)
    cache.set("lq:plan:1", "{}", ttl_seconds=300)
    assert namespace.keys() == [f"{namespace.prefix}cache:lq:plan:1"]
    assert 0 < client.ttl(f"{namespace.prefix}cache:lq:plan:1") <= 300


def test_a_cache_with_another_prefix_sees_nothing(
    client: redis.Redis, namespace: Namespace
) -> None:
    RedisCache(client, prefix=namespace.prefix).set("k", "v", ttl_seconds=60)
    assert RedisCache(client, prefix=f"{namespace.prefix}other:").get("k") is None


@pytest.mark.parametrize("ttl", BAD_POSITIVE_INTS)
def test_a_cache_ttl_below_one_second_is_refused(
    client: redis.Redis, namespace: Namespace, ttl: object
) -> None:
    with pytest.raises(ValidationError):
        RedisCache(client, prefix=namespace.prefix).set("k", "v", ttl_seconds=ttl)  # type: ignore[arg-type]
    assert namespace.keys() == []


# -- rate limiter -------------------------------------------------------------------------


def test_a_window_starts_at_its_first_hit_and_expires_with_it(
    client: redis.Redis, namespace: Namespace
) -> None:
    limiter = RedisRateLimiter(client, prefix=namespace.prefix)
    decision = limiter.hit("api:cus_1", limit=100, window_seconds=60)
    key = f"{namespace.prefix}ratelimit:60:api:cus_1"
    assert namespace.keys() == [key]
    assert 0 < client.pttl(key) <= 60_000
    assert decision.reset_after_seconds == 60
    namespace.advance(45)
    later = limiter.hit("api:cus_1", limit=100, window_seconds=60)
    assert later.remaining == 98
    assert later.reset_after_seconds == 15


def test_windows_of_different_lengths_are_counted_apart(
    client: redis.Redis, namespace: Namespace
) -> None:
    limiter = RedisRateLimiter(client, prefix=namespace.prefix)
    assert limiter.hit("k", limit=1, window_seconds=60).allowed
    assert limiter.hit("k", limit=1, window_seconds=3600).allowed


def test_a_counter_left_without_expiry_is_given_one(
    client: redis.Redis, namespace: Namespace
) -> None:
    key = f"{namespace.prefix}ratelimit:60:k"
    client.set(key, 5)
    decision = RedisRateLimiter(client, prefix=namespace.prefix).hit(
        "k", limit=10, window_seconds=60
    )
    assert decision.remaining == 4
    assert 0 < client.pttl(key) <= 60_000


@pytest.mark.parametrize("bad", BAD_POSITIVE_INTS)
def test_a_limit_or_window_below_one_is_refused(
    client: redis.Redis, namespace: Namespace, bad: object
) -> None:
    limiter = RedisRateLimiter(client, prefix=namespace.prefix)
    with pytest.raises(ValidationError):
        limiter.hit("k", limit=bad, window_seconds=60)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        limiter.hit("k", limit=10, window_seconds=bad)  # type: ignore[arg-type]
    assert namespace.keys() == []


# -- idempotency store --------------------------------------------------------------------


def test_a_record_is_stored_as_json_for_its_retention(
    client: redis.Redis, namespace: Namespace
) -> None:
    store = RedisIdempotencyStore(client, prefix=namespace.prefix)
    store.put(idempotency_record("k1", ttl=timedelta(hours=24)))
    key = f"{namespace.prefix}idempotency:k1"
    stored = json.loads(_text(client.get(key)))
    assert stored["fingerprint"] == "f1"
    assert stored["result"] == {"id": "sub_1"}
    assert datetime.fromisoformat(stored["expires_at"]) == T0 + timedelta(hours=24)
    assert 23 * 3600 < client.ttl(key) <= 24 * 3600


def test_a_nested_result_comes_back_equal(client: redis.Redis, namespace: Namespace) -> None:
    store = RedisIdempotencyStore(client, prefix=namespace.prefix)
    record = IdempotencyRecord(
        key="k1",
        fingerprint="sha256:abc",
        result={"invoice": {"id": "in_1", "lines": [1, 2]}, "total": 1999, "paid": None},
        created_at=T0,
        expires_at=T0 + timedelta(hours=24),
    )
    store.put(record)
    assert store.get("k1", T0) == record


def test_the_first_record_stays_after_a_conflict(client: redis.Redis, namespace: Namespace) -> None:
    store = RedisIdempotencyStore(client, prefix=namespace.prefix)
    store.put(idempotency_record("k1", fingerprint="first"))
    with pytest.raises(Conflict) as caught:
        store.put(idempotency_record("k1", fingerprint="second"))
    assert caught.value.details == {"kind": "idempotency record", "key": "k1"}
    found = store.get("k1", T0)
    assert found is not None
    assert found.fingerprint == "first"


def test_a_naive_instant_is_refused(client: redis.Redis, namespace: Namespace) -> None:
    store = RedisIdempotencyStore(client, prefix=namespace.prefix)
    with pytest.raises(NaiveDatetime):
        store.get("k1", T0.replace(tzinfo=None))
    with pytest.raises(NaiveDatetime):
        store.put(idempotency_record("k1", created_at=T0.replace(tzinfo=None)))


def test_a_record_that_expires_as_it_is_created_is_refused(
    client: redis.Redis, namespace: Namespace
) -> None:
    store = RedisIdempotencyStore(client, prefix=namespace.prefix)
    with pytest.raises(ValidationError):
        store.put(idempotency_record("k1", ttl=timedelta(0)))
    assert namespace.keys() == []


def test_a_result_that_is_not_json_is_refused(client: redis.Redis, namespace: Namespace) -> None:
    store = RedisIdempotencyStore(client, prefix=namespace.prefix)
    record = IdempotencyRecord(
        key="k1",
        fingerprint="f",
        result={"at": T0},
        created_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )
    with pytest.raises(ValidationError):
        store.put(record)
    assert namespace.keys() == []


def test_an_unreadable_record_is_a_configuration_error(
    client: redis.Redis, namespace: Namespace
) -> None:
    client.set(f"{namespace.prefix}idempotency:k1", "not json")
    with pytest.raises(ConfigurationError):
        RedisIdempotencyStore(client, prefix=namespace.prefix).get("k1", T0)


# -- lock ---------------------------------------------------------------------------------


def test_a_held_lock_is_a_token_with_the_ttl(client: redis.Redis, namespace: Namespace) -> None:
    key = f"{namespace.prefix}lock:billing-run"
    with RedisLock(client, prefix=namespace.prefix).hold("billing-run", ttl_seconds=30) as held:
        assert held
        assert len(_text(client.get(key))) == 32
        assert 0 < client.pttl(key) <= 30_000
    assert namespace.keys() == []


def test_a_holder_never_deletes_someone_elses_lock(
    client: redis.Redis, namespace: Namespace
) -> None:
    key = f"{namespace.prefix}lock:billing-run"
    with RedisLock(client, prefix=namespace.prefix).hold("billing-run", ttl_seconds=30) as held:
        assert held
        # Our lock expired and another process took it while we were still working.
        client.set(key, "someone-else", px=30_000)
    assert _text(client.get(key)) == "someone-else"


def test_a_lock_not_acquired_releases_nothing(client: redis.Redis, namespace: Namespace) -> None:
    key = f"{namespace.prefix}lock:billing-run"
    client.set(key, "someone-else", px=30_000)
    with RedisLock(client, prefix=namespace.prefix).hold("billing-run", ttl_seconds=30) as held:
        assert not held
    assert _text(client.get(key)) == "someone-else"


@pytest.mark.parametrize("ttl", BAD_POSITIVE_INTS)
def test_a_lock_ttl_below_one_second_is_refused(
    client: redis.Redis, namespace: Namespace, ttl: object
) -> None:
    with pytest.raises(ValidationError):
        RedisLock(client, prefix=namespace.prefix).hold("n", ttl_seconds=ttl)  # type: ignore[arg-type]
    assert namespace.keys() == []
