from datetime import UTC, datetime, timedelta
from decimal import Decimal

import attrs
import pytest

from lumenquest_core.catalog import Price, UsageType
from lumenquest_core.coupons import Coupon, Discount
from lumenquest_core.errors import (
    CurrencyMismatch,
    InvalidTransition,
    NaiveDatetime,
    UnknownCurrency,
    ValidationError,
)
from lumenquest_core.invoicing import (
    BillingReason,
    CreditNote,
    CreditNoteOutcome,
    FixedTaxRates,
    Invoice,
    InvoiceNumbering,
    InvoiceStatus,
    NoTax,
    Refund,
    build_invoice,
    customer_balance_after,
    finalize,
    format_invoice_number,
    issue_credit_note,
    mark_uncollectible,
    pay,
    record_refund,
    usage_line,
    void,
)
from lumenquest_core.lines import InvoiceLine, LineKind, TaxRate
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval, Period

AT = datetime(2026, 1, 31, tzinfo=UTC)
LATER = AT + timedelta(days=3)
JANUARY = Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
VAT = TaxRate("vat", "VAT", Decimal(20))
VAT_INCLUSIVE = TaxRate("vat_incl", "VAT", Decimal(20), inclusive=True)


def usd(amount: int) -> Money:
    return Money(amount, "USD")


def line(amount: int, currency: str = "USD", **kwargs) -> InvoiceLine:
    return InvoiceLine(LineKind.ONE_OFF, "item", Money(amount, currency), **kwargs)


def draft(*amounts: int, **kwargs) -> Invoice:
    kwargs.setdefault("lines", [line(a) for a in amounts])
    return build_invoice(invoice_id="in_1", customer_id="cus_1", currency="USD", at=AT, **kwargs)


def open_invoice(*amounts: int, **kwargs) -> Invoice:
    return finalize(draft(*amounts, **kwargs), number="LQ-000001", at=AT)


def discount(**coupon) -> Discount:
    return Discount.begin(Coupon("coupon", **coupon), AT)


# --- building -----------------------------------------------------------------------------


def test_a_plain_invoice_is_a_draft_that_adds_its_lines_up():
    invoice = draft(1000, 250, subscription_id="sub_1", period=JANUARY, days_until_due=30)
    assert invoice.status is InvoiceStatus.DRAFT
    assert invoice.subtotal == invoice.total == invoice.amount_due == usd(1250)
    assert invoice.discount == invoice.tax == invoice.credit_applied == usd(0)
    assert invoice.line_discounts == (usd(0), usd(0))
    assert invoice.line_taxes == ((), ())
    assert invoice.billing_reason is BillingReason.MANUAL
    assert (invoice.subscription_id, invoice.period) == ("sub_1", JANUARY)
    assert invoice.due_at == AT + timedelta(days=30)
    assert invoice.number is invoice.finalized_at is invoice.discount_coupon_id is None


def test_without_days_until_due_there_is_no_due_date():
    assert draft(100).due_at is None


def test_a_percent_coupon_is_spread_exactly_over_the_lines():
    """10 % of $1.00 + $2.00 is 30 cents, split 10/20 by line amount."""
    invoice = draft(100, 200, discount=discount(percent_off=10))
    assert invoice.discount == usd(30)
    assert invoice.line_discounts == (usd(10), usd(20))
    assert invoice.total == usd(270)
    assert invoice.discount_coupon_id == "coupon"


def test_an_amount_coupon_is_spread_with_largest_remainders():
    """$1.00 off three equal lines is 34 + 33 + 33 cents: no cent lost."""
    invoice = draft(500, 500, 500, discount=discount(amount_off=usd(100)))
    assert invoice.line_discounts == (usd(34), usd(33), usd(33))
    assert invoice.total == usd(1400)


def test_an_amount_coupon_larger_than_the_invoice_caps_at_the_positive_subtotal():
    invoice = draft(300, 200, -100, discount=discount(amount_off=usd(10_000)))
    assert invoice.discount == usd(500)
    assert invoice.line_discounts == (usd(300), usd(200), usd(0))
    assert invoice.total == usd(-100)
    assert invoice.amount_due == usd(0)


