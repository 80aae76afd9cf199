"""``Billing.run_due`` renewing N subscriptions on PostgreSQL, beside the naive way and COPY.

In a throwaway schema: N + M due monthly subscriptions (cloned in SQL from one made by
``Billing.subscribe``, each with that one's history: a renewal repeats the MRR of the
change before it, as in production). Measured in the same run, on the same database:

* ``run_due`` over M subscriptions the naive way: a unit of work per subscription and a
  statement per row (batch mode off, ``batch_size=1``);
* ``run_due`` over the N others: claims of 500 with ``FOR UPDATE SKIP LOCKED``, rows read
  in bulk, writes sent as one executemany per table per batch. Each renewal writes its
  invoice, line, payment through the fake gateway, period advance, events, audit rows and
  change rows. The run goes in tenths (below), taking turns: half of them as
  ``sqlalchemy_billing`` runs by default, a batch's payments settled in a second thread
  while the next batch is billed (the figure), half with each batch settled before the
  next (``sequential_subs_per_s``);
* the floor: the very rows that run wrote, loaded again by raw ``COPY`` into empty copies
  of their tables (with their indexes), no domain logic;
* ``run_due`` scaled out: W more due subscriptions shared by two worker processes (this
  machine's two cores, PostgreSQL's included), each claiming its own batches;
* this process's CPU time a renewal beside its wall time (the difference waits on the
  server), and the share of the run its garbage collector took;
* the process's peak RSS after a tenth of the run and after all of it. The run charges
  through a gateway that approves every charge and keeps nothing (a FakeGateway's
  ledger grows by ~500 bytes a charge: it is the fake's memory, not the library's).

The run goes in tenths with an ``ANALYZE`` of the written tables between them, not timed:
this machine's PostgreSQL runs with autovacuum off, and stale statistics would make the
planner scan whole tables that grew from nothing.

Run: ``.venv/bin/python benchmarks/bench_billing_run.py [--subscriptions 100000]``;
``--smoke`` uses 1,000 and 200. The last line is one JSON object; without PostgreSQL it
prints ``{"skipped": 1}`` (and fails when ``LUMENQUEST_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import attrs
import sqlalchemy as sa

from _collector import CollectorTime
from lumenquest_adapters.memory import TestClock
from lumenquest_adapters.sqlalchemy import SqlAlchemyStore, create_engine_for, sqlalchemy_billing
from lumenquest_adapters.sqlalchemy._uow import SqlAlchemyUnitOfWork
from lumenquest_core import BillingCycle, ChargeResult, ChargeStatus, Customer, Interval, Money

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
START = datetime(2026, 1, 1, tzinfo=UTC)
RUN_AT = datetime(2026, 2, 1, 0, 30, tzinfo=UTC)
WRITTEN = ("invoices", "payments", "outbox", "audit_logs", "subscription_changes")


class ApprovingGateway:
    """A gateway that approves every charge and remembers none (a processor's side)."""

    def ensure_customer(self, customer: Customer) -> str:
        """Return the customer's id as its reference."""
        return customer.id

    def charge(self, *, idempotency_key: str, **_: Any) -> ChargeResult:
        """Approve the charge."""
        return ChargeResult(ChargeStatus.SUCCEEDED, f"ch_{idempotency_key}")

    def refund(self, *, reference: str, amount: Money, idempotency_key: str) -> str:
        """Approve the refund."""
        return f"re_{idempotency_key}"

    def find_charge(self, customer: Customer, idempotency_key: str) -> ChargeResult | None:
        """Say no charge was left pending: the run never leaves one."""
        return None


class NaiveUnitOfWork(SqlAlchemyUnitOfWork):
    """A unit of work that ignores batch hints: one statement per row, as before batching."""

    def prepare_batch(self, **_: Any) -> None:
        """Ignore the hint."""


def clone(engine: sa.Engine, table: str, count: int, template: str, **exprs: str) -> None:
    """Insert ``count`` copies of one row, some columns computed from ``g`` (1..count)."""
    with engine.begin() as connection:
        columns = [
            c["name"] for c in sa.inspect(connection).get_columns(table) if c["name"] != "seq"
        ]
        select = ", ".join(exprs.get(c, f"t.{c}") for c in columns)
        connection.exec_driver_sql(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select}"
            f" FROM generate_series(1, {count}) AS g, {table} AS t WHERE t.id = '{template}'"
        )


