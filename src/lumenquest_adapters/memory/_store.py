"""The in-memory store and its unit of work: a real, transactional implementation.

:class:`MemoryStore` holds committed rows with the indexes a database would keep.
:class:`MemoryUnitOfWork` holds the store's re-entrant lock from ``__enter__`` to
``__exit__`` (serializable isolation: one transaction at a time per store), stages its
writes in per-table overlays and applies them only on ``commit``. Constraints raise
:class:`~lumenquest_core.errors.Conflict` and missing rows
:class:`~lumenquest_core.errors.NotFound`, as the SQL adapter's do.

A unit of work nested in the same thread (the lock is re-entrant) behaves like a second
database connection: it does not see the outer one's uncommitted writes, and the outer
commit re-checks its constraints if the nested one committed in between.
"""

from __future__ import annotations

import bisect
import marshal
import operator
import threading
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from datetime import datetime
from types import MappingProxyType, TracebackType
from typing import Any, Generic, Self, TypeVar, overload

from lumenquest_adapters.memory import _rows
from lumenquest_adapters.memory._rows import (
    VALUE_OF,
    ChangeRow,
    EntryRow,
    InvoiceRow,
    MessageRow,
    PaymentRow,
)
from lumenquest_adapters.memory._tables import AppendView, R, Table, UniqueIndex, View
from lumenquest_core.catalog import Plan, Price
from lumenquest_core.coupons import Coupon
from lumenquest_core.customers import Customer
from lumenquest_core.errors import Conflict, ValidationError
from lumenquest_core.invoicing import BillingReason, CreditNote, Invoice, InvoiceStatus, Refund
from lumenquest_core.metrics import (
    TRIAL_CONVERTED_STATUSES,
    MrrMovements,
    MrrSnapshots,
    TrialOutcome,
    snapshot_movements,
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
    AnalyticsRepository,
    AuditFields,
    ChangeFields,
    CouponRepository,
    CreditNoteRepository,
    CustomerRepository,
    EmailDelivery,
    EmailDeliveryRepository,
    IdempotencyRecord,
    IdempotencyStore,
    InvoiceRepository,
    MessageFields,
    OutboxMessage,
    PaymentRepository,
    PendingLine,
    PlanRepository,
    PriceRepository,
    SubscriptionRepository,
    UsageRepository,
)
from lumenquest_core.subscriptions import Subscription, SubscriptionStatus, next_action_at

__all__ = ["MemoryStore", "MemoryUnitOfWork"]


def _id(row: Any) -> str:
    return str(row.id)


# Key functions in C: a billing run computes keys for every row it writes or indexes.
_by_id = operator.attrgetter("id")
_customer_id = operator.attrgetter("customer_id")
_subscription_id = operator.attrgetter("subscription_id")
_invoice_id = operator.attrgetter("invoice_id")


# Invoices and payments: a draft or open invoice and a pending payment are kept as the
# objects, the working set a billing run reads back and settles; a settled one (paid,
# void, uncollectible; succeeded, failed) as a compact row (see _rows), history the
# collector need not walk. Keys and filters read either shape. A renewal's invoice is
# added open and updated paid, its payment added pending and updated succeeded: one row
# each is built, and none is read back during the run. run_due over 10,000: tracked
# objects left per renewal 8.05 -> 0.0, no full collection (one before), the collector's
# share 27-29 % -> 5.5-5.8 %, 7,400-8,600 -> 10,700-11,100 renewals per CPU second;
# instructions 5,826M -> 5,750M (a full collection's cost is mostly cache misses, which
# instructions do not show); over 3,000, with no full collection, 1,665M -> 1,704M.
StoredInvoice = Invoice | InvoiceRow
StoredPayment = Payment | PaymentRow

_SUBSCRIPTION_CYCLE = BillingReason.SUBSCRIPTION_CYCLE  # bound once: see _cycle_key
_SUBSCRIPTION_CYCLE_VALUE = _SUBSCRIPTION_CYCLE.value
_WORKING_INVOICE = (InvoiceStatus.DRAFT, InvoiceStatus.OPEN)
_PENDING = PaymentStatus.PENDING  # bound once: an enum member lookup costs a call
_PENDING_VALUE = _PENDING.value


def _either(name: str, position: int) -> Callable[[Any], Any]:
    """Return a key reading ``name`` of an object, or ``position`` of a row."""
    of_object, of_row = operator.attrgetter(name), operator.itemgetter(position)

    def key(stored: Any) -> Any:
        return of_row(stored) if type(stored) is tuple else of_object(stored)

    return key


def _invoice(stored: StoredInvoice) -> Invoice:
    return _rows.invoice_from_row(stored) if type(stored) is tuple else stored  # type: ignore[return-value]


def _payment(stored: StoredPayment) -> Payment:
    return _rows.payment_from_row(stored) if type(stored) is tuple else stored  # type: ignore[return-value]


_invoice_id_of = _either("id", 0)
_payment_id_of = _either("id", 0)
_invoice_customer = _either("customer_id", _rows.INVOICE_CUSTOMER)
_invoice_subscription = _either("subscription_id", _rows.INVOICE_SUBSCRIPTION)
_invoice_status = _either("status._value_", _rows.INVOICE_STATUS)
_payment_invoice = _either("invoice_id", _rows.PAYMENT_INVOICE)
_payment_customer = _either("customer_id", _rows.PAYMENT_CUSTOMER)
_payment_key = _either("idempotency_key", _rows.PAYMENT_KEY)
_payment_created_at = _either("created_at", _rows.PAYMENT_CREATED_AT)


def _cycle_key(stored: StoredInvoice) -> Hashable | None:
    if type(stored) is tuple:
        if stored[_rows.INVOICE_REASON] == _SUBSCRIPTION_CYCLE_VALUE:
            subscription_id = stored[_rows.INVOICE_SUBSCRIPTION]
            start = stored[_rows.INVOICE_PERIOD_START]
            if start is not None and subscription_id is not None:
                return (subscription_id, start)
        return None
    invoice: Invoice = stored  # type: ignore[assignment]
    if (
        invoice.billing_reason is _SUBSCRIPTION_CYCLE
        and invoice.period is not None
        and invoice.subscription_id is not None
    ):
        return (invoice.subscription_id, invoice.period.start)
    return None


def _pending(stored: StoredPayment) -> Hashable | None:
    if type(stored) is tuple:
        return True if stored[_rows.PAYMENT_STATUS] == _PENDING_VALUE else None
    return True if stored.status is _PENDING else None  # type: ignore[union-attr]


def _describe_email(customer: Customer) -> tuple[str, dict[str, Any]]:
    # The address itself stays out of the error: error details end up in logs.
    return "a customer with this email already exists", {"field": "email"}


def _describe_cycle(stored: StoredInvoice) -> tuple[str, dict[str, Any]]:
    invoice = _invoice(stored)
    assert invoice.period is not None
    return (
        f"subscription {invoice.subscription_id} already has a cycle invoice for the period"
        f" starting {invoice.period.start.isoformat()}",
        {
            "subscription_id": invoice.subscription_id,
            "period_start": invoice.period.start.isoformat(),
        },
    )


def _describe_payment_key(stored: StoredPayment) -> tuple[str, dict[str, Any]]:
    key = _payment_key(stored)
    return (
        f"a payment with idempotency key {key!r} already exists",
        {"idempotency_key": key},
    )


