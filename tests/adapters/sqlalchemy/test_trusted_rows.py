"""Rows read back become the very objects the validating constructors make of them."""

from __future__ import annotations

from types import MappingProxyType

import attrs
import pytest

from lumenquest_adapters.sqlalchemy import _mapping as m
from lumenquest_adapters.testing.samples import T0, customer, invoice, payment
from lumenquest_core.catalog import PricingScheme, UsageType
from lumenquest_core.coupons import CouponDuration
from lumenquest_core.customers import Customer, Role
from lumenquest_core.events import EventName
from lumenquest_core.invoicing import BillingReason, CreditNoteOutcome, InvoiceStatus
from lumenquest_core.lines import LineKind
from lumenquest_core.money import Money
from lumenquest_core.payments import Payment, PaymentStatus
from lumenquest_core.periods import Interval
from lumenquest_core.ports import DeliveryStatus
from lumenquest_core.subscriptions import SubscriptionStatus


@pytest.mark.parametrize(
    "written",
    [
        customer("cus_1"),
        attrs.evolve(
            customer("cus_2"),
            currency="EUR",
            credit_balance=Money(250, "EUR"),
            role=Role.ADMIN,
            gateway_customer_id="gw_2",
            email_deliverable=False,
            erased_at=T0,
            metadata={"n": 1, "nested": {"ok": True}},
        ),
    ],
)
def test_a_customer_row_rebuilds_what_the_constructor_makes(written: Customer) -> None:
    row = {**m.customer_row(written), "seq": 1}
    read = m.customer_from_row(row)
    assert read == written  # written: made by the constructor (attrs.evolve runs it too)
    for field in attrs.fields(Customer):  # metadata too, which == leaves out
        assert getattr(read, field.name) == getattr(written, field.name)
        assert type(getattr(read, field.name)) is type(getattr(written, field.name))
    assert isinstance(read.metadata, MappingProxyType)
    assert read.metadata is not row["metadata"]  # the row's dict is not shared


def test_an_invoice_row_holds_every_amount_of_the_invoice() -> None:
    written = invoice("in_1", subscription_id=None, status=InvoiceStatus.OPEN)
    row = m.invoice_row(written)
    for name in m._INVOICE_AMOUNTS:
        assert row[name] == getattr(written, name).amount
    assert m.invoice_from_rows({**row, "seq": 1}, m.invoice_line_rows(written)) == written


def test_every_enum_a_row_stores_keeps_its_value_where_rows_read_it() -> None:
    # Rows read a member's value as member._value_ (enum's property is a Python call).
    kinds = (
        PricingScheme, UsageType, CouponDuration, EventName, BillingReason, CreditNoteOutcome,
        LineKind, PaymentStatus, Interval, DeliveryStatus, SubscriptionStatus, InvoiceStatus, Role,
    )  # fmt: skip
    for kind in kinds:
        for member in kind:
            assert member._value_ == member.value
            assert type(member._value_) is type(member.value)


@pytest.mark.parametrize(
    "written",
    [
        payment("pay_1"),
        attrs.evolve(
            payment("pay_2"),
            status=PaymentStatus.SUCCEEDED,
            gateway_reference="ch_2",
            failure_code="x",
            failure_message="why",
            amount_refunded=Money(300, "USD"),
            settled_at=T0,
        ),
    ],
)
def test_a_payment_row_rebuilds_what_the_constructor_makes(written: Payment) -> None:
    read = m.payment_from_row({**m.payment_row(written), "seq": 1})
    assert read == written
    assert vars(read) == vars(written)  # every field, in the constructor's order
    assert list(vars(read)) == list(vars(written))
    for field in attrs.fields(Payment):
        assert type(getattr(read, field.name)) is type(getattr(written, field.name))
    assert attrs.evolve(read, attempt=2) == attrs.evolve(written, attempt=2)
