"""The storage contract suites, run unchanged on SQLite and on PostgreSQL.

The suites store rows without their parents (a subscription of a customer never
added), so these engines are made with ``enforce_foreign_keys=False``; that foreign
keys hold is tested in tests/adapters/sqlalchemy.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import (
    SqlAlchemyIdempotencyStore,
    SqlAlchemyStore,
    create_engine_for,
    upgrade,
)
from lumenquest_adapters.testing import IdempotencyStoreContract, UnitOfWorkContract
from lumenquest_core.ports import IdempotencyStore, UnitOfWork
from tests.adapters.sqlalchemy.databases import (
    clear,
    copy_database,
    migrated_sqlite_template,
    postgres_engine,
    postgres_schema,
    sqlite_url,
)
from tests.contract.batched import batched


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with migrated_sqlite_template(tmp_path_factory.mktemp("sqlite")) as path:
        yield path


@pytest.fixture
def sqlite_engine(sqlite_template: Path, tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine_for(
        sqlite_url(copy_database(sqlite_template, tmp_path)), enforce_foreign_keys=False
    )
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_module_engine(postgres_url: str) -> Iterator[Engine]:
    with postgres_schema(postgres_url) as schema:
        engine = postgres_engine(postgres_url, schema, enforce_foreign_keys=False)
        upgrade(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def pg_engine(postgres_module_engine: Engine) -> Engine:
    clear(postgres_module_engine)
    return postgres_module_engine


class TestSqliteUnitOfWork(UnitOfWorkContract):
    @pytest.fixture
    def uow_factory(self, sqlite_engine: Engine) -> Callable[[], UnitOfWork]:
        return SqlAlchemyStore(sqlite_engine).unit_of_work


class TestPostgresUnitOfWork(UnitOfWorkContract):
    @pytest.fixture
    def uow_factory(self, pg_engine: Engine) -> Callable[[], UnitOfWork]:
        return SqlAlchemyStore(pg_engine).unit_of_work


class TestSqliteBatchedUnitOfWork(UnitOfWorkContract):
    @pytest.fixture
    def uow_factory(self, sqlite_engine: Engine) -> Callable[[], UnitOfWork]:
        return batched(SqlAlchemyStore(sqlite_engine).unit_of_work)


class TestPostgresBatchedUnitOfWork(UnitOfWorkContract):
    @pytest.fixture
    def uow_factory(self, pg_engine: Engine) -> Callable[[], UnitOfWork]:
        return batched(SqlAlchemyStore(pg_engine).unit_of_work)


class TestSqliteIdempotencyStore(IdempotencyStoreContract):
    @pytest.fixture
    def store(self, sqlite_engine: Engine) -> IdempotencyStore:
        return SqlAlchemyIdempotencyStore(sqlite_engine)


class TestPostgresIdempotencyStore(IdempotencyStoreContract):
    @pytest.fixture
    def store(self, pg_engine: Engine) -> IdempotencyStore:
        return SqlAlchemyIdempotencyStore(pg_engine)
