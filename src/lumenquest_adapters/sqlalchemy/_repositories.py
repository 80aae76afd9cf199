"""The repositories: each port's methods as SQL statements over the unit of work's connection.

A Conflict leaves the unit of work usable (PostgreSQL aborts a whole transaction on an
error otherwise): an insert is ``INSERT … ON CONFLICT DO NOTHING``, retried in a
savepoint only when it inserted nothing, to learn which constraint broke; an update of
a table with a unique key besides its id runs in a savepoint. The Conflict's message
and details are those the memory adapter gives.
"""

from __future__ import annotations

import builtins
import functools
import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from lumenquest_adapters.sqlalchemy import _mapping as m
from lumenquest_adapters.sqlalchemy import _schema as t
from lumenquest_adapters.sqlalchemy._engine import is_sqlite
from lumenquest_adapters.sqlalchemy._errors import Describe, DescribeRow, translated
from lumenquest_adapters.sqlalchemy._raw import (
    bound_values,
    fetch_joined,
    fetch_values,
    select_list,
    select_unset,
    text_array,
)
from lumenquest_core.catalog import Plan, Price
from lumenquest_core.coupons import Coupon
from lumenquest_core.customers import Customer
from lumenquest_core.errors import Conflict, NotFound, ValidationError
from lumenquest_core.invoicing import CreditNote, Invoice, InvoiceStatus, Refund
from lumenquest_core.metrics import (
    TRIAL_CONVERTED_STATUSES,
    Movement,
    MovementTotal,
    MrrMovements,
    MrrSnapshots,
    TrialOutcome,
    movements_from_totals,
)
from lumenquest_core.payments import (
    AuditEntry,
    Payment,
    PaymentStatus,
    SubscriptionChange,
    UsageRecord,
)
from lumenquest_core.periods import Period, aware
from lumenquest_core.ports import (
    AnalyticsEvent,
    EmailDelivery,
    IdempotencyRecord,
    OutboxMessage,
    PendingLine,
)
from lumenquest_core.subscriptions import Subscription, SubscriptionStatus

if TYPE_CHECKING:
    from lumenquest_adapters.sqlalchemy._uow import SqlAlchemyUnitOfWork

__all__ = [
    "Analytics",
    "AuditLog",
    "Coupons",
    "CreditNotes",
    "Customers",
    "EmailDeliveries",
    "Idempotency",
    "Invoices",
    "Outbox",
    "Payments",
    "Plans",
    "Prices",
    "SubscriptionChanges",
    "Subscriptions",
    "Usage",
]


# Ids per IN list: well under every driver's bound on parameters.
_LOAD_CHUNK = 1000


def _check_limit(limit: int) -> int:
    if type(limit) is not int or limit < 0:
        raise ValidationError(f"limit must be a non-negative int, not {limit!r}")
    return limit


def _not_found(kind: str, row_id: str) -> NotFound:
    return NotFound(f"{kind} {row_id!r} not found", details={"kind": kind, "id": row_id})


class _ReadAhead:
    """Rows a unit of work in batch mode read before it asked for them (see Payments.lock).

    Each is taken once, by the read it stands for, unless a write through the repository
    of its table came first (which drops it): what it gives is what that read would have
    given, but for other transactions' commits between the two reads (READ COMMITTED lets
    each statement see a newer state; neither locks these rows).
    """

    __slots__ = ("customer_wanted", "invoices", "open_invoices", "subscriptions")

    def __init__(self) -> None:
        # A customer asked for in bulk, alone, not read yet: the next read takes it along
        # (see Customers.load), or its own read when it is asked for first.
        self.customer_wanted: str | None = None
        self.invoices: dict[str, m.Row] = {}
        self.subscriptions: dict[str, m.Row] = {}
        # subscription id -> (the one invoice read ahead, whether it has other open ones)
        self.open_invoices: dict[str, tuple[str, bool]] = {}


def _taken(rows: dict[str, m.Row], ids: Collection[str]) -> builtins.list[m.Row]:
    """Remove and return the rows of these ids that ``rows`` holds."""
    return [rows.pop(i) for i in ids if i in rows]


# Kept in the batch's identity map under a key no table's rows have: the read-ahead lives
# and dies with the batch (a commit or a rollback drops it).
_READ_AHEAD_KEY = ("", "read ahead")


def _read_ahead(uow: SqlAlchemyUnitOfWork, *, make: bool = False) -> _ReadAhead | None:
    batch = uow.batch
    if batch is None:
        return None
    held: _ReadAhead | None = batch.known.get(_READ_AHEAD_KEY)
    if held is None and make:
        held = batch.known[_READ_AHEAD_KEY] = _ReadAhead()
    return held


class _Duplicate:
    """Describe a broken constraint: the row's key's own, or one ``specific`` knows.

    An object of four slots, not a closure (a closure's function, cells and tuple are
    six objects for the garbage collector to follow). A queued write makes one only
    when it broke a rule (see :class:`_Duplicates`); an unbatched write, one each.
    """

    __slots__ = ("_kind", "_names", "_row_id", "_specific")

    def __init__(
        self, names: tuple[str, str], kind: str, row_id: str, specific: Describe | None
    ) -> None:
        self._names = names
        self._kind = kind
        self._row_id = row_id
        self._specific = specific

    def __call__(self, name: str | None) -> Conflict | None:
        """Return the Conflict for constraint ``name``, or None if it is not one described."""
        if name in self._names:
            return Conflict(
                f"{self._kind} {self._row_id!r} already exists",
                details={"kind": self._kind, "id": self._row_id, "constraint": "primary_key"},
            )
        return None if self._specific is None else self._specific(name)


RowConflict = Callable[[Mapping[str, Any], str | None], Conflict | None]
"""Given a row's values and a broken constraint's name, the Conflict it means (or None)."""


class _Duplicates(DescribeRow):
    """Make the :class:`_Duplicate` of any row of a table, from its values, when needed."""

    __slots__ = ("_by_row", "_key", "_kind", "_names", "_specific")

    def __init__(
        self,
        names: tuple[str, str],
        kind: str,
        key: str,
        specific: Describe | None,
        by_row: RowConflict | None = None,
    ) -> None:
        self._names = names
        self._kind = kind
        self._key = key
        self._specific = specific
        self._by_row = by_row

    def of(self, values: dict[str, Any]) -> Describe:
        """Return the row's Describe: its key's own constraints, or one the specific knows."""
        by_row = self._by_row
        specific = self._specific if by_row is None else functools.partial(by_row, values)
        return _Duplicate(self._names, self._kind, str(values[self._key]), specific)


@functools.cache
def _row_duplicates(
    names: tuple[str, str], kind: str, key: str, by_row: RowConflict
) -> _Duplicates:
    # One per table and rule, for the process: a batch holds an index to it, not a copy.
    return _Duplicates(names, kind, key, None, by_row)


