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
identity into the next transaction). SQLite has no row-level security: there the
identity changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from lumenquest_adapters.sqlalchemy import _repositories as r
from lumenquest_adapters.sqlalchemy._batch import Batch, Write, send, touches
from lumenquest_adapters.sqlalchemy._engine import BEGIN_KEY, is_sqlite
from lumenquest_adapters.sqlalchemy._errors import Describe, translated
from lumenquest_adapters.sqlalchemy._schema import invoice_number_sequence, metadata
from lumenquest_core.invoicing import Invoice
from lumenquest_core.ports import (
    AnalyticsRepository,
    AuditLog,
    CouponRepository,
    CreditNoteRepository,
    CustomerRepository,
    EmailDeliveryRepository,
    IdempotencyRecord,
    IdempotencyStore,
    InvoiceRepository,
    OutboxRepository,
    PaymentRepository,
    PlanRepository,
    PriceRepository,
    SubscriptionChangeRepository,
    SubscriptionRepository,
    UnitOfWork,
    UsageRepository,
)

__all__ = [
    "Identity",
    "SessionRole",
    "SqlAlchemyIdempotencyStore",
    "SqlAlchemyStore",
    "SqlAlchemyUnitOfWork",
]

_R = TypeVar("_R")

# A write that changes nothing but takes SQLite's write lock for a deferred transaction.
_TAKE_WRITE_LOCK = (
    sa.update(invoice_number_sequence)
    .where(sa.false())
    .values(last_value=invoice_number_sequence.c.last_value)
)


