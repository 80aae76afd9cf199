"""Fresh, empty databases of both kinds for the SQLAlchemy adapter's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import create_engine_for
from tests.adapters.sqlalchemy.databases import postgres_engine, postgres_schema, sqlite_url


@pytest.fixture
def sqlite_empty(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a new, empty SQLite file."""
    engine = create_engine_for(sqlite_url(tmp_path / "billing.db"))
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_empty(postgres_url: str) -> Iterator[Engine]:
    """An engine on a new, empty PostgreSQL schema, dropped afterwards."""
    with postgres_schema(postgres_url) as schema:
        engine = postgres_engine(postgres_url, schema)
        yield engine
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_engine(request: pytest.FixtureRequest) -> Engine:
    """An engine on a new, empty database of each kind."""
    engine: Engine = request.getfixturevalue(f"{request.param}_empty")
    return engine
