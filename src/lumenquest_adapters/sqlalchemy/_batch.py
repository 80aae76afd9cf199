"""A unit of work's batch mode: writes held back and sent in bulk, rows it already holds.

``UnitOfWork.prepare_batch`` turns it on. From then on, inserts and the updates of rows
the unit of work already holds (prepared, claimed or written by it) are queued, then sent
as one executemany per table and column set (a multi-row ``INSERT``; a pipelined
``UPDATE``) before a read of a queued table, before any other write, and at commit.
Queued inserts go first, parents before children, then the updates in the order they
were made. The invoice-number counter, locked by the first number taken, is written once.

On PostgreSQL a flush of few rows (a request's, a settlement's) goes as one pipeline:
the savepoint, the counter, every insert and update and the release travel together and
cost one network round trip, where ``COPY`` costs two per table. Larger flushes (a
billing run's) keep ``COPY``, which a pipeline cannot carry.

Should the bulk statements break a constraint, they are rolled back to a savepoint and
replayed one by one, so that the error is the very Conflict the unbatched write would
have raised, only later. That is the one thing batch mode changes, and the port allows it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.util import find_tables

from lumenquest_adapters.sqlalchemy._errors import Describe, DescribeRow, described
from lumenquest_adapters.sqlalchemy._mapping import plain_json, same_json
from lumenquest_adapters.sqlalchemy._raw import (
    array_literals,
    array_parameters,
    bound_values,
    copy_values,
    driver_cursor,
    insert_sql,
    kept_cursor,
    pipeline,
    reraise,
    update_sql,
    write_rows,
)
from lumenquest_adapters.sqlalchemy._schema import metadata

__all__ = [
    "PLAIN_NAMES",
    "TABLES",
    "Batch",
    "Write",
    "Writes",
    "pipelines",
    "send",
    "send_pipelined",
    "touches",
]

# Parents before children, so that a bulk insert never waits for its foreign key's row.
TABLES: Mapping[str, sa.Table] = {
    sys.intern(str(table.name)): table for table in metadata.sorted_tables
}
"""Every table by its plain name, as a :class:`Write` names it, parents first."""
_RANK = {name: rank for rank, name in enumerate(TABLES)}
PLAIN_NAMES: Mapping[sa.Table, str] = {table: name for name, table in TABLES.items()}
"""Every table's plain name.

