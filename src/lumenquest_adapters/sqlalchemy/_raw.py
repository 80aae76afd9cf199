"""Statements sent straight to psycopg, for the unit of work's hottest single-row work.

SQLAlchemy's execution of one small statement (the compiled-cache lookup, the
execution context, the result's metadata) costs several times the driver's own work.
The few statements every request sends on PostgreSQL (a row read by its key, a new
row's insert, an invoice's lines, the batch's inserts and updates) go here instead:
their text is built once per table and column set, and each value goes through its
column type's own bind (and result) processing, so that what is stored and read back
is what SQLAlchemy would have stored and read. Inside a transaction they skip psycopg's
cursor too, for libpq's own calls (see :class:`_Session`), and are prepared on the server
at their second use.

Errors come out as SQLAlchemy's ``DBAPIError`` would, so that the unit of work
translates them as usual. Anything else (SQLite, any other statement) stays with
SQLAlchemy.
"""

from __future__ import annotations

import functools
import operator
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import IdentifierPreparer

from lumenquest_adapters.sqlalchemy._ddl import UTCDateTime
from lumenquest_adapters.sqlalchemy._engine import UNPREPARED_KEY, json_loads
from lumenquest_adapters.sqlalchemy._mapping import (
    DOMAIN_JSON_COLUMNS,
    domain_json_text,
    json_dumps,
    plain,
    shared_price_json,
    shared_price_text,
)

__all__ = [
    "array_literals",
    "array_parameters",
    "begin_deferred",
    "begin_with",
    "bound_values",
    "copy_values",
    "driver_cursor",
    "execute",
    "fetch_joined",
    "fetch_values",
    "forget_begin",
    "first_value",
    "insert_if_new",
    "insert_many",
    "insert_new",
    "insert_sql",
    "kept_cursor",
    "pipeline",
    "reraise",
    "select_by_key",
    "select_due",
    "select_unset",
    "select_list",
    "select_where",
    "send_begin",
    "Statements",
    "text_array",
    "update_row",
    "update_sql",
    "write_rows",
]

_SAVEPOINT = "lq_write"


def insert_sql(connection: Connection, table: sa.Table, columns: tuple[str, ...]) -> str:
    """Return ``INSERT INTO table (columns) VALUES (%s, …)`` for the driver."""
    return _insert_text(connection.dialect.identifier_preparer, table, columns)


@functools.cache
def _insert_text(preparer: IdentifierPreparer, table: sa.Table, columns: tuple[str, ...]) -> str:
    names = ", ".join(preparer.quote(name) for name in columns)
    values = ", ".join("%s" for _ in columns)
    return f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES ({values})"


def update_sql(connection: Connection, table: sa.Table, key: str, columns: tuple[str, ...]) -> str:
    """Return ``UPDATE table SET column = %s, … WHERE key = %s`` for the driver."""
    return _update_text(connection.dialect.identifier_preparer, table, key, columns)


@functools.cache
def _update_text(
    preparer: IdentifierPreparer, table: sa.Table, key: str, columns: tuple[str, ...]
) -> str:
    assignments = ", ".join(f"{preparer.quote(name)} = %s" for name in columns)
    return (
        f"UPDATE {preparer.format_table(table)} SET {assignments} WHERE {preparer.quote(key)} = %s"
    )


def insert_if_new(connection: Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """``INSERT … ON CONFLICT DO NOTHING``: say whether the row went in."""
    columns = tuple(values)
    statement = insert_sql(connection, table, columns) + " ON CONFLICT DO NOTHING RETURNING 1"
    params = bound_values(connection, table, columns)(values)
    session = _session(connection)
    if session is not None:
        return bool(_run_one(connection, session, statement, params).ntuples)
    with driver_cursor(connection, statement) as cursor:
        cursor.execute(statement, params)
        return cursor.fetchone() is not None


def insert_new(connection: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """``INSERT … ON CONFLICT DO NOTHING``: rows no unique key holds go in.

    The rows go as one array per column (``SELECT * FROM unnest(…)``): the statement's
    text is the same whatever their number, so the driver converts it once and the server
    can prepare it, where a ``VALUES`` list is new text, converted anew, every time.
    """
    columns = tuple(rows[0])
    literals = array_literals(connection, table, columns)
    if literals is None:
        # A column type without an array literal here: a VALUES list, in chunks
        # (PostgreSQL takes at most 65,535 parameters a statement).
        bound = bound_values(connection, table, columns)
        per_statement = max(1, _MOST_PARAMETERS // len(columns))
        one = "(" + ", ".join("%s" for _ in columns) + ")"
        head = insert_sql(connection, table, columns).rpartition(" VALUES ")[0]
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            statement = f"{head} VALUES {', '.join(one for _ in chunk)} ON CONFLICT DO NOTHING"
            execute(connection, statement, [value for row in chunk for value in bound(row)])
        return
    statement = _insert_new_text(connection.dialect, table, columns)
    execute(connection, statement, literals(rows))


@functools.cache
def _insert_new_text(dialect: Dialect, table: sa.Table, columns: tuple[str, ...]) -> str:
    """``INSERT INTO table (column, …) SELECT * FROM unnest(…) ON CONFLICT DO NOTHING``."""
    names = ", ".join(dialect.identifier_preparer.quote(name) for name in columns)
    return (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({names})"
        f" SELECT * FROM unnest({array_parameters(dialect, table, columns)}) ON CONFLICT DO NOTHING"
    )


def array_parameters(dialect: Dialect, table: sa.Table, columns: tuple[str, ...]) -> str:
    """Return ``%s::type[], …``: one array parameter per column, for ``unnest``."""
    return ", ".join(f"%s::{table.c[name].type.compile(dialect=dialect)}[]" for name in columns)


_MOST_PARAMETERS = 60_000


def execute(connection: Connection, statement: str, params: Sequence[Any] = ()) -> None:
    """Run a statement whose values are plain driver values (no column to process them)."""
    session = _session(connection)
    if session is not None:
        _run_one(connection, session, statement, params)
        return
    with driver_cursor(connection, statement) as cursor:
        cursor.execute(statement, params)


def begin_with(connection: Connection, settings: dict[str, str]) -> None:
    """Begin the driver's transaction with ``set_config(name, value, true)`` of each setting.

    psycopg sends a transaction's ``BEGIN`` as a round trip of its own before the first
    statement (in a pipeline too: it syncs after it). Here ``BEGIN`` and the settings go
    as one simple query, one round trip, the values quoted by the driver; nothing runs
    in the transaction before them. A connection that begins some other way (an
    isolation level or read-only mode set on it) takes the two round trips.
    """
    session = _session_of(connection)
    if _plain(session):
        _send_begin(connection, session, session.begin_command(settings))
        return
    from psycopg import sql  # noqa: PLC0415  # only PostgreSQL comes here

    calls = sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value))
        for name, value in settings.items()
    )
    try:
        session.driver.execute(sql.SQL("SELECT {}").format(calls))
    except _driver_error() as exc:
        reraise(connection, "BEGIN; SELECT set_config(…)", exc)