def setup(engine: sa.Engine, total: int) -> str:
    """Make ``total`` due subscriptions; return the template subscription's id."""
    clock = TestClock(START)
    billing = sqlalchemy_billing(engine, clock=clock, dispatch_immediately=False)
    plan = billing.create_plan(name="Pro", features=["reports"])
    price = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1000, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    customer = billing.create_customer(email="template@example.com", name="Template")
    sub = billing.subscribe(customer_id=customer.id, price_id=price.id)
    clone(
        engine,
        "customers",
        total - 1,
        customer.id,
        id="'cus_b' || lpad(g::text, 7, '0')",
        email="'u' || g || '@example.com'",
    )
    clone(
        engine,
        "subscriptions",
        total - 1,
        sub.id,
        id="'sub_b' || lpad(g::text, 7, '0')",
        customer_id="'cus_b' || lpad(g::text, 7, '0')",
    )
    # Each clone gets the template's history too (its start, then its first payment), so
    # that a renewal is what it is in production: a change repeating the MRR before it.
    with engine.connect() as connection:
        history = connection.exec_driver_sql(
            "SELECT id FROM subscription_changes WHERE subscription_id = %(id)s ORDER BY seq",
            {"id": sub.id},
        ).scalars()
        changes = list(history)
    for n, change in enumerate(changes):
        clone(
            engine,
            "subscription_changes",
            total - 1,
            change,
            id=f"'chg_b{n}_' || lpad(g::text, 7, '0')",
            subscription_id="'sub_b' || lpad(g::text, 7, '0')",
            customer_id="'cus_b' || lpad(g::text, 7, '0')",
            superseded_at="NULL",  # the span triggers set it, as for any insert
        )
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "ANALYZE customers; ANALYZE subscriptions; ANALYZE subscription_changes"
        )
    return sub.id


def billing_for(engine: sa.Engine, *, naive: bool, overlap: bool = True) -> Any:
    """Return a Billing at RUN_AT, batching or not, that dispatches no email during the run.

    ``overlap``: whether a batch's payments settle while the next batch is billed (the
    default on PostgreSQL).
    """
    clock = TestClock(RUN_AT)
    if naive:
        return sqlalchemy_billing(
            engine,
            migrate=False,
            clock=clock,
            unit_of_work=lambda: NaiveUnitOfWork(engine),
            gateway=ApprovingGateway(),
            batch_size=1,
            dispatch_immediately=False,
        )
    store = SqlAlchemyStore(engine)
    return sqlalchemy_billing(
        engine,
        migrate=False,
        clock=clock,
        unit_of_work=store.unit_of_work,
        gateway=ApprovingGateway(),
        dispatch_immediately=False,
        overlap_settlement=overlap,
    )


def timed_run(billing: Any, limit: int) -> float:
    """Return subscriptions renewed per second by one run_due of ``limit``."""
    started = time.perf_counter()
    summary = billing.run_due(limit=limit)
    seconds = time.perf_counter() - started
    assert summary.renewals == limit, summary
    assert summary.payments_succeeded == limit, summary
    return limit / seconds


def _worker(url: str, schema: str, limit: int, start: Any) -> None:
    """One worker process: wait for the others, then run_due over ``limit`` subscriptions."""
    engine = create_engine_for(url, connect_args={"options": f"-csearch_path={schema}"})
    billing = billing_for(engine, naive=False)
    start.wait()
    summary = billing.run_due(limit=limit)
    assert summary.renewals == limit, summary
    engine.dispose()


