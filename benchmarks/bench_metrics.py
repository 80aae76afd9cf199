"""MRR, movements, churn and conversions over a million subscriptions' history in PostgreSQL.

Bulk-loads ``--subscriptions N`` subscriptions' history (1-3 change rows each, over
N/10 customers, two years; some start with a trial) into a throwaway schema with COPY,
then times, in the same run on the same database:

* ``Billing.metrics`` for the last month, which asks the store for the MRR movement
  totals and the trial outcomes. One statement reads the paying rows that still hold or
  stopped in the period (``superseded_at``, kept by the triggers of migration 0005), not
  the history; sums them per customer; classifies each customer (new, expansion, ...) as
  ``classify_movement`` does; and returns one row per kind;
* baseline 1, the whole history in SQL: every change up to the end, windowed per
  subscription (``LEAD``) and summed per customer, as ``mrr_snapshots`` did before 0005;
* baseline 2, the pure-Python path: the change rows of a subset (at most 100k
  subscriptions) loaded with one SELECT, then ``metrics_from_changes``
  (``report_from_history``);
* baseline 3, the per-customer path ``Billing.metrics`` took before ``mrr_movements``:
  ``mrr_snapshots`` (every paying customer's MRR at both ends, to Python) and
  ``report_from_snapshots`` on it.

The load (``load_s``) is COPY with the span triggers off and ``superseded_at`` computed
by the generator, as the triggers would set it.

The schema is dropped at the end. ``--smoke`` loads 2,000 subscriptions. Prints a table,
then one JSON line. Without a reachable PostgreSQL it prints ``{"skipped": 1}`` (and fails
when ``LUMENQUEST_REQUIRE_SERVICES=1``).

Run: ``.venv/bin/python benchmarks/bench_metrics.py [--subscriptions 1000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lumenquest_adapters.sqlalchemy import (
    SqlAlchemyStore,
    create_engine_for,
    sqlalchemy_billing,
    upgrade,
)
from lumenquest_adapters.sqlalchemy import _mapping as mapping
from lumenquest_adapters.sqlalchemy._schema import subscription_changes
from lumenquest_core.metrics import MetricsReport, report_from_snapshots
from lumenquest_core.periods import Period
from lumenquest_core.service import metrics_from_changes

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
HISTORY_START = datetime(2024, 1, 1, tzinfo=UTC)
PERIOD = Period(datetime(2025, 11, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC))
SUBSET = 100_000
_COLUMNS = (
    "id, subscription_id, customer_id, kind, at, from_status, to_status, from_price_id,"
    " to_price_id, from_quantity, to_quantity, mrr, mrr_currency, plan_id, data, superseded_at"
)

_TRIGGERS = ("lumenquest_change_span_new", "lumenquest_change_span_close")


def history(subscriptions: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """Yield change rows: created (maybe trialing), trial end, plan change or cancellation."""
    rng = random.Random(seed)
    customers = max(1, subscriptions // 10)
    span_days = (PERIOD.end - HISTORY_START).days
    amounts = (990, 1900, 4900, 9900)
    for n in range(subscriptions):
        sub, customer = f"sub_{n:08d}", f"cus_{rng.randrange(customers):07d}"
        plan = f"plan_{rng.randrange(4)}"
        at = HISTORY_START + timedelta(seconds=rng.randrange(span_days * 86_400))
        mrr = rng.choice(amounts)
        status = "active"
        rows: list[tuple[str, datetime, str | None, str, int]] = []
        if rng.random() < 0.3:
            rows.append(("created", at, None, "trialing", 0))
            at += timedelta(days=14)
            status = "active" if rng.random() < 0.7 else "canceled"
            rows.append(("trial_ended", at, "trialing", status, mrr if status == "active" else 0))
        else:
            rows.append(("created", at, None, "active", mrr))
        if status == "active" and len(rows) < 3 and rng.random() < 0.5:
            at += timedelta(days=rng.randrange(1, 400))
            if rng.random() < 0.5:
                rows.append(("canceled", at, "active", "canceled", 0))
            else:
                rows.append(("changed", at, "active", "active", rng.choice(amounts)))
        kept = [r for r in rows if r[1] < PERIOD.end + timedelta(days=30)]
        for k, (kind, when, before, after, amount) in enumerate(kept):
            yield (
                f"chg_{n:08d}_{k}", sub, customer, kind, when, before, after,
                None, "price_1", None, 1, amount, "USD", plan, "{}", _until(kept, k),
            )  # fmt: skip


def _until(rows: list[tuple[str, datetime, str | None, str, int]], k: int) -> datetime | None:
    """Return what the span triggers would set: the next change of MRR, or its own ``at``."""
    if k and rows[k - 1][4] == rows[k][4]:
        return rows[k][1]  # a repeat
    return next((r[1] for r in rows[k + 1 :] if r[4] != rows[k][4]), None)


def load(engine: sa.Engine, subscriptions: int) -> int:
    """COPY the history in; return the number of change rows."""
    count = 0
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
        # FREEZE (the table truncated in the same transaction): the rows are visible to all
        # at once, so index-only scans skip the heap even while other sessions are open.
        cursor.execute("TRUNCATE subscription_changes")
        # The span triggers plan their lookups on the table as it is: in a bulk load into
        # a truncated table that is a sequential scan per row. The rows come with their
        # spans instead (the triggers' result), and the triggers are off meanwhile.
        for trigger in _TRIGGERS:
            cursor.execute(f"ALTER TABLE subscription_changes DISABLE TRIGGER {trigger}")
        statement = f"COPY subscription_changes ({_COLUMNS}) FROM STDIN WITH (FREEZE)"
        with cursor.copy(statement) as copy:
            for row in history(subscriptions):
                copy.write_row(row)
                count += 1
        for trigger in _TRIGGERS:
            cursor.execute(f"ALTER TABLE subscription_changes ENABLE ALWAYS TRIGGER {trigger}")
        cursor.close()
        raw.commit()
    finally:
        raw.close()
    with engine.connect() as connection:
        # VACUUM (outside a transaction) sets the visibility map: index-only scans.
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM ANALYZE subscription_changes"
        )
    return count


def python_baseline(engine: sa.Engine, subset: int) -> float:
    """Seconds to load the subset's rows with one SELECT and run ``metrics_from_changes``."""
    c = subscription_changes.c
    query = (
        sa.select(subscription_changes)
        .where(c.subscription_id < f"sub_{subset:08d}", c.at <= PERIOD.end)
        .order_by(c.at, c.seq)
    )
    started = time.perf_counter()
    with engine.connect() as connection:
        rows = [mapping.change_from_row(r) for r in connection.execute(query).mappings()]
    metrics_from_changes(rows, period=PERIOD, currency="USD")
    return time.perf_counter() - started


