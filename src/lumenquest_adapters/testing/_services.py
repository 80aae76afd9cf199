"""The contracts of the ports beyond storage: clock, gateway, email, cache, limits, locks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, timedelta

import pytest

from lumenquest_adapters.testing.samples import (
    T0,
    customer,
    email_message,
    idempotency_record,
    usd,
)
from lumenquest_core.errors import Conflict, ValidationError
from lumenquest_core.payments import ChargeStatus
from lumenquest_core.ports import (
    Cache,
    Clock,
    EmailSender,
    IdempotencyStore,
    Lock,
    PaymentGateway,
    RateLimiter,
)

__all__ = [
    "CacheContract",
    "ClockContract",
    "EmailSenderContract",
    "IdempotencyStoreContract",
    "LockContract",
    "PaymentGatewayContract",
    "RateLimiterContract",
]


def _in_threads(count: int, work: Callable[[], object]) -> list[object]:
    """Run ``work`` in ``count`` threads released at once; return results, re-raise errors."""
    start = threading.Barrier(count)
    results: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            results.append(work())
        except BaseException as error:  # reported by the calling thread
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


class ClockContract:
    """What every ``Clock`` must do; implement ``make_clock``."""

    def make_clock(self) -> Clock:
        """Return the clock under test."""
        raise NotImplementedError

    def test_now_is_timezone_aware_utc(self) -> None:
        now = self.make_clock().now()
        assert now.tzinfo is not None
        assert now.utcoffset() == timedelta(0)
        assert now.astimezone(UTC) == now

    def test_now_never_goes_backwards(self) -> None:
        clock = self.make_clock()
        first = clock.now()
        assert clock.now() >= first


class PaymentGatewayContract:
    """What every ``PaymentGateway`` must do; implement ``make_gateway`` and ``script_decline``."""

    def make_gateway(self) -> PaymentGateway:
        """Return a gateway (a sandbox or fake) whose charges succeed unless scripted."""
        raise NotImplementedError

    def script_decline(self, gateway: PaymentGateway, decline_code: str) -> None:
        """Arrange for the gateway's next charge to be declined with ``decline_code``."""
        raise NotImplementedError

    @pytest.fixture
    def gateway(self) -> PaymentGateway:
        return self.make_gateway()

    def _charge(self, gateway: PaymentGateway, key: str, cents: int = 1000) -> object:
        return gateway.charge(
            customer=customer("cus_1"),
            amount=usd(cents),
            idempotency_key=key,
            description="Invoice LQ-000001",
            metadata={"invoice_id": "in_1"},
        )

    def test_ensure_customer_returns_a_stable_reference(self, gateway: PaymentGateway) -> None:
        first = gateway.ensure_customer(customer("cus_1"))
        assert first
        assert gateway.ensure_customer(customer("cus_1")) == first
        assert gateway.ensure_customer(customer("cus_2")) != first

    def test_a_successful_charge_has_a_reference(self, gateway: PaymentGateway) -> None:
        result = gateway.charge(
            customer=customer("cus_1"),
            amount=usd(1000),
            idempotency_key="pay_1:1",
            description="Invoice LQ-000001",
            metadata={},
        )
        assert result.status is ChargeStatus.SUCCEEDED
        assert result.reference
        assert result.decline_code is None

    def test_the_same_idempotency_key_gives_the_first_result(self, gateway: PaymentGateway) -> None:
        first = self._charge(gateway, "pay_1:1")
        assert self._charge(gateway, "pay_1:1") == first
        assert self._charge(gateway, "pay_2:1") != first

    def test_find_charge_returns_the_first_answer_or_none(self, gateway: PaymentGateway) -> None:
        first = self._charge(gateway, "pay_1:1")
        assert gateway.find_charge(customer("cus_1"), "pay_1:1") == first
        assert gateway.find_charge(customer("cus_1"), "pay_9:1") is None

    def test_a_decline_is_a_result_not_an_exception(self, gateway: PaymentGateway) -> None:
        self.script_decline(gateway, "insufficient_funds")
        result = gateway.charge(
            customer=customer("cus_1"),
            amount=usd(1000),
            idempotency_key="pay_1:1",
            description="Invoice LQ-000001",
            metadata={},
        )
        assert result.status is ChargeStatus.DECLINED
        assert result.decline_code == "insufficient_funds"

    def test_a_refund_is_made_once_per_idempotency_key(self, gateway: PaymentGateway) -> None:
        charge = gateway.charge(
            customer=customer("cus_1"),
            amount=usd(1000),
            idempotency_key="pay_1:1",
            description="",
            metadata={},
        )
        first = gateway.refund(reference=charge.reference, amount=usd(400), idempotency_key="r1")
        assert first
        assert gateway.refund(
            reference=charge.reference, amount=usd(400), idempotency_key="r1"
        ) == (first)
        # Had "r1" refunded twice, only 200 would be left and this would fail.
        gateway.refund(reference=charge.reference, amount=usd(600), idempotency_key="r2")

    def test_refunding_more_than_was_charged_raises_validation_error(
        self, gateway: PaymentGateway
    ) -> None:
        charge = gateway.charge(
            customer=customer("cus_1"),
            amount=usd(1000),
            idempotency_key="pay_1:1",
            description="",
            metadata={},
        )
        with pytest.raises(ValidationError):
            gateway.refund(reference=charge.reference, amount=usd(1001), idempotency_key="r1")
        gateway.refund(reference=charge.reference, amount=usd(700), idempotency_key="r2")
        with pytest.raises(ValidationError):
            gateway.refund(reference=charge.reference, amount=usd(301), idempotency_key="r3")


