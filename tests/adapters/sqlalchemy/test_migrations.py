"""The shipped migrations build exactly the schema the code describes, and undo it."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import downgrade, metadata, upgrade


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def _tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_to_head_gives_the_schema_of_the_metadata(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    assert _tables(empty_engine) == set(metadata.tables)
    assert _differences(empty_engine) == []


def test_downgrade_to_base_leaves_no_table_and_upgrade_works_again(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    downgrade(empty_engine, "base")
    assert _tables(empty_engine) == set()
    upgrade(empty_engine)
    assert _differences(empty_engine) == []


def test_upgrade_twice_is_a_no_op(empty_engine: Engine) -> None:
    """Hosts may call upgrade at every start."""
    upgrade(empty_engine)
    upgrade(empty_engine)
    assert _differences(empty_engine) == []


def test_the_partial_unique_index_is_created_with_its_condition(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    indexes = {i["name"]: i for i in sa.inspect(empty_engine).get_indexes("invoices")}
    cycle = indexes["uq_invoices_subscription_cycle"]
    assert cycle["unique"]
    assert cycle["column_names"] == ["subscription_id", "period_start"]
    options = cycle.get("dialect_options", {})
    where = options.get("postgresql_where") or options.get("sqlite_where")
    assert "subscription_cycle" in str(where)


def test_the_invoice_number_counter_row_is_seeded(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    with empty_engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT id, last_value FROM invoice_number_sequence")
        assert [tuple(r) for r in rows] == [(1, 0)]