def test_credit_lines_and_non_discountable_lines_are_not_discounted():
    lines = [line(1000), line(1000, discountable=False), line(-500)]
    invoice = draft(lines=lines, discount=discount(percent_off=50))
    assert invoice.line_discounts == (usd(500), usd(0), usd(0))


def test_a_coupon_with_nothing_to_discount_still_names_the_coupon():
    invoice = draft(-500, discount=discount(percent_off=50))
    assert invoice.discount == usd(0)
    assert invoice.discount_coupon_id == "coupon"


def test_a_used_up_or_future_discount_does_not_apply():
    used = discount(percent_off=50).used()
    future = Discount.begin(Coupon("later", percent_off=50), AT + timedelta(days=1))
    for inactive in (used, future):
        invoice = draft(1000, discount=inactive)
        assert invoice.discount == usd(0)
        assert invoice.discount_coupon_id is None


def test_a_coupon_in_another_currency_is_refused():
    with pytest.raises(CurrencyMismatch):
        draft(1000, discount=discount(amount_off=Money(100, "EUR")))


def test_exclusive_vat_of_20_percent_on_ten_dollars_adds_two_dollars():
    invoice = draft(1000, tax_calculator=FixedTaxRates((VAT,)))
    assert invoice.tax == usd(200)
    assert invoice.total == usd(1200)
    assert invoice.inclusive_tax == usd(0)
    (tax,) = invoice.line_taxes[0]
    assert (tax.tax_rate, tax.taxable, tax.amount, tax.inclusive) == (
        VAT,
        usd(1000),
        usd(200),
        False,
    )


def test_inclusive_vat_of_20_percent_in_twelve_dollars_is_two_dollars_inside():
    invoice = draft(1200, tax_calculator=FixedTaxRates([VAT_INCLUSIVE]))
    assert invoice.inclusive_tax == usd(200)
    assert invoice.tax == usd(0)
    assert invoice.total == usd(1200)
    assert invoice.line_taxes[0][0].inclusive


def test_tax_is_computed_after_the_line_discount():
    invoice = draft(1000, discount=discount(percent_off=10), tax_calculator=FixedTaxRates([VAT]))
    assert invoice.tax == usd(180)
    assert invoice.total == usd(1000 - 100 + 180)


def test_several_exclusive_rates_each_apply_to_the_same_base():
    state = TaxRate("state", "State", Decimal("6.25"))
    city = TaxRate("city", "City", Decimal("2.625"))
    invoice = draft(lines=[line(1000, tax_rates=[state, city])])
    assert [t.amount for t in invoice.line_taxes[0]] == [usd(62), usd(26)]
    assert invoice.tax == usd(88)


def test_several_inclusive_rates_share_the_same_net_amount():
    """$12.00 with 10 % + 10 % inside: net $10.00, each tax $1.00."""
    rates = [TaxRate(n, n, 10, inclusive=True) for n in ("a", "b")]
    invoice = draft(lines=[line(1200, tax_rates=rates)])
    assert [t.amount for t in invoice.line_taxes[0]] == [usd(100), usd(100)]


def test_mixing_inclusive_and_exclusive_rates_on_one_line_is_refused():
    with pytest.raises(ValidationError, match="all inclusive or all exclusive"):
        draft(lines=[line(1000, tax_rates=[VAT, VAT_INCLUSIVE])])


def test_a_lines_own_rates_win_over_the_calculator():
    gst = TaxRate("gst", "GST", 5)
    invoice = draft(
        lines=[line(1000, tax_rates=[gst]), line(1000)], tax_calculator=FixedTaxRates([VAT])
    )
    assert [t.amount for taxes in invoice.line_taxes for t in taxes] == [usd(50), usd(200)]


def test_no_tax_taxes_nothing():
    assert draft(1000, tax_calculator=NoTax()).tax == usd(0)


def test_a_credit_line_gets_negative_tax():
    invoice = draft(-1000, tax_calculator=FixedTaxRates([VAT]))
    assert invoice.tax == usd(-200)
    assert invoice.total == usd(-1200)