def _plain(session: _Session) -> bool:
    """Whether the connection is idle and would begin as psycopg does by default."""
    driver = session.driver
    pgconn = session.pgconn
    return bool(
        pgconn.transaction_status == _IDLE
        and pgconn.pipeline_status == _PIPELINE_OFF
        and not driver.autocommit
        and driver.isolation_level is None
        and driver.read_only is None
        and driver.deferrable is None
    )


def _send_begin(connection: Connection, session: _Session, command: bytes) -> None:
    """Send ``BEGIN; SELECT set_config(…)`` as one simple query; raise its error as psycopg does."""
    driver = session.driver
    pgconn = session.pgconn
    try:
        with driver.lock:
            pgconn.send_query(command)
            results = driver.wait(session.execute(pgconn))
        for result in results:
            if result.status == _FATAL_ERROR:
                from psycopg.errors import error_from_result  # noqa: PLC0415

                raise error_from_result(result, encoding=session.encoding)
    except _driver_error() as exc:
        reraise(connection, "BEGIN; SELECT set_config(…)", exc)


def begin_deferred(connection: Connection, settings: dict[str, str]) -> bool:
    """Begin with the settings at the transaction's first statement; say whether it will.

    ``BEGIN`` and ``set_config(name, value, true)`` of each setting are then sent ahead of
    the first statement that goes to libpq straight, in its pipeline (one round trip for
    the three), and :func:`send_begin` sends them at once for any other statement. They
    always precede the first statement of the transaction: while they wait, a statement
    can only go through the session, which sends them first (see :func:`_session`).
    A connection that begins some other way (see :func:`begin_with`) is not deferred:
    False, and nothing is set.
    """
    session = _session_of(connection)
    if not _plain(session):
        return False
    session.pending = session.settings_command(settings)
    return True


def send_begin(connection: Connection) -> None:
    """Send a deferred ``BEGIN`` and its settings now, if they still wait (one round trip)."""
    session = _session_of(connection)
    pending = session.pending
    if pending is None:
        return
    session.pending = None
    _send_begin(connection, session, b"BEGIN; " + pending)


def forget_begin(connection: Connection) -> None:
    """Drop a deferred ``BEGIN`` never sent (its transaction ended with no statement)."""
    if connection.invalidated or connection.closed:
        # Its driver connection is gone, and the session with it (a reconnected record
        # gets a new one): nothing to drop, and reaching for it would raise.
        return
    info = connection.connection.info
    session: _Session | None = info.get(_SESSION)
    if session is not None:
        session.pending = None


def first_value(connection: Connection, statement: str) -> Any:
    """Run a statement without parameters; return its first row's first value, if any."""
    session = _session(connection)
    if session is not None:
        result = _run_one(connection, session, statement, None)
        return session.rows(result)[0][0] if result.ntuples else None
    with driver_cursor(connection, statement) as cursor:
        cursor.execute(statement)
        row = cursor.fetchone()
        return None if row is None else row[0]


def update_row(
    connection: Connection,
    table: sa.Table,
    key: str,
    values: dict[str, Any],
    *,
    savepoint: bool,
) -> int:
    """Update the row whose ``key`` is ``values[key]``; return the count of rows updated.

    With ``savepoint`` the update runs in one (sent with it, in one round trip): a
    broken constraint rolls back to it only, so that the transaction stays usable.
    """
    import psycopg  # noqa: PLC0415  # only PostgreSQL comes here; SQLite installs lack it

    columns = tuple(values)
    statement = update_sql(connection, table, key, columns)
    params = [*bound_values(connection, table, columns)(values), values[key]]
    session = _session(connection)
    if session is not None:
        return _update_in_session(connection, session, statement, params, savepoint)
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    cursor = kept_cursor(connection)
    try:
        if not savepoint:
            cursor.execute(statement, params)
            return int(cursor.rowcount)
        # Its own cursor for the savepoint's statements: the row count is the update's.
        with driver.cursor() as control:
            try:
                with driver.pipeline():
                    # Savepoints are not worth preparing: psycopg would after 5 uses.
                    control.execute(f"SAVEPOINT {_SAVEPOINT}", prepare=False)
                    cursor.execute(statement, params)
                    control.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}", prepare=False)
            except psycopg.Error:
                if not driver.broken:
                    control.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}", prepare=False)
                raise
        return int(cursor.rowcount)
    except psycopg.Error as exc:
        reraise(connection, statement, exc)