class _Repository:
    """Common plumbing: the unit of work, the table, what its rows are called."""

    __slots__ = ("_duplicates", "_key", "_kind", "_names", "_table", "_uow")

    def __init__(
        self, uow: SqlAlchemyUnitOfWork, table: sa.Table, kind: str, key: str = "id"
    ) -> None:
        self._uow = uow
        self._table = table
        self._kind = kind
        self._key = key
        # The constraints that say "this key is taken": the primary key, or the unique id.
        self._names = (f"pk_{table.name}", f"uq_{table.name}_{key}")
        self._duplicates = _Duplicates(self._names, kind, key, None)

    def _duplicate(self, row_id: str, specific: Describe | None = None) -> Describe:
        """Describe a broken constraint: the key's own, or one ``specific`` knows."""
        return _Duplicate(self._names, self._kind, row_id, specific)

    def _duplicates_of(self, specific: Describe | None) -> _Duplicates:
        """Describe the broken constraints of any row: the shared one, or one with ``specific``."""
        if specific is None:
            return self._duplicates
        return _Duplicates(self._names, self._kind, self._key, specific)

    def _describing(self, specific: Describe | None, by_row: RowConflict | None) -> _Duplicates:
        """Describe the broken constraints of any row: its key's, or one of ``by_row`` or ``specific``."""
        if by_row is not None:  # one for the table and rule: a batch may hold many rows
            return _row_duplicates(self._names, self._kind, self._key, by_row)
        return self._duplicates_of(specific)

    def _insert(
        self,
        values: dict[str, Any],
        specific: Describe | None = None,
        *,
        by_row: RowConflict | None = None,
    ) -> None:
        """Insert a row; ``by_row`` rather than ``specific`` where a batch may hold many."""
        # The key's own duplicates inline, as _describing gives them: most inserts'.
        if specific is None and by_row is None:
            self._uow.insert(self._table, values, self._duplicates)
        else:
            self._uow.insert(self._table, values, self._describing(specific, by_row))

    def _update(
        self,
        values: dict[str, Any],
        specific: Describe | None = None,
        *,
        by_row: RowConflict | None = None,
    ) -> None:
        """Replace a row; only a table with a unique key besides its own pays for a savepoint."""
        duplicates = self._describing(specific, by_row)
        if self._uow.defer_update(self._table, self._key, values, duplicates):
            return  # batch mode, and the row is known to exist: no NotFound to check for
        row_id = str(values[self._key])
        count = self._uow.update_row(
            self._table,
            self._key,
            values,
            duplicates.of(values),
            savepoint=specific is not None or by_row is not None,
        )
        if count == 0:
            raise _not_found(self._kind, row_id)

    def _one(self, row_id: str) -> m.Row:
        rows = self._uow.read_by_key(self._table, self._key, [row_id])
        if not rows:
            raise _not_found(self._kind, row_id)
        return rows[0]

    def _rows(self, statement: sa.Select[Any]) -> Sequence[sa.RowMapping]:
        return self._uow.read(statement).mappings().all()

    def _load(
        self,
        ids: Collection[str],
        from_rows: Callable[[Sequence[m.Row]], Sequence[Any]],
        *,
        for_update: bool = False,
    ) -> list[Any]:
        """Read the rows with these ids in a few statements and remember them (batch mode)."""
        loaded: list[Any] = []
        stored: dict[str, m.Row] = {}
        key = self._key
        wanted = sorted(set(ids))  # sorted: concurrent lockers take row locks in one order
        for start in range(0, len(wanted), _LOAD_CHUNK):
            chunk = wanted[start : start + _LOAD_CHUNK]
            rows = self._uow.read_by_key(self._table, key, chunk, for_update=for_update)
            stored.update((row[key], row) for row in rows)
            loaded += from_rows(rows)
        for record in loaded:
            row_id = getattr(record, key)
            self._uow.remember(self._table, row_id, record, stored.get(row_id))
        return loaded

    def _remember_rows(
        self, rows: Sequence[m.Row], from_rows: Callable[[Sequence[m.Row]], Sequence[Any]]
    ) -> None:
        """Remember records made from rows read already, as :meth:`_load` does its own."""
        key = self._key
        stored = {row[key]: row for row in rows}
        for record in from_rows(rows):
            row_id = getattr(record, key)
            self._uow.remember(self._table, row_id, record, stored.get(row_id))

    def _take_read_ahead(
        self,
        held: dict[str, m.Row],
        ids: Collection[str],
        from_rows: Callable[[Sequence[m.Row]], Sequence[Any]],
    ) -> builtins.list[str]:
        """Remember the rows of ``ids`` read ahead, taken from ``held``; return the ids left to read."""
        rows = _taken(held, ids)
        if not rows:
            return builtins.list(ids)
        self._remember_rows(rows, from_rows)
        read = {row["id"] for row in rows}
        return [i for i in ids if i not in read]

    def _page(self, query: sa.Select[Any], limit: int | None, after: str | None) -> sa.Select[Any]:
        """Return ``query`` (ordered by seq) with at most ``limit`` rows, those after ``after``."""
        if limit is not None:
            query = query.limit(_check_limit(limit))
        if after is not None:
            query = query.where(self._table.c.seq > self._seq_of(after))
        return query

    def _seq_of(self, row_id: str) -> int:
        """Return the insertion rank of a row (a cursor), or raise NotFound."""
        table = self._table
        seq = self._uow.read(sa.select(table.c.seq).where(table.c[self._key] == row_id)).scalar()
        if seq is None:
            raise _not_found(self._kind, row_id)
        return int(seq)


def _stored_as(row: m.Row, invoice: Invoice) -> bool:
    """Say whether ``row`` is ``invoice``'s row, field for field, and past draft."""
    if invoice.status is InvoiceStatus.DRAFT:
        return False  # a draft's lines may still change
    values = m.invoice_row(invoice)
    # Compared as two tuples, in C: a generator's 26 resumptions cost more than the row.
    stored: tuple[Any, ...] = operator.itemgetter(*values)(row)
    return stored == tuple(values.values())


def _email_taken(name: str | None) -> Conflict | None:
    if name != "uq_customers_email":
        return None
    # The address itself stays out of the error: error details end up in logs.
    return Conflict(
        "a customer with this email already exists",
        details={"kind": "customer", "constraint": "customer_email", "field": "email"},
    )


def _customers_from_rows(rows: Sequence[m.Row]) -> builtins.list[Customer]:
    return [m.customer_from_row(r) for r in rows]


