"""A whole billing story gives the same results on SQLite and PostgreSQL as on the memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import pytest
from sqlalchemy.engine import Engine

from lumenquest_adapters.memory import (
    FakeGateway,
    GatewayOutcome,
    RecordingEmailSender,
    SequentialIds,
    TestClock,
    in_memory_billing,
)
from lumenquest_adapters.sqlalchemy import sqlalchemy_billing
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval
from lumenquest_core.service import Billing
from tests.adapters.sqlalchemy.databases import history_json_kinds

JAN_31 = datetime(2026, 1, 31, tzinfo=UTC)


def _story(billing: Billing, clock: TestClock, gateway: FakeGateway) -> dict[str, Any]:
    """Subscribe, upgrade, decline, renew for four months; return everything observable."""
    plan = billing.create_plan(name="Pro", features=["reports"])
    monthly = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1000, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    bigger = billing.create_price(
        plan_id=plan.id, unit_amount=Money(2500, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    trial = billing.create_price(
        plan_id=plan.id,
        unit_amount=Money(500, "USD"),
        cycle=BillingCycle(Interval.MONTH),
        trial_days=14,
    )
    coupon = billing.create_coupon(percent_off=Decimal("12.5"), duration="forever")
    ada = billing.create_customer(email="ada@example.com", name="Ada")
    bob = billing.create_customer(email="bob@example.com", name="Bob")
    cy = billing.create_customer(email="cy@example.com", name="Cy")
    subs = [
        billing.subscribe(customer_id=ada.id, price_id=monthly.id, coupon_id=coupon.id),
        billing.subscribe(customer_id=bob.id, price_id=monthly.id, quantity=3),
        billing.subscribe(customer_id=cy.id, price_id=trial.id),
    ]
    summaries = []
    for month in range(4):
        clock.advance(timedelta(days=12))
        if month == 0:
            billing.change_subscription(subs[1].id, price_id=bigger.id)
        if month == 1:
            gateway.queue(GatewayOutcome.decline("insufficient_funds"))
        clock.advance(timedelta(days=19))
        summaries.append(billing.run_due())
        billing.dispatch_events()
    report = billing.metrics(start=JAN_31, end=clock.now())
    customers = [ada.id, bob.id, cy.id]
    return {
        "summaries": summaries,
        "subscriptions": [billing.get_subscription(s.id) for s in subs],
        "invoices": [billing.list_invoices(customer_id=c) for c in customers],
        "payments": [billing.list_payments(customer_id=c) for c in customers],
        "outbox": [(m.id, m.event.name, m.delivered_at) for m in billing.list_outbox()],
        "analytics": [e.id for e in billing.list_analytics_events()],
        "metrics": attrs.asdict(report, recurse=False),
    }


def _run(make: Any) -> tuple[dict[str, Any], list[str]]:
    clock = TestClock(JAN_31)
    gateway = FakeGateway()
    email = RecordingEmailSender()
    billing = make(clock=clock, gateway=gateway, email=email, ids=SequentialIds())
    return _story(billing, clock, gateway), email.templates()


@pytest.fixture(scope="module")
def on_memory() -> tuple[dict[str, Any], list[str]]:
    return _run(in_memory_billing)


def test_a_billing_story_matches_the_memory_store(
    empty_engine: Engine, on_memory: tuple[dict[str, Any], list[str]]
) -> None:
    result, emails = _run(lambda **options: sqlalchemy_billing(empty_engine, **options))
    expected, expected_emails = on_memory
    assert sum(s.renewals for s in result["summaries"]) >= 8  # the story did bill
    for key in expected:
        assert result[key] == expected[key], key
    assert emails == expected_emails


def test_a_billing_runs_history_data_is_stored_as_json_objects_on_postgresql(
    postgres_empty: Engine,
) -> None:
    # As the owner, a batch's rows go by COPY; their data was encoded when queued.
    clock = TestClock(datetime(2026, 1, 1, tzinfo=UTC))
    billing = sqlalchemy_billing(postgres_empty, clock=clock)
    plan = billing.create_plan(name="Pro", features=[])
    price = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1000, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    customer = billing.create_customer(email="ada@example.com")
    billing.subscribe(customer_id=customer.id, price_id=price.id)
    clock.set(datetime(2026, 2, 1, 1, tzinfo=UTC))
    assert billing.run_due().renewals == 1
    assert history_json_kinds(postgres_empty) == {"object"}
    renewal = billing.list_invoices(customer_id=customer.id)[-1]
    with postgres_empty.connect() as connection:
        number = connection.exec_driver_sql(
            "SELECT data->>'number' FROM outbox WHERE name = 'invoice.paid' AND subject_id = %s",
            (renewal.id,),
        ).scalar_one()
    assert number == renewal.number