def insert_many(connection: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows of the same columns (psycopg pipelines them: one round trip)."""
    columns = tuple(rows[0])
    statement = insert_sql(connection, table, columns)
    bound = bound_values(connection, table, columns)
    try:
        with pipeline(connection) as queue:
            queue.executemany(statement, [bound(row) for row in rows])
    except _driver_error() as exc:
        reraise(connection, statement, exc)


def select_by_key(
    connection: Connection,
    table: sa.Table,
    key: str,
    values: Sequence[str],
    *,
    for_update: bool = False,
) -> list[dict[str, Any]]:
    """Return the rows of ``table`` whose ``key`` is one of ``values``, as column -> value.

    ``for_update`` locks them, in key order (concurrent lockers take locks in one order).
    """
    one = len(values) == 1
    statement, literal = _select_text(connection.dialect, table, key, one, for_update)
    if one:
        param: Any = values[0]
    elif literal:
        # The ids as one array literal, built with string methods: the driver's list
        # dumping makes a Python call and a regex search per element (a billing batch
        # reads 2,000 rows by id).
        param = "{" + _quoted_joined(values) + "}"
    else:
        param = list(values)
    return _fetch(connection, table, statement, (param,))


def select_due(
    connection: Connection,
    table: sa.Table,
    column: str,
    at: datetime,
    *,
    key: str,
    limit: int,
) -> list[dict[str, Any]]:
    """Return up to ``limit`` rows whose ``column`` is at or before ``at``, as column -> value.

    Earliest first, then by ``key``; locked, skipping the rows other transactions hold
    (``FOR UPDATE SKIP LOCKED``).
    """
    statement = _select_due_text(connection.dialect.identifier_preparer, table, column, key)
    params = bound_values(connection, table, (column,))({column: at})
    params.append(limit)
    return _fetch(connection, table, statement, params)


@functools.cache
def _select_due_text(preparer: IdentifierPreparer, table: sa.Table, column: str, key: str) -> str:
    names = _select_list(preparer, table, None)
    due = preparer.quote(column)
    return (
        f"SELECT {names} FROM {preparer.format_table(table)} WHERE {due} <= %s"
        f" ORDER BY {due}, {preparer.quote(key)} LIMIT %s FOR UPDATE SKIP LOCKED"
    )


def select_unset(
    connection: Connection, table: sa.Table, column: str, *, order_by: str, limit: int
) -> list[dict[str, Any]]:
    """Return up to ``limit`` rows whose ``column`` is NULL, by ``order_by``, as column -> value."""
    statement = _select_unset_text(connection.dialect.identifier_preparer, table, column, order_by)
    return _fetch(connection, table, statement, (limit,))


@functools.cache
def _select_unset_text(
    preparer: IdentifierPreparer, table: sa.Table, column: str, order_by: str
) -> str:
    names = _select_list(preparer, table, None)
    return (
        f"SELECT {names} FROM {preparer.format_table(table)} WHERE {preparer.quote(column)}"
        f" IS NULL ORDER BY {preparer.quote(order_by)} LIMIT %s"
    )


def select_where(
    connection: Connection,
    table: sa.Table,
    equal: dict[str, Any],
    *,
    order_by: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Return the rows of ``table`` whose columns equal ``equal``'s values, as column -> value.

    Ordered by ``order_by`` and at most ``limit`` of them, if given.
    """
    columns = tuple(equal)
    statement = _select_where_text(
        connection.dialect.identifier_preparer, table, columns, order_by, limit is not None
    )
    params = bound_values(connection, table, columns)(equal)
    if limit is not None:
        params.append(limit)
    return _fetch(connection, table, statement, params)


@functools.cache
def _select_where_text(
    preparer: IdentifierPreparer,
    table: sa.Table,
    columns: tuple[str, ...],
    order_by: str | None,
    limited: bool,
) -> str:
    names = _select_list(preparer, table, None)
    statement = f"SELECT {names} FROM {preparer.format_table(table)}"
    if columns:
        statement += " WHERE " + " AND ".join(f"{preparer.quote(c)} = %s" for c in columns)
    if order_by is not None:
        statement += f" ORDER BY {preparer.quote(order_by)}"
    if limited:
        statement += " LIMIT %s"
    return statement


def _fetch(
    connection: Connection, table: sa.Table, statement: str, params: Sequence[Any]
) -> list[dict[str, Any]]:
    """Run a ``SELECT`` of every column of ``table``; return its rows as column -> value."""
    fetched, oids = _fetched(connection, statement, params)
    if not fetched:
        return []
    make = _row_maker(connection.dialect, table, oids, _in_utc(fetched[0], _instants_at(table)))
    return [make(row) for row in fetched]


@functools.cache
def _instants_at(table: sa.Table) -> tuple[int, ...]:
    """Return the positions of ``table``'s instant columns."""
    return tuple(i for i, column in enumerate(table.c) if isinstance(column.type, UTCDateTime))


def _in_utc(row: Sequence[Any], instants: tuple[int, ...]) -> bool:
    """Say whether a result's instants came in UTC, as its first instant in ``row`` did.

    The driver loads every instant of a result in the session's zone (UTC on lumenquest's
    engines): when the first is UTC, all are, and none needs converting.
    """
    for position in instants:
        value = row[position]
        if value is not None:
            return value.tzinfo is UTC
    return False


def _fetched(
    connection: Connection, statement: str, params: Sequence[Any]
) -> tuple[list[Any], tuple[int, ...]]:
    """Run a query on the driver; return its rows and its columns' type oids (none if no row)."""
    session = _session(connection)
    if session is not None:
        # Rows in binary: the driver loads an instant from its binary form for a third of
        # what parsing its text costs (a billing run reads twenty a renewal). Every type
        # of lumenquest's tables loads to the same value from either form.
        result = _run_one(connection, session, statement, params, binary=True)
        if not result.ntuples:
            return [], ()
        return session.rows(result), tuple(map(result.ftype, range(result.nfields)))
    import psycopg  # noqa: PLC0415  # only PostgreSQL comes here; SQLite installs lack it

    # driver_cursor's translation inline: its context manager costs every read, the hottest.
    cursor = kept_cursor(connection)
    try:
        cursor.execute(statement, params)
        fetched = cursor.fetchall()
    except psycopg.Error as exc:
        reraise(connection, statement, exc)
    if not fetched:
        return [], ()
    # The columns' type oids from the result itself: cursor.description would build an
    # object per column on every call.
    result = cursor.pgresult
    return fetched, tuple(result.ftype(i) for i in range(result.nfields))


def fetch_joined(
    connection: Connection,
    statement: str,
    params: Sequence[Any],
    tables: tuple[sa.Table, ...],
) -> list[tuple[list[dict[str, Any] | None], tuple[Any, ...]]]:
    """Run a ``SELECT`` of every column of each of ``tables`` in turn, then any others.

    Return each row as the column -> value mapping of each table (None where an outer
    join found no row: its key is NULL) and the values of the columns after them.
    """
    fetched, oids = _fetched(connection, statement, params)
    if not fetched:
        return []
    parts, start = _joined_parts(connection.dialect, tables, oids)
    return [
        (
            [None if row[key] is None else make(row[begin:end]) for begin, end, key, make in parts],
            tuple(row[start:]),
        )
        for row in fetched
    ]


@functools.cache
def _joined_parts(
    dialect: Dialect, tables: tuple[sa.Table, ...], oids: tuple[int, ...]
) -> tuple[tuple[tuple[int, int, int, Callable[[Sequence[Any]], dict[str, Any]]], ...], int]:
    """Return each table's (first, end, key column, row maker), and where the rest begin."""
    parts = []
    start = 0
    for table in tables:
        width = len(table.c)
        key = next(i for i, column in enumerate(table.c) if column.primary_key)
        make = _row_maker(dialect, table, oids[start : start + width])
        parts.append((start, start + width, start + key, make))
        start += width
    return tuple(parts), start


@functools.cache
def _select_text(
    dialect: Dialect, table: sa.Table, key: str, one: bool, for_update: bool
) -> tuple[str, bool]:
    """Return the statement, and whether its many keys go as an array literal (text keys)."""
    preparer = dialect.identifier_preparer
    names = _select_list(preparer, table, None)
    quoted = preparer.quote(key)
    key_type = table.c[key].type
    literal = not one and isinstance(key_type, sa.String)
    if one:
        condition = f"{quoted} = %s"
    elif literal:
        condition = f"{quoted} = ANY(%s::{key_type.compile(dialect=dialect)}[])"
    else:
        condition = f"{quoted} = ANY(%s)"
    statement = f"SELECT {names} FROM {preparer.format_table(table)} WHERE {condition}"
    if for_update:
        statement += f" ORDER BY {quoted} FOR UPDATE"
    return statement, literal


# JSON columns whose values repeat across rows: read, each is the one kept equal value.
_SHARED_JSON: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("subscriptions", "price"): shared_price_json
}
# The same columns read as their JSON's text (cast in the statements built here): a text
# read before gives its kept value back, neither decoded nor compared again (a billing
# run reads each subscription's price twice, 3 us each time).
_SHARED_JSON_TEXT: dict[tuple[str, str], Callable[[str], Any]] = {
    ("subscriptions", "price"): shared_price_text
}
_TEXT_OID = 25  # PostgreSQL's text type


