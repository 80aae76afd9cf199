"""Contract suites: one per port, for every adapter, shipped so a host can run them on its own.

Each suite is a pytest test class with no ``Test`` prefix (so it is not collected on its
own) and a few hooks. To check an adapter, subclass the suite in a test module and fill
in the hooks; pytest runs every inherited test. For a unit of work::

    from lumenquest_adapters.testing import UnitOfWorkContract

    class TestMyUnitOfWork(UnitOfWorkContract):
        def make_uow_factory(self):
            store = make_empty_store()           # your adapter: a fresh database/schema
            return lambda: MyUnitOfWork(store)

Hooks, per suite:

==========================  ========================================================
``UnitOfWorkContract``      ``make_uow_factory()`` (override the ``uow_factory``
                            fixture instead if the store needs a teardown)
``ClockContract``           ``make_clock()``
``PaymentGatewayContract``  ``make_gateway()``, ``script_decline(gateway, code)``
``EmailSenderContract``     ``make_sender()``
``CacheContract``           ``make_cache()``, ``advance_time(seconds)``
``RateLimiterContract``     ``make_limiter()``, ``advance_time(seconds)``
``LockContract``            ``make_lock()``, ``advance_time(seconds)``
``IdempotencyStoreContract``  ``make_store()``
==========================  ========================================================

``advance_time`` makes time pass for the adapter (e.g. advance the clock it was given).
Every test builds its objects with :mod:`lumenquest_adapters.testing.samples`. The
suites need pytest (the ``dev`` extra).
"""

from lumenquest_adapters.testing._services import (
    CacheContract,
    ClockContract,
    EmailSenderContract,
    IdempotencyStoreContract,
    LockContract,
    PaymentGatewayContract,
    RateLimiterContract,
)
from lumenquest_adapters.testing._storage import UnitOfWorkContract

__all__ = [
    "CacheContract",
    "ClockContract",
    "EmailSenderContract",
    "IdempotencyStoreContract",
    "LockContract",
    "PaymentGatewayContract",
    "RateLimiterContract",
    "UnitOfWorkContract",
]