def _describe_delivery(delivery: EmailDelivery) -> tuple[str, dict[str, Any]]:
    return (
        f"the {delivery.template!r} email of event {delivery.event_id} was already sent",
        {"event_id": delivery.event_id, "template": delivery.template},
    )


# The work-queue indexes file only the rows where their flag holds (True), the others
# under None (left out): the index is then the queue itself.
def _undelivered(row: MessageRow) -> Hashable | None:
    return True if row[_rows.MESSAGE_DELIVERED_AT] is None else None


def _message_customer(row: MessageRow) -> Hashable | None:
    return row[_rows.MESSAGE_CUSTOMER] or None


# The history tables keep compact rows (see _rows): their ids are the first field.
_row_id = operator.itemgetter(0)
_dumps: Callable[[Any], bytes] = marshal.dumps  # as in _rows: ValueError if not plain data


class MemoryStore:
    """The committed state of every table, shared by the units of work built on it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # Bumped by every commit that changes something; lets a commit notice a nested one.
        self.version = 0
        self.customers: Table[Customer] = Table(
            "customer",
            _by_id,
            uniques=[UniqueIndex("customer_email", operator.attrgetter("email"), _describe_email)],
            ordered_by_id=True,
        )
        self.plans: Table[Plan] = Table("plan", _by_id, ordered_by_id=True)
        self.prices: Table[Price] = Table(
            "price", _by_id, indexes={"plan_id": operator.attrgetter("plan_id")}, ordered_by_id=True
        )
        self.coupons: Table[Coupon] = Table("coupon", _by_id, ordered_by_id=True)
        self.subscriptions: Table[Subscription] = Table(
            "subscription",
            _by_id,
            indexes={"customer_id": _customer_id},
            ordered_by_id=True,
        )
        # When each subscription is next due, and the due index over it, grouped by
        # instant: the instants in ascending order, and under each the ids filed as due
        # then, in descending id order once sorted (the next to claim last, taken by a
        # pop), the instants filed to since their last sort in ``due_unsorted``. An id
        # due at another time by now is a stale entry, dropped when it surfaces. A claim
        # takes each id in O(1) where a heap of (due, id) pairs took O(log n) tuple
        # comparisons (run_due over 3,000: see the commit).
        self.due_of: dict[str, datetime] = {}
        # The instants: ``due_order[due_next:]``, those before ``due_next`` claimed to the
        # last id. A claim moves the cursor on, and an instant filed new, later than every
        # other (a renewal's next due, nearly always), is appended: no comparison in
        # either, where a heap's pop took some twelve datetime comparisons of an instant
        # of its own for each subscription with its own anchor (run_due over 3,000,
        # spread: see the commit). An earlier one is inserted in order.
        self.due_order: list[datetime] = []
        self.due_next = 0
        self.due_ids: dict[datetime, list[str]] = {}
        self.due_unsorted: set[datetime] = set()
        self.due_entries = 0  # the ids filed under every instant, stale ones included
        # The live entries claim_due took off the index, put back (those still matching
        # ``due_of``) when the claiming unit of work ends or before the next claim: a
        # renewal's entry then leaves the index once instead of being filed back and
        # taken again as stale (run_due over 3,000: 2,673 -> 2,644 million instructions).
        self.due_claimed: list[tuple[datetime, str]] = []
        # One object per due instant (see reindex_due).
        self.due_instants: dict[datetime, datetime] = {}
        self.invoices: Table[StoredInvoice] = Table(
            "invoice",
            _invoice_id_of,
            uniques=[UniqueIndex("invoice_subscription_cycle", _cycle_key, _describe_cycle)],
            indexes={
                "customer_id": _invoice_customer,
                "subscription_id": _invoice_subscription,
            },
        )
        self.invoice_number = 0  # the last number handed out by a committed unit of work
        self.pending_lines: Table[PendingLine] = Table(
            "pending line", _by_id, indexes={"subscription_id": _subscription_id}
        )
        self.payments: Table[StoredPayment] = Table(
            "payment",
            _payment_id_of,
            uniques=[UniqueIndex("payment_idempotency_key", _payment_key, _describe_payment_key)],
            indexes={
                "invoice_id": _payment_invoice,
                "customer_id": _payment_customer,
                "pending": _pending,
                "gateway_reference": _either("gateway_reference", _rows.PAYMENT_REFERENCE),
            },
        )
        self.refunds: Table[Refund] = Table(
            "refund",
            _by_id,
            indexes={"payment_id": operator.attrgetter("payment_id"), "invoice_id": _invoice_id},
        )
        self.credit_notes: Table[CreditNote] = Table(
            "credit note",
            _by_id,
            indexes={"invoice_id": _invoice_id, "customer_id": _customer_id},
        )
        self.usage: Table[UsageRecord] = Table(
            "usage record", _by_id, indexes={"subscription_id": _subscription_id}
        )
        self.outbox: Table[MessageRow] = Table(
            "outbox message",
            _row_id,
            indexes={"undelivered": _undelivered, "customer_id": _message_customer},
        )
        self.audit_log: Table[EntryRow] = Table(
            "audit entry",
            _row_id,
            indexes={
                "subject_id": operator.itemgetter(_rows.ENTRY_SUBJECT),
                "customer_id": operator.itemgetter(_rows.ENTRY_CUSTOMER),
            },
        )
        self.subscription_changes: Table[ChangeRow] = Table(
            "subscription change",
            _row_id,
            indexes={
                "subscription_id": operator.itemgetter(_rows.CHANGE_SUBSCRIPTION),
                "customer_id": operator.itemgetter(_rows.CHANGE_CUSTOMER),
            },
        )
        self.analytics: Table[AnalyticsEvent] = Table(
            "analytics event", _by_id, indexes={"customer_id": _customer_id}
        )
        self.email_deliveries: Table[EmailDelivery] = Table(
            "email delivery",
            operator.attrgetter("message_id"),
            uniques=[
                UniqueIndex(
                    "email_delivery_event_template",
                    operator.attrgetter("event_id", "template"),
                    _describe_delivery,
                )
            ],
            indexes={"customer_id": _customer_id},
        )
        self.idempotency: Table[IdempotencyRecord] = Table(
            "idempotency record", operator.attrgetter("key")
        )

    def tables(self) -> tuple[Table[Any], ...]:
        """Return every table, in the order a commit applies them."""
        return (
            self.customers,
            self.plans,
            self.prices,
            self.coupons,
            self.subscriptions,
            self.invoices,
            self.pending_lines,
            self.payments,
            self.refunds,
            self.credit_notes,
            self.usage,
            self.outbox,
            self.audit_log,
            self.subscription_changes,
            self.analytics,
            self.email_deliveries,
            self.idempotency,
        )

    def reindex_due(self, deleted: Iterable[str], written: Iterable[Subscription]) -> None:
        """Bring the due index up to date with committed subscription changes."""
        due_of, instants, due_ids = self.due_of, self.due_instants, self.due_ids
        for subscription_id in deleted:
            due_of.pop(subscription_id, None)
        for after in written:
            due = next_action_at(after)
            subscription_id = after.id
            if due == due_of.get(subscription_id):
                continue
            if due is None:
                del due_of[subscription_id]
                continue
            # Subscriptions renewed together fall due at one instant: as one object, the
            # index's lookups and checks of equal dues compare by identity first.
            shared = instants.get(due)
            if shared is None:
                if len(instants) >= 4096:
                    instants.clear()  # bounded: time moves on to ever new instants
                shared = instants[due] = due
            due_of[subscription_id] = shared
            # _file_due(), inlined: a call less for each subscription a billing run renews.
            ids = due_ids.get(shared)
            if ids is None:
                due_ids[shared] = [subscription_id]
                self._order_due(shared)
            else:
                if subscription_id > ids[-1]:
                    self.due_unsorted.add(shared)  # sorted again when next claimed from
                ids.append(subscription_id)
            self.due_entries += 1
        if self.due_entries > 2 * len(due_of) + 1024:
            # Stale entries outnumber live ones: rebuild rather than let the index grow.
            self._rebuild_due()

    def _file_due(self, due: datetime, subscription_id: str) -> None:
        """File ``subscription_id`` under the instant ``due`` of the due index."""
        ids = self.due_ids.get(due)
        if ids is None:
            self.due_ids[due] = [subscription_id]
            self._order_due(due)
        else:
            if subscription_id > ids[-1]:
                self.due_unsorted.add(due)  # sorted again when next claimed from
            ids.append(subscription_id)
        self.due_entries += 1

    def _order_due(self, due: datetime) -> None:
        """Put a new instant of the due index in its place in ``due_order``."""
        order = self.due_order
        if len(order) == self.due_next or due > order[-1]:
            order.append(due)  # the latest (or the only one): see __init__
        else:
            bisect.insort(order, due, self.due_next)

    def _rebuild_due(self) -> None:
        """Build the due index again from ``due_of``, with no stale entry."""
        due_ids: dict[datetime, list[str]] = {}
        for subscription_id, due in self.due_of.items():
            ids = due_ids.get(due)
            if ids is None:
                due_ids[due] = [subscription_id]
            else:
                ids.append(subscription_id)
        self.due_ids = due_ids
        self.due_order = sorted(due_ids)
        self.due_next = 0
        self.due_unsorted = set(due_ids)
        self.due_entries = len(self.due_of)
        self.due_claimed.clear()  # the rebuilt index holds them already

    def release_claims(self) -> None:
        """Put the entries claim_due took off the due index back, those still live."""
        claimed = self.due_claimed
        if claimed:
            due_of = self.due_of
            # Taken in ascending order from the end of each instant's ids: filed back in
            # descending order, they keep those ids sorted.
            for entry in reversed(claimed):
                due, subscription_id = entry
                if due_of.get(subscription_id) == due:
                    self._file_due(due, subscription_id)
            claimed.clear()


def _check_limit(limit: int) -> int:
    if type(limit) is not int or limit < 0:
        raise ValidationError(f"limit must be a non-negative int, not {limit!r}")
    return limit


def _page(
    view: View[Any],
    rows: Iterable[R],
    limit: int | None,
    after: str | None,
    id_of: Callable[[Any], str] = _id,
) -> list[R]:
    """Return at most ``limit`` of ``rows`` (in creation order) created after ``after``."""
    if after is not None:
        cursor = view.rank(after)  # NotFound for an id the view does not hold
        rows = (row for row in rows if view.rank(id_of(row)) > cursor)
    return list(rows) if limit is None else _take(rows, _check_limit(limit))


def _take(rows: Iterator[R] | Iterable[R], limit: int) -> list[R]:
    result: list[R] = []
    if limit == 0:
        return result
    for row in rows:
        result.append(row)
        if len(result) >= limit:
            break
    return result


def _outside() -> RuntimeError:
    """Return the error of a repository used outside its unit of work's ``with`` block."""
    return RuntimeError("use the unit of work inside a `with` block")


