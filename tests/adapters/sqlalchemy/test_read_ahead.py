"""Rows read ahead with a lock (PostgreSQL): each read it stands for answers as it would have.

Locking one payment in batch mode reads its invoice, its subscription and whether that has
other open invoices in the same statement (``FOR UPDATE … SKIP LOCKED``); a price is read
with its plan. These tests check the answers against the database's, and that a payment
someone else holds is waited for and read after the wait, not before.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import SqlAlchemyUnitOfWork, upgrade
from lumenquest_adapters.sqlalchemy._schema import payments
from lumenquest_adapters.testing.samples import (
    customer,
    invoice,
    payment,
    plan,
    price,
    subscription,
)
from lumenquest_core.errors import NotFound
from lumenquest_core.invoicing import InvoiceStatus
from lumenquest_core.payments import Payment, PaymentStatus
from lumenquest_core.subscriptions import SubscriptionStatus

OPEN = InvoiceStatus.OPEN


@pytest.fixture
def engine(postgres_empty: Engine) -> Engine:
    """A customer, a plan and its price, an incomplete subscription, an open invoice, a payment."""
    upgrade(postgres_empty)
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.customers.add(customer("cus_1"))
        uow.plans.add(plan("plan_1"))
        uow.prices.add(price("price_1"))
        uow.subscriptions.add(subscription("sub_1", status=SubscriptionStatus.INCOMPLETE))
        uow.invoices.add(invoice("in_1", status=OPEN))
        uow.payments.add(payment("pay_1"))
        uow.commit()
    return postgres_empty


def _settling(uow: SqlAlchemyUnitOfWork) -> None:
    """Prepare the batch as settling pay_1 does."""
    uow.prepare_batch(payments_for_update=["pay_1"], invoices=["in_1"])
    uow.prepare_batch(subscriptions=["sub_1"])


def _settlement_reads(uow: SqlAlchemyUnitOfWork, payment: Payment) -> tuple[Any, ...]:
    """Return what a settlement reads after its payment: invoice, subscription, open ones."""
    return (
        payment,
        uow.invoices.get("in_1"),
        uow.subscriptions.get("sub_1"),
        list(uow.invoices.list(subscription_id="sub_1", status=OPEN)),
    )


def test_the_rows_read_with_the_lock_are_those_read_alone(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        alone = _settlement_reads(uow, uow.payments.get("pay_1"))
        uow.rollback()
    with SqlAlchemyUnitOfWork(engine) as uow:
        _settling(uow)
        ahead = _settlement_reads(uow, uow.payments.get_for_update("pay_1"))
        uow.rollback()
    assert ahead == alone
    assert [i.id for i in ahead[3]] == ["in_1"]


def test_another_open_invoice_is_read_from_the_database(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.invoices.add(invoice("in_2", status=OPEN, period_start=invoice("in_1").period.end))
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        _settling(uow)
        listed = uow.invoices.list(subscription_id="sub_1", status=OPEN)
        uow.rollback()
    assert [i.id for i in listed] == ["in_1", "in_2"]


def test_a_write_in_between_drops_what_was_read_ahead(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        _settling(uow)
        uow.invoices.add(invoice("in_2", status=OPEN, period_start=invoice("in_1").period.end))
        listed = uow.invoices.list(subscription_id="sub_1", status=OPEN)
        uow.rollback()
    assert [i.id for i in listed] == ["in_1", "in_2"]


def test_a_payment_held_elsewhere_is_waited_for_and_read_after(engine: Engine) -> None:
    seen: list[PaymentStatus] = []
    holder = engine.connect()
    holder.begin()
    holder.execute(sa.select(payments.c.id).where(payments.c.id == "pay_1").with_for_update())

    def settle() -> None:
        with SqlAlchemyUnitOfWork(engine) as uow:
            _settling(uow)
            seen.append(uow.payments.get_for_update("pay_1").status)
            uow.rollback()

    waiter = threading.Thread(target=settle)
    waiter.start()
    # Waiting for the lock, not skipping past the payment: the server shows its wait.
    assert _lock_wait_seen(engine, holder)
    assert waiter.is_alive()
    holder.execute(payments.update().where(payments.c.id == "pay_1").values(status="succeeded"))
    holder.commit()
    holder.close()
    waiter.join(10)
    assert seen == [PaymentStatus.SUCCEEDED]


def _lock_wait_seen(engine: Engine, holder: sa.Connection, seconds: float = 10.0) -> bool:
    """Say whether a session comes to wait on a lock ``holder`` holds, within ``seconds``."""
    pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    deadline = time.monotonic() + seconds
    with engine.connect() as watcher:
        while time.monotonic() < deadline:
            blocked = watcher.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (pid,),
            ).scalar_one()
            if blocked:
                return True
            # A transaction reads pg_stat_activity once, at its first look: end it, or
            # a first poll before the wait began would never see it (a failure, then a
            # teardown stuck behind the holder's lock).
            watcher.rollback()
            threading.Event().wait(0.01)  # a poll for the condition, not a timing
    return False


def test_a_price_is_read_with_its_plan_in_batch_mode(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch()
        assert uow.prices.get("price_1") == price("price_1")
        assert uow.plans.get("plan_1") == plan("plan_1")
        with pytest.raises(NotFound):
            uow.prices.get("price_missing")
        uow.rollback()


def test_a_customer_loaded_alone_is_read_with_the_price(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch(customers=["cus_1"])
        assert uow.prices.get("price_1") == price("price_1")
        assert uow.customers.get("cus_1") == customer("cus_1")
        uow.rollback()


def test_a_customer_loaded_alone_is_read_when_asked_for_first(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch(customers=["cus_1"])
        assert uow.customers.get("cus_1") == customer("cus_1")
        with pytest.raises(NotFound):
            uow.prices.get("price_missing")
        uow.rollback()
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch(customers=["cus_missing"])
        with pytest.raises(NotFound):
            uow.prices.get("price_missing")
        with pytest.raises(NotFound):
            uow.customers.get("cus_missing")
        uow.rollback()


def test_a_customer_loaded_alone_then_updated_is_updated(engine: Engine) -> None:
    renamed = attrs.evolve(customer("cus_1"), name="Ada L.")
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch(customers=["cus_1"])
        uow.customers.update(renamed)
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert uow.customers.get("cus_1") == renamed
