"""Properties of built invoices over random lines, coupons, tax rates and credit balances."""

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from lumenquest_core.coupons import Discount
from lumenquest_core.invoicing import (
    CreditNoteOutcome,
    FixedTaxRates,
    Invoice,
    InvoiceStatus,
    build_invoice,
    customer_balance_after,
    finalize,
    issue_credit_note,
    pay,
)
from lumenquest_core.money import Money, allocate
from tests.strategies import coupons, currencies, invoice_lines, money, tax_rates

AT = datetime(2026, 3, 1, tzinfo=UTC)


@st.composite
def invoices(draw: st.DrawFn) -> tuple[Invoice, Money]:
    """A draft built from random inputs, with the credit balance it was built with."""
    currency = draw(currencies)
    lines = draw(st.lists(invoice_lines(currency), max_size=6))
    coupon = draw(st.none() | coupons(currency))
    rates = draw(st.lists(tax_rates(inclusive=draw(st.booleans())), max_size=2))
    balance = draw(money(currency, 0, 10**9))
    invoice = build_invoice(
        invoice_id="in_p",
        customer_id="cus_p",
        currency=currency,
        lines=lines,
        at=AT,
        discount=None if coupon is None else Discount.begin(coupon, AT),
        tax_calculator=FixedTaxRates(rates) if rates else None,
        credit_balance=balance,
    )
    return invoice, balance


@given(invoices())
def test_the_amounts_obey_the_invariants(built):
    invoice, balance = built
    assert (
        invoice.total.amount
        == invoice.subtotal.amount - invoice.discount.amount + invoice.tax.amount
    )
    assert invoice.amount_due.amount == max(0, invoice.total.amount - invoice.credit_applied.amount)
    assert invoice.amount_due.amount >= 0
    assert 0 <= invoice.credit_applied.amount <= balance.amount
    assert invoice.credit_applied.amount <= max(invoice.total.amount, 0)
    assert invoice.credit_generated.amount == max(0, -invoice.total.amount)
    assert customer_balance_after(invoice, balance).amount >= 0


@given(invoices())
def test_line_discounts_add_up_and_never_push_a_line_below_zero(built):
    invoice, _ = built
    assert sum(d.amount for d in invoice.line_discounts) == invoice.discount.amount
    for line, line_discount in zip(invoice.lines, invoice.line_discounts, strict=True):
        assert line_discount.amount >= 0
        assert line.amount.amount - line_discount.amount >= min(line.amount.amount, 0)


@given(invoices())
def test_line_taxes_add_up_to_the_exclusive_and_inclusive_tax(built):
    invoice, _ = built
    taxes = [tax for line_taxes in invoice.line_taxes for tax in line_taxes]
    assert sum(t.amount.amount for t in taxes if not t.inclusive) == invoice.tax.amount
    assert sum(t.amount.amount for t in taxes if t.inclusive) == invoice.inclusive_tax.amount
    for tax in taxes:
        # A tax has the sign of what it taxes: credits get negative tax.
        assert tax.amount.amount * tax.taxable.amount >= 0


@given(invoices(), st.data())
def test_credit_notes_never_credit_more_than_the_total(built, data):
    invoice, _ = built
    invoice = finalize(invoice, number="LQ-000001", at=AT)
    if invoice.status is InvoiceStatus.OPEN and data.draw(st.booleans()):
        invoice = pay(invoice, at=AT)
    for _ in range(3):
        if invoice.status is InvoiceStatus.OPEN:
            limit, outcome = invoice.amount_due.amount, None
        else:
            limit = invoice.total.amount - invoice.amount_credited.amount
            outcome = data.draw(
                st.sampled_from([CreditNoteOutcome.CREDIT_BALANCE, CreditNoteOutcome.REFUND])
            )
            if outcome is CreditNoteOutcome.REFUND:
                limit = min(limit, invoice.amount_paid.amount - invoice.amount_refunded.amount)
        if limit <= 0:
            break
        amount = Money(data.draw(st.integers(1, limit)), invoice.currency)
        _, invoice = issue_credit_note(
            invoice,
            credit_note_id="cn",
            number="CN",
            amount=amount,
            at=AT,
            reason="",
            outcome=outcome,
        )
        assert invoice.amount_credited <= invoice.total
        assert invoice.amount_refunded <= invoice.amount_paid
        assert invoice.amount_due.amount >= 0


@given(
    money("USD"),
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=20).filter(any),
)
def test_allocate_parts_sum_to_the_total(total, weights):
    parts = allocate(total, weights)
    assert sum(part.amount for part in parts) == total.amount
    assert all(abs(part.amount) <= abs(total.amount) for part in parts)
