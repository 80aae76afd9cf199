"""The unit of work: one connection and one transaction, rolled back unless committed.

The transaction begins with the first statement, not at ``__enter__``: on SQLite that
lets a unit of work whose first act is :meth:`claim_due
<lumenquest_adapters.sqlalchemy._repositories.Subscriptions.claim_due>` begin with
``BEGIN IMMEDIATE`` (the write lock up front), while any other begins ``DEFERRED`` and
readers never wait. On PostgreSQL transactions are READ COMMITTED; claims lock their
rows with ``FOR UPDATE SKIP LOCKED``.

Row-level security (PostgreSQL): a unit of work made with an :class:`Identity` (see
:meth:`SqlAlchemyStore.acting_as`) begins every transaction with
``set_config('lumenquest.customer_id', …, true), set_config('lumenquest.role', …, true)``
(``SET LOCAL``: gone at commit or rollback, so a pooled connection never carries an
identity into the next transaction). ``BEGIN`` and the settings wait for the
transaction's first statement: one the unit of work sends to libpq straight (its own
reads) carries them in its own round trip, ahead of it in the same pipeline; before any
other (``connection()``, ``read()``) they are sent on their own, as one query. Either
way nothing runs in the transaction before them. SQLite has no row-level security: there
the identity changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine

from lumenquest_adapters.sqlalchemy import _repositories as r
from lumenquest_adapters.sqlalchemy._batch import (
    PLAIN_NAMES,
    TABLES,
    Batch,
    Writes,
    pipelines,
    send,
    send_pipelined,
    touches,
)
from lumenquest_adapters.sqlalchemy._engine import BEGIN_KEY, is_sqlite
from lumenquest_adapters.sqlalchemy._errors import Describe, DescribeRow, described, translated
from lumenquest_adapters.sqlalchemy._mapping import (
    Row,
    as_is,
    audit_row_of,
    change_row_of,
    json_dumps,
    new_outbox_row,
    plain_json,
)
from lumenquest_adapters.sqlalchemy._raw import (
    begin_deferred,
    begin_with,
    first_value,
    forget_begin,
    insert_if_new,
    insert_many,
    insert_new,
    select_by_key,
    select_due,
    select_where,
    send_begin,
    update_row,
)
from lumenquest_adapters.sqlalchemy._schema import invoice_number_sequence, metadata
from lumenquest_core.invoicing import Invoice
from lumenquest_core.ports import (
    AuditFields,
    ChangeFields,
    IdempotencyRecord,
    MessageFields,
    UnitOfWork,
)

__all__ = [
    "Identity",
    "SessionRole",
    "SqlAlchemyIdempotencyStore",
    "SqlAlchemyStore",
    "SqlAlchemyUnitOfWork",
]

# A write that changes nothing but takes SQLite's write lock for a deferred transaction.
_TAKE_WRITE_LOCK = (
    sa.update(invoice_number_sequence)
    .where(sa.false())
    .values(last_value=invoice_number_sequence.c.last_value)
)


# SQLite's bound on one statement's parameters (SQLITE_MAX_VARIABLE_NUMBER, from 3.32).
_SQLITE_MOST_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32) else 999

SessionRole = Literal["user", "admin", "system"]
"""Who a transaction acts as: a customer's ``user``, an ``admin``, or the billing run."""

_ROLES: tuple[SessionRole, ...] = ("user", "admin", "system")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a unit of work acts for, under PostgreSQL's row-level security policies.

    ``user`` sees and writes the rows of ``customer_id`` only; ``admin`` and ``system``
    (the billing run) see and write every row.
    """

    role: SessionRole
    customer_id: str | None = None

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}, not {self.role!r}")
        if self.role == "user" and not self.customer_id:
            raise ValueError("a user session needs the customer_id it acts for")


@functools.cache
def _insert_if_new(table: sa.Table) -> sa.Executable:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING 1`` for ``table`` on SQLite, values as parameters."""
    insert = sqlite.insert(table)
    statement: sa.Executable = insert.on_conflict_do_nothing().returning(sa.literal_column("1"))
    return statement