def timed_workers(url: str, schema: str, total: int, workers: int = 2) -> float:
    """Return subscriptions renewed per second by ``workers`` processes sharing ``total``."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers + 1)
    shares = [total // workers + (1 if k < total % workers else 0) for k in range(workers)]
    processes = [
        context.Process(target=_worker, args=(url, schema, share, start)) for share in shares
    ]
    for process in processes:
        process.start()
    start.wait()  # every worker has connected and built its billing: time the work only
    began = time.perf_counter()
    for process in processes:
        process.join()
    seconds = time.perf_counter() - began
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    return total / seconds


def tenths(n: int) -> list[int]:
    """Split ``n`` into ten near-equal shares (fewer when n < 10)."""
    parts = min(10, n)
    return [n // parts + (1 if k < n % parts else 0) for k in range(parts)]


def analyze(engine: sa.Engine) -> None:
    """Refresh the planner's statistics of the tables a run writes.

    This machine's server runs with autovacuum off; without fresh statistics the planner
    takes tables that grew from nothing for tiny and scans them whole.
    """
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "ANALYZE invoices, invoice_lines, payments, outbox, audit_logs,"
            " subscription_changes, subscriptions"
        )


def last_seqs(engine: sa.Engine) -> dict[str, int]:
    """Return each written table's highest seq, so that the run's own rows can be told."""
    with engine.connect() as connection:
        return {
            table: int(
                connection.exec_driver_sql(f"SELECT coalesce(max(seq), 0) FROM {table}").scalar()
                or 0
            )
            for table in WRITTEN
        }


def copy_floor(engine: sa.Engine, before: dict[str, int]) -> tuple[float, int]:
    """COPY the run's rows into empty copies of their tables; return (seconds, rows)."""
    sources = {table: f"SELECT * FROM {table} WHERE seq > {seq}" for table, seq in before.items()}
    sources["invoice_lines"] = (
        "SELECT l.* FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id"
        f" WHERE i.seq > {before['invoices']}"
    )
    # The subscriptions this run renewed, not every one the setup made (the naive run's
    # and the workers' are not its rows).
    sources["subscriptions"] = (
        "SELECT s.* FROM subscriptions s WHERE s.id IN"
        f" (SELECT subscription_id FROM invoices WHERE seq > {before['invoices']})"
    )
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
        dumps: dict[str, list[bytes]] = {}
        for table, query in sources.items():
            cursor.execute(f"CREATE TABLE floor_{table} (LIKE {table} INCLUDING ALL)")
            with cursor.copy(f"COPY ({query}) TO STDOUT") as copy:
                dumps[table] = [bytes(block) for block in copy]
        raw.commit()
        rows = sum(block.count(b"\n") for blocks in dumps.values() for block in blocks)
        started = time.perf_counter()
        for table, blocks in dumps.items():
            with cursor.copy(f"COPY floor_{table} FROM STDIN") as copy:
                for block in blocks:
                    copy.write(block)
        raw.commit()
        seconds = time.perf_counter() - started
        cursor.close()
    finally:
        raw.close()
    return seconds, rows


@attrs.define
class Share:
    """What the tenths one billing ran took: renewals, wall, CPU and collector seconds."""

    renewals: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    collector: float = 0.0


def run_in_tenths(engine: sa.Engine, billings: list[Any], n: int) -> tuple[list[Share], float]:
    """Renew ``n`` in tenths, taking turns with ``billings``; return each one's share and
    the RSS after the first tenth."""
    shares = [Share() for _ in billings]
    rss_tenth = 0.0
    for k, count in enumerate(tenths(n)):
        share = shares[k % len(billings)]
        collector = CollectorTime()
        cpu_started = time.process_time()
        with collector:
            share.wall += count / timed_run(billings[k % len(billings)], count)
        share.cpu += time.process_time() - cpu_started
        share.collector += collector.seconds
        share.renewals += count
        if k == 0:
            rss_tenth = peak_rss_mib()
        analyze(engine)  # not timed: what autovacuum would do as the tables grow
    return shares, rss_tenth


