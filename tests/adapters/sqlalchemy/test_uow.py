"""The unit of work on a real database: transactions, the due index, the write lock, claims."""

from __future__ import annotations

import threading
from datetime import UTC, timedelta, timezone
from pathlib import Path

import attrs
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import (
    SqlAlchemyStore,
    SqlAlchemyUnitOfWork,
    _batch,
    create_engine_for,
    upgrade,
)
from lumenquest_adapters.sqlalchemy._schema import subscriptions
from lumenquest_adapters.testing.samples import (
    T0,
    customer,
    invoice,
    outbox_message,
    payment,
    plan,
    price,
    subscription,
)
from lumenquest_core.errors import ConfigurationError, GatewayUnavailable, NotFound
from lumenquest_core.invoicing import InvoiceStatus
from lumenquest_core.ports import AnalyticsEvent, DeliveryStatus, EmailDelivery
from lumenquest_core.subscriptions import SubscriptionStatus, next_action_at
from tests.adapters.sqlalchemy.databases import sqlite_url

HOUR = timedelta(hours=1)


@pytest.fixture
def engine(empty_engine: Engine) -> Engine:
    """A migrated database with a customer, a plan and a price, foreign keys enforced."""
    upgrade(empty_engine)
    with SqlAlchemyUnitOfWork(empty_engine) as uow:
        uow.customers.add(customer("cus_1"))
        uow.plans.add(plan("plan_1"))
        uow.prices.add(price("price_1"))
        uow.commit()
    return empty_engine


def _add_due(engine: Engine, count: int) -> list[str]:
    ids = [f"sub_{i:02}" for i in range(count)]
    with SqlAlchemyUnitOfWork(engine) as uow:
        for i, sid in enumerate(ids):
            uow.subscriptions.add(subscription(sid, due=T0 + i * HOUR))
        uow.commit()
    return ids


def test_nothing_is_kept_unless_committed(engine: Engine) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.customers.add(customer("cus_2"))
    with SqlAlchemyUnitOfWork(engine) as uow, pytest.raises(NotFound):
        uow.customers.get("cus_2")


def test_a_unit_of_work_is_used_inside_its_with_block_only(engine: Engine) -> None:
    uow = SqlAlchemyUnitOfWork(engine)
    with pytest.raises(RuntimeError):
        uow.customers.get("cus_1")
    with uow, pytest.raises(RuntimeError):
        uow.__enter__()


def test_next_action_at_is_kept_equal_to_the_cores_on_every_write(engine: Engine) -> None:
    active = subscription("sub_1", due=T0 + HOUR)
    canceled = attrs.evolve(active, status=SubscriptionStatus.CANCELED, ended_at=T0)
    for version in (active, canceled):
        with SqlAlchemyUnitOfWork(engine) as uow:
            if version is active:
                uow.subscriptions.add(version)
            else:
                uow.subscriptions.update(version)
            uow.commit()
        with engine.connect() as connection:
            stored = connection.execute(subscriptions.select()).mappings().one()
        expected = next_action_at(version)
        assert (stored["next_action_at"] is None) == (expected is None)
        if expected is not None:
            assert stored["next_action_at"].replace(tzinfo=None) == expected.replace(tzinfo=None)


def test_a_subscription_reads_back_equal_with_its_price_snapshot(engine: Engine) -> None:
    sub = subscription("sub_1")
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.subscriptions.add(sub)
        uow.prices.update(attrs.evolve(price("price_1"), active=False))
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert uow.subscriptions.get("sub_1") == sub  # the price as the subscription holds it


def test_two_claims_at_once_never_get_the_same_subscription(engine: Engine) -> None:
    ids = _add_due(engine, 10)
    claimed: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    both_started = threading.Barrier(2)
    # PostgreSQL: both hold their claims at once (SKIP LOCKED). SQLite: the second waits.
    both_claimed = threading.Barrier(2) if engine.dialect.name == "postgresql" else None

    def claim(worker: int) -> None:
        try:
            with SqlAlchemyUnitOfWork(engine) as uow:
                both_started.wait(timeout=10)
                batch = uow.subscriptions.claim_due(T0 + 2 * timedelta(days=365), limit=5)
                claimed[worker] = [s.id for s in batch]
                if both_claimed is not None:
                    both_claimed.wait(timeout=10)
                for sub in batch:
                    uow.subscriptions.update(
                        attrs.evolve(sub, status=SubscriptionStatus.CANCELED, ended_at=T0)
                    )
                uow.commit()
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=claim, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(claimed[0]).isdisjoint(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == ids


@pytest.mark.parametrize("read_first", [False, True])
def test_a_claim_on_sqlite_holds_the_write_lock(tmp_path: Path, read_first: bool) -> None:
    url = sqlite_url(tmp_path / "billing.db")
    engine = create_engine_for(url)
    impatient = create_engine_for(url, connect_args={"timeout": 0.05})
    try:
        upgrade(engine)
        with SqlAlchemyUnitOfWork(engine) as claimer:
            if read_first:  # a deferred transaction that has only read so far
                assert claimer.customers.list() == []
            claimer.subscriptions.claim_due(T0, limit=10)
            with SqlAlchemyUnitOfWork(impatient) as other:
                assert other.customers.list() == []  # readers never wait
                with pytest.raises(GatewayUnavailable):  # no other writer meanwhile
                    other.customers.add(customer("cus_1"))
    finally:
        engine.dispose()
        impatient.dispose()


def test_sqlite_in_memory_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="file"):
        create_engine_for("sqlite://")


