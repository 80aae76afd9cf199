"""A private key prefix on the test Redis per test, with a way to make time pass for its keys."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import TypeVar

import redis

T = TypeVar("T")

# Time passes for every key under the prefix at once: each key's remaining TTL is
# shortened by ARGV[1] ms, and a key whose TTL runs out is expired now — PEXPIRE with a
# non-positive timeout deletes the key (redis.io, EXPIRE), so no waiting is involved.
_ADVANCE = """
local ms = tonumber(ARGV[1])
local expired = {}
for _, key in ipairs(KEYS) do
    local ttl = redis.call('PTTL', key)
    if ttl >= 0 then
        if ttl <= ms then
            redis.call('PEXPIRE', key, 0)
            table.insert(expired, key)
        else
            redis.call('PEXPIRE', key, ttl - ms)
        end
    end
end
return expired
"""


class Namespace:
    """A unique key prefix on the test Redis; ``cleanup`` deletes every key under it."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.prefix = f"lqtest:{uuid.uuid4().hex}:"
        self._advance = client.register_script(_ADVANCE)

    def keys(self) -> list[str]:
        """Return the keys under the prefix, as text."""
        return sorted(
            key.decode() if isinstance(key, bytes) else str(key)
            for key in self.client.scan_iter(match=f"{self.prefix}*", count=1000)
        )

    def advance(self, seconds: int) -> None:
        """Make ``seconds`` pass for every key under the prefix, expiring those that run out."""
        keys = self.keys()
        if not keys:
            return
        expired = self._advance(keys=keys, args=[seconds * 1000])
        # Confirm the expiry took effect before the test goes on (bounded, no sleeping).
        for _ in range(100):
            if not expired or self.client.exists(*expired) == 0:
                return
        raise AssertionError(f"keys did not expire: {expired!r}")

    def cleanup(self) -> None:
        """Delete every key under the prefix."""
        keys = self.keys()
        if keys:
            self.client.delete(*keys)


def in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(i)`` in ``count`` threads released at once; return results, re-raise errors."""
    start = threading.Barrier(count)
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = work(index)
        except BaseException as error:  # reported by the calling thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [results[i] for i in range(count)]