def select_list(dialect: Dialect, table: sa.Table, alias: str | None = None) -> str:
    """Return ``column, …`` selecting every column of ``table`` (of ``alias``, if given).

    The JSON columns whose values repeat across rows are read as their text (see
    :data:`_SHARED_JSON_TEXT`).
    """
    return _select_list(dialect.identifier_preparer, table, alias)


@functools.cache
def _select_list(preparer: IdentifierPreparer, table: sa.Table, alias: str | None) -> str:
    prefix = "" if alias is None else f"{alias}."
    return ", ".join(
        f"{prefix}{preparer.quote(column.name)}"
        + ("::text" if (table.name, column.name) in _SHARED_JSON_TEXT else "")
        for column in table.c
    )


def _then(first: Callable[[Any], Any], second: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: second(first(value))


@functools.cache
def _row_maker(
    dialect: Dialect, table: sa.Table, oids: tuple[int, ...], utc: bool = False
) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """Return a function making a row's mapping, each value through its type's result processing.

    ``utc``: the instants come in UTC already, and are kept as they are.
    """
    # Plain str keys: a Column's name is SQLAlchemy's quoted_name, a str subclass the
    # garbage collector tracks, so every row keyed by it was followed through each of
    # the collector's passes while a batch held it (and compared as JSON the slow way).
    names = tuple(sys.intern(str(column.name)) for column in table.c)
    processed: list[tuple[str, Callable[[Any], Any]]] = []
    for name, column, oid in zip(names, table.c, oids, strict=True):
        if isinstance(column.type, UTCDateTime):
            # psycopg hands timestamptz back aware, in the session's zone: to UTC, without
            # the type's two Python calls per value (a billing run reads thousands).
            if not utc:
                processed.append((name, _TO_UTC))
            continue
        key = (table.name, name)
        if oid == _TEXT_OID and key in _SHARED_JSON_TEXT:
            # Read as its text: decoded here, as the driver would have with the engine's
            # JSON decoder, once per distinct text when that decoder is lumenquest's own.
            decode = dialect._json_deserializer
            if decode is None or decode is json_loads:
                processed.append((name, _SHARED_JSON_TEXT[key]))
            else:
                processed.append((name, _then(decode, _SHARED_JSON[key])))
            continue
        process: Callable[[Any], Any] | None = column.type._cached_result_processor(dialect, oid)
        shared = _SHARED_JSON.get(key)
        if shared is not None:
            process = shared if process is None else _then(process, shared)
        if process is not None:
            processed.append((name, process))

    def make(row: Sequence[Any]) -> dict[str, Any]:
        # Not strict: every row of a result is as wide as its oids, which the zip above
        # matched to the columns (a call with a keyword costs the zip its fast path).
        mapping = dict(zip(names, row))  # noqa: B905  # see above
        for name, process in processed:
            value = mapping[name]
            if value is not None:  # NULL stays None through every type here
                mapping[name] = process(value)
        return mapping

    return make


_TO_UTC = operator.methodcaller("astimezone", UTC)


def bound_values(
    connection: Connection, table: sa.Table, columns: tuple[str, ...]
) -> Callable[[dict[str, Any]], list[Any]]:
    """Return a function giving a row's values of ``columns``, each through its type's binding."""
    return _binder(connection.dialect, table, columns, False)


def copy_values(
    connection: Connection, table: sa.Table, columns: tuple[str, ...]
) -> Callable[[dict[str, Any]], list[Any]]:
    """Return a function giving a row's values of ``columns`` for ``COPY … FROM STDIN``.

    As :func:`bound_values`, but instants go as their text, from a memo.
    """
    return _binder(connection.dialect, table, columns, True)


@functools.cache
def _binder(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...], copy: bool
) -> Callable[[dict[str, Any]], list[Any]]:
    processed: list[tuple[int, Callable[[Any], Any]]] = []
    # Instants: most are UTC already, checked inline, without a call to the type's own
    # conversion (24 a renewal).
    instants: list[tuple[int, Callable[[Any], Any]]] = []
    domain_json = DOMAIN_JSON_COLUMNS.get(str(table.name), ())
    for position, name in enumerate(columns):
        type_ = table.c[name].type
        if isinstance(type_, UTCDateTime) and dialect.name == "postgresql":
            instants.append(
                (position, functools.partial(type_.process_bind_param, dialect=dialect))
            )
        elif (process := _bind_processor(dialect, type_, copy, name in domain_json)) is not None:
            processed.append((position, process))
    if not columns:

        def values_of(row: dict[str, Any]) -> list[Any]:
            return []
    elif len(columns) == 1:
        only = columns[0]

        def values_of(row: dict[str, Any]) -> list[Any]:
            return [row[only]]
    else:
        getter = operator.itemgetter(*columns)

        def values_of(row: dict[str, Any]) -> list[Any]:
            return list(getter(row))

    if not processed and not instants:
        return values_of

    take = operator.itemgetter(*columns) if len(columns) > 1 else None
    if copy and instants:
        return _copy_row_binder(values_of, take, instants, processed)

    def bound(row: dict[str, Any]) -> list[Any]:
        values = values_of(row) if take is None else list(take(row))
        for position, convert in instants:
            value = values[position]
            if value is not None and value.tzinfo is not UTC:  # else the type returns it as is
                values[position] = convert(value)
        for position, process in processed:
            value = values[position]
            if value is not None:  # NULL stays None through every type here
                values[position] = process(value)
        return values

    return bound


# COPY's text of instants already written, by instant: the driver writes each one with
# str(), whose C formatting costs ~5,000 instructions, and a billing run's rows repeat a
# few instants (the run's, the periods' bounds) over and over. Bounded: emptied when full.
_INSTANT_TEXTS: dict[datetime, str] = {}
_ARRAY_INSTANTS: dict[datetime, str] = {}  # the same, as array elements (quoted ISO 8601)
_INSTANT_TEXTS_KEPT = 4096