_SET_IDENTITY = sa.text(
    "SELECT set_config('lumenquest.customer_id', :customer_id, true),"
    " set_config('lumenquest.role', :role, true)"
)

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
def _insert_if_new(on_sqlite: bool, table: sa.Table) -> sa.Executable:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING 1`` for ``table``, its values as parameters."""
    insert = sqlite.insert(table) if on_sqlite else postgresql.insert(table)
    statement: sa.Executable = insert.on_conflict_do_nothing().returning(sa.literal_column("1"))
    return statement


class SqlAlchemyUnitOfWork:
    """One transaction over every repository: nothing is kept unless ``commit`` is called."""

    def __init__(self, engine: Engine, identity: Identity | None = None) -> None:
        self.engine = engine
        self.identity = identity
        self._sqlite = is_sqlite(engine)
        self._connection: Connection | None = None
        self._write_locked = False
        self._repositories: dict[str, object] = {}
        self.batch: Batch | None = None  # set by prepare_batch, until the transaction ends
        # What claim_due locked this transaction, so that prepare_batch need not read it again.
        self.claimed: dict[str, Any] = {}

    # -- the repositories ------------------------------------------------------------

    def _repository(self, name: str, factory: Callable[[SqlAlchemyUnitOfWork], _R]) -> _R:
        # Each property assigns the result to its port's type: mypy checks the match.
        repository = self._repositories.get(name)
        if repository is None:
            repository = self._repositories[name] = factory(self)
        return repository  # type: ignore[return-value]  # stored under its own name only

    @property
    def customers(self) -> CustomerRepository:
        """The customers of this unit of work."""
        repository: CustomerRepository = self._repository("customers", r.Customers)
        return repository

    @property
    def plans(self) -> PlanRepository:
        """The plans of this unit of work."""
        repository: PlanRepository = self._repository("plans", r.Plans)
        return repository

    @property
    def prices(self) -> PriceRepository:
        """The prices of this unit of work."""
        repository: PriceRepository = self._repository("prices", r.Prices)
        return repository

    @property
    def coupons(self) -> CouponRepository:
        """The coupons of this unit of work."""
        repository: CouponRepository = self._repository("coupons", r.Coupons)
        return repository

    @property
    def subscriptions(self) -> SubscriptionRepository:
        """The subscriptions of this unit of work."""
        repository: SubscriptionRepository = self._repository("subscriptions", r.Subscriptions)
        return repository

    @property
    def invoices(self) -> InvoiceRepository:
        """The invoices of this unit of work."""
        repository: InvoiceRepository = self._repository("invoices", r.Invoices)
        return repository

    @property
    def payments(self) -> PaymentRepository:
        """The payments of this unit of work."""
        repository: PaymentRepository = self._repository("payments", r.Payments)
        return repository

    @property
    def credit_notes(self) -> CreditNoteRepository:
        """The credit notes of this unit of work."""
        repository: CreditNoteRepository = self._repository("credit_notes", r.CreditNotes)
        return repository

    @property
    def usage(self) -> UsageRepository:
        """The usage of this unit of work."""
        repository: UsageRepository = self._repository("usage", r.Usage)
        return repository

    @property
    def outbox(self) -> OutboxRepository:
        """The outbox of this unit of work."""
        repository: OutboxRepository = self._repository("outbox", r.Outbox)
        return repository

    @property
    def audit_log(self) -> AuditLog:
        """The audit log of this unit of work."""
        repository: AuditLog = self._repository("audit_log", r.AuditLog)
        return repository

    @property
    def subscription_changes(self) -> SubscriptionChangeRepository:
        """The subscription changes of this unit of work."""
        repository: SubscriptionChangeRepository = self._repository(
            "subscription_changes", r.SubscriptionChanges
        )
        return repository

    @property
    def analytics(self) -> AnalyticsRepository:
        """The analytics of this unit of work."""
        repository: AnalyticsRepository = self._repository("analytics", r.Analytics)
        return repository

    @property
    def email_deliveries(self) -> EmailDeliveryRepository:
        """The email deliveries of this unit of work."""
        repository: EmailDeliveryRepository = self._repository(
            "email_deliveries", r.EmailDeliveries
        )
        return repository

    @property
    def idempotency(self) -> IdempotencyStore:
        """The idempotency of this unit of work."""
        repository: IdempotencyStore = self._repository("idempotency", r.Idempotency)
        return repository

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
            if exc is None:
                self._end(connection.rollback)
            else:
                # Keep the block's own error; a failed rollback has nothing to add to it.
                with contextlib.suppress(sa.exc.DBAPIError):
                    connection.rollback()
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
            self.flush()
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
        self._end(self._open().rollback)

    def _end(self, finish: Callable[[], None]) -> None:
        self._write_locked = False
        self.batch = None
        self.claimed = {}
        with translated(metadata):
            finish()

    def _open(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("use the unit of work inside a `with` block")
        return self._connection

    # -- what repositories use -------------------------------------------------------

    def connection(self, *, write_lock: bool = False) -> Connection:
        """Return the connection, its transaction begun (with the write lock if asked)."""
        connection = self._open()
        if not connection.in_transaction():
            if write_lock and self._sqlite:
                connection.info[BEGIN_KEY] = "BEGIN IMMEDIATE"
                self._write_locked = True
            with translated(metadata):
                connection.begin()
                if self.identity is not None and not self._sqlite:
                    connection.execute(
                        _SET_IDENTITY,
                        {
                            "customer_id": self.identity.customer_id or "",
                            "role": self.identity.role,
                        },
                    )
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
        connection = self.connection()
        with translated(metadata):
            return connection.execute(statement)

    def insert(self, table: sa.Table, values: dict[str, Any], describe: Describe | None) -> None:
        """Insert a row, or queue it in batch mode; a taken unique key raises ``describe``'s Conflict."""
        if self.batch is not None:
            self.batch.queue(Write(table, values, describe))
            return
        self._insert_now(table, values, describe)

    def insert_rows(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows that can break a constraint only on a bug (an invoice's lines)."""
        if self.batch is not None:
            for row in rows:
                self.batch.queue(Write(table, row, None))
            return
        self.write([sa.insert(table).values(list(rows))], None, savepoint=False)

    def defer_update(
        self, table: sa.Table, key: str, values: dict[str, Any], describe: Describe | None
    ) -> bool:
        """Queue the update of a row this unit of work holds; say whether it was queued."""
        batch = self.batch
        if batch is None or (table.name, values[key]) not in batch.known:
            return False
        batch.queue(Write(table, values, describe, key))
        return True

    def remember(self, table: sa.Table, row_id: str, row: object) -> None:
        """Note a row as this unit of work now sees it (batch mode only)."""
        if self.batch is not None:
            self.batch.known[table.name, row_id] = row

    def recall(self, table: sa.Table, row_id: str) -> Any:
        """Return the row as this unit of work last read or wrote it in batch mode, or None."""
        batch = self.batch
        return None if batch is None else batch.known.get((table.name, row_id))

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
        # The unit of work's own repositories (the ports' properties hide these methods).
        self._repository("customers", r.Customers).load(customers)
        self._repository("subscriptions", r.Subscriptions).load(subscriptions)
        invoice_repository = self._repository("invoices", r.Invoices)
        invoice_repository.load(invoices, known=known_invoices)
        invoice_repository.note_pending_lines(pending_lines_of)
        self._repository("payments", r.Payments).lock(payments_for_update)

    def flush(self) -> None:
        """Send the queued writes, in bulk; a broken constraint raises the unbatched Conflict."""
        batch = self.batch
        if batch is None or not batch.holds_writes():
            return
        writes = batch.take()
        connection = self.connection()
        with translated(metadata):
            if batch.number != batch.number_written:
                sequence = invoice_number_sequence
                connection.execute(
                    sa.update(sequence).where(sequence.c.id == 1).values(last_value=batch.number)
                )
                batch.number_written = batch.number
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

    def _replay(self, writes: Sequence[Write]) -> None:
        """Run queued writes one at a time, so the first one that breaks a rule says which."""
        batch, self.batch = self.batch, None
        try:
            for write in writes:
                if write.key is None:
                    self._insert_now(write.table, write.values, write.describe)
                else:
                    key = write.table.c[write.key]
                    statement = (
                        sa.update(write.table)
                        .where(key == write.values[write.key])
                        .values(write.values)
                    )
                    self.write([statement], write.describe)
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
        # The values go as parameters of one statement per table (compiled once, cached),
        # not as literals baked into a new statement that must be keyed on every call.
        statement = _insert_if_new(self._sqlite, table)
        with translated(metadata, describe):
            inserted = connection.execute(statement, values).first() is not None
        self._write_locked = True
        if not inserted:
            self.write([sa.insert(table).values(values)], describe)

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

    def write_returning(self, statement: sa.Executable) -> Any:
        """Run one write and return the first column of its first returned row, if any."""
        self.flush()
        connection = self.connection()
        with translated(metadata):
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
