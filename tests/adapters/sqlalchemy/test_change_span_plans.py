"""The change-span triggers find a subscription's chain by index, even on stale statistics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import upgrade

_INSERT = (
    "INSERT INTO subscription_changes (id, subscription_id, customer_id, kind, at, to_status,"
    " to_price_id, to_quantity, mrr, mrr_currency, data) VALUES (%s, %s, %s, 'renewed',"
    " timestamptz '2026-01-01' + make_interval(days => %s), 'active', 'p', 1, %s, 'USD', '{}')"
)


@contextmanager
def _system_cursor(engine: Engine) -> Iterator[tuple[Any, Any]]:
    """Yield psycopg's connection (autocommit) and a cursor acting as system, in replica mode."""
    upgrade(engine)
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        driver.autocommit = True
        cursor = driver.cursor()
        # Replica mode skips the foreign keys, not the triggers (ENABLE ALWAYS).
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SELECT set_config('lumenquest.role', 'system', false)")
        yield driver, cursor


def test_a_session_that_planned_on_an_empty_table_reads_no_row_by_sequential_scan(
    postgres_empty: Engine,
) -> None:
    """Statistics saying empty (autovacuum off) must not make each insert scan the table."""
    with _system_cursor(postgres_empty) as (driver, cursor):
        cursor.execute("ANALYZE subscription_changes")  # the statistics now say: empty
        driver.autocommit = False
        rows = 400  # 20 changes each for 20 subscriptions, MRR alternating now and then
        for i in range(rows):
            subscription = f"sub_{i % 20}"
            values = (f"chg_{i}", subscription, f"cus_{i % 20}", i, 1000 + (i % 3 == 0))
            cursor.execute(_INSERT, values)
        cursor.execute(
            # This schema's table: other tests' schemas have one of the same name.
            "SELECT seq_tup_read, idx_scan FROM pg_stat_xact_user_tables"
            " WHERE relname = 'subscription_changes' AND schemaname = current_schema()"
        )
        seq_tup_read, idx_scan = cursor.fetchone() or (None, None)
        driver.rollback()
    # Before migration 0007 the cached plans scanned all the rows before each insert, ~3
    # times a row: ~210,000 rows read here; through the index, none.
    assert seq_tup_read == 0
    assert idx_scan is not None
    assert idx_scan >= rows


def test_a_renewal_at_the_same_mrr_does_not_fire_the_span_closing_trigger(
    postgres_empty: Engine,
) -> None:
    """Migration 0009: a repeat's span is set before the insert; nothing after it runs."""
    with _system_cursor(postgres_empty) as (driver, cursor):
        cursor.execute("SET track_functions = 'pl'")
        driver.autocommit = False
        # Five subscriptions: created at 1,000, renewed twice at 1,000, then at 2,000.
        mrr_by_month = (1000, 1000, 1000, 2000)
        for month, mrr in enumerate(mrr_by_month):
            for sub in range(5):
                values = (f"chg_{sub}_{month}", f"sub_{sub}", f"cus_{sub}", 31 * month, mrr)
                cursor.execute(_INSERT, values)
        cursor.execute(
            "SELECT funcname, calls FROM pg_stat_xact_user_functions"
            " WHERE funcname LIKE 'lumenquest_change_span_%'"
        )
        calls = dict(cursor.fetchall())
        cursor.execute(
            "SELECT count(*) FROM subscription_changes WHERE superseded_at IS NULL AND mrr > 0"
        )
        (holding,) = cursor.fetchone() or (None,)
        driver.rollback()
    assert calls["lumenquest_change_span_new"] == 20
    # The first change and the change of MRR of each subscription: not the two repeats.
    assert calls["lumenquest_change_span_close"] == 10
    assert holding == 5  # the 2,000 of each; the first run closed when it came