def test_tax_rounds_half_to_even():
    """25 % of 2 cents and of 6 cents: 0.5 → 0 and 1.5 → 2."""
    invoice = draft(
        lines=[
            line(2, tax_rates=[TaxRate("h", "H", 25)]),
            line(6, tax_rates=[TaxRate("h", "H", 25)]),
        ]
    )
    assert [t.amount for taxes in invoice.line_taxes for t in taxes] == [usd(0), usd(2)]


def test_a_credit_balance_partially_covers_the_invoice():
    invoice = draft(1000, credit_balance=usd(300))
    assert invoice.credit_applied == usd(300)
    assert invoice.amount_due == usd(700)
    assert customer_balance_after(invoice, usd(300)) == usd(0)


def test_a_credit_balance_fully_covers_the_invoice_and_the_rest_stays():
    invoice = draft(1000, credit_balance=usd(2500))
    assert invoice.credit_applied == usd(1000)
    assert invoice.amount_due == usd(0)
    assert customer_balance_after(invoice, usd(2500)) == usd(1500)


def test_a_negative_total_becomes_customer_credit():
    invoice = draft(1000, -1500, credit_balance=usd(200))
    assert invoice.total == usd(-500)
    assert invoice.credit_applied == usd(0)
    assert invoice.amount_due == usd(0)
    assert invoice.credit_generated == usd(500)
    assert customer_balance_after(invoice, usd(200)) == usd(700)


def test_a_positive_total_generates_no_credit():
    assert draft(100).credit_generated == usd(0)


def test_the_balance_after_must_start_from_the_balance_the_invoice_used():
    invoice = draft(1000, credit_balance=usd(300))
    with pytest.raises(ValidationError, match="smaller than the credit"):
        customer_balance_after(invoice, usd(100))
    with pytest.raises(CurrencyMismatch):
        customer_balance_after(invoice, Money(300, "EUR"))


def test_an_empty_manual_draft_is_allowed_but_not_a_subscription_invoice():
    assert draft().total == usd(0)
    with pytest.raises(ValidationError, match="at least one line"):
        draft(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)


def test_billing_reasons_are_accepted_by_value():
    assert (
        draft(100, billing_reason="subscription_cycle").billing_reason
        is BillingReason.SUBSCRIPTION_CYCLE
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lines": [line(100, "EUR")]}, CurrencyMismatch, "line 0 amount is in EUR"),
        ({"lines": [line(100, quantity=-1)]}, ValidationError, "quantity"),
        ({"lines": [line(100, quantity=1.5)]}, ValidationError, "quantity"),
        ({"lines": [100]}, ValidationError, "must be an InvoiceLine"),
        ({"credit_balance": 300}, ValidationError, "must be Money"),
        ({"credit_balance": 3.0}, ValidationError, "must be Money"),
        ({"credit_balance": Money(300, "EUR")}, CurrencyMismatch, "credit_balance"),
        ({"credit_balance": usd(-1)}, ValidationError, "must not be negative"),
        ({"days_until_due": -1}, ValidationError, "days_until_due"),
        ({"days_until_due": 1.5}, ValidationError, "days_until_due"),
        ({"period": "january"}, ValidationError, "period"),
        ({"billing_reason": "whim"}, ValidationError, "billing_reason"),
        ({"invoice_id": ""}, ValidationError, "invoice_id"),
        ({"customer_id": None}, ValidationError, "customer_id"),
        ({"currency": "XXX"}, UnknownCurrency, "XXX"),
        ({"at": datetime(2026, 1, 1)}, NaiveDatetime, "timezone"),  # noqa: DTZ001
    ],
)
def test_bad_input_raises_typed_errors(kwargs, error, match):
    arguments = {"invoice_id": "in_1", "customer_id": "cus_1", "currency": "USD", "at": AT}
    arguments["lines"] = [line(100)]
    arguments.update(kwargs)
    with pytest.raises(error, match=match) as raised:
        build_invoice(**arguments)
    assert raised.value.to_dict()["code"] == error.code


