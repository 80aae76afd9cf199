"""Billing's one-call history path (the optional HistoryWriter port) and its fallback."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from lumenquest_adapters.memory import (
    FakeGateway,
    MemoryCache,
    MemoryStore,
    MemoryUnitOfWork,
    RecordingEmailSender,
    TestClock,
)
from lumenquest_adapters.memory import _store as memory_store
from lumenquest_adapters.memory._services import SequentialIds
from lumenquest_core import Billing, BillingCycle, Interval
from lumenquest_core.ports import UnitOfWork
from tests.service.scenario import NEW_YEAR, at, usd

# On memory alone: the path through the optional port runs on every store in every other
# service test; the row-by-row one, for a store without the port, is only tested here.
pytestmark = pytest.mark.memory_only


class _WithoutHistoryWriter:
    """A memory unit of work without ``add_history``, as a host's may be."""

    def __init__(self, inner: MemoryUnitOfWork) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "add_history":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __enter__(self) -> _WithoutHistoryWriter:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._inner.__exit__(*exc_info)


def _history(wrap: Callable[[MemoryUnitOfWork], Any]) -> tuple[list[Any], ...]:
    """Return the outbox, audit log and changes of a subscription's first months."""
    store = MemoryStore()
    clock = TestClock(NEW_YEAR)

    def unit_of_work() -> UnitOfWork:
        return wrap(MemoryUnitOfWork(store))  # type: ignore[no-any-return]

    billing = Billing(
        unit_of_work=unit_of_work,
        clock=clock,
        gateway=FakeGateway(),
        email=RecordingEmailSender(),
        cache=MemoryCache(clock),
        ids=SequentialIds().__call__,
        dispatch_immediately=False,
    )
    customer = billing.create_customer(email="ada@example.com", name="Ada")
    plan = billing.create_plan(name="Pro")
    price = billing.create_price(
        plan_id=plan.id, unit_amount=usd(1000), cycle=BillingCycle(Interval.MONTH)
    )
    sub = billing.subscribe(customer_id=customer.id, price_id=price.id)
    clock.set(at(2, 1, 1))
    assert billing.run_due().renewals == 1
    billing.cancel(sub.id, at_period_end=True)
    clock.set(at(3, 1, 1))
    billing.run_due()
    with MemoryUnitOfWork(store) as uow:
        return (
            list(uow.outbox.list()),
            list(uow.audit_log.list()),
            list(uow.subscription_changes.list()),
        )


def test_a_store_without_add_history_gets_the_same_history_row_by_row() -> None:
    outbox, audit, changes = _history(_WithoutHistoryWriter)
    assert (outbox, audit, changes) == _history(lambda uow: uow)
    assert len(outbox) > 4
    assert len(audit) > 4
    assert len(changes) >= 3
    # The events Billing builds as fields hold their data read-only there too, and the
    # audit row carries the same facts.
    finalized = next(m for m in outbox if m.event.name == "invoice.finalized")
    assert isinstance(finalized.event.data, MappingProxyType)
    assert dict(finalized.event.data) == next(
        e.after for e in audit if e.action == "invoice.finalized"
    )


def test_a_store_with_add_history_gets_no_history_row_by_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The memory store's add_history takes every history row Billing writes."""

    def refuse(*_: object) -> None:
        raise AssertionError("written row by row")

    for repository in ("_Outbox", "_AuditLog", "_SubscriptionChanges"):
        monkeypatch.setattr(getattr(memory_store, repository), "add", refuse)
    outbox, audit, changes = _history(lambda uow: uow)
    assert outbox
    assert audit
    assert changes