class EmailSenderContract:
    """What every ``EmailSender`` must do; implement ``make_sender``."""

    def make_sender(self) -> EmailSender:
        """Return the sender under test (a sandbox, for a real provider)."""
        raise NotImplementedError

    def test_sending_returns_the_providers_id(self) -> None:
        sender = self.make_sender()
        first = sender.send(email_message("evt_1.welcome"))
        second = sender.send(email_message("evt_2.welcome"))
        assert first
        assert second
        assert first != second


class CacheContract:
    """What every ``Cache`` must do; implement ``make_cache`` and ``advance_time``."""

    def make_cache(self) -> Cache:
        """Return an empty cache."""
        raise NotImplementedError

    def advance_time(self, seconds: int) -> None:
        """Make ``seconds`` pass for the cache made by ``make_cache``."""
        raise NotImplementedError

    @pytest.fixture
    def cache(self) -> Cache:
        return self.make_cache()

    def test_a_missing_key_is_none(self, cache: Cache) -> None:
        assert cache.get("lq:nothing") is None

    def test_a_value_set_is_got_back_and_can_be_replaced(self, cache: Cache) -> None:
        cache.set("lq:plan:1", "one", ttl_seconds=60)
        assert cache.get("lq:plan:1") == "one"
        cache.set("lq:plan:1", "uno", ttl_seconds=60)
        assert cache.get("lq:plan:1") == "uno"

    def test_deleted_keys_are_gone_and_missing_ones_are_ignored(self, cache: Cache) -> None:
        cache.set("a", "1", ttl_seconds=60)
        cache.set("b", "2", ttl_seconds=60)
        cache.set("c", "3", ttl_seconds=60)
        cache.delete("a", "b", "never-set")
        assert [cache.get(k) for k in ("a", "b", "c")] == [None, None, "3"]
        cache.delete()

    def test_a_value_expires_after_its_ttl(self, cache: Cache) -> None:
        cache.set("k", "v", ttl_seconds=10)
        self.advance_time(9)
        assert cache.get("k") == "v"
        self.advance_time(2)
        assert cache.get("k") is None


