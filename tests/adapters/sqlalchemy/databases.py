"""Throwaway databases for the SQLAlchemy adapter's tests: SQLite files and PostgreSQL schemas."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import create_engine_for, metadata, upgrade
from lumenquest_adapters.sqlalchemy._schema import invoice_number_sequence


def sqlite_url(path: Path) -> str:
    """Return the URL of an SQLite file."""
    return f"sqlite:///{path}"


@contextmanager
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """Create a schema of its own for a test (or a session) and drop it afterwards."""
    name = f"lq_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
        admin.dispose()


def postgres_engine(postgres_url: str, schema: str, **options: Any) -> Engine:
    """Return an engine whose connections work in ``schema``."""
    return create_engine_for(
        postgres_url, connect_args={"options": f"-csearch_path={schema}"}, **options
    )


@contextmanager
def migrated_sqlite_template(directory: Path) -> Iterator[Path]:
    """Yield an SQLite file migrated to head, to be copied for each test."""
    path = directory / "template.db"
    engine = create_engine_for(sqlite_url(path))
    upgrade(engine)
    engine.dispose()
    yield path


def copy_database(template: Path, directory: Path) -> Path:
    """Copy an SQLite database file (its WAL was checkpointed when its engine closed)."""
    path = directory / f"{uuid.uuid4().hex}.db"
    shutil.copyfile(template, path)
    return path


def clear(engine: Engine) -> None:
    """Delete every row of every table and restart the invoice numbers."""
    with engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            connection.execute(table.delete())
        connection.execute(invoice_number_sequence.insert().values(id=1, last_value=0))


def history_json_kinds(engine: Engine) -> set[str]:
    """Return the JSON types of every history row's data: events, audit snapshots, changes."""
    with engine.connect() as connection:
        return set(
            connection.exec_driver_sql(
                "SELECT jsonb_typeof(data) FROM outbox"
                " UNION SELECT jsonb_typeof(after) FROM audit_logs WHERE after IS NOT NULL"
                " UNION SELECT jsonb_typeof(before) FROM audit_logs WHERE before IS NOT NULL"
                " UNION SELECT jsonb_typeof(data) FROM subscription_changes"
            ).scalars()
        )
