"""The memory store's own promises, beyond the UnitOfWork contract it shares with SQL."""

import threading
from datetime import timedelta

import attrs
import pytest

from lumenquest_adapters.memory import MemoryStore, MemoryUnitOfWork
from lumenquest_adapters.testing.samples import T0, customer, invoice, pending_line, subscription
from lumenquest_core.errors import Conflict, NotFound, ValidationError


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def test_a_repository_used_outside_its_with_block_refuses(store: MemoryStore) -> None:
    uow = MemoryUnitOfWork(store)
    with pytest.raises(RuntimeError, match="with"):
        uow.customers.get("cus_1")


def test_a_unit_of_work_cannot_be_entered_twice(store: MemoryStore) -> None:
    with MemoryUnitOfWork(store) as uow, pytest.raises(RuntimeError, match="already open"):
        uow.__enter__()


def test_an_unknown_attribute_is_an_attribute_error(store: MemoryStore) -> None:
    with pytest.raises(AttributeError, match="carts"):
        MemoryUnitOfWork(store).carts  # noqa: B018


def test_the_store_lock_is_released_when_the_block_raises(store: MemoryStore) -> None:
    with pytest.raises(ZeroDivisionError), MemoryUnitOfWork(store):
        1 / 0  # noqa: B018
    entered: list[bool] = []

    def enter() -> None:
        with MemoryUnitOfWork(store):
            entered.append(True)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert entered == [True]


def test_concurrent_writers_all_commit(store: MemoryStore) -> None:
    def write(n: int) -> None:
        for i in range(50):
            with MemoryUnitOfWork(store) as uow:
                uow.customers.add(customer(f"cus_{n}_{i}"))
                uow.commit()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with MemoryUnitOfWork(store) as uow:
        assert len(uow.customers.list(limit=1000)) == 400


def test_a_nested_commit_of_the_same_email_makes_the_outer_commit_conflict(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as outer:
        outer.customers.add(customer("cus_1", email="a@example.com"))
        with MemoryUnitOfWork(store) as inner:
            inner.customers.add(customer("cus_2", email="a@example.com"))
            inner.commit()
        with pytest.raises(Conflict):
            outer.commit()
    with MemoryUnitOfWork(store) as uow:
        assert [c.id for c in uow.customers.list()] == ["cus_2"]


def test_a_nested_commit_of_invoice_numbers_makes_the_outer_commit_conflict(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as outer:
        assert outer.invoices.next_number() == 1
        with MemoryUnitOfWork(store) as inner:
            assert inner.invoices.next_number() == 1
            inner.commit()
        with pytest.raises(Conflict, match="invoice numbers"):
            outer.commit()


def test_a_unit_of_work_opened_after_a_nested_commit_commits_normally(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as outer:
        outer.customers.add(customer("cus_1"))
        outer.commit()
        with MemoryUnitOfWork(store) as inner:
            inner.customers.add(customer("cus_2"))
            inner.commit()
        outer.customers.add(customer("cus_3"))
        outer.commit()
    with MemoryUnitOfWork(store) as uow:
        assert [c.id for c in uow.customers.list()] == ["cus_1", "cus_2", "cus_3"]


def test_a_duplicate_names_the_kind_and_id_and_an_email_conflict_hides_the_address(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as uow:
        uow.customers.add(customer("cus_1", email="ada@example.com"))
        with pytest.raises(Conflict) as duplicate:
            uow.customers.add(customer("cus_1", email="other@example.com"))
        with pytest.raises(Conflict) as taken:
            uow.customers.add(customer("cus_2", email="ada@example.com"))
    assert duplicate.value.details == {
        "kind": "customer",
        "id": "cus_1",
        "constraint": "primary_key",
    }
    assert "ada@example.com" not in str(taken.value.to_dict())


def test_an_unknown_invoice_cursor_raises_not_found(store: MemoryStore) -> None:
    with MemoryUnitOfWork(store) as uow, pytest.raises(NotFound):
        uow.invoices.list(after="in_missing")


def test_a_negative_limit_is_rejected(store: MemoryStore) -> None:
    with MemoryUnitOfWork(store) as uow, pytest.raises(ValidationError):
        uow.customers.list(limit=-1)


def test_a_pending_line_taken_and_added_again_in_one_unit_of_work_is_kept(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add_pending_line(pending_line("pl_1"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        [taken] = uow.invoices.take_pending_lines("sub_1")
        uow.invoices.add_pending_line(taken)
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        assert [p.id for p in uow.invoices.take_pending_lines("sub_1")] == ["pl_1"]


def test_an_update_that_moves_an_invoice_to_another_customer_moves_its_listing(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add(invoice("in_1", customer_id="cus_1"))
        uow.invoices.add(invoice("in_2", customer_id="cus_2", subscription_id="sub_2"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.update(invoice("in_1", customer_id="cus_2"))
        assert [i.id for i in uow.invoices.list(customer_id="cus_2")] == ["in_1", "in_2"]
        assert uow.invoices.list(customer_id="cus_1") == []
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        assert [i.id for i in uow.invoices.list(customer_id="cus_2")] == ["in_1", "in_2"]


def test_the_due_index_does_not_grow_with_updates(store: MemoryStore) -> None:
    """Stale heap entries are dropped, so repeated renewals keep the index small."""
    with MemoryUnitOfWork(store) as uow:
        uow.subscriptions.add(subscription("sub_1", due=T0))
        uow.commit()
    for hour in range(1, 3000):
        with MemoryUnitOfWork(store) as uow:
            sub = uow.subscriptions.get("sub_1")
            uow.subscriptions.update(
                attrs.evolve(sub, next_payment_retry_at=T0 + timedelta(hours=hour))
            )
            uow.commit()
    assert len(store.due_heap) <= 2 * len(store.due_of) + 1024
    with MemoryUnitOfWork(store) as uow:
        assert [s.id for s in uow.subscriptions.claim_due(T0, limit=5)] == ["sub_1"]


def test_a_claim_leaves_unprocessed_subscriptions_due(store: MemoryStore) -> None:
    with MemoryUnitOfWork(store) as uow:
        for i in range(5):
            uow.subscriptions.add(subscription(f"sub_{i}", due=T0 + timedelta(hours=i)))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        assert len(uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=2)) == 2
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        claimed = uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=10)
        assert [s.id for s in claimed] == [f"sub_{i}" for i in range(5)]