def snapshots_path(engine: sa.Engine) -> tuple[float, MetricsReport]:
    """Seconds for per-customer snapshots to Python, then ``report_from_snapshots``."""
    started = time.perf_counter()
    with SqlAlchemyStore(engine).unit_of_work() as uow:
        snapshots = uow.subscription_changes.mrr_snapshots(PERIOD, "USD")
        outcomes = uow.subscription_changes.trial_outcomes(PERIOD, "USD")
    report = report_from_snapshots(
        period=PERIOD,
        currency="USD",
        start=snapshots.start,
        end=snapshots.end,
        previously_active=snapshots.reactivated,
        trial_outcomes=outcomes,
    )
    return time.perf_counter() - started, report


def history_scan(engine: sa.Engine) -> float:
    """Seconds for MRR at both ends from every change up to the end (before migration 0005)."""
    c = subscription_changes.c
    start, end = PERIOD.start, PERIOD.end
    next_at = (
        sa.func.lead(c.at, type_=c.at.type)
        .over(partition_by=(c.customer_id, c.subscription_id), order_by=(c.at, c.seq))
        .label("next_at")
    )
    h = (
        sa.select(c.customer_id, c.mrr, c.at, next_at)
        .where(c.mrr_currency == "USD", c.at <= end)
        .subquery()
        .c
    )
    holds_at_start = sa.and_(h.at <= start, sa.or_(h.next_at.is_(None), h.next_at > start))
    query = sa.select(
        h.customer_id,
        sa.func.sum(sa.case((sa.and_(h.mrr > 0, holds_at_start), h.mrr), else_=0)),
        sa.func.sum(sa.case((sa.and_(h.mrr > 0, h.next_at.is_(None)), h.mrr), else_=0)),
    ).group_by(h.customer_id)
    started = time.perf_counter()
    with engine.connect() as connection:
        connection.execute(query).all()
    return time.perf_counter() - started