def test_floats_never_become_money():
    with pytest.raises(ValidationError):
        line(10.5)  # type: ignore[arg-type]


def test_the_constructor_checks_currencies_alignment_and_the_total():
    invoice = draft(1000, tax_calculator=FixedTaxRates([VAT]))
    with pytest.raises(CurrencyMismatch, match="discount"):
        attrs.evolve(invoice, discount=Money(0, "EUR"))
    with pytest.raises(CurrencyMismatch, match="tax"):
        attrs.evolve(invoice, tax=200)
    with pytest.raises(ValidationError, match="aligned"):
        attrs.evolve(invoice, line_discounts=())
    with pytest.raises(ValidationError, match="subtotal − discount \\+ tax"):
        attrs.evolve(invoice, total=usd(1000))
    with pytest.raises(ValidationError, match="status"):
        attrs.evolve(invoice, status="lost")
    with pytest.raises(NaiveDatetime):
        attrs.evolve(invoice, paid_at=datetime(2026, 1, 1))  # noqa: DTZ001


def test_the_constructor_accepts_lists_and_stores_tuples():
    invoice = draft(100)
    rebuilt = attrs.evolve(
        invoice, lines=list(invoice.lines), line_taxes=[[]], line_discounts=[usd(0)]
    )
    assert rebuilt == invoice


# --- state machine --------------------------------------------------------------------------


def test_finalizing_opens_the_draft_under_its_number():
    invoice = open_invoice(1000)
    assert invoice.status is InvoiceStatus.OPEN
    assert invoice.number == "LQ-000001"
    assert invoice.finalized_at == AT
    assert invoice.amount_remaining == usd(1000)


def test_finalizing_with_nothing_due_pays_the_invoice_at_once():
    invoice = open_invoice(1000, credit_balance=usd(1000))
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.paid_at == AT
    assert invoice.amount_paid == usd(0)
    assert invoice.amount_remaining == usd(0)


def test_finalizing_needs_a_number():
    with pytest.raises(ValidationError, match="number"):
        finalize(draft(100), number="", at=AT)


@pytest.mark.parametrize(
    "options",
    [{}, {"credit_balance": usd(1000)}, {"subscription_id": "sub_1", "period": JANUARY}],
    ids=["open", "nothing due", "a cycle invoice"],
)
def test_building_with_a_number_gives_the_finalized_draft(options: dict) -> None:
    built = draft(1000, number="LQ-000001", **options)
    assert built == open_invoice(1000, **options)
    assert list(vars(built)) == [f.name for f in attrs.fields(Invoice)]
    assert built == _rebuilt(built)


def test_building_with_an_empty_number_is_refused():
    with pytest.raises(ValidationError, match="number"):
        draft(100, number="")


def test_paying_an_open_invoice_in_full():
    invoice = pay(open_invoice(1000), at=LATER)
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.amount_paid == usd(1000)
    assert invoice.paid_at == LATER
    assert pay(open_invoice(1000), at=LATER, amount=usd(1000)) == invoice


def test_partial_or_foreign_payments_are_refused():
    invoice = open_invoice(1000)
    with pytest.raises(ValidationError, match="paid in full only") as raised:
        pay(invoice, at=LATER, amount=usd(500))
    assert raised.value.details["amount_due"] == 1000
    with pytest.raises(CurrencyMismatch):
        pay(invoice, at=LATER, amount=Money(1000, "EUR"))


def test_an_uncollectible_invoice_can_still_be_paid():
    invoice = mark_uncollectible(open_invoice(1000), LATER)
    assert invoice.status is InvoiceStatus.UNCOLLECTIBLE
    assert invoice.marked_uncollectible_at == LATER
    assert invoice.amount_remaining == usd(1000)
    assert pay(invoice, at=LATER).status is InvoiceStatus.PAID


def test_voiding_an_open_invoice():
    invoice = void(open_invoice(1000), LATER)
    assert invoice.status is InvoiceStatus.VOID
    assert invoice.voided_at == LATER
    assert invoice.amount_remaining == usd(0)


