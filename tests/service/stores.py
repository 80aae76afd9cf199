"""The stores a scenario runs on: memory, a fresh SQLite file, or a cleared PostgreSQL schema.

Every backend builds the same ``Billing``: a ``TestClock``, a ``FakeGateway``, a
``RecordingEmailSender``, a ``MemoryCache`` and ``SequentialIds``, so that one scenario's
assertions hold on each. The SQL backends go through ``sqlalchemy_billing`` on a database
migrated once per session (an SQLite file, a PostgreSQL schema) whose rows are deleted
before each billing, so a fresh billing costs ~10 ms.

``Shop()`` builds its billing on the *current* backend: memory unless a test (through
the ``backend`` fixture of tests/service/conftest.py) says otherwise.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lumenquest_adapters.memory import (
    FakeGateway,
    MemoryStore,
    MemoryUnitOfWork,
    RecordingEmailSender,
    SequentialIds,
    TestClock,
    in_memory_billing,
)
from lumenquest_adapters.sqlalchemy import (
    SqlAlchemyStore,
    create_engine_for,
    metadata,
    sqlalchemy_billing,
    upgrade,
)
from lumenquest_core.ports import UnitOfWork
from lumenquest_core.service import Billing
from tests.adapters.sqlalchemy.databases import (
    clear,
    migrated_sqlite_template,
    postgres_schema,
    sqlite_url,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "backend_named",
    "MemoryBackend",
    "ScenarioBilling",
    "SqlBackend",
    "current_backend",
    "open_unit_of_work",
    "postgres_backend",
    "row_counts",
    "sqlite_backend",
    "using",
]

BACKENDS = ("memory", "sqlite", "postgres")

UnitOfWorkFactory = Callable[[], UnitOfWork]
Wrap = Callable[[UnitOfWorkFactory], UnitOfWorkFactory]


class ScenarioBilling(Billing):
    """A ``Billing`` on the test fakes, on whichever store (the type tests see)."""

    clock: TestClock
    gateway: FakeGateway
    email: RecordingEmailSender
    store: MemoryStore | SqlAlchemyStore


class Backend(ABC):
    """Makes fresh billings on one kind of store; ``built`` counts them."""

    name: str
    built: int = 0

    @abstractmethod
    def billing(
        self, now: datetime | None = None, *, wrap_unit_of_work: Wrap | None = None, **options: Any
    ) -> ScenarioBilling:
        """Return a billing on a fresh, empty store.

        ``wrap_unit_of_work`` wraps the store's unit-of-work factory (to count or fail
        units of work); any other keyword goes to ``Billing``.
        """


class MemoryBackend(Backend):
    """``in_memory_billing``, as the scenarios always ran."""

    name = "memory"

    def billing(
        self, now: datetime | None = None, *, wrap_unit_of_work: Wrap | None = None, **options: Any
    ) -> ScenarioBilling:
        if wrap_unit_of_work is None:
            return cast(ScenarioBilling, in_memory_billing(now=now, **options))
        store = MemoryStore()
        made = in_memory_billing(
            now=now, unit_of_work=wrap_unit_of_work(lambda: MemoryUnitOfWork(store)), **options
        )
        made.store = store
        return cast(ScenarioBilling, made)


class SqlBackend(Backend):
    """``sqlalchemy_billing`` on one migrated database whose rows are deleted before each billing.

    One engine for the whole session keeps SQLAlchemy's compiled statements (a new
    engine per test costs ~100 ms in compiling alone); deleting the rows of ~20 small
    tables takes ~10 ms where TRUNCATE takes ~60 ms and a newly migrated PostgreSQL
    schema ~250 ms. The serial ``seq`` columns keep counting: only their order is used.
    So there is one live billing at a time per backend.
    """

    def __init__(self, name: str, engine: Engine) -> None:
        self.name = name
        self.engine = engine

    def billing(
        self, now: datetime | None = None, *, wrap_unit_of_work: Wrap | None = None, **options: Any
    ) -> ScenarioBilling:
        clear(self.engine)
        self.built += 1
        clock = options.pop("clock", None) or TestClock(now)
        defaults: dict[str, Any] = {
            "clock": clock,
            "gateway": FakeGateway(),
            "email": RecordingEmailSender(),
            "ids": SequentialIds(),
        }
        if wrap_unit_of_work is not None:
            defaults["unit_of_work"] = wrap_unit_of_work(SqlAlchemyStore(self.engine).unit_of_work)
        made = sqlalchemy_billing(self.engine, migrate=False, **(defaults | options))
        return cast(ScenarioBilling, made)


_current: ContextVar[Backend | None] = ContextVar("lumenquest_test_backend", default=None)


def current_backend() -> Backend:
    """The backend ``Shop()`` builds on: memory unless ``using`` says otherwise."""
    return _current.get() or MemoryBackend()


@contextlib.contextmanager
def using(backend: Backend) -> Iterator[Backend]:
    """Make ``backend`` the one ``Shop()`` builds on for the block."""
    token = _current.set(backend)
    try:
        yield backend
    finally:
        _current.reset(token)


def open_unit_of_work(billing: ScenarioBilling) -> UnitOfWork:
    """Return a unit of work on the billing's store, to look at what the facade does not show."""
    store = billing.store
    if isinstance(store, MemoryStore):
        return MemoryUnitOfWork(store)
    return store.unit_of_work()


def row_counts(billing: ScenarioBilling) -> dict[str, int]:
    """Return how many rows each table of the billing's store holds."""
    store = billing.store
    if isinstance(store, MemoryStore):
        return {table.kind: len(table.rows) for table in store.tables()}
    counts = sa.select(
        *(
            sa.select(sa.func.count()).select_from(table).scalar_subquery().label(table.name)
            for table in metadata.sorted_tables
        )
    )
    with store.engine.connect() as connection:
        return dict(connection.execute(counts).one()._mapping)


# -- fixtures (imported by the conftest.py of tests/service and tests/service_stateful) ----


@pytest.fixture(scope="session")
def sqlite_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlBackend]:
    """Billings on one SQLite file, migrated once for the session."""
    with migrated_sqlite_template(tmp_path_factory.mktemp("sqlite_billing")) as path:
        engine = create_engine_for(sqlite_url(path))
        yield SqlBackend("sqlite", engine)
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_backend(postgres_url: str) -> Iterator[SqlBackend]:
    """Billings on one PostgreSQL schema, migrated once for the session, dropped afterwards.

    Commits do not wait for the WAL to reach the disk (``synchronous_commit=off``): a
    test database needs no durability, and the scenarios commit often.
    """
    with postgres_schema(postgres_url) as schema:
        engine = create_engine_for(
            postgres_url,
            connect_args={"options": f"-csearch_path={schema} -csynchronous_commit=off"},
        )
        upgrade(engine)
        yield SqlBackend("postgres", engine)
        engine.dispose()


def backend_named(request: pytest.FixtureRequest, name: str) -> Backend:
    """Return the backend called ``name``, setting up its database on first use."""
    if name == "memory":
        return MemoryBackend()
    backend: Backend = request.getfixturevalue(f"{name}_backend")
    return backend