def _copy_row_binder(
    values_of: Callable[[dict[str, Any]], list[Any]],
    take: Callable[[dict[str, Any]], tuple[Any, ...]] | None,
    instants: list[tuple[int, Callable[[Any], Any]]],
    processed: list[tuple[int, Callable[[Any], Any]]],
) -> Callable[[dict[str, Any]], list[Any]]:
    """Return a row binder for COPY that gives instants as their text, from a memo.

    The text is what the driver would write for the UTC instant (``str``: ISO 8601 with
    a space); keys are UTC datetimes, equal exactly when their text is.
    """
    texts = _INSTANT_TEXTS

    def bound(row: dict[str, Any]) -> list[Any]:
        values = values_of(row) if take is None else list(take(row))
        for position, convert in instants:
            value = values[position]
            if value is not None:
                if value.tzinfo is not UTC:
                    value = convert(value)  # UTC keys only: no fold or zone to tell apart
                text = texts.get(value)
                if text is None:
                    if len(texts) >= _INSTANT_TEXTS_KEPT:
                        texts.clear()
                    text = texts[value] = str(value)
                values[position] = text
        for position, process in processed:
            value = values[position]
            if value is not None:  # NULL stays None through every type here
                values[position] = process(value)
        return values

    return bound


# COPY data is handed to the driver in blocks of about this many bytes (psycopg's own
# buffer for write_row is 32 KiB; it sends at most 128 KiB at once).
_COPY_BLOCK = 32 * 1024


def write_rows(copy: Any, rows: Iterable[Sequence[Any]]) -> None:
    """Write rows of values to a text ``COPY … FROM STDIN``, as ``copy.write_row`` each would.

    Each row goes through psycopg's own formatter (C), into blocks sent with
    ``copy.write``: ``write_row`` wraps it in two Python calls a row, which cost more
    than the formatting (a billing run writes eleven rows a renewal).
    """
    try:
        # psycopg's own row formatter, not part of its public API: PostgreSQL only.
        from psycopg._copy_base import format_row_text  # noqa: PLC0415
    except ImportError:  # a psycopg that moved it: its public write_row, row by row
        for row in rows:
            copy.write_row(row)
        return
    transformer = copy.formatter.transformer
    block = bytearray()
    for row in rows:
        format_row_text(row, transformer, block)
        if len(block) > _COPY_BLOCK:
            copy.write(block)
            block = bytearray()
    if block:
        copy.write(block)


def array_literals(
    connection: Connection, table: sa.Table, columns: tuple[str, ...]
) -> Callable[[Sequence[dict[str, Any]]], list[str]] | None:
    """Return a function giving each column's values over rows as one PostgreSQL array literal.

    For a set-based statement taking the rows as arrays (``%s::type[]``): the literals are
    built with string methods, where the driver's array dumping makes a Python call per
    element. None when a column's type is not one written here.
    """
    return _array_builder(connection.dialect, table, columns)


@functools.cache
def _array_builder(
    dialect: Dialect, table: sa.Table, columns: tuple[str, ...]
) -> Callable[[Sequence[dict[str, Any]]], list[str]] | None:
    elements = [_array_element(dialect, table.c[name].type) for name in columns]
    if any(element is None for element in elements):
        return None
    formats = list(zip(columns, elements, strict=True))

    def literals(rows: Sequence[dict[str, Any]]) -> list[str]:
        arrays = []
        for name, element in formats:
            values = [row[name] for row in rows]
            # Without a NULL, the elements are written by map, in C: no generator
            # frame resumed per element (an outbox round writes a few per event).
            if None in values:
                text = ",".join("NULL" if v is None else element(v) for v in values)  # type: ignore[misc]
            elif element is _quoted:
                text = _quoted_joined(values)
            else:
                text = ",".join(map(element, values))  # type: ignore[arg-type]
            arrays.append("{" + text + "}")
        return arrays

    return literals


def text_array(values: Sequence[str]) -> str:
    """Return strings as one PostgreSQL array literal, for a ``%s::varchar[]`` parameter.

    Built with string methods: the driver's list dumping searches a regular expression
    in every element (callgrind: 30,000 instructions an outbox event went to it).
    """
    return "{" + _quoted_joined(values) + "}"


def fetch_values(connection: Connection, statement: str, params: Sequence[Any]) -> list[Any]:
    """Run a statement; return its rows as the driver gives them (no column processing)."""
    session = _session(connection)
    if session is not None:
        return session.rows(_run_one(connection, session, statement, params))
    import psycopg  # noqa: PLC0415  # only PostgreSQL comes here; SQLite installs lack it

    cursor = kept_cursor(connection)
    try:
        cursor.execute(statement, params)
        rows: list[Any] = cursor.fetchall()
    except psycopg.Error as exc:
        reraise(connection, statement, exc)
    return rows


def _quoted_joined(values: Sequence[str]) -> str:
    """Return strings as array elements (see :func:`_quoted`), comma-separated.

    Strings with neither backslash nor double quote (ids, most text) need no escaping:
    joined at once, without a Python call per element (a billing batch reads 2,000 rows
    by id).
    """
    try:
        whole = "".join(values)
    except TypeError:  # not all strings: _quoted raises for them as it always did
        return ",".join(map(_quoted, values))
    if "\\" in whole or '"' in whole:
        return ",".join(map(_quoted, values))
    return '"' + '","'.join(values) + '"' if values else ""