def _in_status(status: InvoiceStatus) -> Invoice:
    invoice = open_invoice(1000)
    return {
        InvoiceStatus.DRAFT: draft(1000),
        InvoiceStatus.OPEN: invoice,
        InvoiceStatus.PAID: pay(invoice, at=LATER),
        InvoiceStatus.VOID: void(invoice, LATER),
        InvoiceStatus.UNCOLLECTIBLE: mark_uncollectible(invoice, LATER),
    }[status]


ALLOWED = {
    "finalize": {InvoiceStatus.DRAFT},
    "pay": {InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE},
    "void": {InvoiceStatus.OPEN},
    "mark_uncollectible": {InvoiceStatus.OPEN},
    "issue_credit_note": {InvoiceStatus.OPEN, InvoiceStatus.PAID},
    "record_refund": {InvoiceStatus.PAID},
}
OPERATIONS = {
    "finalize": lambda inv: finalize(inv, number="LQ-000002", at=LATER),
    "pay": lambda inv: pay(inv, at=LATER),
    "void": lambda inv: void(inv, LATER),
    "mark_uncollectible": lambda inv: mark_uncollectible(inv, LATER),
    "issue_credit_note": lambda inv: issue_credit_note(
        inv,
        credit_note_id="cn_1",
        number="CN-1",
        amount=usd(1),
        at=LATER,
        reason="x",
        outcome="credit_balance",
    ),
    "record_refund": lambda inv: record_refund(inv, amount=usd(1), at=LATER),
}
REFUSED = [
    (operation, status)
    for operation in OPERATIONS
    for status in InvoiceStatus
    if status not in ALLOWED[operation]
]


@pytest.mark.parametrize(("operation", "status"), REFUSED)
def test_every_other_transition_is_refused_naming_the_operation_and_status(operation, status):
    invoice = _in_status(status)
    with pytest.raises(InvalidTransition) as raised:
        OPERATIONS[operation](invoice)
    assert f"cannot {operation} invoice in_1: it is {status}" == raised.value.message
    assert raised.value.details == {
        "invoice_id": "in_1",
        "operation": operation,
        "status": str(status),
    }
    assert raised.value.code == "INVALID_STATE_TRANSITION"


# --- numbering ------------------------------------------------------------------------------


def test_invoice_numbers_are_zero_padded_after_the_prefix():
    assert format_invoice_number("LQ", 42) == "LQ-000042"
    assert format_invoice_number("LQ2026", 1_234_567) == "LQ2026-1234567"


@pytest.mark.parametrize("prefix", ["", "lq", "LQ-", "ABCDEFGHIJKLM", 7])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(ValidationError, match="prefix"):
        format_invoice_number(prefix, 1)


@pytest.mark.parametrize("sequence", [0, -1, 1.0, True])
def test_sequences_start_at_one(sequence):
    with pytest.raises(ValidationError, match="sequence"):
        format_invoice_number("LQ", sequence)


def test_a_numbering_hands_out_consecutive_numbers_without_changing():
    numbering = InvoiceNumbering("LQ")
    first, after_first = numbering.take()
    second, after_second = after_first.take()
    assert (first, second) == ("LQ-000001", "LQ-000002")
    assert after_second.next_sequence == 3
    assert numbering.next_sequence == 1
    with pytest.raises(ValidationError):
        InvoiceNumbering("LQ", 0)


# --- credit notes and refunds -----------------------------------------------------------------


def credit(invoice: Invoice, amount: int, outcome=None) -> tuple[CreditNote, Invoice]:
    return issue_credit_note(
        invoice,
        credit_note_id="cn_1",
        number="LQ-000001-CN-01",
        amount=usd(amount),
        at=LATER,
        reason="order_change",
        outcome=outcome,
        memo="goodwill",
    )


