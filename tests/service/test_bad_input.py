"""Bad input raises a coded error and leaves nothing written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from lumenquest_core import (
    Conflict,
    CurrencyMismatch,
    InvalidTransition,
    LumenquestError,
    Money,
    NaiveDatetime,
    NotFound,
    ValidationError,
)
from tests.service.scenario import Shop, at, footprint, usd

Call = Callable[[Shop, str], object]


def active_shop() -> tuple[Shop, str]:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    return shop, sub.id


def canceled_shop() -> tuple[Shop, str]:
    shop, sub_id = active_shop()
    shop.billing.cancel(sub_id)
    return shop, sub_id


def assert_refused(shop: Shop, call: Callable[[], object], error: type[LumenquestError]) -> None:
    """Assert that ``call`` raises ``error`` and that the store, gateway and emails are unchanged."""
    exported = shop.billing.export_customer(shop.ada.id)
    before = footprint(shop.billing)
    with pytest.raises(error) as raised:
        call()
    assert raised.value.code == error.code
    assert footprint(shop.billing) == before
    assert shop.billing.export_customer(shop.ada.id) == exported


UNKNOWN_IDS: dict[str, Call] = {
    "subscribe_unknown_customer": lambda s, _: s.billing.subscribe(
        customer_id="cus_nope", price_id=s.basic.id
    ),
    "subscribe_unknown_price": lambda s, _: s.billing.subscribe(
        customer_id=s.ada.id, price_id="price_nope"
    ),
    "subscribe_unknown_coupon": lambda s, _: s.subscribe(coupon_id="coupon_nope"),
    "change_unknown_subscription": lambda s, _: s.billing.change_subscription(
        "sub_nope", quantity=2
    ),
    "change_to_unknown_price": lambda s, sub: s.billing.change_subscription(
        sub, price_id="price_nope"
    ),
    "cancel_unknown": lambda s, _: s.billing.cancel("sub_nope"),
    "pause_unknown": lambda s, _: s.billing.pause("sub_nope"),
    "refund_unknown_payment": lambda s, _: s.billing.refund("pay_nope"),
    "credit_note_unknown_invoice": lambda s, _: s.billing.issue_credit_note(
        "in_nope", amount=usd(1)
    ),
    "usage_unknown_subscription": lambda s, _: s.billing.record_usage("sub_nope", quantity=1),
    "get_unknown_customer": lambda s, _: s.billing.get_customer("cus_nope"),
    "erase_unknown_customer": lambda s, _: s.billing.erase_customer("cus_nope"),
    "export_unknown_customer": lambda s, _: s.billing.export_customer("cus_nope"),
    "price_for_unknown_plan": lambda s, _: s.billing.create_price(
        plan_id="plan_nope", unit_amount=usd(1)
    ),
}


@pytest.mark.parametrize("name", sorted(UNKNOWN_IDS))
def test_an_unknown_id_raises_not_found_and_writes_nothing(name: str) -> None:
    shop, sub_id = active_shop()
    assert_refused(shop, lambda: UNKNOWN_IDS[name](shop, sub_id), NotFound)


def test_a_subscribe_reports_a_missing_customer_before_a_missing_price() -> None:
    # The store may read the price first (PostgreSQL reads the customer with it): the
    # errors keep the order in which the call names them.
    shop, _ = active_shop()
    with pytest.raises(NotFound) as raised:
        shop.billing.subscribe(customer_id="cus_nope", price_id="price_nope")
    assert raised.value.details["kind"] == "customer"
    with pytest.raises(NotFound) as raised:
        shop.billing.subscribe(customer_id=shop.ada.id, price_id="price_nope")
    assert raised.value.details["kind"] == "price"


def test_a_subscribe_reports_an_erased_customer_before_a_missing_price() -> None:
    shop, _ = active_shop()
    shop.billing.erase_customer(shop.ada.id)
    assert_refused(
        shop,
        lambda: shop.billing.subscribe(customer_id=shop.ada.id, price_id="price_nope"),
        ValidationError,
    )


def test_a_price_in_another_currency_than_the_customers_is_refused() -> None:
    shop, _ = active_shop()
    euros = shop.price(900, currency="EUR")
    assert_refused(shop, lambda: shop.subscribe(euros), CurrencyMismatch)


def test_a_change_to_a_price_in_another_currency_is_refused() -> None:
    shop, sub_id = active_shop()
    euros = shop.price(5000, currency="EUR")
    assert_refused(
        shop, lambda: shop.billing.change_subscription(sub_id, price_id=euros.id), CurrencyMismatch
    )


def test_a_preview_in_another_currency_is_refused() -> None:
    shop, sub_id = active_shop()
    euros = shop.price(5000, currency="EUR")
    assert_refused(
        shop, lambda: shop.billing.preview_change(sub_id, price_id=euros.id), CurrencyMismatch
    )


def test_a_refund_in_another_currency_is_refused() -> None:
    shop, _ = active_shop()
    [payment] = shop.billing.list_payments(customer_id=shop.ada.id)
    assert_refused(
        shop, lambda: shop.billing.refund(payment.id, amount=Money(100, "EUR")), CurrencyMismatch
    )


NEGATIVE: dict[str, Call] = {
    "subscribe": lambda s, _: s.subscribe(quantity=-1),
    "change": lambda s, sub: s.billing.change_subscription(sub, quantity=-1),
    "preview": lambda s, sub: s.billing.preview_change(sub, quantity=-1),
    "trial_days": lambda s, _: s.subscribe(trial_days=-3),
    "refund": lambda s, _: s.billing.refund(
        s.billing.list_payments(customer_id=s.ada.id)[0].id, amount=usd(-100)
    ),
    "credit_note": lambda s, _: s.billing.issue_credit_note(
        s.invoices()[0].id, amount=usd(-100), outcome="credit_balance"
    ),
    "one_off_invoice_without_items": lambda s, _: s.billing.create_invoice(
        customer_id=s.ada.id, items=[]
    ),
    "run_due_limit": lambda s, _: s.billing.run_due(limit=0),
    "list_limit": lambda s, _: s.billing.list_invoices(limit=0),
}


@pytest.mark.parametrize("name", sorted(NEGATIVE))
def test_a_negative_or_empty_argument_raises_validation_error_and_writes_nothing(
    name: str,
) -> None:
    shop, sub_id = active_shop()
    assert_refused(shop, lambda: NEGATIVE[name](shop, sub_id), ValidationError)


def test_negative_usage_is_refused() -> None:
    shop, _ = active_shop()
    metered = shop.billing.create_price(
        plan_id=shop.plan.id, unit_amount=usd(5), usage_type="metered"
    )
    sub = shop.subscribe(metered)
    assert_refused(shop, lambda: shop.billing.record_usage(sub.id, quantity=-5), ValidationError)
    assert_refused(
        shop,
        lambda: shop.billing.record_usage(sub.id, quantity=1, at=at(2, 1)),
        ValidationError,
    )


def test_usage_for_a_period_already_billed_is_refused() -> None:
    """Usage dated before the current period would never be invoiced: refuse it."""
    shop, _ = active_shop()
    metered = shop.billing.create_price(
        plan_id=shop.plan.id, unit_amount=usd(5), usage_type="metered"
    )
    sub = shop.subscribe(metered)  # on Jan 10: the first period ends on Feb 10
    shop.go(at(2, 10))
    shop.clock.set(at(2, 11))
    assert_refused(
        shop,
        lambda: shop.billing.record_usage(sub.id, quantity=10, at=at(2, 9)),
        ValidationError,
    )


def test_usage_on_a_licensed_price_is_refused() -> None:
    shop, sub_id = active_shop()
    assert_refused(shop, lambda: shop.billing.record_usage(sub_id, quantity=1), ValidationError)


def test_a_naive_datetime_is_refused() -> None:
    shop, sub_id = active_shop()
    naive = datetime(2026, 3, 1)  # noqa: DTZ001 - the point of the test
    assert_refused(shop, lambda: shop.billing.pause(sub_id, resumes_at=naive), NaiveDatetime)


def test_a_change_that_changes_nothing_is_refused() -> None:
    shop, sub_id = active_shop()
    assert_refused(
        shop,
        lambda: shop.billing.change_subscription(sub_id, price_id=shop.basic.id),
        ValidationError,
    )


ON_CANCELED: dict[str, Call] = {
    "change_price": lambda s, sub: s.billing.change_subscription(sub, price_id=s.pro.id),
    "change_quantity": lambda s, sub: s.billing.change_subscription(sub, quantity=3),
    "schedule_downgrade": lambda s, sub: s.billing.change_subscription(
        sub, quantity=0, timing="period_end"
    ),
    "cancel": lambda s, sub: s.billing.cancel(sub),
    "cancel_prorated": lambda s, sub: s.billing.cancel(sub, prorate=True),
    "cancel_at_period_end": lambda s, sub: s.billing.cancel(sub, at_period_end=True),
    "reactivate": lambda s, sub: s.billing.reactivate(sub),
    "pause": lambda s, sub: s.billing.pause(sub),
    "resume": lambda s, sub: s.billing.resume(sub),
}


@pytest.mark.parametrize("name", sorted(ON_CANCELED))
def test_an_operation_on_a_canceled_subscription_raises_invalid_transition(name: str) -> None:
    shop, sub_id = canceled_shop()
    assert_refused(shop, lambda: ON_CANCELED[name](shop, sub_id), InvalidTransition)


def test_reactivate_without_a_scheduled_cancel_is_refused() -> None:
    shop, sub_id = active_shop()
    assert_refused(shop, lambda: shop.billing.reactivate(sub_id), InvalidTransition)


def test_resume_of_an_active_subscription_is_refused() -> None:
    shop, sub_id = active_shop()
    assert_refused(shop, lambda: shop.billing.resume(sub_id), InvalidTransition)


def test_a_second_customer_with_the_same_email_is_refused() -> None:
    shop, _ = active_shop()
    assert_refused(shop, lambda: shop.billing.create_customer(email="ADA@example.com"), Conflict)


def test_an_erased_customer_cannot_subscribe() -> None:
    shop, _ = active_shop()
    shop.billing.erase_customer(shop.ada.id)
    assert_refused(shop, shop.subscribe, ValidationError)
