"""``run_due`` with ``overlap_settlement``: a batch's payments settle while the next is billed.

The same promises as without it (each period invoiced once, each invoice charged once,
the summary's counts exact), on every store, plus what the second thread adds: a batch
sharing a customer with the batch in flight waits for it with nothing held, an error on
either side stops the run with nothing left running, and the summary still counts what
was settled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from lumenquest_adapters.memory import FakeGateway, GatewayOutcome
from lumenquest_core import InvoiceStatus
from lumenquest_core.payments import ChargeResult
from lumenquest_core.ports import UnitOfWork
from lumenquest_core.service import RunSummary
from tests.service.scenario import Shop, assert_renewals_settled, at


class _Watched:
    """A unit of work that tells its shop whether it committed."""

    def __init__(self, inner: UnitOfWork, shop: WatchedShop) -> None:
        self._inner = inner
        self._shop = shop
        self._committed = False
        self.claimed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def subscriptions(self) -> Any:
        """The inner repository, but a claim through it is noted."""
        return _NotesClaims(self._inner.subscriptions, self)

    def __enter__(self) -> _Watched:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._inner.__exit__(*exc)
        if self.claimed and not self._committed and exc[0] is None:
            self._shop.let_go += 1  # a claim left without commit or error: let go on purpose

    def commit(self) -> None:
        if threading.current_thread() is threading.main_thread():
            # Counted in the main thread alone: the background's commits race with it.
            self._shop.commits += 1
            if self._shop.commits == self._shop.fail_commit_number:
                raise ConnectionError("the connection dropped before the batch committed")
        self._inner.commit()
        self._committed = True


class _NotesClaims:
    """A subscription repository that tells its unit of work when due work is claimed."""

    def __init__(self, inner: Any, uow: _Watched) -> None:
        self._inner = inner
        self._uow = uow

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def claim_due(self, now: datetime, *, limit: int) -> Any:
        """Claim as the store does, and note it."""
        claimed = self._inner.claim_due(now, limit=limit)
        self._uow.claimed = bool(claimed)
        return claimed


class WatchedShop(Shop):
    """A shop whose units of work report commits and deliberate rollbacks."""

    def __init__(self, **billing_options: Any) -> None:
        self.let_go = 0
        self.commits = 0
        self.fail_commit_number = 0

        def watched(open_store: Callable[[], UnitOfWork]) -> Callable[[], UnitOfWork]:
            return lambda: _Watched(open_store(), self)

        super().__init__(wrap_unit_of_work=watched, overlap_settlement=True, **billing_options)


class _BreaksOnCharge(FakeGateway):
    """A gateway whose ``fail_at``-th charge raises an error nobody expects."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.charged = 0

    def charge(self, **call: Any) -> ChargeResult:
        """Charge as the fake does, but raise at the ``fail_at``-th call."""
        self.charged += 1
        if self.charged == self.fail_at:
            raise RuntimeError("the gateway's client broke")
        return super().charge(**call)


def _settle_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lumenquest-settle")]


def _subscribe_each(shop: Shop, customers: int, per_customer: int) -> list[str]:
    ids = [shop.customer(f"user{i}@example.com") for i in range(customers)]
    for customer in ids:
        for _ in range(per_customer):
            shop.subscribe(customer_id=customer)
    return ids


def test_overlapped_batches_renew_charge_and_count_each_subscription_once() -> None:
    shop = WatchedShop(batch_size=2)
    customers = _subscribe_each(shop, 7, 1)
    declined = customers[1::2]  # one in each of the first three batches of two
    for customer in declined:
        shop.billing.gateway.queue_for(customer, GatewayOutcome.decline("insufficient_funds"))
    charged_before = shop.billing.gateway.calls
    summary = shop.go(at(2, 1, 1))
    assert (summary.subscriptions, summary.renewals, summary.invoices) == (7, 7, 7)
    assert (summary.payments_succeeded, summary.payments_failed) == (4, 3)
    assert summary.payments_pending == 0
    assert_renewals_settled(shop, customers, declined)
    assert shop.billing.gateway.calls - charged_before == 7
    assert not _settle_threads()
    assert shop.go(at(2, 1, 2)).renewals == 0


def test_a_batch_sharing_a_customer_with_the_batch_in_flight_is_billed_after_it() -> None:
    # One batch a subscription; a customer's second subscription is claimed while its
    # first settles: that claim is let go, and the batch billed once the first settled.
    shop = WatchedShop(batch_size=1)
    customers = _subscribe_each(shop, 3, 2)
    charged_before = shop.billing.gateway.calls
    summary = shop.go(at(2, 1, 1))
    assert (summary.subscriptions, summary.renewals, summary.payments_succeeded) == (6, 6, 6)
    assert shop.let_go >= 1  # the claims were let go: the busy path ran
    for customer in customers:
        cycle = [i for i in shop.billing.list_invoices(customer_id=customer) if i.number][-2:]
        assert [i.status for i in cycle] == [InvoiceStatus.PAID, InvoiceStatus.PAID]
    assert shop.billing.gateway.calls - charged_before == 6


def test_a_settlement_failing_in_the_background_stops_the_run_with_its_error() -> None:
    gateway = _BreaksOnCharge(fail_at=0)
    shop = WatchedShop(batch_size=2, gateway=gateway)
    _subscribe_each(shop, 5, 1)
    gateway.fail_at = gateway.charged + 2  # the run's second charge, in the first batch
    shop.clock.set(at(2, 1, 1))
    summary = RunSummary()
    with pytest.raises(RuntimeError, match="gateway's client broke"):
        shop.billing.run_due(summary=summary)
    # The first batch was billed; its settlement broke; the second was billed meanwhile.
    assert summary.renewals == 4
    assert summary.payments_succeeded == 0
    assert not _settle_threads()
    # Past the grace for pending payments, a run finds or resends each charge, once.
    gateway.fail_at = 0
    shop.clock.set(at(2, 1, 2))
    again = RunSummary()
    for _ in range(3):  # each run resolves one batch of pending payments
        shop.billing.run_due(summary=again)
    assert (again.renewals, again.payments_succeeded) == (1, 5)
    keys = [charge.idempotency_key for charge in gateway.charges]
    assert len(keys) == len(set(keys)) == 10  # five subscribes, five renewals
    assert all(i.status is InvoiceStatus.PAID for i in shop.billing.list_invoices(limit=100))


def test_an_error_billing_the_next_batch_still_counts_the_batch_settled_meanwhile() -> None:
    shop = WatchedShop(batch_size=2)
    _subscribe_each(shop, 5, 1)
    shop.clock.set(at(2, 1, 1))
    # The run's commits in this thread: the first batch's bill, then the second's, which
    # fails while the first batch settles in the background; that settlement is waited
    # for and counted before the error goes up.
    shop.commits, shop.fail_commit_number = 0, 2
    summary = RunSummary()
    with pytest.raises(ConnectionError, match="dropped"):
        shop.billing.run_due(summary=summary)
    assert (summary.renewals, summary.payments_succeeded) == (2, 2)
    assert not _settle_threads()
    again = shop.billing.run_due(summary=summary)
    assert (again.renewals, again.payments_succeeded) == (5, 5)
