"""redis-py's errors become lumenquest's at the adapter boundary, ``from`` the original."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import redis
import redis.exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from lumenquest_adapters.redis import (
    RedisCache,
    RedisIdempotencyStore,
    RedisLock,
    RedisRateLimiter,
    translate_errors,
)
from lumenquest_adapters.testing.samples import T0, idempotency_record
from lumenquest_core.errors import ConfigurationError, GatewayUnavailable, LumenquestError

MAPPING: list[tuple[Exception, type[LumenquestError]]] = [
    (redis_errors.ConnectionError("refused"), GatewayUnavailable),
    (redis_errors.TimeoutError("timed out"), GatewayUnavailable),
    (redis_errors.BusyLoadingError("loading"), GatewayUnavailable),
    (redis_errors.ReadOnlyError("replica"), GatewayUnavailable),
    (redis_errors.OutOfMemoryError("OOM"), GatewayUnavailable),
    (redis_errors.TryAgainError("TRYAGAIN"), GatewayUnavailable),
    (redis_errors.ClusterDownError("CLUSTERDOWN"), GatewayUnavailable),
    (redis_errors.AuthenticationError("invalid password"), ConfigurationError),
    (redis_errors.AuthorizationError("not authorized"), ConfigurationError),
    (redis_errors.NoPermissionError("NOPERM"), ConfigurationError),
    (redis_errors.ResponseError("WRONGTYPE"), ConfigurationError),
    (redis_errors.InvalidResponse("protocol error"), ConfigurationError),
]


@pytest.mark.parametrize(("error", "expected"), MAPPING, ids=lambda v: type(v).__name__)
def test_each_redis_error_maps_to_a_lumenquest_error(
    error: Exception, expected: type[LumenquestError]
) -> None:
    with pytest.raises(LumenquestError) as caught, translate_errors("a test"):
        raise error
    assert type(caught.value) is expected
    assert caught.value.__cause__ is error
    assert caught.value.retryable is (expected is GatewayUnavailable)
    assert caught.value.details == {"service": "redis", "operation": "a test"}


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), translate_errors("a test"):
        raise KeyError("k")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def unreachable() -> Iterator[redis.Redis]:
    """A client pointed at a closed port, without retries."""
    client = redis.Redis(
        host="127.0.0.1", port=_closed_port(), retry=Retry(NoBackoff(), 0), socket_timeout=2
    )
    yield client
    client.close()


CALLS: dict[str, Callable[[redis.Redis], object]] = {
    "cache get": lambda c: RedisCache(c).get("k"),
    "cache set": lambda c: RedisCache(c).set("k", "v", ttl_seconds=1),
    "cache delete": lambda c: RedisCache(c).delete("k"),
    "rate limit hit": lambda c: RedisRateLimiter(c).hit("k", limit=1, window_seconds=1),
    "idempotency get": lambda c: RedisIdempotencyStore(c).get("k", T0),
    "idempotency put": lambda c: RedisIdempotencyStore(c).put(idempotency_record("k")),
    "lock acquire": lambda c: RedisLock(c).hold("n", ttl_seconds=1).__enter__(),
}


@pytest.mark.parametrize("operation", CALLS)
def test_an_unreachable_server_is_gateway_unavailable(
    unreachable: redis.Redis, operation: str
) -> None:
    with pytest.raises(GatewayUnavailable) as caught:
        CALLS[operation](unreachable)
    assert caught.value.retryable
    assert caught.value.details["operation"] == operation
    assert isinstance(caught.value.__cause__, redis_errors.ConnectionError)


def test_a_server_that_never_answers_is_gateway_unavailable() -> None:
    """A listener that accepts but never replies makes redis-py time out."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        accepted: list[socket.socket] = []
        acceptor = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
        acceptor.start()
        client = redis.Redis(
            host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), socket_timeout=0.2
        )
        with pytest.raises(GatewayUnavailable) as caught:
            RedisCache(client).get("k")
        assert isinstance(caught.value.__cause__, redis_errors.TimeoutError)
        client.close()
        acceptor.join()
        for connection in accepted:
            connection.close()
