"""Customers, tax rates, payments and usage records refuse what they cannot represent."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import attrs
import pytest

from lumenquest_core._trusted import evolve_trusted, new_trusted
from lumenquest_core.customers import Customer, Role, normalize_email
from lumenquest_core.errors import CurrencyMismatch, ValidationError
from lumenquest_core.lines import TaxRate
from lumenquest_core.money import Money
from lumenquest_core.payments import Payment, PaymentStatus, SubscriptionChange, UsageRecord

JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)


def customer(**changes: object) -> Customer:
    values: dict[str, object] = {"id": "cus_1", "email": "ada@example.com", "created_at": JAN_1}
    return Customer(**{**values, **changes})  # type: ignore[arg-type]


def payment(status: PaymentStatus, refunded: int | None = None) -> Payment:
    return Payment(
        id="pay_1",
        invoice_id="in_1",
        customer_id="cus_1",
        amount=Money(1000, "USD"),
        status=status,
        idempotency_key="in_1:1",
        attempt=1,
        created_at=JAN_1,
        amount_refunded=None if refunded is None else Money(refunded, "USD"),
    )


# -- customers ------------------------------------------------------------------------


def test_an_email_is_stored_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"
    assert customer(email="ADA@example.com").email == "ada@example.com"


@pytest.mark.parametrize(
    "email",
    [
        "",
        "ada",
        "ada@example",
        "@example.com",
        "ada@@example.com",
        "a da@example.com",
        "ada@ex ample.com",
    ],
)
def test_a_malformed_email_is_refused(email: str) -> None:
    with pytest.raises(ValidationError) as raised:
        normalize_email(email)
    assert raised.value.details == {"field": "email", "reason": "invalid format"}


def test_an_email_longer_than_254_characters_is_refused() -> None:
    local = "a" * 64
    fits = f"{local}@{'b' * (254 - 64 - 1 - 4)}.com"
    assert len(fits) == 254
    assert normalize_email(fits) == fits
    with pytest.raises(ValidationError):
        normalize_email("x" + fits)


@pytest.mark.parametrize("email", [None, 42, b"ada@example.com"])
def test_an_email_that_is_not_a_string_is_refused(email: object) -> None:
    with pytest.raises(ValidationError) as raised:
        normalize_email(email)  # type: ignore[arg-type]
    assert raised.value.details == {"field": "email"}
    with pytest.raises(ValidationError):
        customer(email=email)


def test_a_customer_without_a_currency_has_no_balance_and_one_with_a_currency_starts_at_zero() -> (
    None
):
    assert customer().balance() is None
    assert customer(currency="EUR").balance() == Money(0, "EUR")
    assert customer(currency="EUR", credit_balance=Money(250, "EUR")).balance() == Money(250, "EUR")


def test_a_credit_balance_in_another_currency_than_the_customers_is_refused() -> None:
    with pytest.raises(CurrencyMismatch):
        customer(currency="USD", credit_balance=Money(100, "EUR"))
    with pytest.raises(CurrencyMismatch):
        customer(credit_balance=Money(100, "EUR"))  # no currency yet: no balance either


def test_a_customer_is_bound_to_the_first_currency_it_bills_in_and_only_that_one() -> None:
    unbound = customer()
    bound = unbound.with_currency("EUR")
    assert bound.currency == "EUR"
    assert unbound.currency is None  # customers are immutable
    assert bound.with_currency("EUR") is bound
    with pytest.raises(CurrencyMismatch) as raised:
        bound.with_currency("USD")
    assert raised.value.details == {"customer_currency": "EUR", "currency": "USD"}


def test_an_unknown_currency_is_refused_and_a_role_may_be_given_by_name() -> None:
    with pytest.raises(ValidationError):
        customer(currency="XXXX")
    assert customer(role="admin").role is Role.ADMIN


# -- tax rates ------------------------------------------------------------------------


@pytest.mark.parametrize("percentage", [20, "20", Decimal("7.5"), 0, "999.99"])
def test_a_tax_percentage_is_an_exact_decimal(percentage: object) -> None:
    rate = TaxRate("vat", "VAT", percentage)
    assert rate.percentage == Decimal(str(percentage))


@pytest.mark.parametrize("percentage", [20.0, 0.1, True, None, [20]])
def test_a_tax_percentage_that_is_a_float_or_not_a_number_is_refused(percentage: object) -> None:
    with pytest.raises(ValidationError, match="never a float"):
        TaxRate("vat", "VAT", percentage)


@pytest.mark.parametrize("percentage", [-1, "-0.01", 1000, "NaN", "Infinity"])
def test_a_tax_percentage_out_of_range_is_refused(percentage: object) -> None:
    with pytest.raises(ValidationError, match="out of range"):
        TaxRate("vat", "VAT", percentage)


# -- payments and usage -----------------------------------------------------------------


def test_only_a_successful_payment_can_be_refunded_and_only_what_is_left_of_it() -> None:
    assert payment(PaymentStatus.SUCCEEDED).refundable() == Money(1000, "USD")
    assert payment(PaymentStatus.SUCCEEDED, refunded=300).refundable() == Money(700, "USD")
    assert payment(PaymentStatus.FAILED).refundable() == Money(0, "USD")
    assert payment(PaymentStatus.PENDING).refundable() == Money(0, "USD")


@pytest.mark.parametrize("quantity", [-1, 1.0, True, "3", None])
def test_a_usage_quantity_must_be_a_non_negative_int(quantity: object) -> None:
    with pytest.raises(ValidationError) as raised:
        UsageRecord("usage_1", "sub_1", quantity, JAN_1)  # type: ignore[arg-type]
    assert raised.value.details == {"quantity": repr(quantity)}


def test_zero_usage_is_a_valid_record() -> None:
    assert UsageRecord("usage_1", "sub_1", 0, JAN_1).quantity == 0


# -- trusted construction ---------------------------------------------------------------


def change_values() -> dict[str, object]:
    return {
        "id": "chg_1",
        "subscription_id": "sub_1",
        "customer_id": "cus_1",
        "kind": "created",
        "at": JAN_1,
        "from_status": None,
        "to_status": "active",
        "from_price_id": None,
        "to_price_id": "price_1",
        "from_quantity": None,
        "to_quantity": 1,
        "mrr": Money(1000, "USD"),
    }


def test_new_trusted_builds_what_the_constructor_builds_from_the_same_values() -> None:
    trusted = new_trusted(SubscriptionChange, **change_values())
    assert trusted == SubscriptionChange(**change_values())  # type: ignore[arg-type]
    assert trusted.plan_id == ""  # a plain default


def test_new_trusted_gives_each_object_its_own_factory_default() -> None:
    first = new_trusted(SubscriptionChange, **change_values())
    second = new_trusted(SubscriptionChange, **change_values())
    assert first.data == {} == second.data
    assert first.data is not second.data


def test_new_trusted_without_a_required_field_raises_type_error() -> None:
    values = change_values()
    del values["mrr"]
    with pytest.raises(TypeError, match="SubscriptionChange needs mrr"):
        new_trusted(SubscriptionChange, **values)


def test_evolve_trusted_changes_only_the_named_fields() -> None:
    original = SubscriptionChange(**change_values())  # type: ignore[arg-type]
    changed = evolve_trusted(original, to_quantity=3)
    assert changed == attrs.evolve(original, to_quantity=3)
    assert original.to_quantity == 1