def test_a_credit_note_on_an_open_invoice_reduces_the_amount_due():
    note, invoice = credit(open_invoice(1000), 300)
    assert note.outcome is CreditNoteOutcome.REDUCE_AMOUNT_DUE
    assert (note.invoice_id, note.customer_id, note.amount, note.memo) == (
        "in_1",
        "cus_1",
        usd(300),
        "goodwill",
    )
    assert note.created_at == LATER
    assert invoice.status is InvoiceStatus.OPEN
    assert invoice.amount_due == usd(700)
    assert invoice.amount_credited == usd(300)
    assert invoice.total == usd(1000)


def test_an_open_invoice_credited_down_to_zero_is_paid():
    _, invoice = credit(open_invoice(1000), 1000, "reduce_amount_due")
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.paid_at == LATER
    assert invoice.amount_paid == usd(0)


def test_an_open_invoice_cannot_be_over_credited_or_refunded():
    invoice = open_invoice(1000)
    with pytest.raises(ValidationError, match=r"at most USD 10\.00") as raised:
        credit(invoice, 1001)
    assert raised.value.details["limit"] == 1000
    with pytest.raises(ValidationError, match="reducing its amount due"):
        credit(invoice, 100, CreditNoteOutcome.REFUND)


def test_a_credit_note_on_a_paid_invoice_can_refund():
    paid = pay(open_invoice(1000), at=LATER)
    note, invoice = credit(paid, 400, CreditNoteOutcome.REFUND)
    assert note.outcome is CreditNoteOutcome.REFUND
    assert invoice.amount_credited == invoice.amount_refunded == usd(400)
    assert invoice.status is InvoiceStatus.PAID


def test_a_credit_note_on_a_paid_invoice_can_credit_the_balance():
    paid = pay(open_invoice(1000), at=LATER)
    note, invoice = credit(paid, 1000, "credit_balance")
    assert note.outcome is CreditNoteOutcome.CREDIT_BALANCE
    assert invoice.amount_credited == usd(1000)
    assert invoice.amount_refunded == usd(0)


def test_a_paid_invoice_needs_a_refund_or_balance_outcome():
    paid = pay(open_invoice(1000), at=LATER)
    with pytest.raises(ValidationError, match="needs outcome"):
        credit(paid, 100)
    with pytest.raises(ValidationError, match="needs outcome"):
        credit(paid, 100, CreditNoteOutcome.REDUCE_AMOUNT_DUE)
    with pytest.raises(ValidationError, match="outcome must be one of"):
        credit(paid, 100, "cash")


def test_the_total_credited_never_exceeds_the_invoice_total():
    paid = pay(open_invoice(1000), at=LATER)
    _, once = credit(paid, 600, "credit_balance")
    with pytest.raises(ValidationError, match=r"at most USD 4\.00"):
        credit(once, 401, "credit_balance")
    _, twice = credit(once, 400, "credit_balance")
    assert twice.amount_credited == twice.total


def test_only_money_actually_paid_can_be_refunded_by_a_credit_note():
    """$10.00 covered $3.00 by balance: at most $7.00 goes back through the gateway."""
    paid = pay(open_invoice(1000, credit_balance=usd(300)), at=LATER)
    with pytest.raises(ValidationError, match="cannot refund"):
        credit(paid, 701, "refund")
    _, refunded = credit(paid, 700, "refund")
    _, rest = credit(refunded, 300, "credit_balance")
    assert rest.amount_credited == usd(1000)


@pytest.mark.parametrize("amount", [usd(0), usd(-100), 100, Money(100, "EUR")])
def test_credit_note_amounts_are_positive_money_in_the_invoice_currency(amount):
    with pytest.raises(ValidationError):
        issue_credit_note(
            open_invoice(1000),
            credit_note_id="cn_1",
            number="CN",
            amount=amount,
            at=LATER,
            reason="x",
        )


def test_credit_notes_need_ids_and_numbers():
    with pytest.raises(ValidationError, match="credit_note_id"):
        issue_credit_note(
            open_invoice(1000), credit_note_id="", number="CN", amount=usd(1), at=LATER, reason=""
        )
    with pytest.raises(ValidationError, match="number"):
        issue_credit_note(
            open_invoice(1000), credit_note_id="cn", number=" ", amount=usd(1), at=LATER, reason=""
        )


