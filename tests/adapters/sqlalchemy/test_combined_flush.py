"""A small flush on PostgreSQL goes as one statement (two at most): each table's rows as JSON."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import SqlAlchemyUnitOfWork, _batch, upgrade
from lumenquest_adapters.sqlalchemy._raw import json_rows
from lumenquest_adapters.sqlalchemy._schema import audit_logs, customers
from lumenquest_adapters.testing.samples import T0, customer

_ZONE = timezone(timedelta(hours=3))


class _Dialect:
    """What json_rows reads of a connection: its dialect."""

    dialect = postgresql.psycopg.dialect()


def test_json_rows_write_instants_in_utc_and_history_data_as_its_text() -> None:
    columns = ("id", "at", "before", "after")
    write = json_rows(_Dialect(), audit_logs, columns)  # type: ignore[arg-type]
    assert write is not None
    rows = [
        # History data is JSON text when queued; a mapping (or None) is encoded here.
        {"id": "a", "at": T0, "before": '{"x": [1, "\\"q\\""]}', "after": None},
        {"id": "b", "at": T0.astimezone(_ZONE), "before": {"y": 2}, "after": "[]"},
    ]
    assert json.loads(write(rows)) == [
        {"id": "a", "at": T0.isoformat(), "before": {"x": [1, '"q"']}, "after": None},
        {"id": "b", "at": T0.isoformat(), "before": {"y": 2}, "after": []},
    ]
    assert rows[1]["at"].tzinfo is _ZONE  # the queued row itself is left as it was
    with pytest.raises(ValueError, match="naive datetime"):
        write([{"id": "c", "at": datetime(2026, 1, 1), "before": None, "after": None}])  # noqa: DTZ001


def test_a_column_json_cannot_carry_leaves_the_flush_to_single_statements() -> None:
    odd = sa.Table("odd", sa.MetaData(), sa.Column("id", sa.String), sa.Column("n", sa.Numeric))
    assert json_rows(_Dialect(), odd, ("id", "n")) is None  # type: ignore[arg-type]
    assert json_rows(_Dialect(), odd, ("id",)) is not None  # type: ignore[arg-type]


def test_the_tables_checked_against_a_parent_are_those_whose_policy_reads_one(
    postgres_empty: Engine,
) -> None:
    # A child's row-level security reads its parent: a parent inserted by the same
    # statement is not seen yet, so such a child goes in a second statement.
    upgrade(postgres_empty)
    with postgres_empty.connect() as connection:
        policies = connection.execute(
            sa.text(
                "SELECT tablename, qual FROM pg_policies"
                " WHERE policyname = 'lumenquest_own_rows' AND qual LIKE '%EXISTS%'"
            )
        ).all()
    parents = {
        table: re.search(r"FROM (\w+)", qual).group(1)  # type: ignore[union-attr]
        for table, qual in policies
    }
    assert parents == _batch._CHECKED_AGAINST


@pytest.fixture
def combined(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record what every flush's _combined gave: its statements, or None."""
    given: list[Any] = []
    real = _batch._combined
    monkeypatch.setattr(_batch, "_combined", lambda *a: given.append(real(*a)) or given[-1])
    return given


def test_a_flush_in_one_statement_stores_what_single_writes_store(
    postgres_empty: Engine, combined: list[Any]
) -> None:
    upgrade(postgres_empty)
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.customers.add(customer("cus_1"))
        uow.commit()
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.prepare_batch(customers=["cus_1"])
        uow.customers.add(customer("cus_2"))
        changed = attrs.evolve(uow.customers.get("cus_1"), name="Renamed", erased_at=T0)
        uow.customers.update(changed)
        uow.commit()
    assert [len(statements) for statements in combined] == [1, 1]
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        assert uow.customers.get("cus_1") == changed
        assert uow.customers.get("cus_2") == customer("cus_2")


def test_a_row_inserted_and_updated_in_a_flush_leaves_it_to_single_statements(
    postgres_empty: Engine, combined: list[Any]
) -> None:
    # In one statement an update does not see the row another part inserts.
    upgrade(postgres_empty)
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.prepare_batch()
        uow.customers.add(customer("cus_1"))
        renamed = attrs.evolve(customer("cus_1"), name="Renamed")
        uow.customers.update(renamed)
        uow.commit()
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        assert uow.customers.get("cus_1") == renamed
    assert combined == [None]


def test_a_row_updated_twice_in_a_flush_leaves_it_to_single_statements(
    postgres_empty: Engine, combined: list[Any]
) -> None:
    # In one statement, of two parts updating one row only one would take effect.
    upgrade(postgres_empty)
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.customers.add(customer("cus_1"))
        uow.commit()
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.prepare_batch(customers=["cus_1"])
        renamed = attrs.evolve(uow.customers.get("cus_1"), name="Renamed")
        uow.customers.update(renamed)
        erased = attrs.evolve(renamed, erased_at=T0.astimezone(_ZONE))
        uow.customers.update(erased)  # another column: another update of the same row
        uow.commit()
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        read = uow.customers.get("cus_1")
    assert read == attrs.evolve(erased, erased_at=T0)
    assert read.erased_at is not None
    assert read.erased_at.tzinfo is UTC
    assert combined == [None]


def test_a_conflict_in_a_one_statement_flush_rolls_back_all_of_it(
    postgres_empty: Engine, combined: list[Any]
) -> None:
    upgrade(postgres_empty)
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.customers.add(customer("cus_1"))
        uow.commit()
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.prepare_batch(customers=["cus_1"])
        uow.customers.update(attrs.evolve(uow.customers.get("cus_1"), name="Renamed"))
        uow.customers.add(customer("cus_2", email="cus_1@example.com"))  # the email is taken
        with pytest.raises(Exception, match="email already exists"):
            uow.commit()
    assert combined[0] is not None
    with postgres_empty.connect() as connection:
        names = connection.execute(sa.select(customers.c.id, customers.c.name)).all()
    assert names == [("cus_1", customer("cus_1").name)]
