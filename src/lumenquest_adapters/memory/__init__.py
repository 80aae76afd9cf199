"""Every port in memory: real implementations with a database's constraints and errors.

``in_memory_billing(now=…)`` gives a ready ``Billing``::

    billing = in_memory_billing(now=datetime(2026, 1, 31, tzinfo=UTC))
    billing.clock.advance(days=30); billing.run_due()
    billing.gateway.queue(GatewayOutcome.decline("insufficient_funds"))
    [message.template for message in billing.email.sent]

The pieces work on their own too: :class:`MemoryStore` with :class:`MemoryUnitOfWork`
(transactional, serializable, O(changes) per transaction), :class:`TestClock`,
:class:`FakeGateway` (scripted outcomes, a ledger, Stripe's idempotency),
:class:`RecordingEmailSender`, :class:`ConsoleEmailSender`, :class:`MemoryCache`,
:class:`MemoryRateLimiter`, :class:`MemoryLock` and :class:`MemoryIdempotencyStore`.
"""

from lumenquest_adapters.memory._clock import SystemClock, TestClock
from lumenquest_adapters.memory._gateway import (
    FakeGateway,
    GatewayOutcome,
    LedgerCharge,
    LedgerRefund,
    OutcomeKind,
)
from lumenquest_adapters.memory._services import (
    ConsoleEmailSender,
    MemoryCache,
    MemoryIdempotencyStore,
    MemoryLock,
    MemoryRateLimiter,
    RecordingEmailSender,
    SequentialIds,
)
from lumenquest_adapters.memory._store import MemoryStore, MemoryUnitOfWork
from lumenquest_adapters.memory._wiring import InMemoryBilling, in_memory_billing

__all__ = [
    "ConsoleEmailSender",
    "FakeGateway",
    "GatewayOutcome",
    "InMemoryBilling",
    "LedgerCharge",
    "LedgerRefund",
    "MemoryCache",
    "MemoryIdempotencyStore",
    "MemoryLock",
    "MemoryRateLimiter",
    "MemoryStore",
    "MemoryUnitOfWork",
    "OutcomeKind",
    "RecordingEmailSender",
    "SequentialIds",
    "SystemClock",
    "TestClock",
    "in_memory_billing",
]
