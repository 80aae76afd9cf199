from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumenquest_core.coupons import Coupon, CouponDuration, Discount
from lumenquest_core.errors import CurrencyMismatch, NaiveDatetime, ValidationError
from lumenquest_core.money import Money
from tests.strategies import coupons

START = datetime(2026, 1, 1, tzinfo=UTC)


def usd(amount: int) -> Money:
    return Money(amount, "USD")


def test_percent_off_rounds_half_to_even():
    """12.5 % of $1.00 is 12.5 cents: half to even gives 12; of $1.08 it is 13.5 → 14."""
    coupon = Coupon("half", percent_off=Decimal("12.5"))
    assert coupon.amount_off_of(usd(100)) == usd(12)
    assert coupon.amount_off_of(usd(108)) == usd(14)


def test_percent_off_accepts_ints_and_strings():
    assert Coupon("a", percent_off=25).percent_off == Decimal(25)
    assert Coupon("b", percent_off="33.3").percent_off == Decimal("33.3")


def test_a_hundred_percent_coupon_takes_everything():
    assert Coupon("free", percent_off=100).amount_off_of(usd(999)) == usd(999)


def test_amount_off_is_capped_at_the_amount():
    coupon = Coupon("five", amount_off=usd(500))
    assert coupon.amount_off_of(usd(300)) == usd(300)
    assert coupon.amount_off_of(usd(800)) == usd(500)


def test_nothing_is_discounted_from_zero_or_a_credit():
    coupon = Coupon("ten", percent_off=10)
    assert coupon.amount_off_of(usd(0)) == usd(0)
    assert coupon.amount_off_of(usd(-500)) == usd(0)


def test_an_amount_coupon_in_another_currency_is_refused_even_on_zero():
    coupon = Coupon("eur", amount_off=Money(500, "EUR"))
    with pytest.raises(CurrencyMismatch):
        coupon.amount_off_of(usd(1000))
    with pytest.raises(CurrencyMismatch):
        coupon.amount_off_of(usd(0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"percent_off": 10.0},
        {"percent_off": True},
        {"percent_off": [10]},
        {"percent_off": "ten"},
        {"percent_off": 0},
        {"percent_off": 101},
        {"percent_off": "NaN"},
        {},
        {"percent_off": 10, "amount_off": usd(100)},
        {"amount_off": usd(0)},
        {"amount_off": 500},
        {"percent_off": 10, "duration": CouponDuration.REPEATING},
        {"percent_off": 10, "duration_in_cycles": 3},
        {"percent_off": 10, "duration": "repeating", "duration_in_cycles": 0},
        {"percent_off": 10, "duration": "repeating", "duration_in_cycles": 2.0},
    ],
)
def test_malformed_coupons_are_refused(kwargs):
    with pytest.raises(ValidationError) as raised:
        Coupon("bad", **kwargs)
    assert raised.value.details


def test_a_coupon_needs_an_id():
    with pytest.raises(ValidationError, match="non-empty id"):
        Coupon("", percent_off=10)


def test_an_unknown_duration_is_refused():
    with pytest.raises(ValidationError, match="sometimes"):
        Coupon("x", percent_off=10, duration="sometimes")


def test_a_once_coupon_discounts_one_invoice():
    discount = Discount.begin(Coupon("once", percent_off=10), START)
    assert discount.active
    assert not discount.recurring
    assert not discount.used().active
    assert discount.used().used().invoices_left == 0


def test_a_repeating_coupon_discounts_n_invoices():
    coupon = Coupon("three", percent_off=10, duration="repeating", duration_in_cycles=3)
    discount = Discount.begin(coupon, START)
    assert discount.recurring
    states = []
    for _ in range(4):
        states.append(discount.active)
        discount = discount.used()
    assert states == [True, True, True, False]


def test_a_forever_coupon_never_runs_out():
    discount = Discount.begin(Coupon("forever", amount_off=usd(100), duration="forever"), START)
    assert discount.invoices_left is None
    assert discount.used() is discount
    assert discount.used().active
    assert discount.recurring


def test_a_discount_applies_from_its_start_while_active():
    discount = Discount.begin(Coupon("once", percent_off=10), START)
    assert discount.applies_at(START)
    assert not discount.applies_at(datetime(2025, 12, 31, tzinfo=UTC))
    assert not discount.used().applies_at(START)


def test_a_discount_needs_aware_instants():
    coupon = Coupon("once", percent_off=10)
    with pytest.raises(NaiveDatetime):
        Discount.begin(coupon, datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(NaiveDatetime):
        Discount.begin(coupon, START).applies_at(datetime(2026, 1, 1))  # noqa: DTZ001


@pytest.mark.parametrize("left", [-1, 1.0, True])
def test_invoices_left_must_be_a_non_negative_int(left):
    with pytest.raises(ValidationError, match="invoices_left"):
        Discount(Coupon("x", percent_off=10), START, left)


@given(coupons(), st.integers(min_value=-(10**9), max_value=10**9))
def test_a_discount_is_never_negative_nor_more_than_a_positive_amount(coupon, amount):
    off = coupon.amount_off_of(usd(amount))
    assert 0 <= off.amount <= max(amount, 0)
