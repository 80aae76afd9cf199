"""Exact money: integer minor units tagged with an ISO 4217 currency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final

import attrs

from lumenquest_core.errors import CurrencyMismatch, UnknownCurrency, ValidationError

__all__ = [
    "CURRENCY_EXPONENTS",
    "Money",
    "allocate",
    "currency_exponent",
    "round_half_even",
    "shared_money",
]

# Whitespace-separated tables read better than a list of 180 quoted codes.
_ZERO_DECIMAL = ("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF").split()
_THREE_DECIMAL = ("BHD IQD JOD KWD LYD OMR TND").split()
_FOUR_DECIMAL = ("CLF UYW").split()
_TWO_DECIMAL = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN"
    " BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB"
    " EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS"
    " KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN"
    " MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD"
    " SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS"
    " UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
).split()

CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    **dict.fromkeys(_TWO_DECIMAL, 2),
    **dict.fromkeys(_ZERO_DECIMAL, 0),
    **dict.fromkeys(_THREE_DECIMAL, 3),
    **dict.fromkeys(_FOUR_DECIMAL, 4),
}
"""Minor-unit exponent of every active ISO 4217 currency (USD 2, JPY 0, BHD 3)."""


def currency_exponent(currency: str) -> int:
    """Return how many decimal places the currency's minor unit has."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except (KeyError, TypeError):
        raise UnknownCurrency(
            f"unknown currency {currency!r}: expected an ISO 4217 code such as 'USD'",
            details={"currency": currency},
        ) from None


def round_half_even(numerator: int, denominator: int) -> int:
    """Return numerator/denominator rounded half to even, in integer arithmetic."""
    if denominator <= 0:
        raise ValidationError("denominator must be positive", details={"denominator": denominator})
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient & 1):
        quotient += 1
    return quotient


def _validate_amount(_instance: Money, _attribute: object, value: Any) -> None:
    # bool is an int subclass; True cents is a bug, never an amount.
    if type(value) is not int:
        raise ValidationError(
            f"Money amount must be an int of minor units, not {type(value).__name__}"
            " (use Money.from_decimal for decimal amounts; floats are never accepted)",
            details={"amount": repr(value)},
        )


def _validate_currency(_instance: Money, _attribute: object, value: Any) -> None:
    currency_exponent(value)


