from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumenquest_core.errors import CurrencyMismatch, UnknownCurrency, ValidationError
from lumenquest_core.money import Money, allocate, currency_exponent, round_half_even


def test_amounts_are_minor_units_of_the_currency():
    assert str(Money(1234, "USD")) == "USD 12.34"
    assert str(Money(1234, "JPY")) == "JPY 1234"
    assert str(Money(1234, "BHD")) == "BHD 1.234"
    assert str(Money(-500, "USD")) == "USD -5.00"


def test_currency_exponents_follow_iso_4217():
    assert (currency_exponent("USD"), currency_exponent("JPY"), currency_exponent("BHD")) == (
        2,
        0,
        3,
    )


@pytest.mark.parametrize("bad", [12.5, True, "12", Decimal("1"), None])
def test_an_amount_that_is_not_an_int_is_refused(bad):
    with pytest.raises(ValidationError, match="int of minor units"):
        Money(bad, "USD")


@pytest.mark.parametrize("bad", ["XYZ", "usd", "", None])
def test_an_unknown_currency_is_refused(bad):
    with pytest.raises(UnknownCurrency) as info:
        Money(1, bad)
    assert info.value.code == "UNKNOWN_CURRENCY"


def test_arithmetic_keeps_the_currency():
    a, b = Money(1000, "USD"), Money(250, "USD")
    assert a + b == Money(1250, "USD")
    assert a - b == Money(750, "USD")
    assert -a == Money(-1000, "USD")
    assert abs(Money(-3, "USD")) == Money(3, "USD")
    assert a * 3 == Money(3000, "USD")
    assert 3 * a == Money(3000, "USD")
    assert b < a
    assert b <= a
    assert a > b
    assert a >= b
    assert not Money.zero("EUR")
    assert Money(1, "EUR")


def test_mixing_currencies_raises_currency_mismatch():
    usd, eur = Money(1, "USD"), Money(1, "EUR")
    for operation in (
        lambda: usd + eur,
        lambda: usd - eur,
        lambda: usd < eur,
        lambda: usd <= eur,
        lambda: usd > eur,
        lambda: usd >= eur,
    ):
        with pytest.raises(CurrencyMismatch):
            operation()


def test_adding_something_that_is_not_money_is_a_type_error():
    with pytest.raises(TypeError):
        Money(1, "USD") + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        Money(1, "USD") - 1  # type: ignore[operator]


@pytest.mark.parametrize("factor", [1.5, Decimal("2"), True])
def test_money_multiplies_only_by_an_int(factor):
    with pytest.raises(ValidationError):
        Money(100, "USD") * factor


def test_from_decimal_and_back_is_exact():
    assert Money.from_decimal(Decimal("12.34"), "USD") == Money(1234, "USD")
    assert Money.from_decimal("0.001", "BHD") == Money(1, "BHD")
    assert Money.from_decimal(5, "JPY") == Money(5, "JPY")
    assert Money(1234, "USD").to_decimal() == Decimal("12.34")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (12.34, "floats are never accepted"),
        (True, "floats are never accepted"),
        ("abc", "not a decimal number"),
        ("NaN", "not a finite amount"),
        (Decimal("1.234"), "more decimal places"),
    ],
)
def test_from_decimal_refuses_inexact_or_float_input(value, message):
    with pytest.raises(ValidationError, match=message):
        Money.from_decimal(value, "USD")


def test_round_half_even_rounds_ties_to_even():
    assert [round_half_even(n, 2) for n in (1, 3, 5, -1, -3)] == [0, 2, 2, 0, -2]
    assert round_half_even(7, 3) == 2
    with pytest.raises(ValidationError):
        round_half_even(1, 0)


def test_allocate_splits_by_largest_remainder():
    assert allocate(Money(100, "USD"), [1, 1, 1]) == [
        Money(34, "USD"),
        Money(33, "USD"),
        Money(33, "USD"),
    ]
    assert allocate(Money(-100, "USD"), [1, 1, 1]) == [
        Money(-34, "USD"),
        Money(-33, "USD"),
        Money(-33, "USD"),
    ]
    assert allocate(Money(5, "USD"), [0, 3]) == [Money(0, "USD"), Money(5, "USD")]


@pytest.mark.parametrize("weights", [[], [0, 0], [-1, 2], [1.5]])
def test_allocate_refuses_bad_weights(weights):
    with pytest.raises(ValidationError):
        allocate(Money(100, "USD"), weights)


@given(
    total=st.integers(min_value=-(10**12), max_value=10**12),
    weights=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=20).filter(
        any
    ),
)
def test_allocate_always_sums_to_the_total_and_each_part_is_within_a_cent(total, weights):
    parts = allocate(Money(total, "USD"), weights)
    assert sum(p.amount for p in parts) == total
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        # |part − exact share| < 1 minor unit, compared in integers.
        assert abs(part.amount * weight_sum - total * weight) < weight_sum


def test_hot_path_money_is_shared_per_value_and_the_sharing_is_bounded():
    from lumenquest_core import money  # noqa: PLC0415 - the private builder and its cache

    # Money is immutable: equal amounts built on hot paths may be the same object.
    assert money._money(1000, "USD") is money._money(1000, "USD")
    assert money._money(1000, "USD") == Money(1000, "USD")
    assert money._money(1000, "EUR") != money._money(1000, "USD")
    for amount in range(2 * money._SHARED_PER_CURRENCY):
        assert money._money(amount, "JPY") == Money(amount, "JPY")
    assert len(money._SHARED["JPY"]) <= money._SHARED_PER_CURRENCY
    assert len(money._FOUND["JPY"]) <= money._SHARED_PER_CURRENCY
    # The plain dicts _money reads hold the very objects shared_money gives out.
    assert money._money(123_457, "XPF") is money.shared_money("XPF")[123_457]
    assert Money(1, "USD") + Money(2, "USD") == Money(3, "USD")