def _idle_in_transaction(connection: Connection) -> bool:
    """Say whether a PostgreSQL connection's transaction is sound and waiting (no error)."""
    import psycopg  # noqa: PLC0415  # only PostgreSQL comes here; SQLite installs lack it

    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


_R = TypeVar("_R")


class _made_once(Generic[_R]):  # noqa: N801 - a decorator, named like cached_property
    """``functools.cached_property`` without its lock: made on first use, kept in ``__dict__``.

    On Python 3.11 ``cached_property`` takes a lock at every first use; a unit of work
    is used by one thread, and a paid subscribe makes 16 repositories (about 2 % of
    its CPU in the lock).
    """

    def __init__(self, make: Callable[[Any], _R]) -> None:
        self._make = make
        self._name = make.__name__
        self.__doc__ = make.__doc__

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> _R: ...

    def __get__(self, instance: object | None, owner: type[Any] | None = None) -> _R | Self:
        if instance is None:
            return self
        made: _R = self._make(instance)
        # Found first from now on. With setattr, as __init__ keeps the rest, every unit of
        # work holds it at the slot its class shares for the name; written through
        # __dict__, each got a layout of its own, in the order it built its repositories,
        # and the interpreter's attribute reads, tuned to one layout, missed on others.
        setattr(instance, self._name, made)
        return made