class RateLimiterContract:
    """What every ``RateLimiter`` must do; implement ``make_limiter`` and ``advance_time``."""

    def make_limiter(self) -> RateLimiter:
        """Return a limiter with no hits recorded."""
        raise NotImplementedError

    def advance_time(self, seconds: int) -> None:
        """Make ``seconds`` pass for the limiter made by ``make_limiter``."""
        raise NotImplementedError

    @pytest.fixture
    def limiter(self) -> RateLimiter:
        return self.make_limiter()

    def test_hits_within_the_limit_pass_and_the_next_is_refused(self, limiter: RateLimiter) -> None:
        decisions = [limiter.hit("auth:1.2.3.4", limit=3, window_seconds=60) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        assert all(d.limit == 3 for d in decisions)
        assert all(0 < d.reset_after_seconds <= 60 for d in decisions)

    def test_keys_are_counted_apart(self, limiter: RateLimiter) -> None:
        limiter.hit("a", limit=1, window_seconds=60)
        assert limiter.hit("b", limit=1, window_seconds=60).allowed
        assert not limiter.hit("a", limit=1, window_seconds=60).allowed

    def test_the_count_resets_in_the_next_window(self, limiter: RateLimiter) -> None:
        for _ in range(3):
            limiter.hit("k", limit=2, window_seconds=60)
        self.advance_time(60)
        decision = limiter.hit("k", limit=2, window_seconds=60)
        assert decision.allowed
        assert decision.remaining == 1

    def test_concurrent_hits_never_exceed_the_limit(self, limiter: RateLimiter) -> None:
        decisions = _in_threads(8, lambda: limiter.hit("race", limit=3, window_seconds=3600))
        assert sum(1 for d in decisions if getattr(d, "allowed", False)) == 3


class LockContract:
    """What every ``Lock`` must do; implement ``make_lock`` and ``advance_time``."""

    def make_lock(self) -> Lock:
        """Return a lock service with nothing held."""
        raise NotImplementedError

    def advance_time(self, seconds: int) -> None:
        """Make ``seconds`` pass for the lock made by ``make_lock`` (for ttl expiry)."""
        raise NotImplementedError

    @pytest.fixture
    def lock(self) -> Lock:
        return self.make_lock()

    def test_a_held_lock_is_not_acquired_again(self, lock: Lock) -> None:
        with lock.hold("billing-run", ttl_seconds=60) as first:
            assert first
            with lock.hold("billing-run", ttl_seconds=60) as second:
                assert not second
            with lock.hold("other", ttl_seconds=60) as other:
                assert other

    def test_a_lock_is_free_again_after_the_block(self, lock: Lock) -> None:
        with lock.hold("billing-run", ttl_seconds=60) as held:
            assert held
        with lock.hold("billing-run", ttl_seconds=60) as again:
            assert again

    def test_a_lock_is_released_when_the_block_raises(self, lock: Lock) -> None:
        with pytest.raises(RuntimeError), lock.hold("billing-run", ttl_seconds=60):
            raise RuntimeError
        with lock.hold("billing-run", ttl_seconds=60) as again:
            assert again

    def test_another_thread_does_not_get_a_held_lock(self, lock: Lock) -> None:
        def try_lock() -> bool:
            with lock.hold("billing-run", ttl_seconds=60) as acquired:
                return acquired

        with lock.hold("billing-run", ttl_seconds=60):
            assert _in_threads(1, try_lock) == [False]
        assert _in_threads(1, try_lock) == [True]

    def test_only_one_of_many_threads_gets_the_lock(self, lock: Lock) -> None:
        holding = threading.Barrier(8)

        def contend() -> bool:
            with lock.hold("billing-run", ttl_seconds=60) as acquired:
                holding.wait()  # nobody releases before everybody has tried
                return acquired

        assert sorted(bool(got) for got in _in_threads(8, contend)) == [False] * 7 + [True]

    def test_an_expired_lock_can_be_taken(self, lock: Lock) -> None:
        with lock.hold("billing-run", ttl_seconds=10) as first:
            assert first
            self.advance_time(11)
            with lock.hold("billing-run", ttl_seconds=10) as second:
                assert second


class IdempotencyStoreContract:
    """What every standalone ``IdempotencyStore`` must do; implement ``make_store``."""

    def make_store(self) -> IdempotencyStore:
        """Return an empty store."""
        raise NotImplementedError

    @pytest.fixture
    def store(self) -> IdempotencyStore:
        return self.make_store()

    def test_a_record_is_found_until_it_expires(self, store: IdempotencyStore) -> None:
        record = idempotency_record("k1", ttl=timedelta(hours=1))
        store.put(record)
        assert store.get("k1", T0 + timedelta(minutes=59)) == record
        assert store.get("k1", T0 + timedelta(hours=1)) is None
        assert store.get("k2", T0) is None

    def test_an_unexpired_key_cannot_be_put_twice(self, store: IdempotencyStore) -> None:
        store.put(idempotency_record("k1"))
        with pytest.raises(Conflict):
            store.put(idempotency_record("k1", created_at=T0 + timedelta(hours=1)))

    def test_an_expired_key_can_be_put_again(self, store: IdempotencyStore) -> None:
        store.put(idempotency_record("k1", ttl=timedelta(hours=1)))
        again = idempotency_record("k1", created_at=T0 + timedelta(hours=2), fingerprint="f2")
        store.put(again)
        assert store.get("k1", T0 + timedelta(hours=2)) == again