def peak_rss_mib() -> float:
    """Return this process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--naive", type=int, default=5_000, help="the naive way's subset")
    parser.add_argument("--workers-subscriptions", type=int, default=20_000, help="for 2 workers")
    parser.add_argument("--smoke", action="store_true", help="1,000 and 200 only")
    parser.add_argument("--url", default=os.environ.get("LUMENQUEST_POSTGRES_URL", DEFAULT_URL))
    options = parser.parse_args()
    n, m, w = (
        (1_000, 200, 400)
        if options.smoke
        else (options.subscriptions, options.naive, options.workers_subscriptions)
    )
    try:
        admin = create_engine_for(options.url)
        with admin.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except Exception as exc:  # any failure to connect means: no PostgreSQL here
        if os.environ.get("LUMENQUEST_REQUIRE_SERVICES") == "1":
            raise SystemExit(f"PostgreSQL is required but unreachable: {exc}") from exc
        print(json.dumps({"skipped": 1}))
        return
    schema = f"lq_run_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine = create_engine_for(options.url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        began = time.perf_counter()
        setup(engine, n + m + w)
        setup_seconds = time.perf_counter() - began
        naive_per_s = timed_run(billing_for(engine, naive=True), m)
        before = last_seqs(engine)
        billings = [
            billing_for(engine, naive=False),
            billing_for(engine, naive=False, overlap=False),
        ]
        rss_start = peak_rss_mib()
        (run, sequential), rss_tenth = run_in_tenths(engine, billings, n)
        rss_all = peak_rss_mib()
        run_per_s = run.renewals / run.wall
        floor_seconds, floor_rows = copy_floor(engine, before)
        workers_per_s = timed_workers(options.url, schema, w)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
    floor_per_s = n / floor_seconds
    figures = {
        "run_due_subs_per_s": round(run_per_s, 1),
        "naive_subs_per_s": round(naive_per_s, 1),
        "floor_copy_subs_per_s": round(floor_per_s, 1),
        "speedup_vs_naive_x": round(run_per_s / naive_per_s, 2),
        "two_workers_subs_per_s": round(workers_per_s, 1),
        "share_of_floor_pct": round(100 * run_per_s / floor_per_s, 1),
        # Both of this machine's cores, each with a worker (PostgreSQL shares them).
        "two_workers_share_of_floor_pct": round(100 * workers_per_s / floor_per_s, 1),
        # This process's CPU a renewal beside the wall time: the rest is spent waiting on
        # the server (its statements, foreign keys, commits).
        # The other tenths, with each batch settled before the next is billed.
        "sequential_subs_per_s": round(sequential.renewals / sequential.wall, 1),
        "run_due_cpu_us_per_sub": round(1e6 * run.cpu / run.renewals),
        "run_due_wall_us_per_sub": round(1e6 * run.wall / run.renewals),
        # Python's cyclic garbage collector within it: a batch keeps its rows alive, so
        # full passes come often, each walking the whole heap (the CLI freezes its
        # start-up heap for this; the library leaves the collector alone).
        "run_due_gc_share_pct": round(100 * run.collector / run.wall, 1),
        "floor_rows_per_sub": round(floor_rows / n, 2),
        "rss_growth_first_tenth_mib": round(rss_tenth - rss_start, 1),
        "rss_growth_other_nine_tenths_mib": round(rss_all - rss_tenth, 1),
        "subscriptions": n,
        "naive_subscriptions": m,
        "workers_subscriptions": w,
        "setup_seconds": round(setup_seconds, 1),
    }
    for name, value in figures.items():
        print(f"{name:<36}{value:>14}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
