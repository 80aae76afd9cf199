"""The memory store's compact rows: exact round trips, no collector tracking."""

import gc
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumenquest_adapters.memory import (
    InMemoryBilling,
    MemoryStore,
    MemoryUnitOfWork,
    _rows,
    in_memory_billing,
)
from lumenquest_adapters.testing import samples
from lumenquest_adapters.testing.samples import (
    T0,
    audit_entry,
    outbox_message,
    subscription_change,
)
from lumenquest_core import BillingCycle, Interval, Money, invoicing
from lumenquest_core.customers import Customer
from lumenquest_core.events import DomainEvent, EventName
from lumenquest_core.invoicing import Invoice, InvoiceStatus
from lumenquest_core.lines import InvoiceLine, LineKind, TaxRate
from lumenquest_core.payments import AuditEntry, Payment, PaymentStatus
from lumenquest_core.periods import Period
from lumenquest_core.ports import OutboxMessage
from lumenquest_core.subscriptions import Subscription

# What event data, audit snapshots and change data hold: JSON-ready values.
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
_data = st.dictionaries(st.text(max_size=6), _json, max_size=4)


def _message(data: dict[str, Any], **changes: Any) -> OutboxMessage:
    event = DomainEvent(
        name=EventName.INVOICE_PAID,
        subject_id="in_1",
        customer_id="cus_1",
        occurred_at=T0,
        data=data,
    )
    return attrs.evolve(outbox_message("evt_1"), event=event, **changes)


@given(data=_data)
def test_an_outbox_message_comes_back_equal(data: dict[str, Any]) -> None:
    message = _message(data)
    assert _rows.message_from_row(_rows.message_row(message)) == message