class _Repository:
    """Common plumbing: the unit of work (to check it is open) and the table view.

    Each public method checks ``self._uow._open`` inline rather than calling
    ``check_open``: a billing run makes twenty repository calls a renewal, and the call
    cost more than the check (run_due over 3,000: 2,491 -> 2,469 million instructions).

    The ``get`` a billing run calls (customers, subscriptions, invoices, payments) reads
    a committed row from the table itself where the view's overlay has no say in it (no
    row of its own with that id, none deleted), and calls View.get for the rest: one
    call less for each of the five rows a renewal reads by id (run_due over 3,000: see
    the commit).
    """

    __slots__ = ("_uow",)

    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow


class _Customers(_Repository):
    """Customers, unique by id and by email."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: View[Customer]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, customer: Customer) -> None:
        """Store a new customer."""
        if not self._uow._open:
            raise _outside()
        self._view.add(customer)

    def get(self, customer_id: str) -> Customer:
        """Return the customer or raise NotFound."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        overlay = view.overlay
        if overlay is None or (not overlay.deleted and customer_id not in overlay.rows):
            row = view.table.rows.get(customer_id)  # a committed row: see _Repository
            if row is not None:
                return row
        return view.get(customer_id)

    def find_by_email(self, email: str) -> Customer | None:
        """Return the customer with this (normalised) email, if any."""
        if not self._uow._open:
            raise _outside()
        owner = self._view.owner(0, email.strip().lower())
        return None if owner is None else self._view.get(owner)

    def update(self, customer: Customer) -> None:
        """Replace a stored customer."""
        if not self._uow._open:
            raise _outside()
        self._view.update(customer)

    def list(self, *, limit: int = 100, after: str | None = None) -> Sequence[Customer]:
        """Return customers ordered by id, after the cursor ``after``."""
        if not self._uow._open:
            raise _outside()
        return _take(self._view.scan_by_id(after), _check_limit(limit))


class _Plans(_Repository):
    """Plans."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: View[Plan]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, plan: Plan) -> None:
        """Store a new plan."""
        if not self._uow._open:
            raise _outside()
        self._view.add(plan)

    def get(self, plan_id: str) -> Plan:
        """Return the plan or raise NotFound."""
        if not self._uow._open:
            raise _outside()
        return self._view.get(plan_id)

    def update(self, plan: Plan) -> None:
        """Replace a stored plan."""
        if not self._uow._open:
            raise _outside()
        self._view.update(plan)

    def list(self, *, active_only: bool = False) -> Sequence[Plan]:
        """Return plans ordered by id."""
        if not self._uow._open:
            raise _outside()
        return [p for p in self._view.scan_by_id() if p.active or not active_only]


class _Prices(_Repository):
    """Prices."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: View[Price]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, price: Price) -> None:
        """Store a new price."""
        if not self._uow._open:
            raise _outside()
        self._view.add(price)

    def get(self, price_id: str) -> Price:
        """Return the price or raise NotFound."""
        if not self._uow._open:
            raise _outside()
        return self._view.get(price_id)

    def update(self, price: Price) -> None:
        """Replace a stored price (its active flag or nickname)."""
        if not self._uow._open:
            raise _outside()
        self._view.update(price)

    def list(self, *, plan_id: str | None = None, active_only: bool = False) -> Sequence[Price]:
        """Return prices ordered by id."""
        if not self._uow._open:
            raise _outside()
        if plan_id is None:
            rows: Iterable[Price] = self._view.scan_by_id()
        else:
            rows = sorted(self._view.bucket("plan_id", plan_id), key=_id)
        return [p for p in rows if p.active or not active_only]


