"""What the unit of work does to spend fewer round trips must not change what it does.

A flush of few rows goes as one pipeline on PostgreSQL (COPY past a size), single rows go
straight to the driver, a held invoice is not read again, and a transaction that only read
ends with a COMMIT; each is checked here against what the plain path gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import SqlAlchemyUnitOfWork, upgrade
from lumenquest_adapters.testing.samples import customer, invoice, subscription
from lumenquest_core.errors import Conflict, NotFound, ValidationError
from lumenquest_core.invoicing import InvoiceStatus


@pytest.fixture
def engine(empty_engine: Engine) -> Engine:
    """A migrated database with one customer, foreign keys enforced."""
    upgrade(empty_engine)
    with SqlAlchemyUnitOfWork(empty_engine) as uow:
        uow.customers.add(customer("cus_1"))
        uow.commit()
    return empty_engine


@contextmanager
def recorded(engine: Engine, name: str) -> Iterator[list[str]]:
    """Record what SQLAlchemy sends (``before_cursor_execute``) or how transactions end."""
    seen: list[str] = []

    def record(*args: object) -> None:
        seen.append(str(args[2]) if name == "before_cursor_execute" else name)

    event.listen(engine, name, record)
    try:
        yield seen
    finally:
        event.remove(engine, name, record)


def test_a_conflict_in_a_flush_raises_typed_and_keeps_the_unit_of_work_usable(
    engine: Engine,
) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch()
        uow.customers.add(customer("cus_2"))
        uow.customers.add(customer("cus_1"))  # taken: raises when the batch is sent
        uow.invoices.add(invoice("in_1", customer_id="cus_2", subscription_id=None))
        with pytest.raises(Conflict, match="already exists"):
            uow.customers.list()  # a read of a queued table sends the batch
        # Replayed one by one up to the write that broke the rule: what came before it is
        # in, what came after it is not, and the transaction goes on.
        assert [c.id for c in uow.customers.list()] == ["cus_1", "cus_2"]
        assert uow.invoices.list() == []
        uow.customers.add(customer("cus_3"))
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert [c.id for c in uow.customers.list()] == ["cus_1", "cus_2", "cus_3"]


def test_a_conflict_at_commit_keeps_nothing_of_the_batch(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch()
        number = uow.invoices.next_number()
        uow.customers.add(customer("cus_2"))
        uow.customers.update(attrs.evolve(customer("cus_1"), name="Grace"))
        uow.customers.add(customer("cus_3", email="cus_2@example.com"))  # the email is taken
        with pytest.raises(Conflict, match="email already exists"):
            uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert [c.id for c in uow.customers.list()] == ["cus_1"]
        assert uow.customers.get("cus_1").name == "Ada"
        assert uow.invoices.next_number() == number  # the counter did not move either


def test_a_foreign_key_broken_at_commit_raises_typed_and_keeps_nothing(engine: Engine) -> None:
    # Foreign keys are checked at COMMIT, which on PostgreSQL ends the flush's pipeline:
    # its failure is the same Conflict, and the server has rolled back all of it.
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch()
        number = uow.invoices.next_number()
        uow.customers.add(customer("cus_2"))
        uow.subscriptions.add(subscription("sub_1", customer_id="cus_9"))  # no such customer
        with pytest.raises(Conflict) as raised:
            uow.commit()
        uow.rollback()  # nothing left to roll back: a no-op, not an error
    assert raised.value.code == "CONFLICT"
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert [c.id for c in uow.customers.list()] == ["cus_1"]
        assert uow.invoices.next_number() == number  # the counter did not move either
        uow.customers.add(customer("cus_3"))  # the pooled connection is sound
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert [c.id for c in uow.customers.list()] == ["cus_1", "cus_3"]


@pytest.mark.parametrize("count", [3, 250])  # one pipeline; COPY past the pipeline's size
def test_a_batch_stores_what_single_writes_store(engine: Engine, count: int) -> None:
    customers = [customer(f"cus_b{i:03}") for i in range(count)]
    invoices = [
        invoice(f"in_{i:03}", customer_id=c.id, subscription_id=None, status=InvoiceStatus.OPEN)
        for i, c in enumerate(customers)
    ]
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch()
        for c, i in zip(customers, invoices, strict=True):
            uow.customers.add(c)
            uow.invoices.add(i)
        first = uow.invoices.next_number()
        second = uow.invoices.next_number()
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert uow.invoices.next_number() == second + 1 == first + 2
        paid = [attrs.evolve(i, status=InvoiceStatus.PAID) for i in invoices]
        uow.prepare_batch(invoices=[i.id for i in invoices], known_invoices=invoices)
        for i in paid:
            uow.invoices.update(i)
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert [uow.customers.get(c.id) for c in customers] == customers
        assert list(uow.invoices.list(status=InvoiceStatus.PAID, limit=1000)) == paid


def test_a_held_invoice_is_listed_without_reading_its_lines(engine: Engine) -> None:
    held = invoice("in_1", subscription_id=None, status=InvoiceStatus.OPEN)
    other = invoice("in_2", subscription_id=None, status=InvoiceStatus.OPEN)
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.invoices.add(held)
        uow.invoices.add(other)
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow, recorded(engine, "before_cursor_execute") as sent:
        uow.prepare_batch(invoices=["in_1"], known_invoices=[held])
        listed = uow.invoices.list(customer_id="cus_1")
    assert listed == [held, other]
    assert listed[0] is held
    # The lines read are those of the invoice not held, only.
    lines_read = [s for s in sent if "FROM invoice_lines" in s]
    assert len(lines_read) == 1


def test_a_changed_invoice_is_read_again_not_taken_as_held(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("an SQLite transaction keeps the snapshot of its first read")
    held = invoice("in_1", subscription_id=None, status=InvoiceStatus.OPEN)
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.invoices.add(held)
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.prepare_batch(invoices=["in_1"], known_invoices=[held])
        paid = attrs.evolve(held, status=InvoiceStatus.PAID)
        with SqlAlchemyUnitOfWork(engine) as other:  # another transaction pays it meanwhile
            other.invoices.update(paid)
            other.commit()
        assert uow.invoices.list(customer_id="cus_1") == [paid]


def test_a_transaction_that_only_read_ends_the_same_and_one_that_wrote_rolls_back(
    engine: Engine,
) -> None:
    with recorded(engine, "rollback") as rollbacks, recorded(engine, "commit") as commits:
        with SqlAlchemyUnitOfWork(engine) as uow:
            uow.customers.get("cus_1")
            with pytest.raises(NotFound):
                uow.customers.get("cus_missing")
        only_read = (len(commits), len(rollbacks))
        with SqlAlchemyUnitOfWork(engine) as uow:
            uow.customers.add(customer("cus_2"))  # never committed
        with SqlAlchemyUnitOfWork(engine) as uow:
            uow.connection()  # handed out: what it ran is unknown
    # PostgreSQL commits a transaction that only read (psycopg keeps its prepared
    # statements); SQLite rolls back. Whatever wrote, or may have, rolls back.
    assert only_read == ((1, 0) if engine.dialect.name == "postgresql" else (0, 1))
    assert len(rollbacks) == only_read[1] + 2
    with SqlAlchemyUnitOfWork(engine) as uow, pytest.raises(NotFound):
        uow.customers.get("cus_2")


def test_an_error_in_a_read_only_transaction_still_rolls_it_back(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite rolls back every transaction that did not commit")
    with recorded(engine, "rollback") as rollbacks, SqlAlchemyUnitOfWork(engine) as uow:
        uow.customers.get("cus_1")
        with pytest.raises(ValidationError):
            uow.read(sa.select(sa.literal(1) / 0))  # aborts the transaction
    assert rollbacks == ["rollback"]


def test_an_update_breaking_a_unique_key_raises_conflict_and_changes_nothing(
    engine: Engine,
) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.customers.add(customer("cus_2"))
        with pytest.raises(Conflict, match="email already exists"):
            uow.customers.update(attrs.evolve(customer("cus_2"), email="cus_1@example.com"))
        with pytest.raises(NotFound):
            uow.customers.update(customer("cus_missing"))
        # The unit of work goes on: the update rolled back to its own savepoint only.
        uow.customers.update(attrs.evolve(customer("cus_2"), name="Grace"))
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        stored = uow.customers.get("cus_2")
        assert (stored.email, stored.name) == ("cus_2@example.com", "Grace")