def _quoted(text: str) -> str:
    """Return a string as an array element: double-quoted, backslash and quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_BOOLEANS = {True: "t", False: "f"}


def _array_element(dialect: Dialect, type_: Any) -> Callable[[Any], str] | None:
    """Return the function writing a non-NULL value of ``type_`` as an array element."""
    if isinstance(type_, UTCDateTime):
        check = type_.process_bind_param  # the type's own check and conversion to UTC
        if dialect.name == "postgresql":  # where the check gives a UTC value back as it is
            texts = _ARRAY_INSTANTS

            def utc_instant(value: datetime) -> str:
                if value.tzinfo is not UTC:
                    checked = check(value, dialect)
                    assert checked is not None  # NULL never comes here
                    value = checked
                # A memo, as for COPY (_INSTANT_TEXTS): a set-based update of a billing
                # batch repeats a few instants.
                text = texts.get(value)
                if text is None:
                    if len(texts) >= _INSTANT_TEXTS_KEPT:
                        texts.clear()
                    text = texts[value] = '"' + value.isoformat() + '"'
                return text

            return utc_instant

        def instant(value: datetime) -> str:
            checked = check(value, dialect)
            assert checked is not None  # NULL never comes here
            return '"' + checked.isoformat() + '"'

        return instant
    if isinstance(type_, sa.JSON):
        serializer = dialect._json_serializer
        if serializer is None or serializer is json_dumps:
            return lambda value: _quoted(json_dumps(value))
        return lambda value: _quoted(serializer(plain(value)))
    if isinstance(type_, sa.Boolean):
        return _BOOLEANS.__getitem__
    if isinstance(type_, sa.Integer):
        return lambda value: str(int(value))
    if isinstance(type_, sa.String):
        return _quoted
    return None


def _bind_processor(
    dialect: Dialect, type_: Any, copy: bool, domain_json: bool = False
) -> Callable[[Any], Any] | None:
    """Return the function binding a non-NULL value of ``type_`` for the driver, if any.

    ``copy``: for ``COPY`` (JSON goes as its text either way). ``domain_json``: a history
    table's data column, whose value may be its JSON text already (see
    :func:`domain_json_text`).
    """
    if isinstance(type_, UTCDateTime):
        # The type's own check and conversion, without SQLAlchemy's wrapper around it.
        return functools.partial(type_.process_bind_param, dialect=dialect)
    if isinstance(type_.dialect_impl(dialect), sa.JSON):
        # JSON's text from the C encoder, read-only mappings included (the domain's event
        # and audit data come as such): SQLAlchemy's own binding would need plain dicts.
        # A serializer the engine was given still has the last word. The text goes as a
        # str, which the driver sends untyped: the server reads it as the column's JSON
        # (COPY has no parameter types at all). A Jsonb wrapper, typed, cost a Python
        # object and a Python dumper call per value (16 a paid subscribe).
        serializer = dialect._json_serializer
        if serializer is None or serializer is json_dumps:
            return domain_json_text if domain_json else json_dumps
        return lambda value: serializer(plain(value))
    process: Callable[[Any], Any] | None = type_._cached_bind_processor(dialect)
    return process


@contextmanager
def driver_cursor(connection: Connection, statement: str) -> Iterator[Any]:
    """Yield the connection's psycopg cursor; its errors come out as SQLAlchemy's would."""
    import psycopg  # noqa: PLC0415  # only PostgreSQL comes here; SQLite installs lack it

    try:
        yield kept_cursor(connection)
    except psycopg.Error as exc:
        reraise(connection, statement, exc)


def kept_cursor(connection: Connection) -> Any:
    """Return the psycopg cursor kept for this driver connection, made on first use.

    Making a cursor (its adapters and transformer) and closing it cost the driver more
    than a small statement's own execution; one connection runs one statement at a time
    and each caller takes its results before the next, so one cursor serves them all.
    """
    pooled = connection.connection
    info = pooled.info
    cursor = info.get(_KEPT_CURSOR)
    driver = pooled.driver_connection
    if cursor is None or cursor.connection is not driver or cursor.closed:
        # First use, or the pool reconnected this record since: a cursor of the new one.
        assert driver is not None
        cursor = info[_KEPT_CURSOR] = driver.cursor()
    return cursor


_KEPT_CURSOR = "lumenquest_kept_cursor"


def reraise(connection: Connection, statement: str, error: Exception) -> NoReturn:
    """Raise a driver error as SQLAlchemy would have, from the error.

    SQLAlchemy's own handling runs: a lost connection is invalidated (with the pool's
    connections older than it, as for any statement), ``handle_error`` listeners see it,
    and the unit of work translates the ``DBAPIError`` as usual.
    """
    connection._handle_dbapi_exception(error, statement, None, None, None)


# -- statements through libpq's pipeline, without psycopg's cursor -----------------------
#
# psycopg's cursor spends ~800 Python bytecodes on each statement (its query object,
# prepared-statement bookkeeping, pipeline queues and result checks), more than a small
# statement costs in libpq and in the server together: a paid subscribe's 26 statements
# were a quarter of the API process's Python work. In a transaction already begun, the
# statements here go to libpq straight: values dumped by psycopg's own (C) transformer,
# rows loaded by it, so that what is sent and read is what the cursor would send and
# read, and every statement of a call in one pipeline (one round trip). Anywhere else
# (no transaction yet: psycopg would begin one) they go through the cursor as before.

# libpq's own numbers (its ABI), checked against psycopg's enums by the tests: the
# module is imported where psycopg is not installed (SQLite).
_IDLE = 0  # pq.TransactionStatus.IDLE
_INTRANS = 2  # pq.TransactionStatus.INTRANS
_PIPELINE_OFF = 0  # pq.PipelineStatus.OFF
_COMMAND_OK = 1  # pq.ExecStatus.COMMAND_OK
_FATAL_ERROR = 7  # pq.ExecStatus.FATAL_ERROR
_PIPELINE_SYNC = 10  # pq.ExecStatus.PIPELINE_SYNC
_TEXT = 0  # pq.Format.TEXT: results as text, as the cursor asks for them
_BINARY = 1  # pq.Format.BINARY
_WAIT_R, _WAIT_RW, _READY_R = 1, 3, 1  # psycopg.waiting's Wait.R, Wait.RW and Ready.R

_SESSION = "lumenquest_session"
_PREPARED_MOST = 256  # named statements a connection keeps; past them, statements go unnamed
_SEEN_MOST = 4096  # statements seen once, remembered to be prepared at their second use
_BEGINS_KEPT = 1024  # identities' BEGIN commands a connection keeps
_UNDEFINED_STATEMENT = "26000"  # SQLSTATE invalid_sql_statement_name

_Command = tuple[str, Sequence[Any] | None, bool]  # statement, parameters, may be prepared
# What libpq is sent for one statement: its text, values, types and formats, the name it is
# prepared under (None: unnamed) and whether it is prepared with this one (a Parse first).
_Send = tuple[bytes, Any, Any, Any, bytes | None, bool]


class Statements:
    """Statements queued for one pipeline (see :func:`pipeline`), named like a cursor's calls."""

    __slots__ = ("commands",)

    def __init__(self) -> None:
        self.commands: list[_Command] = []

    def execute(
        self, statement: str, params: Sequence[Any] | None = None, *, prepare: bool = True
    ) -> None:
        """Queue one statement; ``prepare=False`` for one not worth preparing (a savepoint)."""
        self.commands.append((statement, params, prepare))

    def executemany(self, statement: str, params_seq: Iterable[Sequence[Any]]) -> None:
        """Queue the statement once for each row of parameters."""
        self.commands.extend([(statement, params, True) for params in params_seq])