def test_a_store_makes_units_of_work(engine: Engine) -> None:
    store = SqlAlchemyStore(engine)
    with store() as uow:
        assert uow.customers.get("cus_1").id == "cus_1"


def test_a_unit_of_work_makes_each_repository_once_and_its_own(engine: Engine) -> None:
    first, second = SqlAlchemyUnitOfWork(engine), SqlAlchemyUnitOfWork(engine)
    assert first.customers is first.customers
    assert first.invoices is first.invoices
    assert first.customers is not second.customers
    assert SqlAlchemyUnitOfWork.customers.__doc__ == "The customers of this unit of work."


def test_a_known_invoice_stored_unchanged_is_taken_without_reading_its_lines(
    engine: Engine,
) -> None:
    known = invoice("in_1", subscription_id=None, status=InvoiceStatus.OPEN)
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.invoices.add(known)
        uow.commit()
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with SqlAlchemyUnitOfWork(engine) as uow:
            uow.prepare_batch(invoices=["in_1"], known_invoices=[known])
            assert uow.invoices.get("in_1") is known
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert not [s for s in statements if "invoice_lines" in s]


def test_batched_updates_of_many_rows_read_back_as_written(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Enough rows for PostgreSQL's bulk flush and set-based update; values an array
    # literal must escape, JSON equal by == but not the same (1 and true), instants in
    # another zone, NULLs.
    literals: list[object] = []
    real = _batch.array_literals
    monkeypatch.setattr(_batch, "array_literals", lambda *a: literals.append(a) or real(*a))
    ids = [f"cus_b{i:02}" for i in range(30)]
    with SqlAlchemyUnitOfWork(engine) as uow:
        for customer_id in ids:
            uow.customers.add(attrs.evolve(customer(customer_id), metadata={"n": 1}))
        uow.commit()
    names = ['a "quoted" name', "back\\slash", "{brace}, comma", "NULL", "ünïcode ✓", "plain"]
    zone = timezone(timedelta(hours=2))
    expected = {}
    for round_ in range(2):
        with SqlAlchemyUnitOfWork(engine) as uow:
            uow.prepare_batch(customers=ids)
            for i in range(120):  # new rows in the same flush: more than a pipeline takes
                uow.customers.add(customer(f"cus_n{round_}{i:03}"))
            for i, customer_id in enumerate(ids):
                stored = uow.customers.get(customer_id)
                if i == 7:
                    expected[customer_id] = stored  # unchanged: nothing to write
                    continue
                changed = attrs.evolve(
                    stored,
                    name=names[i % len(names)] + str(round_),
                    metadata={"n": True} if i % 2 else {"n": 1, "tags": ["x", 'y"']},
                    # Set, then NULL again.
                    gateway_customer_id=None if round_ else f"gw_{i}",
                    erased_at=None if round_ else (T0 + i * HOUR).astimezone(zone),
                )
                uow.customers.update(changed)
                expected[customer_id] = changed
            uow.commit()
        with SqlAlchemyUnitOfWork(engine) as uow:
            for customer_id, wanted in expected.items():
                read = uow.customers.get(customer_id)
                assert read == wanted
                assert type(read.metadata["n"]) is type(wanted.metadata["n"])
                if read.erased_at is not None:
                    assert read.erased_at.tzinfo is UTC
            assert len(uow.customers.list(limit=500)) == 151 + 120 * round_
    assert len(literals) == (2 if engine.dialect.name == "postgresql" else 0)


def test_a_dispatch_rounds_statements_take_many_rows_and_awkward_values(engine: Engine) -> None:
    # PostgreSQL sends each as one statement whatever the number of rows (arrays, not a
    # VALUES or IN list): more rows than a pipeline or a load chunk takes, text an array
    # literal must escape, JSON of every kind, NULLs.
    texts = ['a "quoted" one', "back\\slash", "{brace}, comma", "NULL", "ünïcode ✓", ""]
    events = [
        AnalyticsEvent(
            id=f"evt_{i:04}",
            name=texts[i % len(texts)],
            customer_id=None if i % 3 else "cus_1",
            occurred_at=T0 + i * HOUR,
            properties={"n": i, "flag": bool(i % 2), "text": texts[i % len(texts)], "none": None}
            if i % 5
            else {},
        )
        for i in range(1200)
    ]
    messages = [outbox_message(f"evt_{i:04}", created_at=T0) for i in range(1200)]
    deliveries = [
        EmailDelivery(
            message_id=f"msg_{i:04}",
            event_id=f"evt_{i:04}",
            template=texts[i % len(texts)],
            to="someone@example.com",
            status=DeliveryStatus.SENT,
            created_at=T0,
        )
        for i in range(0, 1200, 2)
    ]
    with SqlAlchemyUnitOfWork(engine) as uow:
        for message in messages:
            uow.outbox.add(message)
        uow.analytics.add_new(events)
        uow.analytics.add_new(events[:10])  # stored already: skipped
        uow.email_deliveries.add_new(deliveries)
        uow.commit()
    asked = {(f"evt_{i:04}", texts[i % len(texts)]) for i in range(1200)}
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert list(uow.analytics.list()) == events
        assert uow.email_deliveries.sent(asked) == {(d.event_id, d.template) for d in deliveries}
        uow.outbox.mark_delivered([m.id for m in messages], T0 + HOUR)
        uow.outbox.mark_delivered([messages[0].id], T0 + 2 * HOUR)  # the first time is kept
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow:
        assert uow.outbox.pending(limit=10) == []
        assert {m.delivered_at for m in uow.outbox.list()} == {T0 + HOUR}


def test_marking_an_unknown_message_delivered_raises_not_found_and_marks_none(
    engine: Engine,
) -> None:
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.outbox.add(outbox_message("evt_1", created_at=T0))
        uow.commit()
    with SqlAlchemyUnitOfWork(engine) as uow, pytest.raises(NotFound, match="evt_missing"):
        uow.outbox.mark_delivered(["evt_1", "evt_missing", 'evt_"odd"'], T0 + HOUR)
    with SqlAlchemyUnitOfWork(engine) as uow:
        [message] = uow.outbox.pending(limit=10)
        uow.outbox.mark_delivered(["evt_1", "evt_1"], T0 + HOUR)  # twice in one call: once
        uow.commit()
    assert message.id == "evt_1"
    with SqlAlchemyUnitOfWork(engine) as uow:
        [stored] = uow.outbox.list()
    assert (stored.delivered_at, stored.attempts) == (T0 + HOUR, 1)


def test_a_settlement_batch_on_sqlite_holds_the_write_lock_before_it_reads(
    tmp_path: Path,
) -> None:
    # In WAL mode a transaction that read, then asks for the write lock after another
    # writer committed, fails at once ("database is locked", no waiting): the settlement
    # of a billing run read its invoices before locking its payments, and a second
    # worker's commit in between made the whole run fail and be retried.
    url = sqlite_url(tmp_path / "billing.db")
    engine = create_engine_for(url)
    other = create_engine_for(url, connect_args={"timeout": 0.05})
    try:
        upgrade(engine)
        with SqlAlchemyUnitOfWork(engine) as uow:
            uow.customers.add(customer("cus_1"))
            uow.invoices.add(invoice("in_1", subscription_id=None, status=InvoiceStatus.OPEN))
            uow.payments.add(payment("pay_1"))
            uow.commit()
        written: list[str] = []

        def another_writer_commits(*args: object) -> None:
            if written or not str(args[2]).startswith("SELECT"):
                return  # once, right after the settlement's first read
            written.append("tried")
            try:
                with SqlAlchemyUnitOfWork(other) as writer:
                    writer.customers.add(customer("cus_2"))
                    writer.commit()
                written.append("committed")
            except GatewayUnavailable:  # refused: the settlement holds the write lock
                written.append("refused")

        event.listen(engine, "after_cursor_execute", another_writer_commits)
        with SqlAlchemyUnitOfWork(engine) as settling:
            settling.prepare_batch(invoices=["in_1"], payments_for_update=["pay_1"])
            assert settling.payments.get_for_update("pay_1").id == "pay_1"
            settling.commit()
        assert written == ["tried", "refused"]
    finally:
        engine.dispose()
        other.dispose()