@given(before=st.none() | _data, after=st.none() | _data)
def test_an_audit_entry_comes_back_equal(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> None:
    entry = attrs.evolve(audit_entry("aud_1"), before=before, after=after)
    assert _rows.entry_from_row(_rows.entry_row(entry)) == entry


@given(data=_data)
def test_a_subscription_change_comes_back_equal(data: dict[str, Any]) -> None:
    change = attrs.evolve(subscription_change("chg_1"), data=data)
    assert _rows.change_from_row(_rows.change_row(change)) == change


@given(data=_data)
def test_message_data_is_the_data_the_outbox_row_keeps(data: dict[str, Any]) -> None:
    """The history path (add_history) keeps an event's data exactly as outbox.add would."""
    message = _message(data, created_at=T0 + timedelta(seconds=1))
    assert _rows.message_data(message.event.data) == _rows.message_row(message)[5]


@given(before=st.none() | _data, after=st.none() | _data)
def test_an_entry_row_of_fields_is_the_row_of_the_entry(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> None:
    """The history path (add_history) stores exactly what audit_log.add would."""
    entry = attrs.evolve(audit_entry("aud_1"), before=before, after=after)
    fields = tuple(getattr(entry, f.name) for f in attrs.fields(type(entry)))
    assert _rows.entry_row_of(fields) == _rows.entry_row(entry)  # type: ignore[arg-type]


# Data marshal refuses (a Decimal leaf) besides plain data: kept as given, not packed.
_any_data = st.dictionaries(
    st.text(max_size=6), _json | st.decimals(allow_nan=False).map(Decimal), max_size=3
)


@given(before=st.none() | _any_data, after=st.none() | _any_data)
def test_an_entry_row_packs_before_and_after_as_pack_pair_does(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> None:
    """entry_row_of's inlined cases keep what _pack_pair returns, plain data or not."""
    entry = attrs.evolve(audit_entry("aud_1"), before=before, after=after)
    fields = tuple(getattr(entry, f.name) for f in attrs.fields(type(entry)))
    assert _rows.entry_row_of(fields)[-1] == _rows._pack_pair(before, after)  # type: ignore[arg-type]


@given(data=_data)
def test_a_change_row_of_fields_is_the_row_of_the_change(data: dict[str, Any]) -> None:
    """The history path (add_history) stores exactly what subscription_changes.add would."""
    change = attrs.evolve(subscription_change("chg_1"), data=data)
    fields = tuple(getattr(change, f.name) for f in attrs.fields(type(change)))
    assert _rows.change_row_of(fields) == _rows.change_row(change)  # type: ignore[arg-type]


def test_data_that_is_not_plain_is_kept_as_given() -> None:
    # Plain data is what the service writes; anything else still round-trips, uncopied.
    entry = attrs.evolve(audit_entry("aud_1"), after={"amount": Money(100, "USD")})
    assert _rows.entry_from_row(_rows.entry_row(entry)) == entry
    message = _message({"at": T0})
    assert _rows.message_from_row(_rows.message_row(message)) == message


def test_a_stored_row_is_a_copy_like_a_database_row() -> None:
    store = MemoryStore()
    before = {"status": "active", "period": {"start": "a"}}
    with MemoryUnitOfWork(store) as uow:
        uow.audit_log.add(attrs.evolve(audit_entry("aud_1"), before=before))
        uow.commit()
    before["period"]["start"] = "changed"
    with MemoryUnitOfWork(store) as uow:
        (read,) = uow.audit_log.list()
        assert read.before == {"status": "active", "period": {"start": "a"}}
        read.before["status"] = "mutated"  # type: ignore[index]
        assert uow.audit_log.list()[0].before == {"status": "active", "period": {"start": "a"}}


def test_a_delivered_message_keeps_its_first_delivery() -> None:
    store = MemoryStore()
    with MemoryUnitOfWork(store) as uow:
        uow.outbox.add(_message({"total": {"amount": 1, "currency": "USD"}}))
        uow.outbox.mark_delivered(["evt_1"], T0)
        uow.outbox.mark_delivered(["evt_1"], T0 + timedelta(hours=1))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        (message,) = uow.outbox.list()
        assert (message.delivered_at, message.attempts) == (T0, 1)
        assert uow.outbox.pending(limit=10) == []


def _renewed(*, days: int) -> tuple[InMemoryBilling, Customer, Subscription]:
    """Return a memory billing whose one monthly subscription ran ``days`` of renewals."""
    billing = in_memory_billing(now=T0)
    customer = billing.create_customer(email="ada@example.com", name="Ada")
    plan = billing.create_plan(name="Pro", features=["reports"])
    price = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1000, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    sub = billing.subscribe(customer_id=customer.id, price_id=price.id)
    billing.clock.advance(days=days)
    billing.run_due()
    return billing, customer, sub


def test_history_rows_leave_nothing_for_the_collector_to_walk() -> None:
    # Why the rows are compact: a billing run keeps several per subscription, and as
    # objects they made the cyclic collector walk the whole heap during the run.
    billing, _, _ = _renewed(days=40)
    gc.collect()
    store = billing.store
    tables = (store.outbox, store.audit_log, store.subscription_changes)
    rows = [row for table in tables for row in table.rows.values()]
    assert len(rows) > 10
    assert not any(gc.is_tracked(row) for row in rows)


class _Plain(Mapping[str, Any]):
    """A read-only mapping with no copy() of its own."""

    def __init__(self, items: dict[str, Any]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@pytest.mark.parametrize(
    "underlying",
    [
        pytest.param(dict, id="dict"),
        pytest.param(OrderedDict, id="copy-not-a-dict"),
        pytest.param(_Plain, id="no-copy"),
    ],
)
def test_read_only_data_over_any_mapping_is_stored_as_a_plain_copy(
    underlying: Callable[[dict[str, Any]], Mapping[str, Any]],
) -> None:
    data = {"total": {"amount": 1000, "currency": "USD"}, "lines": [1, 2]}
    packed = _rows.pack_mapping(MappingProxyType(underlying(data)))
    assert type(packed) is bytes
    unpacked = _rows._unpack_mapping(packed)
    assert unpacked == data
    assert type(unpacked) is MappingProxyType


def test_read_only_data_that_is_not_plain_is_kept_as_the_proxy_given() -> None:
    proxy = MappingProxyType({"at": T0})
    assert _rows.pack_mapping(proxy) is proxy


# -- settled invoices and payments -------------------------------------------------------


def _taxed_invoice_with_two_lines() -> Invoice:
    """A paid invoice with a discount, a taxed line, a line with no period and credit."""
    period = Period(T0, T0 + timedelta(days=31))
    vat = TaxRate("vat", "VAT", Decimal("20"))
    lines = [
        InvoiceLine(
            kind=LineKind.SUBSCRIPTION,
            description="Plan",
            amount=Money(1000, "USD"),
            period=period,
            price_id="price_1",
            subscription_id="sub_1",
            tax_rates=(vat,),
        ),
        InvoiceLine(
            kind=LineKind.ONE_OFF,
            description="Setup",
            amount=Money(250, "USD"),
            quantity=2,
            discountable=False,
        ),
    ]
    draft = invoicing.build_invoice(
        invoice_id="in_1",
        customer_id="cus_1",
        currency="USD",
        lines=lines,
        at=T0,
        subscription_id="sub_1",
        billing_reason=invoicing.BillingReason.SUBSCRIPTION_CYCLE,
        period=Period(T0, T0 + timedelta(days=30)),  # not the line's: two periods kept
        credit_balance=Money(100, "USD"),
    )
    opened = invoicing.finalize(draft, number="LQ-000001", at=T0)
    return invoicing.pay(opened, at=T0 + timedelta(hours=1))


@pytest.mark.parametrize(
    "invoice",
    [
        pytest.param(_taxed_invoice_with_two_lines(), id="two-lines-taxed"),
        pytest.param(
            samples.invoice("in_2", status=InvoiceStatus.VOID), id="one-line-renewal-shape"
        ),
        pytest.param(
            samples.invoice("in_3", subscription_id=None, reason=invoicing.BillingReason.MANUAL),
            id="manual",
        ),
    ],
)
def test_an_invoice_comes_back_equal(invoice: Invoice) -> None:
    again = _rows.invoice_from_row(_rows.invoice_row(invoice))
    assert again == invoice
    assert type(again.lines) is tuple
    assert type(again.line_discounts) is tuple


@pytest.mark.parametrize(
    "payment",
    [
        pytest.param(samples.payment("pay_1"), id="pending"),
        pytest.param(
            attrs.evolve(
                samples.payment("pay_2", status=PaymentStatus.SUCCEEDED),
                gateway_reference="ch_1",
                amount_refunded=Money(300, "USD"),
                settled_at=T0,
            ),
            id="refunded",
        ),
        pytest.param(
            samples.payment("pay_3").failed(T0, "card_declined", "declined", "ch_2"),
            id="failed",
        ),
    ],
)
def test_a_payment_comes_back_equal(payment: Payment) -> None:
    assert _rows.payment_from_row(_rows.payment_row(payment)) == payment


def test_settled_invoices_and_payments_leave_nothing_for_the_collector_to_walk() -> None:
    # Every renewal keeps its invoice and payment: as objects, the heap a full collection
    # walks grew by eight containers a renewal (run_due over 10,000: one full collection).
    billing, customer, sub = _renewed(days=70)
    gc.collect()
    store = billing.store
    rows = [*store.invoices.rows.values(), *store.payments.rows.values()]
    assert len(rows) == 6  # the first invoice and two renewals, each with its payment
    assert not any(gc.is_tracked(row) for row in rows)
    # Read back through the repositories, they are the objects the run stored.
    invoices = billing.list_invoices(customer_id=customer.id)
    assert [i.status for i in invoices] == [InvoiceStatus.PAID] * 3
    assert all(i.subscription_id == sub.id for i in invoices)
    assert [p.status for p in billing.list_payments(customer_id=customer.id)] == [
        PaymentStatus.SUCCEEDED
    ] * 3


def test_open_invoices_and_pending_payments_are_kept_as_objects() -> None:
    # The working set a run reads back and settles: no row built and rebuilt for it.
    store = MemoryStore()
    opened = samples.invoice("in_1", status=InvoiceStatus.OPEN)
    pending = samples.payment("pay_1")
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add(opened)
        uow.payments.add(pending)
        uow.commit()
    assert store.invoices.rows["in_1"] is opened
    assert store.payments.rows["pay_1"] is pending
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.update(attrs.evolve(opened, status=InvoiceStatus.VOID))
        uow.commit()
        assert type(store.invoices.rows["in_1"]) is tuple
        voided = uow.invoices.get("in_1")
        assert voided.status is InvoiceStatus.VOID
        assert uow.invoices.get("in_1") is voided  # rebuilt once per unit of work
        assert uow.invoices.list(status=InvoiceStatus.VOID) == [voided]
        assert uow.invoices.list(status=InvoiceStatus.OPEN) == []


_shaped = st.sampled_from(["dict", "proxy", "proxy of another mapping"])


def _shape(shape: str, data: dict[str, Any]) -> Mapping[str, Any]:
    if shape == "dict":
        return data
    return MappingProxyType(data if shape == "proxy" else OrderedDict(data))


@given(
    data=_any_data,
    shape=_shaped,
    before=st.none() | _any_data,
    after=st.none() | _any_data,
    share=st.booleans(),
)
def test_add_history_stores_the_rows_the_repositories_add_one_by_one(
    data: dict[str, Any],
    shape: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    share: bool,
) -> None:
    """add_history builds the rows itself for some data: whatever the data, they are the same.

    Plain or not, a dict or a read-only proxy, empty or not; an entry's after the event's
    data itself (shared) or another mapping, with or without a before.
    """
    mapping = _shape(shape, data)
    entry_after = mapping if share else after
    event = DomainEvent(EventName.INVOICE_PAID, "in_1", "cus_1", T0, {})
    fields = ("evt_1", event.name, event.subject_id, event.customer_id, event.occurred_at, mapping)
    entry = attrs.evolve(audit_entry("aud_1"), before=before, after=entry_after)
    entry_fields = tuple(getattr(entry, f.name) for f in attrs.fields(AuditEntry))
    written, added = MemoryStore(), MemoryStore()
    with MemoryUnitOfWork(written) as uow:
        uow.add_history(T0, [fields], entry_fields)  # type: ignore[arg-type]
        uow.commit()
    with MemoryUnitOfWork(added) as uow:
        message = OutboxMessage("evt_1", attrs.evolve(event, data=mapping), T0)
        uow.outbox.add(message)
        uow.audit_log.add(entry)
        uow.commit()
    # The same fields, and the data packed the same way (marshalled, kept as given, None).
    for table, data_at in (("outbox", 5), ("audit_log", 7)):
        (row,) = getattr(written, table).rows.values()
        (other,) = getattr(added, table).rows.values()
        assert row[:data_at] == other[:data_at]
        assert row[data_at + 1 :] == other[data_at + 1 :]
        assert type(row[data_at]) is type(other[data_at])
    with MemoryUnitOfWork(written) as uow, MemoryUnitOfWork(added) as other_uow:
        assert uow.outbox.list() == other_uow.outbox.list()
        assert uow.audit_log.list() == other_uow.audit_log.list()