@contextmanager
def pipeline(connection: Connection) -> Iterator[Statements]:
    """Queue statements in the block; at its end send them all in one round trip.

    As psycopg's own pipeline does, an error raises at the end, once every result came
    back: the first statement's that failed, the others not run. Nothing is sent if the
    block itself raises.
    """
    queued = Statements()
    yield queued
    commands = queued.commands
    if not commands:
        return
    session = _session(connection)
    if session is not None:
        session.run(commands)
        return
    # Outside a transaction: psycopg's pipeline, which begins one first.
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = kept_cursor(connection)
    with driver.pipeline():
        for statement, params, prepare in commands:
            cursor.execute(statement, params, prepare=None if prepare else False)


def _session(connection: Connection) -> _Session | None:
    """Return the connection's session when its statements can go to libpq straight.

    That is in a transaction begun and sound, out of psycopg's pipeline mode: nothing of
    psycopg's own (a ``BEGIN`` to send first, a pipeline's queue) is waiting.
    """
    session = _session_of(connection)
    pgconn = session.pgconn
    if session.pending is None:
        if pgconn.transaction_status != _INTRANS or pgconn.pipeline_status != _PIPELINE_OFF:
            return None
        return session
    # A deferred BEGIN waits: the session sends it ahead of the statement. Nothing else
    # may run first (psycopg would begin without the settings): fail rather than do so.
    if pgconn.transaction_status != _IDLE or pgconn.pipeline_status != _PIPELINE_OFF:
        session.pending = None
        raise _error("InterfaceError", "a deferred BEGIN waits, but the connection is not idle")
    return session


def _session_of(connection: Connection) -> _Session:
    """Return the session of the connection's psycopg connection, made on first use."""
    pooled = connection.connection
    driver = pooled.driver_connection
    info = pooled.info
    session: _Session | None = info.get(_SESSION)
    if session is None or session.driver is not driver:
        # First use, or the pool reconnected this record since: the new connection's.
        session = info[_SESSION] = _Session(driver, prepares=UNPREPARED_KEY not in info)
    return session


def _run_one(
    connection: Connection,
    session: _Session,
    statement: str,
    params: Sequence[Any] | None,
    *,
    binary: bool = False,
) -> Any:
    """Run one statement in the session; return its result. Errors raise as SQLAlchemy's.

    ``binary``: its rows come in binary, not as text.
    """
    try:
        if not binary:
            return session.run([(statement, params, True)])[0]
        session.rows_format = _BINARY
        try:
            return session.run([(statement, params, True)])[0]
        finally:
            session.rows_format = _TEXT
    except _driver_error() as exc:
        reraise(connection, statement, exc)


