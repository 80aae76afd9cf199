"""What a paid subscribe sends to PostgreSQL, counted: the statements are most of its CPU.

Each statement costs the server process ~100,000-200,000 instructions in the driver and
SQLAlchemy alone (callgrind), so a change that adds one to the hottest write of the API
should be a decision, not an accident. The counts are the driver's own (psycopg cursor
executions, a pipelined executemany counted per row, or the statements sent to libpq
straight), whether or not SQLAlchemy sent them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import Engine

from lumenquest_adapters.memory import RecordingEmailSender, TestClock
from lumenquest_adapters.sqlalchemy import Identity, _raw, sqlalchemy_billing
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval
from lumenquest_core.subscriptions import SubscriptionStatus


@contextmanager
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record the first word of every statement sent, by psycopg's cursors or straight to libpq (one per row)."""
    sent: list[str] = []

    def counting(name: str, rows: Callable[[Any], int]) -> None:
        original = getattr(psycopg.Cursor, name)

        def run(self: psycopg.Cursor[Any], query: Any, params: Any = None, **kw: Any) -> Any:
            sent.extend([str(query).split(None, 1)[0].upper()] * rows(params))
            return original(self, query, params, **kw)

        monkeypatch.setattr(psycopg.Cursor, name, run)

    counting("execute", lambda params: 1)
    counting("executemany", len)
    run = _raw._Session.run

    def run_counted(self: Any, commands: Any) -> Any:
        sent.extend(str(statement).split(None, 1)[0].upper() for statement, *_ in commands)
        return run(self, commands)

    monkeypatch.setattr(_raw._Session, "run", run_counted)
    wait = psycopg.Connection.wait

    def waiting(self: Any, *args: Any, **kw: Any) -> Any:
        # Every exchange with the server waits here once: a round trip (or a no-op wait).
        sent.append("<" + getattr(args[0], "__name__", "?") + ">")
        return wait(self, *args, **kw)

    monkeypatch.setattr(psycopg.Connection, "wait", waiting)
    yield sent
    monkeypatch.undo()


def test_a_paid_subscribe_sends_its_known_statements(
    postgres_empty: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    billing = sqlalchemy_billing(
        postgres_empty,
        acting_as=Identity("system"),
        clock=TestClock(datetime(2026, 1, 31, tzinfo=UTC)),
        email=RecordingEmailSender(),
        dispatch_immediately=False,
    )
    customer = billing.create_customer(email="ada@example.com", name="Ada")
    plan = billing.create_plan(name="Business")
    price = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1500, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    billing.subscribe(customer_id=customer.id, price_id=price.id)  # links the gateway
    with counted(monkeypatch) as sent:
        sub = billing.subscribe(customer_id=customer.id, price_id=price.id)
    assert sub.status is SubscriptionStatus.ACTIVE
    # The subscription's transaction reads the price with its plan and the customer (one
    # statement), takes an invoice number, then sends its 9 rows in one pipeline, in a
    # savepoint; the settlement locks the payment and reads its invoice, its subscription
    # and whether that has other open invoices in one statement, then sends its 10 rows.
    # Each pipeline ends with the COMMIT (no savepoint's release), which psycopg's
    # connection then need not send. BEGIN (with the identity) goes through the
    # connection, not a cursor: not counted here; nor is the pool's pre-ping (";"), a
    # setting of the engine (the example app's engine does not ping).
    subscription = ["SELECT", "UPDATE", "SAVEPOINT"] + ["INSERT"] * 9 + ["COMMIT"]
    settlement = ["SELECT"] + ["SAVEPOINT"] + ["INSERT"] * 7 + ["UPDATE"] * 3 + ["COMMIT"]
    statements = [word for word in sent if word != ";" and not word.startswith("<")]
    assert statements == subscription + settlement
    # BEGIN and the identity go ahead of each transaction's first read, in its pipeline:
    # 3 round trips, then 2 (7 when each BEGIN had one of its own).
    exchanges = [word for word in sent if word in ("<_exchanged>", "<_execute_gen>")]
    assert exchanges.count("<_exchanged>") == 5
    assert exchanges.count("<_execute_gen>") == 2  # the pre-pings only