def test_recording_refunds_up_to_what_was_paid():
    paid = pay(open_invoice(1000), at=LATER)
    once = record_refund(paid, amount=usd(600), at=LATER)
    assert once.amount_refunded == usd(600)
    with pytest.raises(ValidationError, match=r"at most USD 4\.00"):
        record_refund(once, amount=usd(401), at=LATER)
    assert record_refund(once, amount=usd(400), at=LATER).amount_refunded == usd(1000)
    with pytest.raises(ValidationError, match="positive"):
        record_refund(once, amount=usd(0), at=LATER)


def test_refund_and_credit_note_values_refuse_non_positive_amounts():
    assert Refund("re_1", "pay_1", "in_1", usd(100), "duplicate", AT).amount == usd(100)
    with pytest.raises(ValidationError):
        Refund("re_1", "pay_1", "in_1", usd(0), "duplicate", AT)
    with pytest.raises(ValidationError):
        CreditNote("cn", "CN", "in_1", "cus_1", 100, "x", "refund", AT)


# --- usage ------------------------------------------------------------------------------------


METERED = Price(
    "price_api",
    "plan_api",
    "USD",
    BillingCycle(Interval.MONTH),
    unit_amount=usd(2),
    usage_type=UsageType.METERED,
    nickname="API calls",
)


def test_a_usage_line_bills_the_quantity_used_in_its_period():
    usage = usage_line(METERED, quantity=1500, period=JANUARY, subscription_id="sub_1")
    assert usage.kind is LineKind.USAGE
    assert usage.amount == usd(3000)
    assert (usage.quantity, usage.period, usage.price_id, usage.subscription_id) == (
        1500,
        JANUARY,
        "price_api",
        "sub_1",
    )
    assert usage.description == "1500 × API calls (usage)"


def test_usage_lines_refuse_negative_quantities_licensed_prices_and_missing_periods():
    with pytest.raises(ValidationError, match="quantity"):
        usage_line(METERED, quantity=-1, period=JANUARY)
    with pytest.raises(ValidationError, match="metered"):
        usage_line(attrs.evolve(METERED, usage_type=UsageType.LICENSED), quantity=1, period=JANUARY)
    with pytest.raises(ValidationError, match="metered"):
        usage_line("price_api", quantity=1, period=JANUARY)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Period"):
        usage_line(METERED, quantity=1, period=None)  # type: ignore[arg-type]


def _rebuilt(invoice: Invoice) -> Invoice:
    """Return the invoice built again by its validating constructor, field by field."""
    return Invoice(**{f.name: getattr(invoice, f.name) for f in attrs.fields(Invoice)})


def test_a_draft_and_its_finalized_and_paid_copies_hold_every_field_in_field_order():
    # Drafts copy a template, and finalize and pay copy the state: each invoice must be
    # what the constructor would build, every field present and in the class's order.
    names = [f.name for f in attrs.fields(Invoice)]
    built = draft(1000, subscription_id="sub_1", period=JANUARY)
    opened = finalize(built, number="LQ-000007", at=LATER)
    paid = pay(opened, at=LATER)
    for invoice in (built, opened, paid):
        assert list(vars(invoice)) == names
        assert invoice == _rebuilt(invoice)
    assert (opened.status, opened.number, opened.finalized_at) == (
        InvoiceStatus.OPEN,
        "LQ-000007",
        LATER,
    )
    assert opened.paid_at is None
    assert (paid.status, paid.paid_at, paid.amount_paid) == (InvoiceStatus.PAID, LATER, usd(1000))
    assert built.status is InvoiceStatus.DRAFT  # the draft itself is not changed
    assert built.number is None


def test_a_draft_with_nothing_due_is_paid_as_it_is_finalized():
    paid = finalize(draft(0), number="LQ-000008", at=LATER)
    assert (paid.status, paid.finalized_at, paid.paid_at) == (InvoiceStatus.PAID, LATER, LATER)
    assert list(vars(paid)) == [f.name for f in attrs.fields(Invoice)]
