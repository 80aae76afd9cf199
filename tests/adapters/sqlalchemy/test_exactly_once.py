"""Exactly-once billing on PostgreSQL: concurrent worker processes, and workers killed mid-run.

Every worker is a process of its own (``spawn``) with its own engine and ``Billing`` on
the test's schema, a fixed clock, and a :class:`LedgerGateway` whose ledger is a table
in the same schema, idempotent per key across processes as Stripe is. Afterwards the
database and the ledger must agree: each subscription has exactly one cycle invoice for
the new period, each invoice exactly one successful payment and one successful charge
in the ledger, and nothing is left pending.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lumenquest_adapters.memory import RecordingEmailSender
from lumenquest_adapters.sqlalchemy import (
    SqlAlchemyBilling,
    SqlAlchemyStore,
    sqlalchemy_billing,
    upgrade,
)
from lumenquest_adapters.testing import PaymentGatewayContract
from lumenquest_adapters.testing.samples import customer, usd
from lumenquest_core import subscriptions as lifecycle
from lumenquest_core.catalog import Price
from lumenquest_core.customers import Customer
from lumenquest_core.events import EventName
from lumenquest_core.invoicing import BillingReason
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval
from lumenquest_core.ports import PaymentGateway
from tests.adapters.sqlalchemy.databases import clear, postgres_engine, postgres_schema
from tests.adapters.sqlalchemy.ledger_gateway import LedgerGateway

START = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD_START = datetime(2026, 2, 1, tzinfo=UTC)  # the period every renewal opens
PERIOD_END = datetime(2026, 3, 1, tzinfo=UTC)
# The workers' fixed "now", a minute after the renewals fall due.
RUN_AT = PERIOD_START + timedelta(minutes=1)
CLEAN_RUN_AT = RUN_AT + timedelta(minutes=10)  # past the grace: pending payments resolved

WORKERS = 4
SUBSCRIPTIONS = 5_000  # the figure: ~70 s here on 2 cores, ~110 s with the machine busy
BATCH_SIZE = 100  # small batches, so the four workers interleave many claims
CRASH_REPETITIONS = 20
CRASH_SUBSCRIPTIONS = 60
CRASH_BATCH_SIZE = 10  # several commit / charge / settle rounds for a kill to land in
JOIN_TIMEOUT = 400.0  # a guard against hangs, not a speed limit (a run takes ~1-2 min)

_SPAWN: SpawnContext = multiprocessing.get_context("spawn")


@attrs.frozen
class FixedClock:
    """A ``Clock`` that always says the same instant."""

    at: datetime

    def now(self) -> datetime:
        return self.at


# -- setting up ----------------------------------------------------------------------------


def _billing(
    url: str, schema: str, at: datetime, *, batch_size: int = BATCH_SIZE
) -> tuple[SqlAlchemyBilling, LedgerGateway]:
    """Return a Billing on the schema at a fixed instant, with the shared ledger gateway."""
    gateway = LedgerGateway(url, schema)
    billing = sqlalchemy_billing(
        postgres_engine(url, schema),
        migrate=False,
        clock=FixedClock(at),
        gateway=gateway,
        email=RecordingEmailSender(),
        batch_size=batch_size,
        # The outbox is at-least-once and not what is under test; delivering it from four
        # processes at once would only slow the billing run down.
        dispatch_immediately=False,
    )
    return billing, gateway


def _seed(billing: SqlAlchemyBilling, count: int, *, chunk: int = 2_500) -> list[str]:
    """Store ``count`` active monthly subscriptions, due at PERIOD_START; return their ids.

    Written straight through the repositories in a few big units of work (subscribing
    one by one would take longer than the billing run): each subscription is the
    lifecycle's own, started at START and activated as if its first invoice was paid.
    """
    plan = billing.create_plan(name="Pro")
    price: Price = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1_900, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    ids = [f"sub_{n:06d}" for n in range(count)]
    for offset in range(0, count, chunk):
        with billing.store.unit_of_work() as uow:
            for n in range(offset, min(offset + chunk, count)):
                customer = Customer(
                    id=f"cus_{n:06d}",
                    email=f"customer{n}@example.com",
                    created_at=START,
                    currency="USD",
                )
                started = lifecycle.start(
                    subscription_id=ids[n], customer_id=customer.id, price=price, at=START
                ).subscription
                active = lifecycle.payment_succeeded(started, START).subscription
                uow.customers.add(customer)
                uow.subscriptions.add(active)
            uow.commit()
    return ids


@pytest.fixture(scope="module")
def schema(postgres_url: str) -> Iterator[str]:
    """A migrated schema with the ledger's tables, for this module's tests."""
    with postgres_schema(postgres_url) as name:
        engine = postgres_engine(postgres_url, name)
        upgrade(engine)
        LedgerGateway.create_tables(engine)
        engine.dispose()
        yield name


@pytest.fixture
def empty(postgres_url: str, schema: str) -> Iterator[Engine]:
    """An engine on the schema, emptied (billing and ledger) before the test."""
    engine = postgres_engine(postgres_url, schema)
    clear(engine)
    LedgerGateway.truncate(engine)
    yield engine
    engine.dispose()


# -- the workers (run in spawned processes) --------------------------------------------------


def _concurrent_worker(
    url: str, schema: str, at: datetime, start: Barrier, results: Queue[Any]
) -> None:
    """Wait for the others, run ``run_due`` once, report the summary (or the traceback)."""
    try:
        billing, gateway = _billing(url, schema, at)
        start.wait(timeout=60)
        summary = billing.run_due()
        results.put(("ok", os.getpid(), attrs.asdict(summary)))
        gateway.dispose()
        billing.store.engine.dispose()
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))


def _doomed_worker(url: str, schema: str, at: datetime, ready: Event) -> None:
    """Run ``run_due`` until killed (the parent sends SIGKILL at a random moment)."""
    billing, _gateway = _billing(url, schema, at, batch_size=CRASH_BATCH_SIZE)
    with billing.store.engine.connect():  # connect before the clock starts
        pass
    ready.set()
    billing.run_due()


def _join(process: SpawnProcess) -> None:
    process.join(JOIN_TIMEOUT)
    if process.is_alive():
        process.kill()
        process.join(10)
        pytest.fail(f"worker {process.pid} did not finish within {JOIN_TIMEOUT} s")


@contextmanager
def _reaped(processes: Sequence[SpawnProcess]) -> Iterator[None]:
    """Kill whatever worker is still alive when the block ends (a failed test's leftovers).

    A live worker would hold locks that the schema's DROP at teardown waits for.
    """
    try:
        yield
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(10)


# -- what must hold afterwards ---------------------------------------------------------------


def _rows(engine: Engine, sql: str, **params: Any) -> list[sa.Row[Any]]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text(sql), params))


def _state(engine: Engine) -> dict[str, int]:
    """Count what a run has done so far: renewed, invoiced, pending, settled, charged."""
    (row,) = _rows(
        engine,
        "SELECT (SELECT count(*) FROM subscriptions WHERE current_period_start = :period)"
        "  AS renewed,"
        " (SELECT count(*) FROM invoices) AS invoices,"
        " (SELECT count(*) FROM payments WHERE status = 'pending') AS pending,"
        " (SELECT count(*) FROM payments WHERE status <> 'pending') AS settled,"
        " (SELECT count(*) FROM ledger_charges) AS charged,"
        " (SELECT count(*) FROM payments p JOIN ledger_charges c"
        "   ON c.idempotency_key = p.idempotency_key WHERE p.status = 'pending')"
        "  AS charged_but_pending",
        period=PERIOD_START,
    )
    return dict(row._mapping)


def assert_billed_exactly_once(engine: Engine, subscription_ids: list[str]) -> None:
    """Each subscription: one cycle invoice for the new period, paid by one payment and one charge."""
    expected = len(subscription_ids)
    per_subscription = _rows(
        engine,
        "SELECT s.id, s.status, s.current_period_start, count(i.id) AS invoices"
        " FROM subscriptions s LEFT JOIN invoices i ON i.subscription_id = s.id"
        "  AND i.billing_reason = :cycle AND i.period_start = :period"
        " GROUP BY s.id, s.status, s.current_period_start ORDER BY s.id",
        cycle=BillingReason.SUBSCRIPTION_CYCLE.value,
        period=PERIOD_START,
    )
    assert [r.id for r in per_subscription] == sorted(subscription_ids)
    duplicated = [r.id for r in per_subscription if r.invoices > 1]
    missing = [r.id for r in per_subscription if r.invoices == 0]
    assert not duplicated, f"{len(duplicated)} subscriptions invoiced twice: {duplicated[:5]}"
    assert not missing, f"{len(missing)} subscriptions not invoiced: {missing[:5]}"
    assert {(r.status, r.current_period_start) for r in per_subscription} == {
        ("active", PERIOD_START)
    }

    invoices = _rows(
        engine, "SELECT id, status, total, amount_due, amount_paid, period_end FROM invoices"
    )
    assert len(invoices) == expected  # no invoice besides the cycle ones
    assert {(i.status, i.period_end) for i in invoices} == {("paid", PERIOD_END)}
    assert all(i.amount_paid == i.total == i.amount_due > 0 for i in invoices)

    payments = _rows(
        engine,
        "SELECT invoice_id, status, idempotency_key, gateway_reference, amount FROM payments",
    )
    assert [p for p in payments if p.status == "pending"] == []
    assert len(payments) == expected
    assert {p.status for p in payments} == {"succeeded"}
    assert len({p.invoice_id for p in payments}) == expected  # one payment per invoice

    ledger = _rows(
        engine,
        "SELECT idempotency_key, reference, status, amount, invoice_id FROM ledger_charges",
    )
    charged = [c for c in ledger if c.status == "succeeded"]
    assert len(ledger) == len(charged) == expected  # ledger == invoices == subscriptions
    assert len({c.invoice_id for c in charged}) == expected  # one charge per invoice
    by_key = {c.idempotency_key: c for c in charged}
    for payment in payments:
        charge = by_key[payment.idempotency_key]
        assert (charge.reference, charge.amount, charge.invoice_id) == (
            payment.gateway_reference,
            payment.amount,
            payment.invoice_id,
        )
    due_invoice = {i.id: i.amount_due for i in invoices}
    assert all(due_invoice[c.invoice_id] == c.amount for c in charged)


# -- the ledger gateway itself ----------------------------------------------------------------


class TestLedgerGateway(PaymentGatewayContract):
    """The gateway the workers share keeps the port's contract, like the fake and Stripe."""

    @pytest.fixture
    def gateway(self, postgres_url: str, schema: str, empty: Engine) -> Iterator[PaymentGateway]:
        gateway = LedgerGateway(postgres_url, schema)
        yield gateway
        gateway.dispose()

    def script_decline(self, gateway: PaymentGateway, decline_code: str) -> None:
        assert isinstance(gateway, LedgerGateway)
        gateway.script_decline(decline_code)


def _charging_worker(
    url: str, schema: str, keys: list[str], start: Barrier, results: Queue[Any]
) -> None:
    """Charge every key once, all processes at the same time; report the references."""
    try:
        gateway = LedgerGateway(url, schema)
        start.wait(timeout=60)
        answers = [
            gateway.charge(
                customer=customer("cus_1"),
                amount=usd(1_000),
                idempotency_key=key,
                description="",
                metadata={},
            ).reference
            for key in keys
        ]
        results.put(("ok", answers))
        gateway.dispose()
    except BaseException:
        results.put(("error", traceback.format_exc()))


def test_the_ledger_charges_once_per_key_across_processes(
    postgres_url: str, schema: str, empty: Engine
) -> None:
    keys = [f"pay_{n}:1" for n in range(40)]
    scripter = LedgerGateway(postgres_url, schema)
    scripter.script_decline("insufficient_funds")
    scripter.dispose()
    start = _SPAWN.Barrier(WORKERS)
    results: Queue[Any] = _SPAWN.Queue()
    workers = [
        _SPAWN.Process(target=_charging_worker, args=(postgres_url, schema, keys, start, results))
        for _ in range(WORKERS)
    ]
    with _reaped(workers):
        for worker in workers:
            worker.start()
        reports = [results.get(timeout=JOIN_TIMEOUT) for _ in workers]
        for worker in workers:
            _join(worker)
    assert [status for status, _ in reports] == ["ok"] * WORKERS, reports
    answers = [dict(zip(keys, references, strict=True)) for _, references in reports]
    assert all(answer == answers[0] for answer in answers)  # every process got the same charge
    ledger = _rows(empty, "SELECT idempotency_key, reference, status FROM ledger_charges")
    assert {row.idempotency_key: row.reference for row in ledger} == answers[0]
    assert len(ledger) == len(keys)  # one charge per key, not one per process
    assert [row.status for row in ledger].count("declined") == 1  # the script was taken once


# -- the billing run ---------------------------------------------------------------------------


def test_four_workers_bill_every_due_subscription_exactly_once(
    postgres_url: str, schema: str, empty: Engine
) -> None:
    seeder, seeder_gateway = _billing(postgres_url, schema, START)
    ids = _seed(seeder, SUBSCRIPTIONS)
    seeder.store.engine.dispose()
    seeder_gateway.dispose()

    start = _SPAWN.Barrier(WORKERS)
    results: Queue[Any] = _SPAWN.Queue()
    workers = [
        _SPAWN.Process(
            target=_concurrent_worker, args=(postgres_url, schema, RUN_AT, start, results)
        )
        for _ in range(WORKERS)
    ]
    with _reaped(workers):
        for worker in workers:
            worker.start()
        reports = [results.get(timeout=JOIN_TIMEOUT) for _ in workers]
        for worker in workers:
            _join(worker)

    errors = [report for status, _pid, report in reports if status == "error"]
    assert not errors, errors[0]
    summaries = [summary for _status, _pid, summary in reports]
    assert_billed_exactly_once(empty, ids)
    total = {key: sum(s[key] for s in summaries) for key in summaries[0]}
    assert total["subscriptions"] == total["renewals"] == SUBSCRIPTIONS
    assert total["invoices"] == total["payments_succeeded"] == SUBSCRIPTIONS
    assert total["payments_failed"] == total["payments_pending"] == total["payment_retries"] == 0
    assert all(s["subscriptions"] > 0 for s in summaries), summaries  # all four took work


def test_a_worker_killed_anywhere_leaves_nothing_a_clean_run_cannot_finish(
    postgres_url: str, schema: str, empty: Engine
) -> None:
    rng = random.Random(20260201)
    window: float | None = None  # how long an undisturbed run takes, measured first
    killed = 0
    for repetition in range(CRASH_REPETITIONS + 1):
        clear(empty)
        LedgerGateway.truncate(empty)
        seeder, seeder_gateway = _billing(postgres_url, schema, START)
        ids = _seed(seeder, CRASH_SUBSCRIPTIONS)
        seeder.store.engine.dispose()
        seeder_gateway.dispose()

        ready = _SPAWN.Event()
        worker = _SPAWN.Process(target=_doomed_worker, args=(postgres_url, schema, RUN_AT, ready))
        with _reaped([worker]):
            worker.start()
            assert ready.wait(JOIN_TIMEOUT), "the worker never got ready"
            began = time.monotonic()
            where = f"repetition {repetition}: the worker ran undisturbed"
            if window is None:
                # Repetition 0 is not killed: it measures the span the kills are drawn from.
                _join(worker)
                window = time.monotonic() - began
                assert worker.exitcode == 0
            else:
                # The delay only chooses where the worker dies; nothing asserted depends on it.
                delay = rng.uniform(0, window * 1.1)
                time.sleep(delay)
                where = f"repetition {repetition}: SIGKILL after {delay:.3f} s of {window:.3f} s"
                worker.kill()  # SIGKILL: no cleanup, no rollback from the client side
                _join(worker)
                killed += worker.exitcode == -signal.SIGKILL

        print(where, _state(empty))  # shown on failure: what the kill left behind
        cleaner, cleaner_gateway = _billing(postgres_url, schema, CLEAN_RUN_AT)
        cleaner.run_due()
        cleaner.store.engine.dispose()
        cleaner_gateway.dispose()
        try:
            assert_billed_exactly_once(empty, ids)
        except AssertionError as error:
            raise AssertionError(f"{where}: {error}") from error
    assert killed >= 1, "no repetition killed the worker mid-run"


# -- a settle racing a retry (found while writing the above) -----------------------------------


class _ArmingGateway(LedgerGateway):
    """The ledger gateway that arms a trap on its first charge (the run is now collecting)."""

    armed = False

    def charge(self, **arguments: Any) -> Any:
        self.armed = True
        return super().charge(**arguments)


class _InvoicesReadHook:
    """An invoice repository whose first ``get`` once armed returns, then runs ``meanwhile``."""

    def __init__(self, inner: Any, trap: _Trap) -> None:
        self._inner = inner
        self._trap = trap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get(self, invoice_id: str) -> Any:
        invoice = self._inner.get(invoice_id)
        self._trap.spring()
        return invoice


@attrs.define
class _Trap:
    gateway: _ArmingGateway
    meanwhile: Any
    sprung: bool = False

    def spring(self) -> None:
        if self.gateway.armed and not self.sprung:
            self.sprung = True
            self.meanwhile()


class _HookedUnitOfWork:
    """A unit of work that hands out the hooked invoice repository; the rest is the real one."""

    def __init__(self, inner: Any, trap: _Trap) -> None:
        self._inner = inner
        self._trap = trap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> _HookedUnitOfWork:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._inner.__exit__(*exc_info)

    @property
    def invoices(self) -> _InvoicesReadHook:
        return _InvoicesReadHook(self._inner.invoices, self._trap)


def test_a_retry_that_settles_first_does_not_make_the_first_run_record_the_payment_again(
    postgres_url: str, schema: str, empty: Engine
) -> None:
    """Worker A renews and charges; worker B starts its run while A settles.

    This once recorded A's payments twice: they were stamped with the renewal's due time
    (an hour ago), so B's pending-payment retry took them as left behind, settled them,
    and A, having read them as pending without a lock, recorded them again (a second
    ``invoice.paid`` and receipt). Payments are now stamped when sent and settled under
    a row lock. The interleaving is forced: B runs inside A's first invoice read.
    """
    seeder, seeder_gateway = _billing(postgres_url, schema, START)
    ids = _seed(seeder, 3)
    seeder.store.engine.dispose()
    seeder_gateway.dispose()

    late = PERIOD_START + timedelta(hours=1)  # an hourly run: past the 5-minute grace
    other, other_gateway = _billing(postgres_url, schema, late)
    summaries: list[Any] = []
    gateway = _ArmingGateway(postgres_url, schema)
    trap = _Trap(gateway, lambda: summaries.append(other.run_due()))
    engine = postgres_engine(postgres_url, schema)
    store = SqlAlchemyStore(engine)
    first = sqlalchemy_billing(
        engine,
        migrate=False,
        clock=FixedClock(late),
        gateway=gateway,
        email=RecordingEmailSender(),
        dispatch_immediately=False,
        unit_of_work=lambda: _HookedUnitOfWork(store.unit_of_work(), trap),
    )
    summaries.append(first.run_due())
    for billing, used in ((other, other_gateway), (first, gateway)):
        billing.store.engine.dispose()
        used.dispose()
    engine.dispose()
    assert trap.sprung

    assert_billed_exactly_once(empty, ids)  # the ledger and the rows themselves are right
    paid_events = _rows(
        empty,
        "SELECT o.id FROM outbox o WHERE o.name = :name",
        name=EventName.INVOICE_PAID.value,
    )
    assert len(paid_events) == len(ids), "an invoice.paid event was recorded twice"
    assert sum(s.payments_succeeded for s in summaries) == len(ids)