@attrs.frozen(order=False)
class Money:
    """An exact amount in a currency's minor units: ``Money(1000, "USD")`` is $10.00."""

    amount: int = attrs.field(validator=_validate_amount)
    currency: str = attrs.field(validator=_validate_currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Return zero in ``currency``."""
        return cls(0, currency)

    @classmethod
    def from_decimal(cls, value: Decimal | int | str, currency: str) -> Money:
        """Build Money from a major-unit decimal such as ``Decimal("12.34")``; never a float."""
        if isinstance(value, float | bool):
            raise ValidationError(
                "floats are never accepted as money; pass a Decimal or a string",
                details={"value": repr(value)},
            )
        try:
            exact = Decimal(value)
        except InvalidOperation:
            raise ValidationError(
                f"{value!r} is not a decimal number", details={"value": repr(value)}
            ) from None
        if not exact.is_finite():
            raise ValidationError(
                f"{value!r} is not a finite amount", details={"value": str(value)}
            )
        minor = exact.scaleb(currency_exponent(currency))
        if minor != minor.to_integral_value():
            raise ValidationError(
                f"{value} has more decimal places than {currency} allows",
                details={"value": str(value), "currency": currency},
            )
        return cls(int(minor), currency)

    def to_decimal(self) -> Decimal:
        """Return the amount in major units, e.g. ``Decimal("12.34")``."""
        exponent = CURRENCY_EXPONENTS[self.currency]
        return (
            Decimal(self.amount)
            .scaleb(-exponent)
            .quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_HALF_EVEN)
        )

    def _same(self, other: Money) -> None:
        if self.currency != other.currency:
            raise CurrencyMismatch(
                f"cannot combine {self.currency} with {other.currency}",
                details={"currencies": [self.currency, other.currency]},
            )

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other)
        return _money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other)
        return _money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return _money(-self.amount, self.currency)

    def __abs__(self) -> Money:
        return _money(abs(self.amount), self.currency)

    def __mul__(self, factor: int) -> Money:
        if type(factor) is not int:
            raise ValidationError(
                "Money can only be multiplied by an int; use allocate or prorate for shares",
                details={"factor": repr(factor)},
            )
        return _money(self.amount * factor, self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.amount >= other.amount

    def __bool__(self) -> bool:
        return self.amount != 0

    def __str__(self) -> str:
        return f"{self.currency} {self.to_decimal()}"

    def __repr__(self) -> str:
        return f"Money({self.amount}, {self.currency!r})"


# The slots' own setters: calling them skips the frozen __setattr__ and the validators, and
# costs less than object.__setattr__, which has to look the attribute up by name first.
_set_amount = Money.__dict__["amount"].__set__
_set_currency = Money.__dict__["currency"].__set__
_new = object.__new__


# The Money the hot paths build, shared per value: Money is immutable, so one object serves
# every equal amount, and a billing run mostly meets the same few (its prices, their sums,
# zero). A renewal used to leave three new ones alive in its invoice, each an object the
# cyclic garbage collector walks on every collection of its generation.
_SHARED_PER_CURRENCY = 1024  # bounded: amounts past this many are built anew again


class _Amounts(dict[int, "Money"]):
    """One currency's shared Money by amount; ``amounts[n]`` builds a missing one.

    A subscript that finds the amount is one C-level lookup: a storage adapter rebuilding
    an invoice's ten amounts reads them without a Python call each.
    """

    __slots__ = ("currency",)

    def __init__(self, currency: str) -> None:
        super().__init__()
        self.currency = currency

    def __missing__(self, amount: int) -> Money:
        money = _new(Money)
        _set_amount(money, amount)
        _set_currency(money, self.currency)
        if len(self) >= _SHARED_PER_CURRENCY:
            self.clear()  # a long run meets ever new amounts: start over
        self[amount] = money
        return money


class _Currencies(dict[str, _Amounts]):
    __slots__ = ()

    def __missing__(self, currency: str) -> _Amounts:
        return self.setdefault(currency, _Amounts(currency))


_SHARED = _Currencies()


def shared_money(currency: str) -> Mapping[int, Money]:
    """Return the shared Money of ``currency`` by amount, for values already known valid.

    ``shared_money(c)[n]`` is ``Money(n, c)`` without validation: for storage adapters
    rebuilding amounts they stored, whose currency and int amount were checked when made.
    """
    return _SHARED[currency]


# The same shared Money in plain dicts, for _money: Python 3.11 specializes a subscript of
# an exact dict, while one of a dict subclass (_Amounts, whose __missing__ shared_money's
# readers rely on) goes through a generic slot and a method call, about 220 instructions
# each; a renewal builds five Money (run_due over 3,000: see the commit).
_FOUND: dict[str, dict[int, Money]] = {}


def _money(amount: int, currency: str) -> Money:
    """Build Money from values already known valid, skipping validation on hot paths."""
    try:
        return _FOUND[currency][amount]
    except KeyError:
        return _found(amount, currency)


def _found(amount: int, currency: str) -> Money:
    """Return the shared ``Money(amount, currency)``, remembered for :func:`_money`."""
    money = _SHARED[currency][amount]
    found = _FOUND.get(currency)
    if found is None:
        found = _FOUND[currency] = {}
    elif len(found) >= _SHARED_PER_CURRENCY:
        found.clear()  # bounded as _SHARED is
    found[amount] = money
    return money


def allocate(total: Money, weights: Sequence[int]) -> list[Money]:
    """Split ``total`` in proportion to ``weights``; the parts always sum to ``total``."""
    if not weights:
        raise ValidationError("allocate needs at least one weight")
    for weight in weights:
        if type(weight) is not int or weight < 0:
            raise ValidationError(
                "weights must be non-negative ints", details={"weights": [repr(w) for w in weights]}
            )
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValidationError("weights must not all be zero")
    sign = -1 if total.amount < 0 else 1
    magnitude = abs(total.amount)
    shares = [divmod(magnitude * w, weight_sum) for w in weights]
    parts = [share for share, _ in shares]
    leftover = magnitude - sum(parts)
    # Largest remainder first; ties go to the earlier weight so the split is deterministic.
    by_remainder = sorted(range(len(weights)), key=lambda i: (-shares[i][1], i))
    for index in by_remainder[:leftover]:
        parts[index] += 1
    return [_money(sign * part, total.currency) for part in parts]
