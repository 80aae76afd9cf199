"""Engines set up for lumenquest: PostgreSQL through psycopg 3, or an SQLite file.

SQLite: the driver's own transaction handling is turned off and lumenquest emits
``BEGIN`` itself (SQLAlchemy's recipe for pysqlite), so that savepoints work and a unit
of work can ask for ``BEGIN IMMEDIATE`` — the write lock up front — when it claims due
work. Foreign keys are on, the journal is WAL (readers never wait for the writer), and a
writer waits up to 30 s for the lock (``connect_args={"timeout": …}``).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url

from lumenquest_adapters.sqlalchemy._mapping import json_dumps
from lumenquest_core.errors import ConfigurationError

__all__ = ["BEGIN_KEY", "UNPREPARED_KEY", "create_engine_for", "is_sqlite", "json_loads"]

BEGIN_KEY = "lumenquest_begin"
"""``connection.info`` key: the statement the next SQLite transaction begins with."""

UNPREPARED_KEY = "lumenquest_unprepared"
"""``connection.info`` key: set when no statement may be prepared on the server."""

_BUSY_TIMEOUT_SECONDS = 30.0


_decode_json = json.JSONDecoder().decode


def json_loads(text: str | bytes | bytearray) -> Any:
    """Return the value of a JSON text, as ``json.loads`` does.

    psycopg hands each JSON value read over as bytes; ``json.loads`` would first guess
    their encoding in Python (a dozen values a paid subscribe). PostgreSQL sends UTF-8.
    """
    return _decode_json(text if isinstance(text, str) else text.decode())


def is_sqlite(engine: Engine | Connection) -> bool:
    """Whether the engine (or connection) talks to SQLite."""
    return engine.dialect.name == "sqlite"


def create_engine_for(
    url: str | sa.URL,
    *,
    enforce_foreign_keys: bool = True,
    prepared_statements: bool = True,
    **engine_options: Any,
) -> Engine:
    """Return an engine for ``url`` (``postgresql://…`` or ``sqlite:///path.db``).

    ``enforce_foreign_keys=False`` is for tests that store rows without their parents
    (the port contract suites do); never for a real database. ``prepared_statements=False``
    prepares nothing on a PostgreSQL server, for a connection pooler that cannot keep
    prepared statements (PgBouncer in transaction mode before 1.21). Other keywords go to
    :func:`sqlalchemy.create_engine`. PostgreSQL sessions run in UTC (``SET TIME ZONE``).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    # Rows carry the domain's read-only JSON data as it is: the C encoder takes it.
    engine_options.setdefault("json_serializer", json_dumps)
    engine_options.setdefault("json_deserializer", json_loads)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine_options.setdefault("pool_pre_ping", True)
        # lumenquest prepares the statements it sends to libpq itself (_raw); psycopg's
        # own preparing would deallocate them all (DEALLOCATE ALL) at every rollback.
        connect_args = dict(engine_options.pop("connect_args", {}))
        connect_args.setdefault("prepare_threshold", None)
        engine = sa.create_engine(parsed, connect_args=connect_args, **engine_options)
        # Instants are stored and returned in UTC. In a session on another zone the driver
        # converts every timestamp it reads into that zone and the mapping back: ~2,800
        # instructions each, 36 a renewal (run_due over 2,000: 4,570M -> 4,388M).
        _on_connect(engine, "SET TIME ZONE 'UTC'")
        if not enforce_foreign_keys:
            # Foreign keys are triggers; replica mode skips them (needs a superuser).
            _on_connect(engine, "SET session_replication_role = replica")
        if not prepared_statements:
            _mark_unprepared(engine)
        return engine
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory":
            raise ConfigurationError(
                "an in-memory SQLite database lives in one connection; use a file",
                details={"url": parsed.render_as_string(hide_password=True)},
            )
        connect_args = dict(engine_options.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", _BUSY_TIMEOUT_SECONDS)  # the busy timeout
        engine = sa.create_engine(parsed, connect_args=connect_args, **engine_options)
        _set_up_sqlite(engine, enforce_foreign_keys)
        return engine
    raise ConfigurationError(
        f"lumenquest stores billing in PostgreSQL or SQLite, not {backend!r}",
        details={"url": parsed.render_as_string(hide_password=True)},
    )


def _mark_unprepared(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _mark(_dbapi_connection: Any, record: Any) -> None:
        record.info[UNPREPARED_KEY] = True


def _on_connect(engine: Engine, statement: str) -> None:
    @event.listens_for(engine, "connect")
    def _run(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
        dbapi_connection.commit()


def _set_up_sqlite(engine: Engine, enforce_foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # lumenquest emits BEGIN itself (see the "begin" listener).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if enforce_foreign_keys else 'OFF'}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql(connection.info.pop(BEGIN_KEY, "BEGIN"))
