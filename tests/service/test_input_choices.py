"""Strings that name a choice are checked: a bad one is a ValidationError listing the choices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lumenquest_adapters.memory import MemoryLock
from lumenquest_core import IdempotencyConflict, Money, ValidationError
from tests.service.stores import Backend


@pytest.fixture
def billing(backend: Backend) -> Any:
    return backend.billing()


CALLS: dict[str, Callable[[Any], object]] = {
    "role": lambda b: b.create_customer(email="a@example.com", role="superuser"),
    "status": lambda b: b.list_invoices(status="bogus"),
    "subscription status": lambda b: b.list_subscriptions(status="bogus"),
    "scheme": lambda b: b.create_price(
        plan_id=b.create_plan(name="P").id, unit_amount=Money(100, "USD"), scheme="stairs"
    ),
    "usage_type": lambda b: b.create_price(
        plan_id=b.create_plan(name="P").id, unit_amount=Money(100, "USD"), usage_type="x"
    ),
    "duration": lambda b: b.create_coupon(percent_off=10, duration="sometimes"),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_bad_choice_is_a_validation_error_naming_the_choices(billing: Any, call: Any) -> None:
    with pytest.raises(ValidationError, match="must be one of") as info:
        call(billing)
    assert info.value.details["choices"]


def test_reusing_a_key_with_other_metadata_is_an_idempotency_conflict(billing: Any) -> None:
    billing.create_customer(email="a@example.com", metadata={"plan": "a"}, idempotency_key="k")
    with pytest.raises(IdempotencyConflict):
        billing.create_customer(email="a@example.com", metadata={"plan": "b"}, idempotency_key="k")


def test_the_first_subscription_links_the_customer_to_the_gateway_once(billing: Any) -> None:
    customer = billing.create_customer(email="a@example.com")
    plan = billing.create_plan(name="P")
    price = billing.create_price(plan_id=plan.id, unit_amount=Money(100, "USD"))
    billing.subscribe(customer_id=customer.id, price_id=price.id)
    linked = billing.get_customer(customer.id).gateway_customer_id
    assert linked is not None
    assert linked.startswith("cus_fake_")
    billing.subscribe(customer_id=customer.id, price_id=price.id)
    assert billing.get_customer(customer.id).gateway_customer_id == linked


def test_a_changed_email_is_synced_to_the_gateway_customer(billing: Any) -> None:
    customer = billing.create_customer(email="a@example.com")
    plan = billing.create_plan(name="P")
    price = billing.create_price(plan_id=plan.id, unit_amount=Money(100, "USD"))
    billing.subscribe(customer_id=customer.id, price_id=price.id)
    seen: list[str] = []
    original = billing.gateway.ensure_customer

    def recording(updated: Any) -> str:
        seen.append(updated.email)
        return str(original(updated))

    billing.gateway.ensure_customer = recording
    billing.update_customer(customer.id, email="b@example.com")
    assert seen == ["b@example.com"]


def test_a_second_dispatcher_waits_for_the_one_holding_the_lock(backend: Backend) -> None:
    """With a shared lock, two processes never send the same outbox email twice."""
    lock = MemoryLock()
    billing = backend.billing(lock=lock, dispatch_immediately=False)
    billing.create_customer(email="a@example.com")
    with lock.hold("lumenquest:dispatch-events", ttl_seconds=60) as held:
        assert held
        assert billing.dispatch_events() == 0
        assert billing.email.sent == []
    assert billing.dispatch_events() == 1
    assert [m.template for m in billing.email.sent] == ["welcome"]
