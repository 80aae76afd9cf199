"""Driver errors become the core's: the mapping table, and each row of it on a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import (
    SqlAlchemyStore,
    SqlAlchemyUnitOfWork,
    create_engine_for,
    metadata,
    translate,
    upgrade,
)
from lumenquest_adapters.testing.samples import (
    T0,
    analytics_event,
    customer,
    invoice,
    plan,
    price,
    subscription,
)
from lumenquest_core.errors import Conflict, GatewayUnavailable, ValidationError


class _Orig(Exception):
    pass


@pytest.mark.parametrize(
    ("driver_error", "expected"),
    [
        (sa_exc.IntegrityError, Conflict),
        (sa_exc.OperationalError, GatewayUnavailable),
        (sa_exc.InterfaceError, GatewayUnavailable),
        (sa_exc.DataError, ValidationError),
    ],
)
def test_the_mapping_table(
    driver_error: type[sa_exc.DBAPIError], expected: type[Exception]
) -> None:
    mapped = translate(driver_error("SELECT 1", {}, _Orig("boom")), metadata)
    assert type(mapped) is expected


def test_a_lost_connection_is_retryable_whatever_the_error_class() -> None:
    error = sa_exc.ProgrammingError("SELECT 1", {}, _Orig("closed"), connection_invalidated=True)
    mapped = translate(error, metadata)
    assert isinstance(mapped, GatewayUnavailable)
    assert mapped.retryable


def test_other_driver_errors_are_bugs_and_propagate() -> None:
    assert translate(sa_exc.ProgrammingError("SELECT", {}, _Orig("syntax")), metadata) is None


@pytest.fixture
def engine(empty_engine: Engine) -> Engine:
    upgrade(empty_engine)
    with SqlAlchemyUnitOfWork(empty_engine) as uow:
        uow.customers.add(customer("cus_1"))
        uow.plans.add(plan("plan_1"))
        uow.prices.add(price("price_1"))
        uow.subscriptions.add(subscription("sub_1"))
        uow.commit()
    return empty_engine


def test_a_duplicate_cycle_invoice_raises_conflict_from_the_driver_error(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.invoices.add(invoice("in_1"))
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        with pytest.raises(Conflict) as raised:
            uow.invoices.add(invoice("in_2"))
        assert isinstance(raised.value.__cause__, sa_exc.IntegrityError)
        assert raised.value.details["constraint"] == "invoice_subscription_cycle"
        # The savepoint kept the transaction usable: the next write goes through.
        uow.invoices.add(invoice("in_3", period_start=T0 + timedelta(days=31)))
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert [i.id for i in uow.invoices.list()] == ["in_1", "in_3"]


def test_a_missing_parent_raises_conflict_at_commit(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.invoices.add(invoice("in_1", customer_id="cus_missing"))
        with pytest.raises(Conflict) as raised:
            uow.commit()
        assert isinstance(raised.value.__cause__, sa_exc.IntegrityError)
        # The failed commit rolled back; the unit of work can start over.
        uow.analytics.add(analytics_event("e_1"))
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert uow.invoices.list() == []


def test_a_check_constraint_raises_conflict(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        statement = sa.text("UPDATE prices SET currency = 'usd' WHERE id = 'price_1'")
        with pytest.raises(Conflict):
            uow.write([statement], None)


def test_a_killed_connection_raises_the_retryable_error(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.customers.get("cus_1")
        connection = uow.connection()
        if engine.dialect.name == "postgresql":
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with engine.connect() as killer:
                killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        else:
            dbapi_connection = connection.connection.dbapi_connection
            assert dbapi_connection is not None
            dbapi_connection.close()
        with pytest.raises(GatewayUnavailable) as raised:
            uow.customers.get("cus_1")
        assert raised.value.retryable
        assert isinstance(raised.value.__cause__, sa_exc.DBAPIError)
    # The pool replaced the dead connection.
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert uow.customers.get("cus_1").id == "cus_1"


def test_a_connection_killed_before_a_deferred_begin_raises_the_retryable_error(
    postgres_empty: Engine,
) -> None:
    """The first read that carries BEGIN and the identity fails retryable; the unit of work ends clean."""
    upgrade(postgres_empty)
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.customers.add(customer("cus_1"))
        uow.commit()
    store = SqlAlchemyStore(postgres_empty)
    with store.acting_as(role="system")() as uow:
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        driver = uow._begun().connection.driver_connection  # begun: BEGIN waits, unsent
        assert driver is not None
        with postgres_empty.connect() as killer:
            killer.exec_driver_sql(f"SELECT pg_terminate_backend({driver.info.backend_pid})")
        with pytest.raises(GatewayUnavailable) as raised:
            uow.customers.get("cus_1")
        assert raised.value.retryable
    with store.acting_as(role="system")() as uow:
        assert uow.customers.get("cus_1").id == "cus_1"


def test_an_unreachable_database_raises_the_retryable_error() -> None:
    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(GatewayUnavailable), SqlAlchemyUnitOfWork(engine):
        pass


def test_a_postgresql_session_runs_in_utc_whatever_the_server_zone(postgres_url: str) -> None:
    # The connection asks for another zone; the engine puts the session back on UTC.
    engine = create_engine_for(postgres_url, connect_args={"options": "-c TimeZone=Asia/Tokyo"})
    try:
        with engine.connect() as connection:
            zone = connection.exec_driver_sql("SHOW TIME ZONE").scalar()
            instant = connection.exec_driver_sql(
                "SELECT timestamptz '2026-03-01 12:00:00+09'"
            ).scalar()
    finally:
        engine.dispose()
    assert zone == "UTC"
    assert instant == datetime(2026, 3, 1, 3, tzinfo=UTC)
    assert instant.utcoffset() == timedelta(0)
