"""Every port's contract suite, run against the memory adapters."""

from collections.abc import Callable
from datetime import timedelta

from lumenquest_adapters.memory import (
    FakeGateway,
    GatewayOutcome,
    MemoryCache,
    MemoryIdempotencyStore,
    MemoryLock,
    MemoryRateLimiter,
    MemoryStore,
    MemoryUnitOfWork,
    RecordingEmailSender,
    SystemClock,
    TestClock,
)
from lumenquest_adapters.testing import (
    CacheContract,
    ClockContract,
    EmailSenderContract,
    IdempotencyStoreContract,
    LockContract,
    PaymentGatewayContract,
    RateLimiterContract,
    UnitOfWorkContract,
)
from lumenquest_adapters.testing.samples import T0
from lumenquest_core.ports import PaymentGateway, UnitOfWork


class TestMemoryUnitOfWork(UnitOfWorkContract):
    def make_uow_factory(self) -> Callable[[], UnitOfWork]:
        store = MemoryStore()
        return lambda: MemoryUnitOfWork(store)


class TestTestClock(ClockContract):
    def make_clock(self) -> TestClock:
        return TestClock(T0)


class TestSystemClock(ClockContract):
    def make_clock(self) -> SystemClock:
        return SystemClock()


class TestFakeGateway(PaymentGatewayContract):
    def make_gateway(self) -> FakeGateway:
        return FakeGateway()

    def script_decline(self, gateway: PaymentGateway, decline_code: str) -> None:
        assert isinstance(gateway, FakeGateway)
        gateway.queue(GatewayOutcome.decline(decline_code))


class TestRecordingEmailSender(EmailSenderContract):
    def make_sender(self) -> RecordingEmailSender:
        return RecordingEmailSender()


class _OnATestClock:
    """Gives each test a TestClock that ``advance_time`` moves."""

    clock: TestClock

    def advance_time(self, seconds: int) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    def fresh_clock(self) -> TestClock:
        # A window boundary mid-test would reset a rate limit: start on a round minute.
        self.clock = TestClock(T0)
        return self.clock


class TestMemoryCache(_OnATestClock, CacheContract):
    def make_cache(self) -> MemoryCache:
        return MemoryCache(self.fresh_clock())


class TestMemoryRateLimiter(_OnATestClock, RateLimiterContract):
    def make_limiter(self) -> MemoryRateLimiter:
        return MemoryRateLimiter(self.fresh_clock())


class TestMemoryLock(_OnATestClock, LockContract):
    def make_lock(self) -> MemoryLock:
        return MemoryLock(self.fresh_clock())


class TestMemoryIdempotencyStore(IdempotencyStoreContract):
    def make_store(self) -> MemoryIdempotencyStore:
        return MemoryIdempotencyStore()