def explain(engine: sa.Engine, billing: Any) -> str:
    """EXPLAIN ANALYZE of the statements ``Billing.metrics`` runs, as PostgreSQL runs them."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        captured.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        billing.metrics(start=PERIOD.start, end=PERIOD.end, currency="USD")
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    plans = []
    with engine.connect() as connection:
        for statement, params in captured:
            if "set_config" in statement:
                # Run, not explained: the settings it makes are those the plans ran under.
                connection.exec_driver_sql(statement, params)
            elif statement.lstrip().upper().startswith("SELECT"):
                result = connection.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, params
                )
                plans.append("\n".join(row[0] for row in result))
    return "\n\n".join(plans)


def print_table(figures: dict[str, Any], mrr: str) -> None:
    """Print the figures as a table of seconds, one line each."""
    subs, subset = figures["subscriptions"], figures["python_subset_subscriptions"]
    lines = [
        (f"Billing.metrics via store queries, {subs:,} subs (median of 5)", "sql_metrics_s"),
        ("  first (cold) run", "sql_metrics_s_first"),
        ("whole history windowed in SQL (baseline, median of 3)", "sql_history_window_s"),
        ("per-customer snapshots to Python (baseline, median of 3)", "sql_snapshots_python_report_s"),
        (f"report_from_history on one SELECT, {subset:,} subs (baseline)", "python_metrics_s_100k"),
    ]  # fmt: skip
    print(f"{'PostgreSQL, last month of ' + str(figures['change_rows']) + ' change rows':<58}"
          f"{'seconds':>10}")  # fmt: skip
    for label, key in lines:
        print(f"{label:<58}{figures[key]:>10.3f}")
    print(f"  MRR {mrr}, {figures['paying_customers']} paying customers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help="2,000 subscriptions only")
    parser.add_argument("--url", default=os.environ.get("LUMENQUEST_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument("--explain", action="store_true", help="print the plans of the queries")
    options = parser.parse_args()
    subscriptions = 2_000 if options.smoke else options.subscriptions
    admin = create_engine_for(options.url)
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError:
        if os.environ.get("LUMENQUEST_REQUIRE_SERVICES") == "1":
            raise
        print(f"skipped: PostgreSQL is not reachable at {options.url}")
        print(json.dumps({"skipped": 1}))
        return
    schema = f"lq_bench_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    # Change rows alone, without their customers and subscriptions: foreign keys off.
    engine = create_engine_for(
        options.url, connect_args={"options": f"-csearch_path={schema}"}, enforce_foreign_keys=False
    )
    try:
        upgrade(engine)
        started = time.perf_counter()
        rows = load(engine, subscriptions)
        load_s = time.perf_counter() - started
        billing = sqlalchemy_billing(engine, migrate=False)
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            report = billing.metrics(start=PERIOD.start, end=PERIOD.end, currency="USD")
            runs.append(time.perf_counter() - started)
        history_s = statistics.median(history_scan(engine) for _ in range(3))
        snapshot_runs = [snapshots_path(engine) for _ in range(3)]
        snapshots_s = statistics.median(seconds for seconds, _ in snapshot_runs)
        # The same report both ways, or the figures compare different work.
        assert all(r == report for _, r in snapshot_runs), "the two paths disagree"
        subset = min(SUBSET, subscriptions)
        python_s = min(python_baseline(engine, subset) for _ in range(2))
        if options.explain:
            print(explain(engine, billing))
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
    sql_s = statistics.median(runs)
    figures = {
        "sql_metrics_s": round(sql_s, 3),
        "sql_metrics_s_first": round(runs[0], 3),
        "sql_history_window_s": round(history_s, 3),
        "sql_snapshots_python_report_s": round(snapshots_s, 3),
        "python_metrics_s_100k": round(python_s, 3),
        "python_subset_subscriptions": subset,
        "subscriptions": subscriptions,
        "change_rows": rows,
        "paying_customers": report.movements.end_customers,
        "load_s": round(load_s, 1),
    }
    print_table(figures, str(report.mrr))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