class SqlAlchemyUnitOfWork:
    """One transaction over every repository: nothing is kept unless ``commit`` is called."""

    def __init__(self, engine: Engine, identity: Identity | None = None) -> None:
        self.engine = engine
        self.identity = identity
        self._sqlite = is_sqlite(engine)
        # How a history row's data (events, audit snapshots, changes) goes into its row:
        # on PostgreSQL as its JSON text at once. The row then holds nothing the garbage
        # collector tracks, so it is not tracked, where the data's nested dicts and
        # read-only mappings kept the row and themselves tracked for the whole batch (54 ->
        # 42 tracked objects a renewal held by a batch of 500). The text is what the flush
        # would have encoded. SQLite's rows go through SQLAlchemy, which encodes them.
        self.encode_data: Callable[[Any], Any] = as_is if self._sqlite else json_dumps
        self._connection: Connection | None = None
        self._write_locked = False
        # Whether the transaction's BEGIN and identity may still wait for its first
        # statement (see _begun).
        self._deferred = False
        # Whether the transaction ran nothing but the unit of work's own reads so far.
        self._only_read = True
        self.batch: Batch | None = None  # set by prepare_batch, until the transaction ends
        # What claim_due locked this transaction (id -> the subscription and its row), so
        # that prepare_batch need not read it again.
        self.claimed: dict[str, tuple[Any, Row]] = {}

    # -- the repositories ------------------------------------------------------------

    # Each made on first use and kept in the instance's __dict__: the core asks for one
    # 19 times a renewal, and a property's two calls each time cost
    # 12,000 instructions a renewal (5,512M -> 5,488M over 2,000). The concrete types are checked against the port where the unit of
    # work is returned as one (SqlAlchemyStore.unit_of_work).

    @_made_once
    def customers(self) -> r.Customers:
        """The customers of this unit of work."""
        return r.Customers(self)

    @_made_once
    def plans(self) -> r.Plans:
        """The plans of this unit of work."""
        return r.Plans(self)

    @_made_once
    def prices(self) -> r.Prices:
        """The prices of this unit of work."""
        return r.Prices(self)

    @_made_once
    def coupons(self) -> r.Coupons:
        """The coupons of this unit of work."""
        return r.Coupons(self)

    @_made_once
    def subscriptions(self) -> r.Subscriptions:
        """The subscriptions of this unit of work."""
        return r.Subscriptions(self)

    @_made_once
    def invoices(self) -> r.Invoices:
        """The invoices of this unit of work."""
        return r.Invoices(self)

    @_made_once
    def payments(self) -> r.Payments:
        """The payments of this unit of work."""
        return r.Payments(self)

    @_made_once
    def credit_notes(self) -> r.CreditNotes:
        """The credit notes of this unit of work."""
        return r.CreditNotes(self)

    @_made_once
    def usage(self) -> r.Usage:
        """The usage of this unit of work."""
        return r.Usage(self)

    @_made_once
    def outbox(self) -> r.Outbox:
        """The outbox of this unit of work."""
        return r.Outbox(self)

    @_made_once
    def audit_log(self) -> r.AuditLog:
        """The audit log of this unit of work."""
        return r.AuditLog(self)

    @_made_once
    def subscription_changes(self) -> r.SubscriptionChanges:
        """The subscription changes of this unit of work."""
        return r.SubscriptionChanges(self)

    def add_history(
        self,
        at: datetime,
        messages: Sequence[MessageFields],
        entry: AuditFields | None = None,
        change: ChangeFields | None = None,
    ) -> None:
        """Store a change's outbox messages, audit entry and change row (``HistoryWriter``)."""
        # The rows straight from the fields: no OutboxMessage, AuditEntry or
        # SubscriptionChange built for the repositories to take apart again.
        encode = self.encode_data
        if messages:
            outbox = self.outbox
            for fields in messages:
                outbox._insert(new_outbox_row(fields, at, encode))
        if entry is not None:
            self.audit_log._insert(audit_row_of(entry, encode))
        if change is not None:
            self.subscription_changes._insert(change_row_of(change, encode))

    @_made_once
    def analytics(self) -> r.Analytics:
        """The analytics of this unit of work."""
        return r.Analytics(self)

    @_made_once
    def email_deliveries(self) -> r.EmailDeliveries:
        """The email deliveries of this unit of work."""
        return r.EmailDeliveries(self)

    @_made_once
    def idempotency(self) -> r.Idempotency:
        """The idempotency of this unit of work."""
        return r.Idempotency(self)

    # -- the transaction -------------------------------------------------------------

    def __enter__(self) -> Self:
        """Check a connection out of the pool; the transaction begins with the first statement."""
        if self._connection is not None:
            raise RuntimeError("this unit of work is already open; create a new one")
        with translated(metadata):
            self._connection = self.engine.connect()
        self._write_locked = False
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Roll back whatever was not committed and return the connection to the pool."""
        connection = self._connection
        if connection is None:
            return
        self._connection = None
        self.batch = None
        self.claimed = {}
        try:
            if self._deferred:
                # Never sent if no statement ran: the next transaction must not find it.
                self._deferred = False
                forget_begin(connection)
            if exc is None:
                self._end(partial(self._discard, connection))
            else:
                # Keep the block's own error; a failed rollback has nothing to add to it.
                with contextlib.suppress(sa.exc.DBAPIError):
                    self._discard(connection)
        finally:
            connection.close()

    def commit(self) -> None:
        """Keep every change made in this unit of work (foreign keys are checked now)."""
        connection = self._open()
        if not connection.in_transaction() and (
            self.batch is None or not self.batch.holds_writes()
        ):
            self._end(lambda: None)
            return
        try:
            self.flush(commit=True)  # a pipelined flush commits too: then this sends nothing
            self._end(connection.commit)
        except BaseException:
            # A failed COMMIT leaves SQLAlchemy's transaction open but unusable, and
            # SQLite's too (a deferred foreign key failing keeps it active): end both.
            with contextlib.suppress(sa.exc.DBAPIError):
                connection.rollback()
                dbapi_connection = connection.connection.dbapi_connection
                if self._sqlite and dbapi_connection is not None:
                    dbapi_connection.rollback()
            raise

    def rollback(self) -> None:
        """Discard every change not yet committed."""
        self._end(partial(self._discard, self._open()))

    def _discard(self, connection: Connection) -> None:
        """Roll back; on PostgreSQL a transaction that only read and is sound commits instead.

        The two are the same to the database, but where psycopg's own preparing is on (an
        engine not made by :func:`create_engine_for`), its rollback deallocates every
        prepared statement of the connection (a round trip, and each statement is parsed
        and planned again until it is prepared anew).
        """
        if (
            self._only_read
            and not self._sqlite
            and connection.in_transaction()
            and not connection.invalidated
            and _idle_in_transaction(connection)
        ):
            connection.commit()
        else:
            connection.rollback()

    def _end(self, finish: Callable[[], None]) -> None:
        self._write_locked = False
        self.batch = None
        self.claimed = {}
        if self._deferred:
            self._deferred = False
            forget_begin(self._open())
        with translated(metadata):
            finish()

    def _open(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("use the unit of work inside a `with` block")
        return self._connection

    # -- what repositories use -------------------------------------------------------

    def connection(self, *, write_lock: bool = False) -> Connection:
        """Return the connection, its transaction begun (with the write lock if asked)."""
        connection = self._begun(write_lock=write_lock)
        self._only_read = False  # what the caller does with it is unknown: it may write
        if self._deferred:
            # Whatever the caller runs, the identity is set first.
            self._deferred = False
            with translated(metadata):
                send_begin(connection)
        return connection

    def _begun(self, *, write_lock: bool = False) -> Connection:
        """Return the connection, its transaction begun, for the unit of work's own use."""
        connection = self._open()
        if not connection.in_transaction():
            self._only_read = True
            if write_lock and self._sqlite:
                connection.info[BEGIN_KEY] = "BEGIN IMMEDIATE"
                self._write_locked = True
            with translated(metadata):
                connection.begin()
                if self.identity is not None and not self._sqlite:
                    identity = self.identity
                    settings = {
                        "lumenquest.customer_id": identity.customer_id or "",
                        "lumenquest.role": identity.role,
                    }
                    # BEGIN and the identity go ahead of the transaction's first statement,
                    # in its round trip when it goes to libpq straight (the unit of work's
                    # own reads): a paid subscribe's two transactions each save one. Any
                    # other use of the connection sends them first (connection(), read()).
                    self._deferred = begin_deferred(connection, settings)
                    if not self._deferred:
                        begin_with(connection, settings)  # one round trip of their own
        return connection

    def take_write_lock(self) -> None:
        """Make this transaction the database's one writer (SQLite); a no-op on PostgreSQL."""
        if not self._sqlite or self._write_locked:
            return
        connection = self._open()
        if not connection.in_transaction():
            self.connection(write_lock=True)
            return
        with translated(metadata):
            connection.execute(_TAKE_WRITE_LOCK)
        self._write_locked = True

    def read(self, statement: sa.Executable) -> sa.CursorResult[Any]:
        """Run a query (after sending the queued writes it could see)."""
        batch = self.batch
        if batch is not None and batch.writes and touches(statement, batch.tables):
            self.flush()
        connection = self._begun()
        with translated(metadata):
            if self._deferred:
                self._deferred = False
                send_begin(connection)
            return connection.execute(statement)

    def _reading(self, table: sa.Table) -> Connection:
        """Return the connection for a read of ``table``, its queued writes to it sent first."""
        batch = self.batch
        if batch is not None and batch.writes and table in batch.tables:
            self.flush()
        return self._begun()

    def read_by_key(
        self, table: sa.Table, key: str, values: Sequence[str], *, for_update: bool = False
    ) -> Sequence[Row]:
        """Return the rows whose ``key`` is one of ``values`` (locked, in key order, if asked)."""
        connection = self._reading(table)
        if not self._sqlite:
            with translated(metadata):
                return select_by_key(connection, table, key, values, for_update=for_update)
        column = table.c[key]
        query = sa.select(table).where(
            column == values[0] if len(values) == 1 else column.in_(values)
        )
        if for_update:
            query = query.order_by(column).with_for_update()
        with translated(metadata):
            return connection.execute(query).mappings().all()

    def read_due(
        self, table: sa.Table, column: str, at: datetime, *, key: str, limit: int
    ) -> Sequence[Row]:
        """Return up to ``limit`` rows due by ``at`` in ``column``, earliest first, locked.

        Ties go by ``key``; rows other transactions hold are skipped (``FOR UPDATE SKIP
        LOCKED``; SQLite has one writer, and ignores it). PostgreSQL reads them straight
        through the driver: a billing batch claims 500.
        """
        connection = self._reading(table)
        if not self._sqlite:
            with translated(metadata):
                return select_due(connection, table, column, at, key=key, limit=limit)
        due = table.c[column]
        query = (
            sa.select(table)
            .where(due <= at)
            .order_by(due, table.c[key])
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with translated(metadata):
            return connection.execute(query).mappings().all()

    def read_where(
        self,
        table: sa.Table,
        equal: dict[str, Any],
        *,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> Sequence[Row]:
        """Return the rows whose columns equal ``equal``'s values (ordered, limited if asked)."""
        connection = self._reading(table)
        if not self._sqlite:
            with translated(metadata):
                return select_where(connection, table, equal, order_by=order_by, limit=limit)
        query = sa.select(table).where(*(table.c[name] == value for name, value in equal.items()))
        if order_by is not None:
            query = query.order_by(table.c[order_by])
        if limit is not None:
            query = query.limit(limit)
        with translated(metadata):
            return connection.execute(query).mappings().all()

    def insert(
        self, table: sa.Table, values: dict[str, Any], describe: Describe | DescribeRow | None
    ) -> None:
        """Insert a row, or queue it in batch mode; a taken unique key raises ``describe``'s Conflict."""
        batch = self.batch
        if batch is not None:
            # Batch.queue inline, with Writes.append and Batch.describer once it knows
            # ``describe``: ten inserts a renewal, three Python calls fewer each.
            index = batch.describer_at.get(id(describe))
            if index is None:
                index = batch.describer(describe)
            writes = batch.writes
            writes.tables.append(PLAIN_NAMES[table])
            writes.values.append(values)
            writes.describes.append(index)
            writes.keys.append(None)
            batch.tables.add(table)
            return
        self._insert_now(table, values, described(describe, values))

    def insert_rows(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows that can break a constraint only on a bug (an invoice's lines)."""
        batch = self.batch
        if batch is not None:
            for row in rows:
                batch.queue(table, row, None)
            return
        if not rows:
            return
        if self._sqlite:
            plain_rows = [plain_json(table.name, row) for row in rows]
            self.write([sa.insert(table).values(plain_rows)], None, savepoint=False)
            return
        connection = self.connection()
        with translated(metadata):
            insert_many(connection, table, rows)
        self._write_locked = True

    def insert_new(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert the rows no unique key of ``table`` holds yet, in one statement; skip the others.

        ``INSERT … ON CONFLICT DO NOTHING``: a row that collides with a stored one, or with
        one before it in ``rows``, is left out. Queued writes are sent first, so that
        those of this unit of work count as stored.
        """
        if not rows:
            return
        self.flush()
        connection = self.connection()
        with translated(metadata):
            if self._sqlite:
                params = [plain_json(table.name, row) for row in rows]
                per_statement = max(1, _SQLITE_MOST_PARAMETERS // len(params[0]))
                for start in range(0, len(params), per_statement):
                    chunk = params[start : start + per_statement]
                    connection.execute(sqlite.insert(table).values(chunk).on_conflict_do_nothing())
            else:
                insert_new(connection, table, rows)
        self._write_locked = True

    def defer_update(
        self,
        table: sa.Table,
        key: str,
        values: dict[str, Any],
        describe: Describe | DescribeRow | None,
    ) -> bool:
        """Queue the update of a row this unit of work holds; say whether it was queued."""
        batch = self.batch
        name = PLAIN_NAMES[table]
        if batch is None or (name, values[key]) not in batch.known:
            return False
        # Only the columns that changed: fewer values to bind, send and store (a renewal
        # moves a subscription's period, a payment its status), none when nothing did.
        changed = batch.changed(table, name, key, values)
        if changed is not None:
            batch.queue(table, changed, describe, key)
        return True

    def remember(
        self, table: sa.Table, row_id: str, row: object, stored: Row | None = None
    ) -> None:
        """Note a row as this unit of work now sees it, and its column values if known (batch mode)."""
        batch = self.batch
        if batch is None:
            return
        name = PLAIN_NAMES[table]
        batch.known[name, row_id] = row
        if stored is None:
            batch.stored.pop((name, row_id), None)
        else:
            batch.stored[name, row_id] = stored

    def recall(self, table: sa.Table, row_id: str) -> Any:
        """Return the row as this unit of work last read or wrote it in batch mode, or None."""
        batch = self.batch
        return None if batch is None else batch.known.get((PLAIN_NAMES[table], row_id))

    def prepare_batch(
        self,
        *,
        customers: Collection[str] = (),
        subscriptions: Collection[str] = (),
        invoices: Collection[str] = (),
        payments_for_update: Collection[str] = (),
        pending_lines_of: Collection[str] = (),
        known_invoices: Collection[Invoice] = (),
    ) -> None:
        """Read the named rows in bulk (locking the payments) and queue writes from now on."""
        if self.batch is None:
            self.batch = Batch()
        # The payments first: on SQLite their lock is the database's write lock, and a
        # transaction that read before asking for it fails at once ("database is locked",
        # no waiting) when another writer commits in between.
        self.payments.lock(payments_for_update)
        self.customers.load(customers)
        self.subscriptions.load(subscriptions)
        invoice_repository = self.invoices
        invoice_repository.load(invoices, known=known_invoices)
        invoice_repository.note_pending_lines(pending_lines_of)

    def flush(self, *, commit: bool = False) -> None:
        """Send the queued writes, in bulk; a broken constraint raises the unbatched Conflict.

        ``commit``: a flush sent as one pipeline ends with the ``COMMIT`` (one round trip).
        """
        batch = self.batch
        if batch is None or not batch.holds_writes():
            return
        writes = batch.take()
        connection = self.connection()
        with translated(metadata):
            if writes and pipelines(connection, writes):
                number = None if batch.number == batch.number_written else batch.number
                sent = send_pipelined(connection, writes, number, commit=commit)
                self._write_locked = True
                if sent:
                    batch.number_written = batch.number
                    return
                # Rolled back to the pipeline's savepoint, the counter with the rest.
                self._write_counter(connection, batch)
            else:
                self._write_counter(connection, batch)
                if not writes:
                    return
                savepoint = connection.begin_nested()
                try:
                    send(connection, writes)
                except sa.exc.IntegrityError:
                    savepoint.rollback()
                else:
                    savepoint.commit()
                    self._write_locked = True
                    return
        # One at a time, in the order they were made: the write that breaks a rule raises
        # its own Conflict; if none does (the bulk order was at fault), all are in.
        self._replay(writes)

    @staticmethod
    def _write_counter(connection: Connection, batch: Batch) -> None:
        """Store the last invoice number taken, if the counter row does not hold it yet."""
        if batch.number == batch.number_written:
            return
        sequence = invoice_number_sequence
        connection.execute(
            sa.update(sequence).where(sequence.c.id == 1).values(last_value=batch.number)
        )
        batch.number_written = batch.number

    def _replay(self, writes: Writes) -> None:
        """Run queued writes one at a time, so the first one that breaks a rule says which."""
        batch, self.batch = self.batch, None
        assert batch is not None  # only a batch's flush replays
        try:
            for write in writes:
                table = TABLES[write.table]
                describe = batch.describe_of(write)
                if write.key is None:
                    self._insert_now(table, write.values, describe)
                else:
                    key = table.c[write.key]
                    statement = (
                        sa.update(table)
                        .where(key == write.values[write.key])
                        .values(plain_json(write.table, write.values))
                    )
                    self.write([statement], describe)
        finally:
            self.batch = batch

    def _insert_now(
        self, table: sa.Table, values: dict[str, Any], describe: Describe | None
    ) -> None:
        """Insert a row; a taken unique key raises the Conflict ``describe`` gives.

        The happy path is one statement: ``INSERT … ON CONFLICT DO NOTHING``. When it
        inserts nothing, the plain INSERT runs again in a savepoint for the database's own
        word on which constraint broke, and the transaction stays usable.
        """
        connection = self.connection()
        with translated(metadata, describe):
            if self._sqlite:
                # The values go as parameters of one statement per table (compiled once,
                # cached), not as literals baked into a new statement keyed on every call.
                statement = _insert_if_new(table)
                params = plain_json(table.name, values)
                inserted = connection.execute(statement, params).first() is not None
            else:
                inserted = insert_if_new(connection, table, values)
        self._write_locked = True
        if not inserted:
            self.write([sa.insert(table).values(plain_json(table.name, values))], describe)

    def write(
        self,
        statements: Sequence[sa.Executable],
        describe: Describe | None,
        *,
        savepoint: bool = True,
    ) -> list[int]:
        """Run writes, in one savepoint unless told otherwise; return each one's row count.

        Inside a savepoint a broken constraint raises the Conflict ``describe`` gives (or a
        generic one) and rolls back to the savepoint only, so that the unit of work stays
        usable. Without one (for writes that can only break a rule on a bug) PostgreSQL
        aborts the transaction, which the unit of work then can only roll back.
        """
        self.flush()
        connection = self.connection()
        counts: list[int] = []
        scope = connection.begin_nested() if savepoint else contextlib.nullcontext()
        with translated(metadata, describe), scope:
            for statement in statements:
                counts.append(connection.execute(statement).rowcount)
        self._write_locked = True
        return counts

    def update_row(
        self,
        table: sa.Table,
        key: str,
        values: dict[str, Any],
        describe: Describe | None,
        *,
        savepoint: bool,
    ) -> int:
        """Update the row whose ``key`` is ``values[key]``; return how many rows changed.

        ``savepoint`` as for :meth:`write`: a table with a unique key besides its own
        needs one, for a broken constraint to leave the unit of work usable.
        """
        if self._sqlite:
            column = table.c[key]
            statement = (
                sa.update(table).where(column == values[key]).values(plain_json(table.name, values))
            )
            return self.write([statement], describe, savepoint=savepoint)[0]
        self.flush()
        connection = self.connection()
        with translated(metadata, describe):
            count = update_row(connection, table, key, values, savepoint=savepoint)
        self._write_locked = True
        return count

    def write_returning(self, statement: sa.Executable, postgresql_text: str | None = None) -> Any:
        """Run one write and return the first column of its first returned row, if any.

        For a write that touches no row a queued write does (the invoice counter): the
        queued writes stay queued, to go together at commit. ``postgresql_text``: the same
        statement as PostgreSQL text, without parameters; PostgreSQL runs it straight
        through the driver.
        """
        connection = self.connection()
        with translated(metadata):
            if postgresql_text is not None and not self._sqlite:
                value = first_value(connection, postgresql_text)
            else:
                value = connection.execute(statement).scalar()
        self._write_locked = True
        return value

    def write_all(self, statement: sa.Executable) -> Sequence[sa.RowMapping]:
        """Run one write and return every row it returns."""
        self.flush()
        connection = self.connection()
        with translated(metadata):
            rows = connection.execute(statement).mappings().all()
        self._write_locked = True
        return rows


class SqlAlchemyStore:
    """A database as lumenquest sees it: call it (or ``unit_of_work()``) for a unit of work.

    ``identity`` (or :meth:`acting_as`) makes every unit of work act for it under
    row-level security; without one, a unit of work sets nothing, which on PostgreSQL
    suits only a superuser (or BYPASSRLS) connection: any other sees no customer row.
    """

    def __init__(self, engine: Engine, identity: Identity | None = None) -> None:
        self.engine = engine
        self.identity = identity

    def unit_of_work(self) -> UnitOfWork:
        """Return a new unit of work on this database."""
        return SqlAlchemyUnitOfWork(self.engine, self.identity)

    __call__ = unit_of_work

    def acting_as(
        self, customer_id: str | None = None, *, role: SessionRole = "user"
    ) -> Callable[[], UnitOfWork]:
        """Return a unit-of-work factory whose transactions act for ``customer_id`` as ``role``.

        ``store.acting_as(customer.id)`` for a customer's request,
        ``store.acting_as(role="admin")`` for an admin's, ``store.acting_as(role="system")``
        for the billing run and the outbox dispatcher.
        """
        return partial(SqlAlchemyUnitOfWork, self.engine, Identity(role, customer_id))


class SqlAlchemyIdempotencyStore:
    """The ``IdempotencyStore`` port on its own: each call is a unit of work of its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, key: str, at: datetime) -> IdempotencyRecord | None:
        """Return the unexpired record for ``key``, if any."""
        with SqlAlchemyUnitOfWork(self.engine) as uow:
            return uow.idempotency.get(key, at)

    def put(self, record: IdempotencyRecord) -> None:
        """Store a record; a record with the same key unexpired at its creation raises Conflict."""
        with SqlAlchemyUnitOfWork(self.engine) as uow:
            uow.idempotency.put(record)
            uow.commit()