class _Coupons(_Repository):
    """Coupons."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: View[Coupon]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, coupon: Coupon) -> None:
        """Store a new coupon."""
        if not self._uow._open:
            raise _outside()
        self._view.add(coupon)

    def get(self, coupon_id: str) -> Coupon:
        """Return the coupon or raise NotFound."""
        if not self._uow._open:
            raise _outside()
        return self._view.get(coupon_id)

    def list(self) -> Sequence[Coupon]:
        """Return coupons ordered by id."""
        if not self._uow._open:
            raise _outside()
        return list(self._view.scan_by_id())


class _Subscriptions(_Repository):
    """Subscriptions, with a due index so that claiming work never scans them all."""

    __slots__ = ("_store", "_view")

    def __init__(self, uow: MemoryUnitOfWork, view: View[Subscription], store: MemoryStore) -> None:
        super().__init__(uow)
        self._view = view
        self._store = store

    def add(self, subscription: Subscription) -> None:
        """Store a new subscription."""
        if not self._uow._open:
            raise _outside()
        self._view.add(subscription)

    def get(self, subscription_id: str) -> Subscription:
        """Return the subscription or raise NotFound."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        overlay = view.overlay
        if overlay is None or (not overlay.deleted and subscription_id not in overlay.rows):
            row = view.table.rows.get(subscription_id)  # a committed row: see _Repository
            if row is not None:
                return row
        return view.get(subscription_id)

    def update(self, subscription: Subscription) -> None:
        """Replace a stored subscription."""
        if not self._uow._open:
            raise _outside()
        self._view.update(subscription)

    def list(
        self,
        *,
        customer_id: str | None = None,
        status: SubscriptionStatus | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[Subscription]:
        """Return subscriptions ordered by id, after the cursor ``after``."""
        if not self._uow._open:
            raise _outside()
        limit = _check_limit(limit)
        if customer_id is None:
            rows: Iterable[Subscription] = self._view.scan_by_id(after)
        else:
            rows = (
                s
                for s in sorted(self._view.bucket("customer_id", customer_id), key=_id)
                if after is None or s.id > after
            )
        return _take((s for s in rows if status is None or s.status is status), limit)

    def claim_due(self, at: datetime, *, limit: int) -> Sequence[Subscription]:
        """Return up to ``limit`` subscriptions due at ``at``, earliest first.

        The store lock, held for the whole unit of work, is what makes the claim
        exclusive; the due index makes it O(k) instead of a scan.
        """
        if not self._uow._open:
            raise _outside()
        at = aware(at, "at")
        limit = _check_limit(limit)
        store = self._store
        store.release_claims()  # an earlier claim's entries are due as much as the rest
        overlay = self._view.overlay
        changed: dict[str, Subscription] = {} if overlay is None else overlay.rows
        deleted: set[str] = set() if overlay is None else overlay.deleted
        order, due_of, due_ids, unsorted = (
            store.due_order,
            store.due_of,
            store.due_ids,
            store.due_unsorted,
        )
        next_due = store.due_next
        found: list[tuple[datetime, str]] = []
        # The live entries taken stay out of the index until the unit of work ends (see
        # MemoryStore.due_claimed); a claimed subscription it renews is filed again
        # under its new due by the commit.
        live = store.due_claimed
        seen: set[str] = set()
        taken = 0
        while next_due < len(order) and len(found) < limit:
            due = order[next_due]
            if due > at:
                break
            ids = due_ids[due]
            if due in unsorted:
                ids.sort(reverse=True)
                unsorted.discard(due)
            while ids and len(found) < limit:
                sid = ids.pop()
                taken += 1
                current = due_of.get(sid)
                if sid in seen or (current is not due and current != due):
                    continue  # stale or duplicate: dropped for good
                seen.add(sid)
                live.append((due, sid))
                if sid not in changed and sid not in deleted:
                    found.append((due, sid))
            if not ids:
                next_due += 1
                del due_ids[due]
        if next_due > 1024 and 2 * next_due > len(order):
            del order[:next_due]  # the claimed instants, once they are half the list
            next_due = 0
        store.due_next = next_due
        store.due_entries -= taken
        # This unit of work's own changes decide for the subscriptions it touched.
        for sid, sub in changed.items():
            own_due = next_action_at(sub)
            if own_due is not None and own_due <= at:
                found.append((own_due, sid))
        found.sort()
        if overlay is None:  # every id found is a committed row's: see _Repository
            rows = self._view.table.rows
            return [rows[sid] for _, sid in found[:limit]]
        return [self._view.get(sid) for _, sid in found[:limit]]


class _Invoices(_Repository):
    """Invoices (settled ones as compact rows), the number sequence and pending lines."""

    __slots__ = ("_lines", "_read", "_view")

    def __init__(
        self, uow: MemoryUnitOfWork, view: View[StoredInvoice], lines: View[PendingLine]
    ) -> None:
        super().__init__(uow)
        self._view = view
        self._lines = lines
        # Each invoice rebuilt from a row, with the row: read again while the row is
        # unchanged, it is not rebuilt. The unit of work's own dict, emptied when its
        # transaction ends: a unit of work and its repositories refer to each other, and
        # what they hold would otherwise wait for the collector.
        self._read = uow.invoices_read

    def add(self, invoice: Invoice) -> None:
        """Store a new invoice; a second cycle invoice for the same period raises Conflict."""
        if not self._uow._open:
            raise _outside()
        status = invoice.status  # _stored_invoice, inlined: each renewal adds one
        self._view.add(
            invoice if status in _WORKING_INVOICE else _rows.invoice_row(invoice), invoice.id
        )

    def get(self, invoice_id: str) -> Invoice:
        """Return the invoice or raise NotFound."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        overlay = view.overlay
        stored = None
        if overlay is None or (not overlay.deleted and invoice_id not in overlay.rows):
            stored = view.table.rows.get(invoice_id)  # a committed row: see _Repository
        if stored is None:
            stored = view.get(invoice_id)
        if type(stored) is not tuple:
            return stored  # type: ignore[return-value]
        read = self._read.get(invoice_id)
        if read is not None and read[0] is stored:
            return read[1]
        invoice = _rows.invoice_from_row(stored)
        self._read[invoice_id] = (stored, invoice)
        return invoice

    def update(self, invoice: Invoice) -> None:
        """Replace a stored invoice."""
        if not self._uow._open:
            raise _outside()
        status = invoice.status  # _stored_invoice, inlined: each renewal updates one
        self._view.update(
            invoice if status in _WORKING_INVOICE else _rows.invoice_row(invoice), invoice.id
        )

    def list(
        self,
        *,
        customer_id: str | None = None,
        subscription_id: str | None = None,
        status: InvoiceStatus | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[Invoice]:
        """Return invoices in creation order, strictly after the invoice ``after``."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        if subscription_id is None and customer_id is None:
            # The scan starts after the cursor itself: nothing left for _page to skip.
            rows: Iterable[StoredInvoice] = view.scan(after)
            after = None
        elif subscription_id is not None:
            rows = view.bucket("subscription_id", subscription_id)
        else:
            rows = view.bucket("customer_id", customer_id)
        wanted = None if status is None else status.value
        matching = (
            i
            for i in rows
            if (customer_id is None or _invoice_customer(i) == customer_id)
            and (subscription_id is None or _invoice_subscription(i) == subscription_id)
            and (wanted is None or _invoice_status(i) == wanted)
        )
        return [_invoice(i) for i in _page(view, matching, limit, after, _invoice_id_of)]

    def next_number(self) -> int:
        """Take the next invoice number (gapless; rolled back with the unit of work)."""
        uow = self._uow
        if not uow._open:
            raise _outside()
        # The unit of work's numbering, done here rather than in a method of it: a call
        # less for each invoice a billing run numbers (commit checks and applies it).
        if uow._numbers_taken == 0:
            uow._number_base = uow.store.invoice_number
        uow._numbers_taken += 1
        return uow._number_base + uow._numbers_taken

    def add_pending_line(self, pending: PendingLine) -> None:
        """Keep a proration line for the subscription's next invoice."""
        if not self._uow._open:
            raise _outside()
        self._lines.add(pending)

    def take_pending_lines(self, subscription_id: str) -> Sequence[PendingLine]:
        """Remove and return the subscription's waiting lines, oldest first."""
        if not self._uow._open:
            raise _outside()
        view = self._lines
        if not view.table.rows and view.overlay is None:
            # No line waits anywhere, the common case: a renewal asks on every call, and
            # reading the index costs three calls more.
            return []
        lines = view.bucket("subscription_id", subscription_id)
        for line in lines:
            view.delete(line.id)
        return lines


class _Payments(_Repository):
    """Payments (settled ones as compact rows), unique by idempotency key; refunds."""

    __slots__ = ("_refunds", "_view")

    def __init__(
        self, uow: MemoryUnitOfWork, view: View[StoredPayment], refunds: View[Refund]
    ) -> None:
        super().__init__(uow)
        self._view = view
        self._refunds = refunds

    def add(self, payment: Payment) -> None:
        """Store a new payment; a reused idempotency key raises Conflict."""
        if not self._uow._open:
            raise _outside()
        self._view.add(  # _stored_payment, inlined: each renewal adds one
            payment if payment.status is _PENDING else _rows.payment_row(payment), payment.id
        )

    def get(self, payment_id: str) -> Payment:
        """Return the payment or raise NotFound."""
        if not self._uow._open:
            raise _outside()
        return _payment(self._view.get(payment_id))

    def get_for_update(self, payment_id: str) -> Payment:
        """Return the payment; the store's lock already serializes units of work."""
        if not self._uow._open:
            raise _outside()
        view = self._view  # get()'s body, without a call more per settlement
        overlay = view.overlay
        stored = None
        if overlay is None or (not overlay.deleted and payment_id not in overlay.rows):
            stored = view.table.rows.get(payment_id)  # a committed row: see _Repository
        if stored is None:
            stored = view.get(payment_id)
        return stored if type(stored) is not tuple else _payment(stored)  # type: ignore[return-value]

    def find(
        self, *, idempotency_key: str | None = None, gateway_reference: str | None = None
    ) -> Payment | None:
        """Return the payment with this idempotency key or gateway reference, if any."""
        if not self._uow._open:
            raise _outside()
        if idempotency_key is not None:
            # The key is unique: its unique index answers, no secondary index needed.
            owner = self._view.owner(0, idempotency_key)
            return None if owner is None else _payment(self._view.get(owner))
        if gateway_reference is not None:
            found = self._view.bucket("gateway_reference", gateway_reference, 1)
            return _payment(found[0]) if found else None
        return None

    def update(self, payment: Payment) -> None:
        """Replace a stored payment."""
        if not self._uow._open:
            raise _outside()
        self._view.update(  # _stored_payment, inlined: each renewal settles one
            payment if payment.status is _PENDING else _rows.payment_row(payment), payment.id
        )

    def list(
        self,
        *,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Payment]:
        """Return payments in creation order: at most ``limit``, those after ``after``."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        if invoice_id is not None:
            rows: Iterable[StoredPayment] = view.bucket("invoice_id", invoice_id)
        elif customer_id is not None:
            rows = view.bucket("customer_id", customer_id)
        else:
            rows = view.scan()
        matching = (
            p
            for p in rows
            if (invoice_id is None or _payment_invoice(p) == invoice_id)
            and (customer_id is None or _payment_customer(p) == customer_id)
        )
        return [_payment(p) for p in _page(view, matching, limit, after, _payment_id_of)]

    def pending(self, *, created_before: datetime, limit: int) -> Sequence[Payment]:
        """Return pending payments created before ``created_before``, oldest first."""
        if not self._uow._open:
            raise _outside()
        created_before = aware(created_before, "created_before")
        created = _payment_created_at
        rows = [p for p in self._view.bucket("pending", True) if created(p) < created_before]
        rows.sort(key=created)  # stable: creation order breaks ties
        return [_payment(p) for p in rows[: _check_limit(limit)]]

    def add_refund(self, refund: Refund) -> None:
        """Store a refund; a reused id raises Conflict."""
        if not self._uow._open:
            raise _outside()
        self._refunds.add(refund)

    def refunds(
        self,
        *,
        payment_id: str | None = None,
        invoice_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Refund]:
        """Return refunds in creation order: at most ``limit``, those after ``after``."""
        if not self._uow._open:
            raise _outside()
        view = self._refunds
        if payment_id is not None:
            rows: Iterable[Refund] = view.bucket("payment_id", payment_id)
        elif invoice_id is not None:
            rows = view.bucket("invoice_id", invoice_id)
        else:
            rows = view.scan()
        matching = (
            r
            for r in rows
            if (payment_id is None or r.payment_id == payment_id)
            and (invoice_id is None or r.invoice_id == invoice_id)
        )
        return _page(view, matching, limit, after)


class _CreditNotes(_Repository):
    """Credit notes."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: View[CreditNote]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, note: CreditNote) -> None:
        """Store a credit note; a reused id raises Conflict."""
        if not self._uow._open:
            raise _outside()
        self._view.add(note)

    def list(
        self,
        *,
        invoice_id: str | None = None,
        customer_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[CreditNote]:
        """Return credit notes in creation order: at most ``limit``, those after ``after``."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        if invoice_id is not None:
            rows: Iterable[CreditNote] = view.bucket("invoice_id", invoice_id)
        elif customer_id is not None:
            rows = view.bucket("customer_id", customer_id)
        else:
            rows = view.scan()
        matching = (
            n
            for n in rows
            if (invoice_id is None or n.invoice_id == invoice_id)
            and (customer_id is None or n.customer_id == customer_id)
        )
        return _page(view, matching, limit, after)


class _Usage(_Repository):
    """Usage records."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: View[UsageRecord]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, record: UsageRecord) -> None:
        """Store a usage record; a reused id raises Conflict."""
        if not self._uow._open:
            raise _outside()
        self._view.add(record)

    def total(self, subscription_id: str, period: Period) -> int:
        """Return the quantity used in ``period`` (half-open)."""
        if not self._uow._open:
            raise _outside()
        start, end = period.start, period.end
        return sum(
            r.quantity
            for r in self._view.bucket("subscription_id", subscription_id)
            if start <= r.at < end
        )

    def list(
        self, subscription_id: str, *, limit: int | None = None, after: str | None = None
    ) -> Sequence[UsageRecord]:
        """Return the subscription's usage records ordered by time, paged by ``after``."""
        if not self._uow._open:
            raise _outside()
        view = self._view

        # Ordered by time, then creation: the cursor is that pair, not the creation rank.
        def order(record: UsageRecord) -> tuple[datetime, tuple[int, int]]:
            return (record.at, view.rank(record.id))

        rows = sorted(view.bucket("subscription_id", subscription_id), key=order)
        if after is not None:
            cursor = order(view.get(after))
            rows = [r for r in rows if order(r) > cursor]
        return rows if limit is None else rows[: _check_limit(limit)]


class _Outbox(_Repository):
    """The outbox, kept as compact rows (see _rows)."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: AppendView[MessageRow]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, message: OutboxMessage) -> None:
        """Store an event; a reused id raises Conflict."""
        if not self._uow._open:
            raise _outside()
        row = _rows.message_row(message)
        self._view.add(row, row[0])  # the id at hand: no key function call

    def pending(self, *, limit: int) -> Sequence[OutboxMessage]:
        """Return undelivered messages, oldest first."""
        if not self._uow._open:
            raise _outside()
        rows = self._view.bucket("undelivered", True, _check_limit(limit))
        return [_rows.message_from_row(row) for row in rows]

    def mark_delivered(self, message_ids: Sequence[str], at: datetime) -> None:
        """Record that the messages were delivered; a message delivered before keeps its time."""
        if not self._uow._open:
            raise _outside()
        at = aware(at, "at")
        view = self._view
        for message_id in message_ids:
            row = view.get(message_id)
            if row[_rows.MESSAGE_DELIVERED_AT] is None:
                view.update(_rows.message_delivered(row, at))

    def list(self, *, customer_id: str | None = None) -> Sequence[OutboxMessage]:
        """Return every message, oldest first."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        rows = view.scan() if customer_id is None else view.bucket("customer_id", customer_id)
        return [_rows.message_from_row(row) for row in rows]


class _AuditLog(_Repository):
    """The audit trail, kept as compact rows (see _rows)."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: AppendView[EntryRow]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, entry: AuditEntry) -> None:
        """Append an entry; a reused id raises Conflict."""
        if not self._uow._open:
            raise _outside()
        row = _rows.entry_row(entry)
        self._view.add(row, row[0])  # the id at hand: no key function call

    def list(
        self, *, subject_id: str | None = None, customer_id: str | None = None
    ) -> Sequence[AuditEntry]:
        """Return entries oldest first."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        if subject_id is not None:
            rows: Iterable[EntryRow] = view.bucket("subject_id", subject_id)
        elif customer_id is not None:
            rows = view.bucket("customer_id", customer_id)
        else:
            rows = view.scan()
        return [
            _rows.entry_from_row(e)
            for e in rows
            if (subject_id is None or e[_rows.ENTRY_SUBJECT] == subject_id)
            and (customer_id is None or e[_rows.ENTRY_CUSTOMER] == customer_id)
        ]


# Fields of a change row that the metrics queries read.
_AT, _FROM_STATUS, _TO_STATUS, _MRR, _MRR_CURRENCY, _PLAN = 4, 5, 6, 11, 12, 13


class _SubscriptionChanges(_Repository):
    """Subscription history, kept as compact rows (see _rows)."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: AppendView[ChangeRow]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, change: SubscriptionChange) -> None:
        """Append a change; a reused id raises Conflict."""
        if not self._uow._open:
            raise _outside()
        row = _rows.change_row(change)
        self._view.add(row, row[0])  # the id at hand: no key function call

    def list(
        self,
        *,
        subscription_id: str | None = None,
        customer_id: str | None = None,
        until: datetime | None = None,
    ) -> Sequence[SubscriptionChange]:
        """Return changes ordered by ``at`` (then creation), up to and including ``until``."""
        rows = self._rows(subscription_id=subscription_id, customer_id=customer_id, until=until)
        return [_rows.change_from_row(row) for row in rows]

    def _rows(
        self,
        *,
        subscription_id: str | None = None,
        customer_id: str | None = None,
        until: datetime | None = None,
    ) -> Sequence[ChangeRow]:
        """Return the rows :meth:`list` returns, undecoded (the metrics read a few fields)."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        if subscription_id is not None:
            rows: Iterable[ChangeRow] = view.bucket("subscription_id", subscription_id)
        elif customer_id is not None:
            rows = view.bucket("customer_id", customer_id)
        else:
            rows = view.scan()
        until = None if until is None else aware(until, "until")
        return sorted(
            (
                c
                for c in rows
                if (subscription_id is None or c[_rows.CHANGE_SUBSCRIPTION] == subscription_id)
                and (customer_id is None or c[_rows.CHANGE_CUSTOMER] == customer_id)
                and (until is None or c[_AT] <= until)
            ),
            key=operator.itemgetter(_AT),
        )

    def mrr_snapshots(self, period: Period, currency: str) -> MrrSnapshots:
        """Return each customer's MRR at ``period.start`` and at ``period.end``, and who came back."""
        at_start: dict[str, ChangeRow] = {}
        at_end: dict[str, ChangeRow] = {}
        paid_before: set[str] = set()
        for change in self._rows(until=period.end):
            if change[_MRR_CURRENCY] != currency:
                continue
            subscription_id = change[_rows.CHANGE_SUBSCRIPTION]
            if change[_AT] <= period.start:
                at_start[subscription_id] = change
                if change[_MRR] > 0:
                    paid_before.add(change[_rows.CHANGE_CUSTOMER])
            at_end[subscription_id] = change
        start = _paying(at_start.values())
        end = _paying(at_end.values())
        return MrrSnapshots(
            start=start, end=end, reactivated=(paid_before & end.keys()) - start.keys()
        )

    def mrr_movements(self, period: Period, currency: str) -> MrrMovements:
        """Return the MRR movements over ``period``, classified by the pure core."""
        return snapshot_movements(self.mrr_snapshots(period, currency), currency)

    def trial_outcomes(self, period: Period, currency: str) -> Sequence[TrialOutcome]:
        """Return ``(plan_id, converted)`` of each change in ``[start, end)`` leaving ``trialing``."""
        trialing = SubscriptionStatus.TRIALING.value
        return [
            (c[_PLAN], c[_TO_STATUS] in TRIAL_CONVERTED_STATUSES)
            for c in self._rows(until=period.end)
            if c[_MRR_CURRENCY] == currency
            and c[_AT] < period.end
            and c[_AT] >= period.start
            and c[_FROM_STATUS] == trialing
            and c[_TO_STATUS] != trialing
        ]


def _paying(changes: Iterable[ChangeRow]) -> dict[str, int]:
    """Sum each customer's positive MRR over the given change rows."""
    totals: dict[str, int] = {}
    for change in changes:
        amount = change[_MRR]
        if amount > 0:
            customer_id = change[_rows.CHANGE_CUSTOMER]
            totals[customer_id] = totals.get(customer_id, 0) + amount
    return totals


class _Analytics(_Repository):
    """Analytics events."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: View[AnalyticsEvent]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, event: AnalyticsEvent) -> None:
        """Store an event; a reused id raises Conflict."""
        if not self._uow._open:
            raise _outside()
        self._view.add(event)

    def add_new(self, events: Sequence[AnalyticsEvent]) -> None:
        """Store each event whose id is not stored yet; skip the others."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        for event in events:
            if view.find(event.id) is None:
                view.add(event)

    def list(
        self, *, customer_id: str | None = None, since: datetime | None = None
    ) -> Sequence[AnalyticsEvent]:
        """Return events ordered by ``occurred_at`` (then creation), from ``since`` on."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        rows = view.scan() if customer_id is None else iter(view.bucket("customer_id", customer_id))
        since = None if since is None else aware(since, "since")
        return sorted(
            (e for e in rows if since is None or e.occurred_at >= since),
            key=lambda e: e.occurred_at,
        )


class _EmailDeliveries(_Repository):
    """Email deliveries, unique per (event id, template)."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: View[EmailDelivery]) -> None:
        super().__init__(uow)
        self._view = view

    def add(self, delivery: EmailDelivery) -> None:
        """Store a delivery; the same event and template twice raises Conflict."""
        if not self._uow._open:
            raise _outside()
        self._view.add(delivery)

    def add_new(self, deliveries: Sequence[EmailDelivery]) -> None:
        """Store each delivery whose event and template (and message id) are new; skip the others."""
        if not self._uow._open:
            raise _outside()
        view = self._view
        for delivery in deliveries:
            key = (delivery.event_id, delivery.template)
            if view.owner(0, key) is None and view.find(delivery.message_id) is None:
                view.add(delivery)

    def find(self, event_id: str, template: str) -> EmailDelivery | None:
        """Return the delivery of this event's email, if it was sent."""
        if not self._uow._open:
            raise _outside()
        owner = self._view.owner(0, (event_id, template))
        return None if owner is None else self._view.get(owner)

    def sent(self, keys: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Return the (event id, template) pairs among ``keys`` that have a delivery."""
        if not self._uow._open:
            raise _outside()
        owner = self._view.owner
        return {key for key in keys if owner(0, key) is not None}

    def get(self, message_id: str) -> EmailDelivery:
        """Return the delivery or raise NotFound."""
        if not self._uow._open:
            raise _outside()
        return self._view.get(message_id)

    def update(self, delivery: EmailDelivery) -> None:
        """Replace a stored delivery."""
        if not self._uow._open:
            raise _outside()
        self._view.update(delivery)

    def list(self, *, customer_id: str | None = None) -> Sequence[EmailDelivery]:
        """Return deliveries oldest first."""
        if not self._uow._open:
            raise _outside()
        if customer_id is None:
            return list(self._view.scan())
        return self._view.bucket("customer_id", customer_id)


class _Idempotency(_Repository):
    """Idempotency records inside the transaction (written with the change they guard)."""

    __slots__ = ("_view",)

    def __init__(self, uow: MemoryUnitOfWork, view: View[IdempotencyRecord]) -> None:
        super().__init__(uow)
        self._view = view

    def get(self, key: str, at: datetime) -> IdempotencyRecord | None:
        """Return the unexpired record for ``key``, if any."""
        if not self._uow._open:
            raise _outside()
        record = self._view.find(key)
        return record if record is not None and record.expires_at > aware(at, "at") else None

    def put(self, record: IdempotencyRecord) -> None:
        """Store a record; an unexpired record with the same key raises Conflict."""
        if not self._uow._open:
            raise _outside()
        existing = self._view.find(record.key)
        if existing is not None and existing.expires_at > record.created_at:
            raise Conflict(
                f"idempotency key {record.key!r} is already in use",
                details={"kind": "idempotency record", "key": record.key},
            )
        self._view.upsert(record)  # an expired record gives its key up


# Typed builders: mypy checks here that each repository implements its port.


def _customers(u: MemoryUnitOfWork) -> CustomerRepository:
    return _Customers(u, u.view(u.store.customers))


def _plans(u: MemoryUnitOfWork) -> PlanRepository:
    return _Plans(u, u.view(u.store.plans))


def _prices(u: MemoryUnitOfWork) -> PriceRepository:
    return _Prices(u, u.view(u.store.prices))


def _coupons(u: MemoryUnitOfWork) -> CouponRepository:
    return _Coupons(u, u.view(u.store.coupons))


def _subscriptions(u: MemoryUnitOfWork) -> SubscriptionRepository:
    return _Subscriptions(u, u.view(u.store.subscriptions), u.store)


def _invoices(u: MemoryUnitOfWork) -> InvoiceRepository:
    return _Invoices(u, u.view(u.store.invoices), u.view(u.store.pending_lines))


def _payments(u: MemoryUnitOfWork) -> PaymentRepository:
    return _Payments(u, u.view(u.store.payments), u.view(u.store.refunds))


def _credit_notes(u: MemoryUnitOfWork) -> CreditNoteRepository:
    return _CreditNotes(u, u.view(u.store.credit_notes))


def _usage(u: MemoryUnitOfWork) -> UsageRepository:
    return _Usage(u, u.view(u.store.usage))


def _outbox(u: MemoryUnitOfWork) -> _Outbox:
    return _Outbox(u, u.append_view(u.store.outbox))


def _audit_log(u: MemoryUnitOfWork) -> _AuditLog:
    return _AuditLog(u, u.append_view(u.store.audit_log))


def _subscription_changes(u: MemoryUnitOfWork) -> _SubscriptionChanges:
    return _SubscriptionChanges(u, u.append_view(u.store.subscription_changes))


def _analytics(u: MemoryUnitOfWork) -> AnalyticsRepository:
    return _Analytics(u, u.view(u.store.analytics))


def _email_deliveries(u: MemoryUnitOfWork) -> EmailDeliveryRepository:
    return _EmailDeliveries(u, u.view(u.store.email_deliveries))


def _idempotency(u: MemoryUnitOfWork) -> IdempotencyStore:
    return _Idempotency(u, u.view(u.store.idempotency))


_T = TypeVar("_T")


class _Built(Generic[_T]):
    """A repository of a unit of work, built on first access and kept as its attribute.

    A non-data descriptor: once built, the instance's own attribute shadows it, and every
    later access is a plain attribute read. (A ``__getattr__`` hook on the class, which
    built them before, made every attribute read of a unit of work, ``uow.outbox`` and
    ``self._uow.check_open`` alike, go through the slot wrapper of ``__getattribute__``:
    run_due over 3,000, 2,526 -> 2,491 million instructions.)

    Kept with ``setattr``, as ``__init__`` keeps the rest: every unit of work then holds
    its attributes at the slots the class shares for each name. Written through
    ``__dict__`` instead, each got a dict of its own, laid out in the order it built its
    repositories (a billing batch's and a settling's differ), and the interpreter's
    attribute reads, tuned to one layout, missed on the other (run_due over 3,000: see
    the commit).
    """

    __slots__ = ("_factory", "_name")

    def __init__(self, factory: Callable[[MemoryUnitOfWork], _T]) -> None:
        self._factory = factory
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Self: ...
    @overload
    def __get__(self, instance: MemoryUnitOfWork, owner: type) -> _T: ...
    def __get__(self, instance: MemoryUnitOfWork | None, owner: type) -> _T | Self:
        """Build the repository of ``instance`` and keep it there."""
        if instance is None:
            return self
        repository = self._factory(instance)
        setattr(instance, self._name, repository)
        return repository


class MemoryUnitOfWork:
    """One transaction over a :class:`MemoryStore`: nothing is kept unless ``commit`` is called."""

    # Built on first use (see _Built): most units of work touch two or three of them.
    customers = _Built(_customers)
    plans = _Built(_plans)
    prices = _Built(_prices)
    coupons = _Built(_coupons)
    subscriptions = _Built(_subscriptions)
    invoices = _Built(_invoices)
    payments = _Built(_payments)
    credit_notes = _Built(_credit_notes)
    usage = _Built(_usage)
    outbox = _Built(_outbox)
    audit_log = _Built(_audit_log)
    subscription_changes = _Built(_subscription_changes)
    analytics = _Built(_analytics)
    email_deliveries = _Built(_email_deliveries)
    idempotency = _Built(_idempotency)
    store: MemoryStore

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self._open = False
        self._begun_at = 0
        self._numbers_taken = 0
        self._number_base = 0
        self._touched: list[View[Any]] = []  # the views with uncommitted writes
        self.invoices_read: dict[str, tuple[StoredInvoice, Invoice]] = {}  # see _Invoices
        # The outbox's, audit log's and changes' views, kept here on the first history
        # written: a read of a repository built on first use goes through its class's
        # _Built descriptor, which Python 3.11 never specializes (three a history call).
        self._history_views: (
            tuple[AppendView[MessageRow], AppendView[EntryRow], AppendView[ChangeRow]] | None
        ) = None

    def view(self, table: Table[R]) -> View[R]:
        """Return a new view of ``table`` that reports its first write to this unit of work."""
        return View(table, self._touched.append)

    def append_view(self, table: Table[R]) -> AppendView[R]:
        """Return a new :class:`AppendView` of ``table``, as :meth:`view` a View."""
        return AppendView(table, self._touched.append)

    def __enter__(self) -> Self:
        """Take the store lock and begin the transaction."""
        if self._open:
            raise RuntimeError("this unit of work is already open; create a new one")
        self.store.lock.acquire()
        self._open = True
        self._begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Roll back whatever was not committed and release the store lock."""
        try:
            self.rollback()
        finally:
            self._open = False
            self.store.lock.release()

    def check_open(self) -> None:
        """Raise unless the unit of work is inside its ``with`` block (and holds the lock)."""
        if not self._open:
            raise _outside()

    def add_history(  # noqa: PLR0912 - its rows' builders and appends inlined: see below
        self,
        at: datetime,
        messages: Sequence[MessageFields],
        entry: AuditFields | None = None,
        change: ChangeFields | None = None,
    ) -> None:
        """Stage a change's outbox messages, audit entry and change row (``HistoryWriter``)."""
        if not self._open:
            raise _outside()
        # The rows the repositories' add would stage, built from the fields at hand: the
        # rows of new_message_row and entry_row_of, built here for the data a renewal
        # passes (eight rows a renewal, seven with no call; run_due over 3,000: see the
        # commit), the rest by those functions.
        shared: Any = None  # the entry's packed before and after
        outbox, audit_log, changes = self._history_views or self._history()
        if messages:
            # An entry whose after alone is an event's data itself (the core passes the
            # one mapping for the facts both carry) shares its packed bytes: immutable,
            # so either row reads the same fresh copy, and one marshal less (run_due over
            # 3,000: see the commit).
            after = None if entry is None or entry[7] is not None else entry[8]
            for message_id, name, subject_id, customer_id, occurred_at, data in messages:
                packed: Any
                kind = type(data)
                if (kind is dict or kind is MappingProxyType) and data:
                    try:  # a proxy's copy() is its dict's C-level copy (see pack_mapping)
                        packed = _dumps(data if kind is dict else data.copy())  # type: ignore[attr-defined]
                    except (AttributeError, ValueError):
                        packed = _rows.message_data(data)  # not plain data
                else:
                    packed = _rows.message_data(data)
                row = (
                    message_id,
                    VALUE_OF[name],
                    subject_id,
                    customer_id,
                    occurred_at,
                    packed,
                    at,
                    None,
                    0,
                )
                # AppendView.append inlined for its common case, a new id where rows are
                # appended already (which also means no overlay): eight rows a renewal.
                appended = outbox.appended
                if appended and message_id not in appended and message_id not in outbox.table.rows:
                    appended[message_id] = row
                else:
                    outbox.append(row, message_id)
                if data is after and after is not None and type(packed) is bytes:
                    shared = packed
        if entry is not None:
            entry_id, actor, action, subject_type, subject, entry_at, customer, before, _ = entry
            if before is not None:  # a before and after pair: never shared
                try:  # the pair built in the call, as in _rows._pack_pair
                    shared = _dumps((before, entry[8]))
                except ValueError:
                    shared = (before, entry[8])
            row = (
                _rows.entry_row_of(entry)  # an after alone, not shared, or nothing at all
                if shared is None
                else (
                    entry_id,
                    actor,
                    action,
                    subject_type,
                    subject,
                    entry_at,
                    customer,
                    shared,
                )
            )
            appended = audit_log.appended
            if appended and entry_id not in appended and entry_id not in audit_log.table.rows:
                appended[entry_id] = row
            else:
                audit_log.append(row, entry_id)
        if change is not None:
            row, row_id, appended = _rows.change_row_of(change), change[0], changes.appended
            if appended and row_id not in appended and row_id not in changes.table.rows:
                appended[row_id] = row
            else:
                changes.append(row, row_id)

    def _history(
        self,
    ) -> tuple[AppendView[MessageRow], AppendView[EntryRow], AppendView[ChangeRow]]:
        """Keep and return the views the history rows go to (on the first history written)."""
        views = (self.outbox._view, self.audit_log._view, self.subscription_changes._view)
        self._history_views = views
        return views

    def commit(self) -> None:
        """Apply every staged change to the store, all together."""
        self.check_open()
        store = self.store
        touched = self._touched
        if store.version != self._begun_at and (touched or self._numbers_taken):
            # A nested unit of work committed since this one began: re-check constraints.
            for view in touched:
                view.recheck()
            if self._numbers_taken and store.invoice_number != self._number_base:
                raise Conflict(
                    "invoice numbers were taken by another unit of work in the meantime",
                    details={"constraint": "invoice_number_sequence"},
                )
        changed = False
        for view in touched:
            overlay = view.take_overlay()
            if overlay is None:
                # A history view's rows staged by append (it has them or an overlay).
                appended = view.take_appended()
                if appended is not None:
                    view.table.extend(appended)
                    changed = True
                continue
            if view.table is store.subscriptions:
                store.reindex_due(overlay.deleted, overlay.rows.values())
            changed = view.table.apply(overlay) or changed
        if self._numbers_taken:
            store.invoice_number = self._number_base + self._numbers_taken
            changed = True
        if changed:
            store.version += 1
        store.release_claims()
        self._begin()

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
        """Do nothing: rows in memory cost nothing to reach one by one."""
        self.check_open()

    def rollback(self) -> None:
        """Discard every change not yet committed."""
        self.check_open()
        for view in self._touched:
            view.take_overlay()
            view.take_appended()
        self.store.release_claims()
        self._begin()

    def _begin(self) -> None:
        self._touched.clear()
        self.invoices_read.clear()
        self._begun_at = self.store.version
        self._numbers_taken = 0