A Table's own name is SQLAlchemy's quoted_name, a str subclass the garbage collector
tracks: every tuple holding one (a batch's keys) stayed tracked for the whole batch and
added to each of its passes. A batch names tables by the plain str instead.
"""
_KEY_PARAMETER = "lq_row_key"
_MAY_COPY = "lumenquest_may_copy"
# Up to this many rows per table and column set, a pipelined INSERT beats COPY's own
# round trips; past it, COPY's cheaper rows win.
_PIPELINE_MOST_ROWS = 100
# From this many rows of one shape, an update is one set-based statement (see
# _send_updates); below it, single-row statements pipelined cost about as much.
_SET_BASED_LEAST_ROWS = 20
_SAVEPOINT = "lq_flush"
_COUNTER = "UPDATE invoice_number_sequence SET last_value = %s WHERE id = 1"


class Write(NamedTuple):
    """One queued write: an insert, or (with ``key``) an update of the row whose key is the value's."""

    table: str  # the table's plain name (a key of TABLES)
    values: dict[str, Any]
    describe: int  # Batch.describers[describe] describes a broken rule; -1: nothing does
    key: str | None = None


class Writes:
    """Queued writes, field by field: one list of table names, of values, of describers, of keys.

    Not an object a write: a batch holds fourteen writes a renewal until it commits, and
    the garbage collector follows any object that holds a row's values (a tuple included)
    through every pass, where it leaves the values alone (a dict of plain values is never
    tracked). Iterating makes each :class:`Write`, for the few callers that want one.
    """

    __slots__ = ("describes", "keys", "tables", "values")

    def __init__(self) -> None:
        self.tables: list[str] = []
        self.values: list[dict[str, Any]] = []
        self.describes: list[int] = []
        self.keys: list[str | None] = []

    def append(self, table: str, values: dict[str, Any], describe: int, key: str | None) -> None:
        """Queue one write (see :class:`Write` for what each field is)."""
        self.tables.append(table)
        self.values.append(values)
        self.describes.append(describe)
        self.keys.append(key)

    def __len__(self) -> int:
        return len(self.tables)

    def __iter__(self) -> Iterator[Write]:
        return map(Write, self.tables, self.values, self.describes, self.keys)


class Batch:
    """What a unit of work in batch mode holds: its queued writes and the rows it knows."""

    __slots__ = (
        "describer_at",
        "describers",
        "known",
        "locked",
        "no_pending_lines",
        "number",
        "number_written",
        "stored",
        "tables",
        "writes",
    )

    def __init__(self) -> None:
        self.writes = Writes()
        self.tables: set[sa.Table] = set()
        # What describes a queued write's broken rule, each once (most are one per table).
        self.describers: list[Describe | DescribeRow] = []
        self.describer_at: dict[int, int] = {}  # id of a describer -> its index
        # (table name, id) -> the domain object as this unit of work last read or wrote it.
        self.known: dict[tuple[str, str], Any] = {}
        # (table name, id) -> that row's column values as read or written with it, when
        # known: an update then sends only the columns that changed.
        self.stored: dict[tuple[str, str], Mapping[Any, Any]] = {}
        self.locked: set[str] = set()  # payment ids locked FOR UPDATE by this unit of work
        self.no_pending_lines: set[str] = set()  # subscriptions known to have none waiting
        self.number: int | None = None  # the last invoice number taken
        self.number_written: int | None = None  # the last one the counter row holds

    def queue(
        self,
        table: sa.Table,
        values: dict[str, Any],
        describe: Describe | DescribeRow | None,
        key: str | None = None,
    ) -> None:
        """Hold a write of ``table`` back until the next flush (an update with ``key``)."""
        self.writes.append(PLAIN_NAMES[table], values, self.describer(describe), key)
        self.tables.add(table)

    def describer(self, describe: Describe | DescribeRow | None) -> int:
        """Return the index a :class:`Write` keeps for ``describe`` (-1 for None)."""
        if describe is None:
            return -1
        index = self.describer_at.get(id(describe))
        if index is None:
            # Kept in the list for the batch's life, so that its id is not reused.
            index = self.describer_at[id(describe)] = len(self.describers)
            self.describers.append(describe)
        return index

    def describe_of(self, write: Write) -> Describe | None:
        """Return what describes ``write``'s broken rule, made for its row, if anything does.

        An update's row is the one the batch last stored for it, with the write's values
        over it: its values are only the columns that changed.
        """
        if write.describe < 0:
            return None
        values = write.values
        if write.key is not None:
            stored = self.stored.get((write.table, values[write.key]))
            if stored is not None:
                values = {**stored, **values}
        return described(self.describers[write.describe], values)

    def holds_writes(self) -> bool:
        """Say whether a flush has anything to send."""
        return len(self.writes) > 0 or self.number != self.number_written

    def changed(
        self, table: sa.Table, table_name: str, key: str, values: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Return the key and the columns of ``values`` that differ from the stored row's.

        ``table_name`` is the table's name as the batch keys its rows. ``values`` whole when the
        row's values are not known; None when nothing changed.
        """
        stored = self.stored.get((table_name, values[key]))
        if stored is None:
            return values
        json = _json_columns(table)
        changed: dict[str, Any] = {}
        for name, value in values.items():
            # Subscripted, not stored.get: an item read of a dict needs no method call
            # (sixty-eight columns a renewal), and a try costs nothing until it catches.
            try:
                old = stored[name]
            except KeyError:
                old = _ABSENT
            # The same object, or equal and not JSON (most columns): unchanged. Equal JSON
            # may still differ (1, 1.0, true): same_json tells, without encoding both
            # sides sorted (the subscription's price, every renewal: 6.0G -> 5.7G
            # instructions over 2,000).
            if name != key and (
                old is value
                or (old == value and (value is None or name not in json or same_json(old, value)))
            ):
                continue
            changed[name] = value
        return None if len(changed) == 1 else changed

    def take(self) -> Writes:
        """Return the queued writes, oldest first, and forget them."""
        writes, self.writes = self.writes, Writes()
        self.tables = set()
        return writes


_ABSENT = object()


@functools.cache
def _json_columns(table: sa.Table) -> frozenset[str]:
    return frozenset(column.name for column in table.c if isinstance(column.type, sa.JSON))


def touches(statement: sa.Executable, tables: set[sa.Table]) -> bool:
    """Say whether a statement reads or writes any of ``tables``."""
    found = find_tables(
        statement,  # type: ignore[arg-type]  # any statement is a ClauseElement at run time
        include_crud=True,
        include_joins=True,
        include_aliases=True,
        check_columns=True,
    )
    return any(table in tables for table in found)


def send(connection: Connection, writes: Writes) -> None:
    """Send queued writes: each table's inserts in bulk, parents first, then the updates.

    PostgreSQL takes the inserts by ``COPY``, SQLite by ``executemany`` (in-process, it is
    as fast); updates go as an executemany per table and shape, pipelined by the driver.
    """
    inserts, updates = _grouped(writes)
    copy = _may_copy(connection)
    raw = connection.dialect.name == "postgresql"
    for (table, columns), rows in inserts:
        if copy:
            _copy(connection, table, columns, rows)
            continue
        params = [plain_json(table.name, row) for row in rows]
        if connection.dialect.name == "postgresql":
            # RETURNING lets SQLAlchemy put many rows in each INSERT ("insertmanyvalues");
            # a plain executemany would be one statement per row, if pipelined.
            connection.execute(sa.insert(table).returning(table.c[columns[0]]), params)
        else:
            connection.execute(sa.insert(table), params)
    for table, shape, rows in updates:
        _send_updates(connection, table, shape, rows, raw)


_Inserts = list[tuple[tuple[sa.Table, tuple[str, ...]], list[dict[str, Any]]]]
_Updates = list[tuple[sa.Table, tuple[str, tuple[str, ...]], list[dict[str, Any]]]]


def _grouped(writes: Writes) -> tuple[_Inserts, _Updates]:
    """Group writes in sending order: inserts by table and columns, then updates by shape.

    Inserts go parents first; updates by table, consecutive ones of the same key and
    columns together.
    """
    inserts: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    by_table: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for table, values, key in zip(writes.tables, writes.values, writes.keys, strict=True):
        if key is None:
            inserts.setdefault((table, tuple(values)), []).append(values)
        else:
            by_table.setdefault(table, []).append((key, values))
    updates: _Updates = []
    for table in sorted(by_table, key=_RANK.__getitem__):
        # Consecutive updates with the same key and columns share a statement; a change of
        # shape starts the next one, so that one row's updates still land in their order.
        shape: tuple[str, tuple[str, ...]] | None = None
        group: list[dict[str, Any]] = []
        for key, values in by_table[table]:
            this = (key, tuple(values))
            if shape is not None and this != shape:
                updates.append((TABLES[table], shape, group))
                group = []
            shape = this
            group.append(values)
        if shape is not None:
            updates.append((TABLES[table], shape, group))
    ordered = [
        ((TABLES[table], columns), rows)
        for (table, columns), rows in sorted(inserts.items(), key=lambda item: _RANK[item[0][0]])
    ]
    return ordered, updates


def pipelines(connection: Connection, writes: Writes) -> bool:
    """Say whether these writes go as one pipeline: PostgreSQL, and few rows per table."""
    if connection.dialect.name != "postgresql":
        return False
    counts: dict[tuple[str, int], int] = {}
    for table, values, key in zip(writes.tables, writes.values, writes.keys, strict=True):
        if key is None:
            group = (table, len(values))
            counts[group] = counts.get(group, 0) + 1
            if counts[group] > _PIPELINE_MOST_ROWS:
                return False
    return True


def send_pipelined(
    connection: Connection, writes: Writes, number: int | None, *, commit: bool = False
) -> bool:
    """Send writes (and the invoice counter's ``number``) in one pipeline, in a savepoint.

    Return False when a constraint broke: everything was rolled back to the savepoint,
    and the transaction is usable again. Other errors raise as SQLAlchemy's would.
    ``commit``: the pipeline ends with ``COMMIT``, not the savepoint's release (a round
    trip fewer); should the writes break a constraint, it is not run, and when the
    ``COMMIT`` itself fails (a deferred foreign key) its error raises, the transaction
    rolled back whole by the server.
    """
    import psycopg  # noqa: PLC0415  # only PostgreSQL comes here; SQLite installs lack it

    inserts, updates = _grouped(writes)
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    statement = f"SAVEPOINT {_SAVEPOINT}"
    cursor = kept_cursor(connection)
    try:
        try:
            with pipeline(connection) as queue:
                # Savepoints are not worth preparing: the pipeline would at their second use.
                queue.execute(statement, prepare=False)
                if number is not None:
                    statement = _COUNTER
                    queue.execute(statement, (number,))
                for (table, columns), rows in inserts:
                    statement = insert_sql(connection, table, columns)
                    bound = bound_values(connection, table, columns)
                    queue.executemany(statement, [bound(row) for row in rows])
                for table, (key, columns), rows in updates:
                    statement = update_sql(connection, table, key, columns)
                    bound = bound_values(connection, table, columns)
                    queue.executemany(statement, [[*bound(row), row[key]] for row in rows])
                statement = "COMMIT" if commit else f"RELEASE SAVEPOINT {_SAVEPOINT}"
                queue.execute(statement, prepare=False)
        except psycopg.IntegrityError:
            if driver.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                statement = "COMMIT"
                raise  # the COMMIT failed: no transaction left to roll back to the savepoint
            statement = f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}"
            cursor.execute(statement, prepare=False)
            return False
    except psycopg.Error as exc:
        reraise(connection, statement, exc)
    return True


def _send_updates(
    connection: Connection,
    table: sa.Table,
    shape: tuple[str, tuple[str, ...]],
    rows: list[dict[str, Any]],
    raw: bool,
) -> None:
    """Update rows of one shape (key and columns): an executemany, pipelined by the driver."""
    key, columns = shape
    if not raw:
        params = [{**plain_json(table.name, row), _KEY_PARAMETER: row[key]} for row in rows]
        connection.execute(_update(table, key), params)
        return
    # PostgreSQL: straight to the driver; SQLAlchemy's per-row parameter handling cost
    # 8x the driver's own work here.
    bound = bound_values(connection, table, columns)
    if len(rows) >= _SET_BASED_LEAST_ROWS and len({row[key] for row in rows}) == len(rows):
        # One statement joining the rows' values as arrays: PostgreSQL spends half the
        # time it takes for as many single-row statements. Each row once only: an UPDATE
        # … FROM updates a row once, whichever of its matches it takes.
        literals = array_literals(connection, table, columns)
        statement = _set_based_update_sql(connection, table, key, columns)
        arrays: list[Any] = (
            [list(values) for values in zip(*(bound(row) for row in rows), strict=True)]
            if literals is None
            else literals(rows)
        )
        with driver_cursor(connection, statement) as cursor:
            cursor.execute(statement, arrays)
        return
    statement = update_sql(connection, table, key, columns)
    with driver_cursor(connection, statement) as cursor:
        cursor.executemany(statement, [[*bound(row), row[key]] for row in rows])


def _set_based_update_sql(
    connection: Connection, table: sa.Table, key: str, columns: tuple[str, ...]
) -> str:
    """``UPDATE table SET column = v.column, … FROM unnest(%s::type[], …) AS v WHERE key = v.key``."""
    return _set_based_text(connection.dialect, table, key, columns)


@functools.cache
def _set_based_text(dialect: Dialect, table: sa.Table, key: str, columns: tuple[str, ...]) -> str:
    preparer = dialect.identifier_preparer
    names = [preparer.quote(name) for name in columns]
    arrays = array_parameters(dialect, table, columns)
    assignments = ", ".join(
        f"{quoted} = v.{quoted}" for name, quoted in zip(columns, names, strict=True) if name != key
    )
    quoted_key = preparer.quote(key)
    return (
        f"UPDATE {preparer.format_table(table)} AS t SET {assignments}"
        f" FROM unnest({arrays}) AS v({', '.join(names)}) WHERE t.{quoted_key} = v.{quoted_key}"
    )


def _may_copy(connection: Connection) -> bool:
    """Say whether COPY can load this connection's rows: PostgreSQL, and a role RLS skips.

    PostgreSQL refuses ``COPY FROM`` into a table whose row-level security applies to the
    role, as ours do (FORCE) to every role but a superuser or a BYPASSRLS one. Asked once
    per pooled connection.
    """
    if connection.dialect.name != "postgresql":
        return False
    info = connection.connection.info
    if _MAY_COPY not in info:
        info[_MAY_COPY] = bool(
            connection.exec_driver_sql(
                "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
            ).scalar()
        )
    return bool(info[_MAY_COPY])


def _copy(
    connection: Connection, table: sa.Table, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """COPY rows into a table, each value through its column type's own bind processing."""
    preparer = connection.dialect.identifier_preparer
    statement = (
        f"COPY {preparer.format_table(table)}"
        f" ({', '.join(preparer.quote(name) for name in columns)}) FROM STDIN"
    )
    bound = copy_values(connection, table, columns)
    with driver_cursor(connection, statement) as cursor, cursor.copy(statement) as copy:
        write_rows(copy, map(bound, rows))


def _update(table: sa.Table, key: str) -> sa.Executable:
    # No .values(): the SET clause comes from each row's columns, as in an executemany.
    return sa.update(table).where(table.c[key] == sa.bindparam(_KEY_PARAMETER))