def _update_in_session(
    connection: Connection,
    session: _Session,
    statement: str,
    params: Sequence[Any],
    savepoint: bool,
) -> int:
    """Run an update (in a savepoint of its own, sent with it, if asked); return its row count."""
    if not savepoint:
        return int(_run_one(connection, session, statement, params).command_tuples or 0)
    try:
        try:
            results = session.run(
                [
                    (f"SAVEPOINT {_SAVEPOINT}", None, False),
                    (statement, params, True),
                    (f"RELEASE SAVEPOINT {_SAVEPOINT}", None, False),
                ]
            )
        except _driver_error():
            if not session.driver.broken:
                session.run([(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}", None, False)])
            raise
    except _driver_error() as exc:
        reraise(connection, statement, exc)
    return int(results[1].command_tuples or 0)


@functools.cache
def _driver_error() -> type[Exception]:
    """Return psycopg's base error, imported once one is raised (only PostgreSQL comes here)."""
    import psycopg  # noqa: PLC0415

    return psycopg.Error


@functools.lru_cache(maxsize=1024)
def _converted(statement: str, encoding: str) -> tuple[bytes, int]:
    """Return the statement as libpq takes it (``$1``, ``$2``… for ``%s``) and its parameter count."""
    parts = statement.split("%s")
    if any("%" in part for part in parts):
        # Only %s placeholders are written here; anything else is psycopg's to read.
        raise ValueError(f"only %s placeholders go straight to libpq: {statement!r}")
    text = parts[0] + "".join(f"${number}{part}" for number, part in enumerate(parts[1:], 1))
    return text.encode(encoding), len(parts) - 1


@functools.cache
def _auto_formats(count: int) -> tuple[Any, ...]:
    from psycopg.adapt import PyFormat  # noqa: PLC0415  # PostgreSQL only

    return (PyFormat.AUTO,) * count


class _Session:
    """A psycopg connection's state for the statements sent to libpq straight.

    Its statements are prepared at their second use (psycopg's cursor prepares at its
    fifth), under names of their own. psycopg's own preparing is off on lumenquest's
    engines (see :mod:`._engine`): its rollback deallocates every prepared statement of
    the connection, these too; where it was turned on again, these go unnamed.
    """

    __slots__ = (
        "begins",
        "driver",
        "encoding",
        "execute",
        "made",
        "names",
        "pending",
        "pgconn",
        "prepares",
        "rows_format",
        "seen",
        "transformer",
    )

    def __init__(self, driver: Any, *, prepares: bool = True) -> None:
        from psycopg import Connection, generators  # noqa: PLC0415  # PostgreSQL only
        from psycopg.adapt import Transformer  # noqa: PLC0415

        assert isinstance(driver, Connection)
        self.driver: Any = driver  # waits on generators of libpq's numbers, not its enums
        self.execute = generators.execute  # psycopg's wait of one query's results
        # Each identity's "SELECT set_config(…)", its values quoted by libpq.
        self.begins: dict[tuple[tuple[str, str], ...], bytes] = {}
        self.pgconn = driver.pgconn
        self.transformer = Transformer.from_context(driver)
        self.encoding: str = driver.info.encoding
        self.prepares: bool = prepares and driver.prepare_threshold is None
        # (statement, parameter types) -> the name it is prepared under.
        self.names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.seen: set[tuple[bytes, tuple[int, ...]]] = set()
        self.made = 0  # names made: each is new, even where its Parse failed
        # A deferred transaction's "SELECT set_config(…)", to send after a BEGIN ahead
        # of its first statement (see begin_deferred); None when nothing waits.
        self.pending: bytes | None = None
        self.rows_format = _TEXT  # libpq's format of the rows run asks for (_run_one's)

    def run(self, commands: Sequence[_Command]) -> list[Any]:
        """Send statements in one pipeline; return each one's result (a ``PGresult``).

        Raise the first error as psycopg would (``psycopg.Error``), the statements after
        it not run; the transaction is then failed, as after any error. Rows come in
        ``rows_format``.
        """
        # Every value is dumped before anything is sent: a value the driver cannot adapt
        # raises with nothing half sent. One loop, inline: it runs for every statement.
        transformer = self.transformer
        encoding = self.encoding
        names = self.names
        prepares = self.prepares
        sends: list[_Send] = []
        expected = 1  # the results to come: one a statement, one a Parse, and the sync's
        pending = self.pending
        if pending is not None:
            # The transaction's BEGIN and settings first, in this pipeline: a failure of
            # either leaves every statement after it unrun.
            sends.append((b"BEGIN", None, (), None, None, False))
            sends.append((pending, None, (), None, None, False))
            expected = 3
        values: Any
        formats: Any
        for statement, params, prepare in commands:
            query, count = _converted(statement, encoding)
            if params:
                if count != len(params):
                    raise _count_error(count, len(params))
                values = transformer.dump_sequence(params, _auto_formats(count))
                types: tuple[int, ...] = transformer.types or ()
                formats = transformer.formats
            else:
                if count:
                    raise _count_error(count, 0)
                values = formats = None
                types = ()
            name = None
            new = False
            if prepare and prepares:
                key = (query, types)
                name = names.get(key)
                if name is None:
                    name = self._new_name(key)
                    new = name is not None
            sends.append((query, values, types, formats, name, new))
            expected += 2 if new else 1
        if pending is None:
            return self._found(sends, self._exchange(sends, expected))
        self.pending = None  # sent from here on, whatever comes back
        return self._found(sends, self._exchange(sends, expected))[2:]

    def _found(self, sends: list[_Send], results: list[Any]) -> list[Any]:
        """Return each statement's result; raise the first error (forgetting failed Parses' names)."""
        names = self.names
        found: list[Any] = []
        failed = None
        at = 0
        for query, _values, types, _formats, _name, new in sends:
            if new:
                parsed = results[at]
                at += 1
                if parsed.status != _COMMAND_OK:
                    names.pop((query, types), None)
                    if failed is None and parsed.status == _FATAL_ERROR:
                        failed = parsed
            result = results[at]
            at += 1
            if failed is None and result.status == _FATAL_ERROR:
                failed = result
            found.append(result)
        if failed is not None:
            from psycopg.errors import error_from_result  # noqa: PLC0415  # PostgreSQL only

            error = error_from_result(failed, encoding=self.encoding)
            if error.sqlstate == _UNDEFINED_STATEMENT:
                # Deallocated behind our back (DISCARD ALL, DEALLOCATE ALL): this
                # transaction fails, the next ones prepare their statements anew.
                names.clear()
            raise error
        return found

    def _new_name(self, key: tuple[bytes, tuple[int, ...]]) -> bytes | None:
        """Return the name to prepare a statement not prepared yet under, or None (unnamed).

        A statement is prepared at its second use, while fewer than ``_PREPARED_MOST``
        are. Named at once, so that the same statement later in the pipeline uses the
        name; forgotten again should its Parse fail.
        """
        seen = self.seen
        if key not in seen or len(self.names) >= _PREPARED_MOST:
            if len(seen) >= _SEEN_MOST:
                seen.clear()
            seen.add(key)
            return None
        name = self.names[key] = b"_lq_%d" % self.made
        self.made += 1
        return name

    def _exchange(self, sends: list[_Send], expected: int) -> list[Any]:
        """Send the statements and a sync in pipeline mode; return every result up to the sync's."""
        rows_format = self.rows_format
        pgconn = self.pgconn
        driver = self.driver
        with driver.lock:
            pgconn.enter_pipeline_mode()
            try:
                for query, values, types, formats, name, new in sends:
                    if name is None:
                        pgconn.send_query_params(query, values, types, formats, rows_format)
                        continue
                    if new:
                        pgconn.send_prepare(name, query, types)
                    pgconn.send_query_prepared(name, values, formats, rows_format)
                pgconn.pipeline_sync()
                results: list[Any] = driver.wait(_exchanged(pgconn))
                pgconn.exit_pipeline_mode()
            except BaseException:
                # Lost, or interrupted halfway: the connection's state is unknown. Closed,
                # it is never used again; SQLAlchemy sees it closed and replaces it.
                pgconn.finish()
                raise
        if len(results) != expected:  # pragma: no cover - libpq's protocol
            import psycopg  # noqa: PLC0415  # PostgreSQL only

            pgconn.finish()
            raise psycopg.OperationalError(f"{len(results)} results, {expected} expected")
        return results

    def begin_command(self, settings: dict[str, str]) -> bytes:
        """Return ``BEGIN; SELECT set_config(name, value, true), …`` for the settings."""
        return b"BEGIN; " + self.settings_command(settings)

    def settings_command(self, settings: dict[str, str]) -> bytes:
        """Return ``SELECT set_config(name, value, true), …`` for the settings."""
        key = tuple(settings.items())
        command = self.begins.get(key)
        if command is None:
            from psycopg.pq import Escaping  # noqa: PLC0415  # PostgreSQL only

            if len(self.begins) >= _BEGINS_KEPT:
                self.begins.clear()
            # libpq's own quoting (PQescapeLiteral): what sql.Literal gives, without
            # building and rendering a composed statement.
            quote = Escaping(self.pgconn).escape_literal
            encoding = self.encoding
            command = self.begins[key] = b"SELECT " + b", ".join(
                b"set_config(%s, %s, true)"
                % (quote(name.encode(encoding)), quote(value.encode(encoding)))
                for name, value in key
            )
        return command

    def rows(self, result: Any) -> list[Any]:
        """Return a result's rows as tuples, each value loaded as the cursor loads it."""
        transformer = self.transformer
        transformer.set_pgresult(result)
        rows: list[Any] = transformer.load_rows(0, result.ntuples, tuple)
        return rows


def _count_error(count: int, given: int) -> Exception:
    """Return psycopg's error for parameters that do not match the placeholders."""
    return _error(
        "ProgrammingError", f"the query has {count} placeholders but {given} parameters were passed"
    )


def _error(kind: str, message: str) -> Exception:
    """Return psycopg's error of class ``kind`` (PostgreSQL only: psycopg is installed)."""
    import psycopg  # noqa: PLC0415

    error: Exception = getattr(psycopg, kind)(message)
    return error


def _exchanged(pgconn: Any) -> Generator[int, int, list[Any]]:
    """Flush what was sent, then read results up to the pipeline's sync (psycopg's wait drives it)."""
    while pgconn.flush():  # 1 while some is left to send
        while not (ready := (yield _WAIT_RW)):
            continue
        if ready & _READY_R:
            pgconn.consume_input()
    results: list[Any] = []
    while True:
        while pgconn.is_busy():
            while not (yield _WAIT_R):
                continue
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:  # the end of one statement's results
            continue
        results.append(result)
        if result.status == _PIPELINE_SYNC:
            while notify := pgconn.notifies():  # as psycopg does after each fetch
                if pgconn.notify_handler:
                    pgconn.notify_handler(notify)
            return results
