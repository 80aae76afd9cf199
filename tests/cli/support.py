"""Databases with work due now, for the command line's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lumenquest_adapters.memory import RecordingEmailSender, TestClock
from lumenquest_adapters.sqlalchemy import sqlalchemy_billing
from lumenquest_core import BillingCycle, Interval, Money


def due_database(url: str, subscriptions: int) -> list[str]:
    """Fill the database at ``url`` with monthly subscriptions whose first period has ended.

    They started 40 days ago by a test clock, so with the real clock (the command's) each
    has exactly one renewal due: the second period ends 19 days or more from now.
    """
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)
    billing = sqlalchemy_billing(url, clock=TestClock(started), email=RecordingEmailSender())
    plan = billing.create_plan(name="Pro", features=["reports"])
    price = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1000, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    ids = []
    for n in range(subscriptions):
        customer = billing.create_customer(email=f"user{n}@example.com", name=f"User {n}")
        ids.append(billing.subscribe(customer_id=customer.id, price_id=price.id).customer_id)
    billing.store.engine.dispose()
    return ids