class Customers(_Repository):
    """Customers, unique by id and by email."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.customers, "customer")

    def add(self, customer: Customer) -> None:
        """Store a new customer."""
        self._wanted_read(customer.id, read=False)
        values = m.customer_row(customer)
        self._insert(values, _email_taken)
        self._uow.remember(self._table, customer.id, customer, values)

    def get(self, customer_id: str) -> Customer:
        """Return the customer or raise NotFound."""
        self._wanted_read(customer_id)
        known: Customer | None = self._uow.recall(self._table, customer_id)
        if known is not None:
            return known
        return m.customer_from_row(self._one(customer_id))

    def load(self, customer_ids: Collection[str]) -> None:
        """Read these customers in bulk for the rest of the batch.

        PostgreSQL, one customer: its read waits for the unit of work's next
        read, which takes it along (a subscribe's price: Prices.get), or for its own
        ``get`` or ``update``, whichever comes first. A paid subscribe through the app 10 ->
        9 round trips, 10.91M -> 10.81M instructions a request (callgrind).
        """
        uow = self._uow
        if len(customer_ids) == 1 and uow.batch is not None and not uow._sqlite:
            [customer_id] = customer_ids
            ahead = _read_ahead(uow, make=True)
            assert ahead is not None
            self._wanted_read(None)  # one wanted before: read it now, as load would have
            # Wanted even if known: load reads again (the rows as stored now), so must this.
            ahead.customer_wanted = customer_id
            return
        self._wanted_read(None)
        self._load(customer_ids, _customers_from_rows)

    def _wanted_read(self, customer_id: str | None, *, read: bool = True) -> None:
        """Read the customer still wanted (any one if ``customer_id`` is None) now, or forget it."""
        ahead = _read_ahead(self._uow)
        if ahead is None or ahead.customer_wanted is None:
            return
        if customer_id is None or ahead.customer_wanted == customer_id:
            wanted, ahead.customer_wanted = ahead.customer_wanted, None
            if read:
                self._load([wanted], _customers_from_rows)

    def take_wanted(self, row: m.Row | None) -> None:
        """Remember the wanted customer as another read found it (``row``: None if none)."""
        ahead = _read_ahead(self._uow)
        assert ahead is not None
        ahead.customer_wanted = None
        if row is not None:
            self._remember_rows([row], _customers_from_rows)

    def find_by_email(self, email: str) -> Customer | None:
        """Return the customer with this (normalised) email, if any."""
        c = t.customers.c
        rows = self._rows(sa.select(t.customers).where(c.email == email.strip().lower()))
        return m.customer_from_row(rows[0]) if rows else None

    def update(self, customer: Customer) -> None:
        """Replace a stored customer."""
        self._wanted_read(customer.id)  # known, as load would have made it: the update queues
        values = m.customer_row(customer)
        self._update(values, _email_taken)
        self._uow.remember(self._table, customer.id, customer, values)

    def list(self, *, limit: int = 100, after: str | None = None) -> Sequence[Customer]:
        """Return customers ordered by id, after the cursor ``after``."""
        c = t.customers.c
        query = sa.select(t.customers).order_by(c.id).limit(_check_limit(limit))
        if after is not None:
            query = query.where(c.id > after)
        return [m.customer_from_row(r) for r in self._rows(query)]


class Plans(_Repository):
    """Plans."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.plans, "plan")

    def add(self, plan: Plan) -> None:
        """Store a new plan."""
        self._insert(m.plan_row(plan))

    def get(self, plan_id: str) -> Plan:
        """Return the plan or raise NotFound."""
        known: Plan | None = self._uow.recall(self._table, plan_id)
        if known is not None:
            return known  # read with its price (batch mode): see Prices.get
        return m.plan_from_row(self._one(plan_id))

    def update(self, plan: Plan) -> None:
        """Replace a stored plan."""
        values = m.plan_row(plan)
        self._update(values)
        self._uow.remember(self._table, plan.id, plan, values)

    def list(self, *, active_only: bool = False) -> Sequence[Plan]:
        """Return plans ordered by id."""
        query = sa.select(t.plans).order_by(t.plans.c.id)
        if active_only:
            query = query.where(t.plans.c.active.is_(True))
        return [m.plan_from_row(r) for r in self._rows(query)]


@functools.cache
def _price_and_plan_text(dialect: sa.Dialect) -> str:
    """Return the text reading a price by id with its plan.

    An outer join: a plan RLS hides is read alone after, and found missing, as before.
    """
    table = dialect.identifier_preparer.format_table
    return (
        f"SELECT {select_list(dialect, t.prices, 'p')}, {select_list(dialect, t.plans, 'l')}"
        f" FROM {table(t.prices)} AS p LEFT JOIN {table(t.plans)} AS l ON l.id = p.plan_id"
        " WHERE p.id = %s"
    )


@functools.cache
def _price_plan_and_customer_text(dialect: sa.Dialect) -> str:
    """Return the text reading a price by id with its plan, and a customer by id.

    One row always (outer joins from the two ids): either may be missing, or hidden by
    RLS, and is then found missing as when read alone.
    """
    table = dialect.identifier_preparer.format_table
    price_key = t.prices.c.id.type.compile(dialect=dialect)
    customer_key = t.customers.c.id.type.compile(dialect=dialect)
    return (
        f"SELECT {select_list(dialect, t.prices, 'p')}, {select_list(dialect, t.plans, 'l')},"
        f" {select_list(dialect, t.customers, 'c')}"
        f" FROM (VALUES (%s::{price_key}, %s::{customer_key})) AS k(price_id, customer_id)"
        f" LEFT JOIN {table(t.prices)} AS p ON p.id = k.price_id"
        f" LEFT JOIN {table(t.plans)} AS l ON l.id = p.plan_id"
        f" LEFT JOIN {table(t.customers)} AS c ON c.id = k.customer_id"
    )


class Prices(_Repository):
    """Prices."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.prices, "price")

    def add(self, price: Price) -> None:
        """Store a new price."""
        self._insert(m.price_row(price))

    def get(self, price_id: str) -> Price:
        """Return the price or raise NotFound.

        PostgreSQL in batch mode (a subscribe): its plan is read in the same statement and
        kept for ``plans.get``, which asks next whether the plan is archived. One round
        trip fewer: a paid subscribe through the app 14 -> 13 round trips, 12.19M ->
        12.06M instructions a request (callgrind, benchmarks/callgrind_subscribe.py).
        """
        uow = self._uow
        if uow.batch is None or uow._sqlite:
            return m.price_from_row(self._one(price_id))
        ahead = _read_ahead(uow)
        customer_id = None if ahead is None else ahead.customer_wanted
        uow._reading(t.prices)  # writes queued to these tables go first
        connection = uow._reading(t.plans)
        with translated(t.metadata):
            if customer_id is None:
                rows = fetch_joined(
                    connection,
                    _price_and_plan_text(connection.dialect),
                    (price_id,),
                    (t.prices, t.plans),
                )
            else:
                # The customer Customers.load left wanted, in the same statement: a paid
                # subscribe 10 -> 9 round trips (see Customers.load).
                uow._reading(t.customers)
                rows = fetch_joined(
                    connection,
                    _price_plan_and_customer_text(connection.dialect),
                    (price_id, customer_id),
                    (t.prices, t.plans, t.customers),
                )
                uow.customers.take_wanted(rows[0][0][2])
        if not rows or rows[0][0][0] is None:
            raise _not_found(self._kind, price_id)
        (price_row, plan_row, *_), _ = rows[0]
        assert price_row is not None
        if plan_row is not None:
            plan = m.plan_from_row(plan_row)
            uow.remember(t.plans, plan.id, plan, plan_row)
        return m.price_from_row(price_row)

    def update(self, price: Price) -> None:
        """Replace a stored price (its active flag or nickname)."""
        self._update(m.price_row(price))

    def list(self, *, plan_id: str | None = None, active_only: bool = False) -> Sequence[Price]:
        """Return prices ordered by id."""
        c = t.prices.c
        query = sa.select(t.prices).order_by(c.id)
        if plan_id is not None:
            query = query.where(c.plan_id == plan_id)
        if active_only:
            query = query.where(c.active.is_(True))
        return [m.price_from_row(r) for r in self._rows(query)]


class Coupons(_Repository):
    """Coupons."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.coupons, "coupon")

    def add(self, coupon: Coupon) -> None:
        """Store a new coupon."""
        self._insert(m.coupon_row(coupon))

    def get(self, coupon_id: str) -> Coupon:
        """Return the coupon or raise NotFound."""
        return m.coupon_from_row(self._one(coupon_id))

    def list(self) -> Sequence[Coupon]:
        """Return coupons ordered by id."""
        query = sa.select(t.coupons).order_by(t.coupons.c.id)
        return [m.coupon_from_row(r) for r in self._rows(query)]


class Subscriptions(_Repository):
    """Subscriptions, with ``next_action_at`` kept in a column so that claims use an index."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.subscriptions, "subscription")

    def add(self, subscription: Subscription) -> None:
        """Store a new subscription."""
        self._forget_read_ahead(subscription.id)
        values = m.subscription_row(subscription)
        self._insert(values)
        self._uow.remember(self._table, subscription.id, subscription, values)

    def get(self, subscription_id: str) -> Subscription:
        """Return the subscription or raise NotFound."""
        known: Subscription | None = self._uow.recall(self._table, subscription_id)
        if known is not None:
            return known
        return m.subscription_from_row(self._one(subscription_id))

    def load(self, subscription_ids: Collection[str]) -> None:
        """Read these subscriptions in bulk for the rest of the batch (claimed ones are known)."""
        claimed = self._uow.claimed
        for subscription_id in subscription_ids:
            if subscription_id in claimed:
                subscription, row = claimed[subscription_id]
                self._uow.remember(self._table, subscription_id, subscription, row)
        unknown = [i for i in subscription_ids if i not in claimed]
        ahead = _read_ahead(self._uow)
        if ahead is not None and ahead.subscriptions:
            unknown = self._take_read_ahead(ahead.subscriptions, unknown, _subscriptions_from_rows)
        self._load(unknown, _subscriptions_from_rows)

    def update(self, subscription: Subscription) -> None:
        """Replace a stored subscription."""
        self._forget_read_ahead(subscription.id)
        values = m.subscription_row(subscription)
        self._update(values)
        self._uow.remember(self._table, subscription.id, subscription, values)

    def list(
        self,
        *,
        customer_id: str | None = None,
        status: SubscriptionStatus | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[Subscription]:
        """Return subscriptions ordered by id, after the cursor ``after``."""
        c = t.subscriptions.c
        query = sa.select(t.subscriptions).order_by(c.id).limit(_check_limit(limit))
        if customer_id is not None:
            query = query.where(c.customer_id == customer_id)
        if status is not None:
            query = query.where(c.status == SubscriptionStatus(status).value)
        if after is not None:
            query = query.where(c.id > after)
        return [m.subscription_from_row(r) for r in self._rows(query)]

    def _forget_read_ahead(self, subscription_id: str) -> None:
        ahead = _read_ahead(self._uow)
        if ahead is not None:
            ahead.subscriptions.pop(subscription_id, None)

    def claim_due(self, at: datetime, *, limit: int) -> Sequence[Subscription]:
        """Return up to ``limit`` subscriptions due at ``at``, earliest first, locked.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so that concurrent claims split the work.
        SQLite: the unit of work holds the database's write lock (one writer at a time).
        """
        at = aware(at, "at")
        limit = _check_limit(limit)
        self._uow.take_write_lock()
        claimed: builtins.list[Subscription] = []
        rows = self._uow.read_due(self._table, "next_action_at", at, key="id", limit=limit)
        for row in rows:
            subscription = m.subscription_from_row(row)
            claimed.append(subscription)
            self._uow.claimed[subscription.id] = (subscription, row)
        return claimed


def _subscriptions_from_rows(rows: Sequence[m.Row]) -> builtins.list[Subscription]:
    return [m.subscription_from_row(r) for r in rows]


def _cycle_conflict(row: Mapping[str, Any], name: str | None) -> Conflict | None:
    """Describe a second cycle invoice for one period, from the invoice's row."""
    if name != "uq_invoices_subscription_cycle" or row["period_start"] is None:
        return None
    start = row["period_start"].isoformat()
    return Conflict(
        f"subscription {row['subscription_id']} already has a cycle invoice for the period"
        f" starting {start}",
        details={
            "kind": "invoice",
            "id": row["id"],
            "constraint": "invoice_subscription_cycle",
            "subscription_id": row["subscription_id"],
            "period_start": start,
        },
    )


# Take the next invoice number: built once, not on every invoice.
_BUMP = (
    sa.update(t.invoice_number_sequence)
    .where(t.invoice_number_sequence.c.id == 1)
    .values(last_value=t.invoice_number_sequence.c.last_value + 1)
    .returning(t.invoice_number_sequence.c.last_value)
)
_BUMP_POSTGRESQL = (
    "UPDATE invoice_number_sequence SET last_value = last_value + 1 WHERE id = 1"
    " RETURNING last_value"
)


class Invoices(_Repository):
    """Invoices with their lines, the gapless number sequence and the pending lines."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.invoices, "invoice")

    def add(self, invoice: Invoice) -> None:
        """Store a new invoice; a second cycle invoice for the same period raises Conflict."""
        self._forget_read_ahead()
        values = m.invoice_row(invoice)
        self._insert(values, by_row=_cycle_conflict)
        lines = m.invoice_line_rows(invoice)
        if lines:  # a new invoice's lines cannot collide with anything
            self._uow.insert_rows(t.invoice_lines, lines)
        self._uow.remember(self._table, invoice.id, invoice, values)

    def get(self, invoice_id: str) -> Invoice:
        """Return the invoice or raise NotFound."""
        known: Invoice | None = self._uow.recall(self._table, invoice_id)
        if known is not None:
            return known
        return self._with_lines([self._one(invoice_id)])[0]

    def load(self, invoice_ids: Collection[str], *, known: Collection[Invoice] = ()) -> None:
        """Read these invoices and their lines in bulk for the rest of the batch.

        A ``known`` invoice whose stored row is still exactly its own is taken as it is:
        the lines of an invoice past draft never change, so they are not read again.
        """
        by_id = {invoice.id: invoice for invoice in known}

        def from_rows(rows: Sequence[m.Row]) -> builtins.list[Invoice]:
            unchanged: builtins.list[Invoice] = []
            others: builtins.list[m.Row] = []
            for row in rows:
                invoice = by_id.get(row["id"])
                if invoice is not None and _stored_as(row, invoice):
                    unchanged.append(invoice)
                else:
                    others.append(row)
            return unchanged + self._with_lines(others)

        ahead = _read_ahead(self._uow)
        if ahead is not None and ahead.invoices:
            invoice_ids = self._take_read_ahead(ahead.invoices, invoice_ids, from_rows)
        self._load(invoice_ids, from_rows)

    def _forget_read_ahead(self) -> None:
        ahead = _read_ahead(self._uow)
        if ahead is not None:
            ahead.invoices.clear()
            ahead.open_invoices.clear()

    def update(self, invoice: Invoice) -> None:
        """Replace a stored invoice and its lines."""
        self._forget_read_ahead()
        known: Invoice | None = self._uow.recall(self._table, invoice.id)
        if known is not None and known.lines == invoice.lines:
            # Batch mode, lines as they were (paying, voiding): the invoice row alone.
            values = m.invoice_row(invoice)
            self._update(values, by_row=_cycle_conflict)
            self._uow.remember(self._table, invoice.id, invoice, values)
            return
        c = t.invoices.c
        lines = m.invoice_line_rows(invoice)
        values = m.invoice_row(invoice)
        statements: builtins.list[sa.Executable] = [
            sa.update(t.invoices).where(c.id == invoice.id).values(values),
            sa.delete(t.invoice_lines).where(t.invoice_lines.c.invoice_id == invoice.id),
        ]
        if lines:
            statements.append(sa.insert(t.invoice_lines).values(lines))
        counts = self._uow.write(
            statements, self._duplicate(invoice.id, functools.partial(_cycle_conflict, values))
        )
        if counts[0] == 0:
            raise _not_found("invoice", invoice.id)
        self._uow.remember(self._table, invoice.id, invoice)

    def list(
        self,
        *,
        customer_id: str | None = None,
        subscription_id: str | None = None,
        status: InvoiceStatus | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[Invoice]:
        """Return invoices in creation order, after the invoice ``after``."""
        limit = _check_limit(limit)
        ahead = _read_ahead(self._uow)
        if (
            ahead is not None
            and subscription_id is not None
            and customer_id is None
            and after is None
            and status is InvoiceStatus.OPEN
            and limit
        ):
            read = ahead.open_invoices.pop(subscription_id, None)
            if read is not None and not read[1]:
                # Read with the payment's lock: the subscription has no open invoice but
                # this one, which is open if it still was then (this unit of work holds it).
                held: Invoice | None = self._uow.recall(self._table, read[0])
                if held is not None:
                    return [held] if held.status is InvoiceStatus.OPEN else []
        if after is None:
            equal = {
                name: value
                for name, value in (
                    ("customer_id", customer_id),
                    ("subscription_id", subscription_id),
                    ("status", None if status is None else InvoiceStatus(status).value),
                )
                if value is not None
            }
            rows = self._uow.read_where(self._table, equal, order_by="seq", limit=limit)
            return self._with_lines(rows)
        c = t.invoices.c
        query = sa.select(t.invoices).order_by(c.seq).limit(limit)
        if customer_id is not None:
            query = query.where(c.customer_id == customer_id)
        if subscription_id is not None:
            query = query.where(c.subscription_id == subscription_id)
        if status is not None:
            query = query.where(c.status == InvoiceStatus(status).value)
        if after is not None:
            query = query.where(c.seq > self._seq_of(after))
        return self._with_lines(self._rows(query))

    def _with_lines(self, rows: Sequence[m.Row]) -> builtins.list[Invoice]:
        """Return the invoices of these rows, reading the lines of those not already held.

        An invoice this unit of work holds (batch mode) whose row is still exactly its own
        is taken as it is: the lines of an invoice past draft never change.
        """
        held: dict[str, Invoice] = {}
        for row in rows:
            known: Invoice | None = self._uow.recall(self._table, row["id"])
            if known is not None and _stored_as(row, known):
                held[row["id"]] = known
        if len(held) == len(rows):
            return [held[r["id"]] for r in rows]
        lc = t.invoice_lines.c
        ids = [r["id"] for r in rows if r["id"] not in held]
        lines: dict[str, builtins.list[m.Row]] = {i: [] for i in ids}
        query = (
            sa.select(t.invoice_lines)
            .where(lc.invoice_id.in_(ids))
            .order_by(lc.invoice_id, lc.position)
        )
        for line in self._rows(query):
            lines[line["invoice_id"]].append(line)
        return [
            held[r["id"]] if r["id"] in held else m.invoice_from_rows(r, lines[r["id"]])
            for r in rows
        ]

    def next_number(self) -> int:
        """Take the next invoice number: the counter row is locked until the unit of work ends."""
        batch = self._uow.batch
        if batch is not None and batch.number is not None:
            # The row is ours until commit: count here, write the last number once.
            batch.number += 1
            return batch.number
        number = self._bump()
        if batch is not None:
            batch.number = batch.number_written = number
        return number

    def _bump(self) -> int:
        # No queued write touches the counter row: they wait for the flush at commit,
        # instead of going as a round trip of their own before this one.
        value = self._uow.write_returning(_BUMP, _BUMP_POSTGRESQL)
        if value is None:  # a schema made without its migration: start the counter
            sequence = t.invoice_number_sequence
            self._uow.write([sa.insert(sequence).values(id=1, last_value=1)], None)
            return 1
        return int(value)

    def add_pending_line(self, pending: PendingLine) -> None:
        """Keep a proration line for the subscription's next invoice."""
        if self._uow.batch is not None:
            self._uow.batch.no_pending_lines.discard(pending.subscription_id)
        repository = _Repository(self._uow, t.pending_lines, "pending line")
        repository._insert(m.pending_line_row(pending))

    def note_pending_lines(self, subscription_ids: Collection[str]) -> None:
        """Learn, in bulk, which of these subscriptions have no lines waiting (batch mode)."""
        batch = self._uow.batch
        if batch is None or not subscription_ids:
            return
        c = t.pending_lines.c
        wanted = sorted(set(subscription_ids))
        waiting: set[str] = set()
        for start in range(0, len(wanted), _LOAD_CHUNK):
            query = sa.select(c.subscription_id).where(
                c.subscription_id.in_(wanted[start : start + _LOAD_CHUNK])
            )
            waiting.update(self._uow.read(query.distinct()).scalars())
        batch.no_pending_lines.update(set(wanted) - waiting)

    def take_pending_lines(self, subscription_id: str) -> Sequence[PendingLine]:
        """Remove and return the lines waiting for the subscription's next invoice."""
        batch = self._uow.batch
        if batch is not None and subscription_id in batch.no_pending_lines:
            return []
        c = t.pending_lines.c
        taken = self._uow.write_all(
            sa.delete(t.pending_lines)
            .where(c.subscription_id == subscription_id)
            .returning(*t.pending_lines.c)
        )
        return [m.pending_line_from_row(r) for r in sorted(taken, key=lambda r: r["seq"])]


def _payment_key_conflict(row: Mapping[str, Any], name: str | None) -> Conflict | None:
    """Describe a reused payment idempotency key, from the payment's row."""
    if name != "uq_payments_idempotency_key":
        return None
    return Conflict(
        f"a payment with idempotency key {row['idempotency_key']!r} already exists",
        details={
            "kind": "payment",
            "id": row["id"],
            "constraint": "payment_idempotency_key",
            "idempotency_key": row["idempotency_key"],
        },
    )


@functools.cache
def _lock_reading_ahead_text(dialect: sa.Dialect) -> str:
    """Return the text locking a payment unless taken, reading its invoice and subscription.

    And whether that subscription has other open invoices. Outer joins: a row RLS hides
    is read alone later, as without the read-ahead.
    """
    table = dialect.identifier_preparer.format_table
    invoices = table(t.invoices)
    return (
        f"SELECT {select_list(dialect, t.payments, 'pay')}, {select_list(dialect, t.invoices, 'inv')},"
        f" {select_list(dialect, t.subscriptions, 'sub')},"
        f" EXISTS (SELECT 1 FROM {invoices} AS other"
        " WHERE other.subscription_id = inv.subscription_id AND other.status = %s"
        " AND other.id <> inv.id)"
        f" FROM {table(t.payments)} AS pay"
        f" LEFT JOIN {invoices} AS inv ON inv.id = pay.invoice_id"
        f" LEFT JOIN {table(t.subscriptions)} AS sub ON sub.id = inv.subscription_id"
        " WHERE pay.id = %s FOR UPDATE OF pay SKIP LOCKED"
    )


class Payments(_Repository):
    """Payments (unique by idempotency key) and refunds."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.payments, "payment")

    def add(self, payment: Payment) -> None:
        """Store a new payment; a reused idempotency key raises Conflict."""
        values = m.payment_row(payment)
        self._insert(values, by_row=_payment_key_conflict)
        self._uow.remember(self._table, payment.id, payment, values)

    def get(self, payment_id: str) -> Payment:
        """Return the payment or raise NotFound."""
        return m.payment_from_row(self._one(payment_id))

    def find(
        self, *, idempotency_key: str | None = None, gateway_reference: str | None = None
    ) -> Payment | None:
        """Return the payment with this idempotency key or gateway reference, if any."""
        c = t.payments.c
        if idempotency_key is not None:
            condition = c.idempotency_key == idempotency_key
        elif gateway_reference is not None:
            condition = c.gateway_reference == gateway_reference
        else:
            return None
        rows = self._rows(sa.select(t.payments).where(condition).limit(1))
        return m.payment_from_row(rows[0]) if rows else None

    def lock(self, payment_ids: Collection[str]) -> None:
        """Lock and read these payments in bulk, as ``get_for_update`` would (batch mode)."""
        batch = self._uow.batch
        if batch is None or not payment_ids:
            return
        self._uow.take_write_lock()
        if (
            len(payment_ids) == 1
            and not self._uow._sqlite
            and self._lock_reading_ahead(next(iter(payment_ids)))
        ):
            return
        locked = self._load(
            payment_ids, lambda rows: [m.payment_from_row(r) for r in rows], for_update=True
        )
        batch.locked.update(payment.id for payment in locked)

    def _lock_reading_ahead(self, payment_id: str) -> bool:
        """Lock one payment if no one holds it, reading its invoice and subscription with it.

        The reads that settling a payment makes next (its invoice, its subscription,
        whether that has other open invoices) ride on the lock's statement and are kept
        for them (:class:`_ReadAhead`): a paid subscribe's settlement 7 -> 4 round trips, the
        request 12.06M -> 11.63M instructions (callgrind, benchmarks/callgrind_subscribe.py).
        ``SKIP LOCKED``: a payment someone else holds returns nothing, and False says to
        wait for it the usual way, reading the rest after, not from before the wait.
        """
        uow = self._uow
        for table in (t.payments, t.invoices, t.subscriptions):
            connection = uow._reading(table)  # writes queued to them go first
        with translated(t.metadata):
            rows = fetch_joined(
                connection,
                _lock_reading_ahead_text(connection.dialect),
                (InvoiceStatus.OPEN.value, payment_id),
                (t.payments, t.invoices, t.subscriptions),
            )
        if not rows:
            return False
        (payment_row, invoice_row, subscription_row), (others_open,) = rows[0]
        assert payment_row is not None
        payment = m.payment_from_row(payment_row)
        uow.remember(self._table, payment.id, payment, payment_row)
        batch = uow.batch
        assert batch is not None
        batch.locked.add(payment.id)
        if invoice_row is not None:
            ahead = _read_ahead(uow, make=True)
            assert ahead is not None
            ahead.invoices[invoice_row["id"]] = invoice_row
            subscription_id = invoice_row["subscription_id"]
            if subscription_row is not None:
                ahead.subscriptions[subscription_id] = subscription_row
            if subscription_id is not None:
                ahead.open_invoices[subscription_id] = (invoice_row["id"], bool(others_open))
        return True

    def get_for_update(self, payment_id: str) -> Payment:
        """Return the payment locked (FOR UPDATE; SQLite: the write lock) or raise NotFound."""
        batch = self._uow.batch
        if batch is not None and payment_id in batch.locked:
            known: Payment = self._uow.recall(self._table, payment_id)
            return known
        self._uow.take_write_lock()
        row = (
            self._uow.read(
                sa.select(t.payments).where(t.payments.c.id == payment_id).with_for_update()
            )
            .mappings()
            .first()
        )
        if row is None:
            raise _not_found("payment", payment_id)
        payment = m.payment_from_row(row)
        self._uow.remember(self._table, payment.id, payment, row)
        return payment

    def update(self, payment: Payment) -> None:
        """Replace a stored payment."""
        values = m.payment_row(payment)
        self._update(values, by_row=_payment_key_conflict)
        self._uow.remember(self._table, payment.id, payment, values)

    def list(
        self,
        *,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Payment]:
        """Return payments ordered by creation: at most ``limit``, those after ``after``."""
        c = t.payments.c
        query = self._page(sa.select(t.payments).order_by(c.seq), limit, after)
        if invoice_id is not None:
            query = query.where(c.invoice_id == invoice_id)
        if customer_id is not None:
            query = query.where(c.customer_id == customer_id)
        return [m.payment_from_row(r) for r in self._rows(query)]

    def pending(self, *, created_before: datetime, limit: int) -> Sequence[Payment]:
        """Return payments still pending that were created before ``created_before``."""
        c = t.payments.c
        query = (
            sa.select(t.payments)
            .where(c.status == PaymentStatus.PENDING.value)
            .where(c.created_at < aware(created_before, "created_before"))
            .order_by(c.created_at, c.seq)
            .limit(_check_limit(limit))
        )
        return [m.payment_from_row(r) for r in self._rows(query)]

    def add_refund(self, refund: Refund) -> None:
        """Store a refund."""
        _Repository(self._uow, t.refunds, "refund")._insert(m.refund_row(refund))

    def refunds(
        self,
        *,
        payment_id: str | None = None,
        invoice_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Refund]:
        """Return refunds ordered by creation: at most ``limit``, those after ``after``."""
        c = t.refunds.c
        refunds = _Repository(self._uow, t.refunds, "refund")
        query = refunds._page(sa.select(t.refunds).order_by(c.seq), limit, after)
        if payment_id is not None:
            query = query.where(c.payment_id == payment_id)
        if invoice_id is not None:
            query = query.where(c.invoice_id == invoice_id)
        return [m.refund_from_row(r) for r in self._rows(query)]


class CreditNotes(_Repository):
    """Credit notes."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.credit_notes, "credit note")

    def add(self, note: CreditNote) -> None:
        """Store a credit note."""
        self._insert(m.credit_note_row(note))

    def list(
        self,
        *,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[CreditNote]:
        """Return credit notes ordered by creation: at most ``limit``, those after ``after``."""
        c = t.credit_notes.c
        query = self._page(sa.select(t.credit_notes).order_by(c.seq), limit, after)
        if invoice_id is not None:
            query = query.where(c.invoice_id == invoice_id)
        if customer_id is not None:
            query = query.where(c.customer_id == customer_id)
        return [m.credit_note_from_row(r) for r in self._rows(query)]


class Usage(_Repository):
    """Usage records of metered subscriptions."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.usage_records, "usage record")

    def add(self, record: UsageRecord) -> None:
        """Store a usage record; a reused id raises Conflict."""
        self._insert(m.usage_row(record))

    def total(self, subscription_id: str, period: Period) -> int:
        """Return the quantity used in ``period`` (half-open)."""
        c = t.usage_records.c
        query = sa.select(sa.func.coalesce(sa.func.sum(c.quantity), 0)).where(
            c.subscription_id == subscription_id, c.at >= period.start, c.at < period.end
        )
        return int(self._uow.read(query).scalar_one())

    def list(
        self, subscription_id: str, *, limit: int | None = None, after: str | None = None
    ) -> Sequence[UsageRecord]:
        """Return the subscription's usage records ordered by time, paged by ``after``."""
        c = t.usage_records.c
        query = (
            sa.select(t.usage_records)
            .where(c.subscription_id == subscription_id)
            .order_by(c.at, c.seq)
        )
        if limit is not None:
            query = query.limit(_check_limit(limit))
        if after is not None:
            cursor = self._uow.read(sa.select(c.at, c.seq).where(c.id == after)).first()
            if cursor is None:
                raise _not_found(self._kind, after)
            # Ordered by time, then insertion: the cursor is the pair, not the seq alone.
            query = query.where(sa.tuple_(c.at, c.seq) > sa.tuple_(cursor.at, cursor.seq))
        return [m.usage_from_row(r) for r in self._rows(query)]


@functools.cache
def _mark_delivered_text(dialect: sa.Dialect) -> str:
    """Return the text marking outbox messages delivered, selecting the ids it has none of.

    A data-modifying WITH runs whether or not the query reads it; the existence check
    sees the table as it was before the update, which changes no message's existence.
    """
    quote = dialect.identifier_preparer.quote
    outbox = dialect.identifier_preparer.format_table(t.outbox)
    key = t.outbox.c.id.type.compile(dialect=dialect)
    delivered, attempts = quote("delivered_at"), quote("attempts")
    return (
        f"WITH wanted AS (SELECT unnest(%s::{key}[]) AS id),"
        f" marked AS (UPDATE {outbox} SET {delivered} = %s, {attempts} = {outbox}.{attempts} + 1"
        f" FROM wanted WHERE {outbox}.id = wanted.id AND {outbox}.{delivered} IS NULL"
        f" RETURNING {outbox}.id)"
        f" SELECT wanted.id FROM wanted"
        f" WHERE NOT EXISTS (SELECT 1 FROM {outbox} WHERE {outbox}.id = wanted.id)"
    )


class Outbox(_Repository):
    """Domain events waiting for delivery."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.outbox, "outbox message")

    def add(self, message: OutboxMessage) -> None:
        """Store an event; a reused id raises Conflict."""
        self._insert(m.outbox_row(message, self._uow.encode_data))

    def pending(self, *, limit: int) -> Sequence[OutboxMessage]:
        """Return undelivered messages, oldest first."""
        limit = _check_limit(limit)
        uow = self._uow
        if not uow._sqlite:
            # Straight to the driver (a delivery round reads every pending message): no
            # SQLAlchemy result rows. With outbox_from_row built trusted: one round
            # delivering 100 paid subscribes' events 107.0M -> 98.7M instructions, a paid
            # subscribe through the app 11.11M -> 10.91M (callgrind).
            connection = uow._reading(t.outbox)
            with translated(t.metadata):
                rows = select_unset(
                    connection, t.outbox, "delivered_at", order_by="seq", limit=limit
                )
            return [m.outbox_from_row(r) for r in rows]
        c = t.outbox.c
        query = sa.select(t.outbox).where(c.delivered_at.is_(None)).order_by(c.seq).limit(limit)
        return [m.outbox_from_row(r) for r in self._rows(query)]

    def mark_delivered(self, message_ids: Sequence[str], at: datetime) -> None:
        """Record that the messages were delivered; the first delivery time is kept."""
        at = aware(at, "at")
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return
        c = t.outbox.c
        uow = self._uow
        if not uow._sqlite:
            # PostgreSQL: the check and the update in one statement straight to the driver,
            # the ids as one array literal (text_array), the same text for any number of
            # them. Was two statements through SQLAlchemy, the driver dumping each id with
            # a regular expression search. With EmailDeliveries.sent alike: one outbox
            # round delivering 100 paid subscribes' events 137.1M -> 107.0M instructions,
            # a paid subscribe through the app 11.57M -> 11.11M (callgrind).
            uow.flush()
            connection = uow.connection()
            bound_at = bound_values(connection, t.outbox, ("delivered_at",))({"delivered_at": at})
            with translated(t.metadata):
                missing = {
                    row[0]
                    for row in fetch_values(
                        connection,
                        _mark_delivered_text(connection.dialect),
                        (text_array(ids), *bound_at),
                    )
                }
            for message_id in ids:
                if message_id in missing:
                    raise _not_found(self._kind, message_id)
            return
        named = c.id.in_(ids)
        known = set(self._uow.read(sa.select(c.id).where(named)).scalars())
        for message_id in ids:
            if message_id not in known:
                raise _not_found(self._kind, message_id)
        statement = (
            sa.update(t.outbox)
            .where(named, c.delivered_at.is_(None))
            .values(delivered_at=at, attempts=c.attempts + 1)
        )
        self._uow.write([statement], None, savepoint=False)

    def list(self, *, customer_id: str | None = None) -> Sequence[OutboxMessage]:
        """Return every message, oldest first."""
        c = t.outbox.c
        query = sa.select(t.outbox).order_by(c.seq)
        if customer_id is not None:
            query = query.where(c.customer_id == customer_id)
        return [m.outbox_from_row(r) for r in self._rows(query)]


class AuditLog(_Repository):
    """The audit trail, append only."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.audit_logs, "audit entry")

    def add(self, entry: AuditEntry) -> None:
        """Append an entry."""
        self._insert(m.audit_row(entry, self._uow.encode_data))

    def list(
        self, *, subject_id: str | None = None, customer_id: str | None = None
    ) -> Sequence[AuditEntry]:
        """Return entries oldest first."""
        c = t.audit_logs.c
        query = sa.select(t.audit_logs).order_by(c.seq)
        if subject_id is not None:
            query = query.where(c.subject_id == subject_id)
        if customer_id is not None:
            query = query.where(c.customer_id == customer_id)
        return [m.audit_from_row(r) for r in self._rows(query)]


# Ids per IN list of the metrics queries: well under every driver's bound on parameters.
_IDS_PER_QUERY = 1000


def _live_mrr(period: Period, currency: str) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """Per customer, MRR at the start (``m0``) and end (``m1``) of the paying rows live in ``period``.

    Two branches, whose customers overlap: the rows that still hold, and those that
    stopped after the start; a customer's MRR is the sum of both branches' rows.
    """
    c = t.subscription_changes.c
    start, end = period.start, period.end

    def total(name: str, holds: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        # BIGINT, not PostgreSQL's NUMERIC sum: ints, not Decimals, come back.
        amount = sa.func.sum(sa.case((holds, c.mrr), else_=0))
        return sa.cast(amount, sa.BigInteger).label(name)

    # The WHERE clauses repeat the partial indexes' conditions, so that they are used.
    still_holding = (
        sa.select(c.customer_id, total("m0", c.at <= start), total("m1", sa.true()))
        .where(
            c.mrr_currency == currency,
            c.superseded_at.is_(None),
            c.mrr > 0,
            c.at <= end,
        )
        .group_by(c.customer_id)
    )
    stopped_after_start = (
        sa.select(c.customer_id, total("m0", c.at <= start), total("m1", c.superseded_at > end))
        .where(
            c.mrr_currency == currency,
            c.superseded_at > c.at,
            c.mrr > 0,
            c.superseded_at > start,
            c.at <= end,
        )
        .group_by(c.customer_id)
    )
    return still_holding, stopped_after_start


class SubscriptionChanges(_Repository):
    """Every subscription's history with its MRR."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.subscription_changes, "subscription change")

    def add(self, change: SubscriptionChange) -> None:
        """Append a change."""
        self._insert(m.change_row(change, self._uow.encode_data))

    def list(
        self,
        *,
        subscription_id: str | None = None,
        customer_id: str | None = None,
        until: datetime | None = None,
    ) -> Sequence[SubscriptionChange]:
        """Return changes ordered by ``at`` (then creation), up to and including ``until``."""
        c = t.subscription_changes.c
        query = sa.select(t.subscription_changes).order_by(c.at, c.seq)
        if subscription_id is not None:
            query = query.where(c.subscription_id == subscription_id)
        if customer_id is not None:
            query = query.where(c.customer_id == customer_id)
        if until is not None:
            query = query.where(c.at <= aware(until, "until"))
        return [m.change_from_row(r) for r in self._rows(query)]

    def mrr_snapshots(self, period: Period, currency: str) -> MrrSnapshots:
        """Return each customer's MRR at ``period.start`` and at ``period.end``, and who came back.

        A paying change holds from ``at`` until ``superseded_at`` (kept by triggers, see
        migration 0005), so one statement reads only the rows that hold at some instant of
        the period: those that still hold, summed per customer as the index streams them,
        and those that stopped after the start. A second one asks, for the customers who
        pay at the end only, whether they paid before.
        """
        at_start: dict[str, int] = {}
        at_end: dict[str, int] = {}
        live = sa.union_all(*_live_mrr(period, currency))
        for row in self._uow.read(live).mappings():
            customer_id, m0, m1 = row["customer_id"], row["m0"], row["m1"]
            if m0:
                at_start[customer_id] = at_start.get(customer_id, 0) + m0
            if m1:
                at_end[customer_id] = at_end.get(customer_id, 0) + m1
        return MrrSnapshots(
            start=at_start,
            end=at_end,
            reactivated=self._paid_before(
                [customer for customer in at_end if customer not in at_start],
                period.start,
                currency,
            ),
        )

    def mrr_movements(self, period: Period, currency: str) -> MrrMovements:
        """Return the MRR movements over ``period``: ``snapshot_movements(mrr_snapshots(...))``.

        One statement: the rows of :meth:`mrr_snapshots` summed per customer, each customer
        classified as :func:`~lumenquest_core.metrics.classify_movement` does, and the
        customers counted and summed per kind; a handful of rows come back, whatever the
        number of customers.
        """
        still_holding, stopped_after_start = _live_mrr(period, currency)
        sqlite = is_sqlite(self._uow.engine)
        if sqlite:
            # SQLite has FULL JOIN only from 3.39: regroup the two branches instead.
            both = sa.union_all(still_holding, stopped_after_start).subquery("both_spans")
            per_customer = sa.select(
                both.c.customer_id,
                sa.cast(sa.func.sum(both.c.m0), sa.BigInteger).label("m0"),
                sa.cast(sa.func.sum(both.c.m1), sa.BigInteger).label("m1"),
            ).group_by(both.c.customer_id)
        else:
            # On PostgreSQL the first branch comes grouped in customer order off its index
            # and the second is small: a hash join of the two is much cheaper than hashing
            # all their rows again by customer.
            held = still_holding.subquery("held")
            stopped = stopped_after_start.subquery("stopped")
            per_customer = sa.select(
                sa.func.coalesce(held.c.customer_id, stopped.c.customer_id).label("customer_id"),
                (sa.func.coalesce(held.c.m0, 0) + sa.func.coalesce(stopped.c.m0, 0)).label("m0"),
                (sa.func.coalesce(held.c.m1, 0) + sa.func.coalesce(stopped.c.m1, 0)).label("m1"),
            ).select_from(
                held.join(stopped, held.c.customer_id == stopped.c.customer_id, full=True)
            )
        p = per_customer.subquery("per_customer").c
        paid = t.subscription_changes.alias("paid")
        # Asked only of the customers who pay at the end and not at the start (the CASE
        # stops before it for every other): an index probe each.
        paid_before = sa.exists().where(
            paid.c.mrr_currency == currency,
            paid.c.customer_id == p.customer_id,
            paid.c.mrr > 0,
            paid.c.at <= period.start,
        )
        # The rules and their order are classify_movement's.
        kind = sa.case(
            (p.m0 == p.m1, Movement.KEPT.value),
            (
                p.m0 == 0,
                sa.case((paid_before, Movement.REACTIVATION.value), else_=Movement.NEW.value),
            ),
            (p.m1 == 0, Movement.CHURNED.value),
            (p.m1 > p.m0, Movement.EXPANSION.value),
            else_=Movement.CONTRACTION.value,
        )
        # A subquery, so that the kind (and its EXISTS) is worked out once per customer.
        classified = (
            sa.select(kind.label("kind"), p.m0, p.m1)
            .where(sa.or_(p.m0 > 0, p.m1 > 0))
            .subquery("classified")
        )
        k = classified.c
        query = sa.select(
            k.kind,
            sa.func.count().label("customers"),
            sa.cast(sa.func.sum(k.m0), sa.BigInteger).label("m0"),
            sa.cast(sa.func.sum(k.m1), sa.BigInteger).label("m1"),
        ).group_by(k.kind)
        if not sqlite:
            # The planner cannot see through GROUP BY for the join's selectivity and
            # estimates ~50x the rows; JIT compiling for that (~0.7 s) would cost more than
            # the whole query. For this transaction only: set_config(..., true).
            self._uow.read(sa.select(sa.func.set_config("jit", "off", sa.true())))
        totals = {
            Movement(row["kind"]): MovementTotal(int(row["customers"]), row["m0"], row["m1"])
            for row in self._uow.read(query).mappings()
        }
        return movements_from_totals(totals, currency=currency)

    def _paid_before(self, customer_ids: Sequence[str], at: datetime, currency: str) -> set[str]:
        """Return those of the customers who had a paying change at or before ``at``."""
        c = t.subscription_changes.c
        paid: set[str] = set()
        for first in range(0, len(customer_ids), _IDS_PER_QUERY):
            query = (
                sa.select(c.customer_id)
                .distinct()
                .where(
                    c.mrr_currency == currency,
                    c.customer_id.in_(customer_ids[first : first + _IDS_PER_QUERY]),
                    c.mrr > 0,
                    c.at <= at,
                )
            )
            paid.update(self._uow.read(query).scalars())
        return paid

    def trial_outcomes(self, period: Period, currency: str) -> Sequence[TrialOutcome]:
        """Return ``(plan_id, converted)`` of each change in ``[start, end)`` leaving ``trialing``."""
        c = t.subscription_changes.c
        # A literal, not a parameter: the partial index's predicate must match it.
        trialing: sa.ColumnElement[str] = sa.literal_column("'trialing'")
        query = (
            sa.select(c.plan_id, c.to_status, sa.func.count().label("changes"))
            .where(
                c.mrr_currency == currency,
                c.from_status == trialing,
                c.to_status != trialing,
                c.at >= period.start,
                c.at < period.end,
            )
            .group_by(c.plan_id, c.to_status)
        )
        outcomes: list[TrialOutcome] = []
        for row in self._rows(query):
            converted = row["to_status"] in TRIAL_CONVERTED_STATUSES
            outcomes += [(row["plan_id"] or "", converted)] * int(row["changes"])
        return outcomes


class Analytics(_Repository):
    """Analytics events."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.analytics_events, "analytics event")

    def add(self, event: AnalyticsEvent) -> None:
        """Store an event; a reused id raises Conflict."""
        self._insert(m.analytics_row(event))

    def add_new(self, events: Sequence[AnalyticsEvent]) -> None:
        """Store each event whose id is not stored yet; skip the others."""
        self._uow.insert_new(self._table, [m.analytics_row(event) for event in events])

    def list(
        self, *, customer_id: str | None = None, since: datetime | None = None
    ) -> Sequence[AnalyticsEvent]:
        """Return events ordered by ``occurred_at`` (then creation), from ``since`` on."""
        c = t.analytics_events.c
        query = sa.select(t.analytics_events).order_by(c.occurred_at, c.seq)
        if customer_id is not None:
            query = query.where(c.customer_id == customer_id)
        if since is not None:
            query = query.where(c.occurred_at >= aware(since, "since"))
        return [m.analytics_from_row(r) for r in self._rows(query)]


def _email_sent(delivery: EmailDelivery) -> Describe:
    def describe(name: str | None) -> Conflict | None:
        if name != "uq_email_deliveries_event_id_template":
            return None
        return Conflict(
            f"the {delivery.template!r} email of event {delivery.event_id} was already sent",
            details={
                "kind": "email delivery",
                "id": delivery.message_id,
                "constraint": "email_delivery_event_template",
                "event_id": delivery.event_id,
                "template": delivery.template,
            },
        )

    return describe


@functools.cache
def _sent_text(dialect: sa.Dialect) -> str:
    """Return the text selecting the (event id, template) pairs, given as two arrays, stored."""
    deliveries = dialect.identifier_preparer.format_table(t.email_deliveries)
    c = t.email_deliveries.c
    event, template = (column.type.compile(dialect=dialect) for column in (c.event_id, c.template))
    return (
        f"SELECT d.event_id, d.template FROM {deliveries} AS d"
        f" JOIN unnest(%s::{event}[], %s::{template}[]) AS k(event_id, template)"
        " ON d.event_id = k.event_id AND d.template = k.template"
    )


class EmailDeliveries(_Repository):
    """Emails sent, unique per (event id, template)."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.email_deliveries, "email delivery", key="message_id")

    def add(self, delivery: EmailDelivery) -> None:
        """Store a delivery; the same event and template twice raises Conflict."""
        self._insert(m.delivery_row(delivery), _email_sent(delivery))

    def add_new(self, deliveries: Sequence[EmailDelivery]) -> None:
        """Store each delivery whose event and template (and message id) are new; skip the others."""
        self._uow.insert_new(self._table, [m.delivery_row(d) for d in deliveries])

    def find(self, event_id: str, template: str) -> EmailDelivery | None:
        """Return the delivery of this event's email, if it was sent."""
        rows = self._uow.read_where(self._table, {"event_id": event_id, "template": template})
        return m.delivery_from_row(rows[0]) if rows else None

    def sent(self, keys: Collection[tuple[str, str]]) -> builtins.set[tuple[str, str]]:
        """Return the (event id, template) pairs among ``keys`` that have a delivery."""
        wanted = builtins.list(builtins.set(keys))
        c = t.email_deliveries.c
        found: builtins.set[tuple[str, str]] = builtins.set()
        if wanted and not self._uow._sqlite:
            # One query whatever the number of pairs (two arrays: the same statement text
            # each time), served by the (event_id, template) unique index; straight to the
            # driver, the arrays as literals (text_array: the driver's list dumping searches
            # a regular expression in every element).
            connection = self._uow._reading(t.email_deliveries)
            with translated(t.metadata):
                rows = fetch_values(
                    connection,
                    _sent_text(connection.dialect),
                    (
                        text_array([key[0] for key in wanted]),
                        text_array([key[1] for key in wanted]),
                    ),
                )
            return {(event_id, template) for event_id, template in rows}
        # SQLite: one query per _LOAD_CHUNK pairs.
        for start in range(0, len(wanted), _LOAD_CHUNK):
            chunk = wanted[start : start + _LOAD_CHUNK]
            query = sa.select(c.event_id, c.template).where(
                sa.tuple_(c.event_id, c.template).in_(chunk)
            )
            found.update((row.event_id, row.template) for row in self._uow.read(query))
        return found

    def get(self, message_id: str) -> EmailDelivery:
        """Return the delivery or raise NotFound."""
        return m.delivery_from_row(self._one(message_id))

    def update(self, delivery: EmailDelivery) -> None:
        """Replace a stored delivery."""
        self._update(m.delivery_row(delivery), _email_sent(delivery))

    def list(self, *, customer_id: str | None = None) -> Sequence[EmailDelivery]:
        """Return deliveries oldest first."""
        c = t.email_deliveries.c
        query = sa.select(t.email_deliveries).order_by(c.seq)
        if customer_id is not None:
            query = query.where(c.customer_id == customer_id)
        return [m.delivery_from_row(r) for r in self._rows(query)]


class Idempotency(_Repository):
    """Idempotency records, written in the transaction of the change they guard."""

    __slots__ = ()

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        super().__init__(uow, t.idempotency_keys, "idempotency record", key="key")

    def get(self, key: str, at: datetime) -> IdempotencyRecord | None:
        """Return the unexpired record for ``key``, if any."""
        c = t.idempotency_keys.c
        rows = self._rows(
            sa.select(t.idempotency_keys).where(c.key == key, c.expires_at > aware(at, "at"))
        )
        return m.idempotency_from_row(rows[0]) if rows else None

    def put(self, record: IdempotencyRecord) -> None:
        """Store a record; an unexpired record with the same key raises Conflict."""
        c = t.idempotency_keys.c
        existing = (
            self._uow.read(sa.select(c.expires_at).where(c.key == record.key).with_for_update())
            .scalars()
            .first()
        )
        in_use = Conflict(
            f"idempotency key {record.key!r} is already in use",
            details={"kind": "idempotency record", "key": record.key},
        )
        if existing is not None and existing > record.created_at:
            raise in_use
        values = m.idempotency_row(record)
        if existing is None:
            self._uow.insert(t.idempotency_keys, values, lambda _: in_use)
        else:  # an expired record gives its key up (the row is locked: nothing can collide)
            statement = sa.update(t.idempotency_keys).where(c.key == record.key).values(values)
            self._uow.write([statement], None, savepoint=False)
