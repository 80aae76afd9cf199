"""The memory store's own promises, beyond the UnitOfWork contract it shares with SQL."""

import inspect
import random
import threading
from datetime import datetime, timedelta
from unittest.mock import MagicMock

import attrs
import pytest

from lumenquest_adapters.memory import MemoryStore, MemoryUnitOfWork
from lumenquest_adapters.memory._tables import Table, UniqueIndex, View
from lumenquest_adapters.testing.samples import (
    T0,
    audit_entry,
    customer,
    invoice,
    outbox_message,
    payment,
    pending_line,
    subscription,
    subscription_change,
)
from lumenquest_core.errors import Conflict, NotFound, ValidationError
from lumenquest_core.payments import AuditEntry, Payment, SubscriptionChange
from lumenquest_core.ports import AuditFields, ChangeFields, MessageFields, message_fields


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def test_a_repository_used_outside_its_with_block_refuses(store: MemoryStore) -> None:
    uow = MemoryUnitOfWork(store)
    with pytest.raises(RuntimeError, match="with"):
        uow.customers.get("cus_1")


_REPOSITORY_NAMES = [
    "customers",
    "plans",
    "prices",
    "coupons",
    "subscriptions",
    "invoices",
    "payments",
    "credit_notes",
    "usage",
    "outbox",
    "audit_log",
    "subscription_changes",
    "analytics",
    "email_deliveries",
    "idempotency",
]


@pytest.mark.parametrize("name", _REPOSITORY_NAMES)
def test_every_repository_method_refuses_outside_the_with_block(
    store: MemoryStore, name: str
) -> None:
    uow = MemoryUnitOfWork(store)
    with uow:
        pass
    repository = getattr(uow, name)  # built inside the block, used after it
    methods = [m for m in dir(repository) if not m.startswith("_")]
    assert methods
    for method in methods:
        function = getattr(repository, method)
        parameters = inspect.signature(function).parameters.values()
        args = [MagicMock() for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
        kwargs = {p.name: MagicMock() for p in parameters if p.kind is p.KEYWORD_ONLY}
        with pytest.raises(RuntimeError, match="with"):
            function(*args, **kwargs)


def test_a_unit_of_work_cannot_be_entered_twice(store: MemoryStore) -> None:
    with MemoryUnitOfWork(store) as uow, pytest.raises(RuntimeError, match="already open"):
        uow.__enter__()


def test_an_unknown_attribute_is_an_attribute_error(store: MemoryStore) -> None:
    with pytest.raises(AttributeError, match="carts"):
        MemoryUnitOfWork(store).carts  # noqa: B018


def test_a_repository_is_built_once_per_unit_of_work_and_kept_as_its_attribute(
    store: MemoryStore,
) -> None:
    uow, other = MemoryUnitOfWork(store), MemoryUnitOfWork(store)
    customers = uow.customers
    assert uow.customers is customers
    assert vars(uow)["customers"] is customers
    assert other.customers is not customers
    assert "plans" not in vars(uow)  # only what is used is built
    assert not isinstance(MemoryUnitOfWork.customers, type(customers))  # the class's builder


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


def test_pending_lines_are_taken_from_an_empty_store_and_from_this_unit_of_work(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as uow:
        assert uow.invoices.take_pending_lines("sub_1") == []
        # Nothing committed yet: the line staged here is still found and taken.
        uow.invoices.add_pending_line(pending_line("pl_1"))
        assert [p.id for p in uow.invoices.take_pending_lines("sub_1")] == ["pl_1"]
        assert uow.invoices.take_pending_lines("sub_1") == []
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        assert uow.invoices.take_pending_lines("sub_1") == []


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
    """Stale due entries are dropped, so repeated renewals keep the index small."""
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
    assert store.due_entries == len(_due_entries(store)) <= 2 * len(store.due_of) + 1024
    with MemoryUnitOfWork(store) as uow:
        assert [s.id for s in uow.subscriptions.claim_due(T0, limit=5)] == ["sub_1"]


def test_subscriptions_due_at_one_instant_share_its_object_in_the_due_index(
    store: MemoryStore,
) -> None:
    later = T0 + timedelta(days=3)
    with MemoryUnitOfWork(store) as uow:
        # Equal instants, but distinct objects.
        uow.subscriptions.add(subscription("sub_1", due=T0 + timedelta(days=2, hours=24)))
        uow.subscriptions.add(subscription("sub_2", due=later.replace()))
        uow.commit()
    [instant] = store.due_order[store.due_next :]
    assert instant == later
    assert store.due_of["sub_1"] is store.due_of["sub_2"] is instant
    assert sorted(store.due_ids[instant]) == ["sub_1", "sub_2"]


def test_the_due_instants_are_forgotten_once_there_are_many(store: MemoryStore) -> None:
    store.due_instants.update((T0 - timedelta(seconds=i),) * 2 for i in range(1, 4097))
    with MemoryUnitOfWork(store) as uow:
        uow.subscriptions.add(subscription("sub_1", due=T0))
        uow.commit()
    assert store.due_instants == {T0: T0}
    with MemoryUnitOfWork(store) as uow:
        assert [s.id for s in uow.subscriptions.claim_due(T0, limit=5)] == ["sub_1"]


def test_subscriptions_due_at_one_instant_are_claimed_in_id_order_whatever_their_filing(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as uow:
        for sid in ["sub_3", "sub_10", "sub_1", "sub_7"]:
            uow.subscriptions.add(subscription(sid, due=T0))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        assert [s.id for s in uow.subscriptions.claim_due(T0, limit=2)] == ["sub_1", "sub_10"]
        uow.commit()
    # Filed after a claim sorted the instant's ids: one sorting first, one last.
    with MemoryUnitOfWork(store) as uow:
        uow.subscriptions.add(subscription("sub_0", due=T0))
        uow.subscriptions.add(subscription("sub_9", due=T0))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        claimed = uow.subscriptions.claim_due(T0, limit=10)
        assert [s.id for s in claimed] == ["sub_0", "sub_1", "sub_10", "sub_3", "sub_7", "sub_9"]


def test_claims_put_back_keep_the_order_of_an_instant_and_of_the_instants(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as uow:
        for sid in ["sub_a", "sub_b", "sub_c", "sub_d"]:
            uow.subscriptions.add(subscription(sid, due=T0))
        uow.subscriptions.add(subscription("sub_e", due=T0 + timedelta(hours=1)))
        uow.subscriptions.add(subscription("sub_f", due=T0 + timedelta(hours=1)))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:  # rolled back: every claim is put back
        claimed = uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=5)
        assert [s.id for s in claimed] == ["sub_a", "sub_b", "sub_c", "sub_d", "sub_e"]
    assert store.due_claimed == []
    assert _due_entries(store) == _live_entries(store)
    with MemoryUnitOfWork(store) as uow:
        claimed = uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=3)
        assert [s.id for s in claimed] == ["sub_a", "sub_b", "sub_c"]
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        claimed = uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=10)
        assert [s.id for s in claimed] == ["sub_a", "sub_b", "sub_c", "sub_d", "sub_e", "sub_f"]


def test_a_subscription_moved_away_and_back_is_claimed_once(store: MemoryStore) -> None:
    with MemoryUnitOfWork(store) as uow:
        uow.subscriptions.add(subscription("sub_1", due=T0))
        uow.subscriptions.add(subscription("sub_2", due=T0))
        uow.commit()
    for due in (T0 + timedelta(days=5), T0):
        with MemoryUnitOfWork(store) as uow:
            uow.subscriptions.update(subscription("sub_1", due=due))
            uow.commit()
    assert [sid for _, sid in _due_entries(store)].count("sub_1") == 3  # two stale
    with MemoryUnitOfWork(store) as uow:
        claimed = uow.subscriptions.claim_due(T0 + timedelta(days=10), limit=10)
        assert [s.id for s in claimed] == ["sub_1", "sub_2"]
        uow.commit()
    assert store.due_entries == len(_due_entries(store))


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


def _due_entries(store: MemoryStore) -> list[tuple[object, str]]:
    """Return every (due, id) entry the due index holds, sorted."""
    # One entry per instant in due_order, in ascending order, past the claimed ones.
    instants = store.due_order[store.due_next :]
    assert instants == sorted(store.due_ids)
    assert len(set(instants)) == len(instants)
    return sorted((due, sid) for due, ids in store.due_ids.items() for sid in ids)


def _live_entries(store: MemoryStore) -> list[tuple[object, str]]:
    return sorted((due, sid) for sid, due in store.due_of.items())


def _customer_ids(store: MemoryStore, customer_id: str) -> list[str]:
    with MemoryUnitOfWork(store) as uow:
        return [i.id for i in uow.invoices.list(customer_id=customer_id)]


def _due_store(store: MemoryStore, count: int) -> list[str]:
    with MemoryUnitOfWork(store) as uow:
        for i in range(count):
            uow.subscriptions.add(subscription(f"sub_{i}", due=T0 + timedelta(hours=i)))
        uow.commit()
    return [f"sub_{i}" for i in range(count)]


def test_a_second_claim_in_one_unit_of_work_finds_the_first_claims_subscriptions_again(
    store: MemoryStore,
) -> None:
    ids = _due_store(store, 4)
    with MemoryUnitOfWork(store) as uow:
        assert [s.id for s in uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=2)] == ids[
            :2
        ]
        claimed = uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=10)
        assert [s.id for s in claimed] == ids


def test_claimed_subscriptions_stay_due_after_a_rollback_or_a_commit_that_leaves_them(
    store: MemoryStore,
) -> None:
    ids = _due_store(store, 3)
    with MemoryUnitOfWork(store) as uow:
        uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=10)  # rolled back
    with MemoryUnitOfWork(store) as uow:
        uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=10)
        uow.customers.add(customer("cus_1"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        claimed = uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=10)
        assert [s.id for s in claimed] == ids
    assert _due_entries(store) == _live_entries(store)


def test_a_claimed_subscription_moved_by_the_commit_is_due_again_at_its_new_time_only(
    store: MemoryStore,
) -> None:
    _due_store(store, 2)
    with MemoryUnitOfWork(store) as uow:
        [sub] = uow.subscriptions.claim_due(T0, limit=10)
        uow.subscriptions.update(subscription(sub.id, due=T0 + timedelta(days=2)))
        uow.commit()
    assert store.due_claimed == []
    with MemoryUnitOfWork(store) as uow:
        assert [s.id for s in uow.subscriptions.claim_due(T0 + timedelta(days=1), limit=10)] == [
            "sub_1"
        ]
        assert [s.id for s in uow.subscriptions.claim_due(T0 + timedelta(days=2), limit=10)] == [
            "sub_1",
            "sub_0",
        ]


def test_a_nested_unit_of_work_claims_what_the_outer_one_claimed(store: MemoryStore) -> None:
    ids = _due_store(store, 2)
    with MemoryUnitOfWork(store) as outer:
        assert [
            s.id for s in outer.subscriptions.claim_due(T0 + timedelta(days=1), limit=10)
        ] == ids
        with MemoryUnitOfWork(store) as nested:
            claimed = nested.subscriptions.claim_due(T0 + timedelta(days=1), limit=10)
            assert [s.id for s in claimed] == ids
        outer.commit()
    assert _due_entries(store) == _live_entries(store)


def test_a_due_index_rebuilt_while_entries_are_claimed_holds_each_once(store: MemoryStore) -> None:
    _due_store(store, 2)
    # Stale entries (of no subscription) enough for the next commit to rebuild the index;
    # later than every live one, so that the instants stay in order.
    stale = T0 + timedelta(days=400)
    store.due_ids[stale] = ["gone"] * 1100
    store.due_order.append(stale)
    store.due_entries += 1100
    with MemoryUnitOfWork(store) as uow:
        [first] = uow.subscriptions.claim_due(T0, limit=1)
        assert first.id == "sub_0"
        uow.subscriptions.update(subscription("sub_1", due=T0 + timedelta(days=3)))
        uow.commit()
    assert _due_entries(store) == _live_entries(store)
    with MemoryUnitOfWork(store) as uow:
        assert [s.id for s in uow.subscriptions.claim_due(T0, limit=10)] == ["sub_0"]


def test_an_index_read_late_files_rows_moved_before_and_after_its_first_read(
    store: MemoryStore,
) -> None:
    """Secondary indexes are filed when read: moves on either side of that read count."""
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add(invoice("in_1", customer_id="cus_1"))
        uow.invoices.add(invoice("in_2", customer_id="cus_2", subscription_id="sub_2"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:  # before any read of the customer index
        uow.invoices.update(invoice("in_1", customer_id="cus_2"))
        uow.commit()
    assert _customer_ids(store, "cus_2") == ["in_1", "in_2"]
    assert _customer_ids(store, "cus_1") == []
    with MemoryUnitOfWork(store) as uow:  # the index now holds both rows
        uow.invoices.update(invoice("in_1", customer_id="cus_1"))
        uow.commit()
    assert _customer_ids(store, "cus_1") == ["in_1"]
    assert _customer_ids(store, "cus_2") == ["in_2"]
    with MemoryUnitOfWork(store) as uow:  # the older row rejoins in creation order
        uow.invoices.update(invoice("in_1", customer_id="cus_2"))
        uow.invoices.add(invoice("in_3", customer_id="cus_2", subscription_id="sub_3"))
        uow.commit()
    assert _customer_ids(store, "cus_2") == ["in_1", "in_2", "in_3"]


def _positions_match(store: MemoryStore) -> bool:
    table = store.pending_lines
    positions = table.positions()
    live = [at for at, row_id in enumerate(table.order) if positions.get(row_id) == at]
    return sorted(positions.values()) == live and set(positions) == set(table.rows)


def test_positions_are_filed_when_first_needed_and_skip_deleted_rows(store: MemoryStore) -> None:
    with MemoryUnitOfWork(store) as uow:
        for line_id in ("pl_1", "pl_2", "pl_3"):
            uow.invoices.add_pending_line(pending_line(line_id))
        uow.commit()
    table = store.pending_lines
    assert table.position == {}  # nothing read by position yet
    with MemoryUnitOfWork(store) as uow:  # a delete files the positions first
        [taken] = [p for p in uow.invoices.take_pending_lines("sub_1") if p.id == "pl_2"]
        for line_id in ("pl_1", "pl_3"):
            uow.invoices.add_pending_line(pending_line(line_id))
        uow.invoices.add_pending_line(pending_line("pl_4"))
        uow.commit()
    assert taken.id == "pl_2"
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add_pending_line(pending_line("pl_2"))  # again, after the rest
        uow.commit()
    assert table.order == ["pl_1", "pl_2", "pl_3", "pl_4", "pl_2"]
    assert table.positioned == 3
    assert table.positions() == {"pl_1": 0, "pl_3": 2, "pl_4": 3, "pl_2": 4}
    assert _positions_match(store)
    with MemoryUnitOfWork(store) as uow:
        assert [p.id for p in uow.invoices.take_pending_lines("sub_1")] == [
            "pl_1",
            "pl_3",
            "pl_4",
            "pl_2",
        ]


def test_a_cursor_reads_rows_committed_since_the_positions_were_last_filed(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as uow:
        for i in range(1, 4):
            uow.invoices.add(invoice(f"in_{i}", customer_id="cus_1", subscription_id=f"sub_{i}"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        assert [i.id for i in uow.invoices.list(after="in_1")] == ["in_2", "in_3"]
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add(invoice("in_4", customer_id="cus_1", subscription_id="sub_4"))
        uow.commit()
    assert store.invoices.positioned == 3
    with MemoryUnitOfWork(store) as uow:
        assert [i.id for i in uow.invoices.list(after="in_3")] == ["in_4"]
        assert [i.id for i in uow.invoices.list(customer_id="cus_1", after="in_2")] == [
            "in_3",
            "in_4",
        ]


def test_committed_rows_keep_their_positions_after_a_staged_row_was_dropped(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add_pending_line(pending_line("pl_1"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        for line_id in ("pl_2", "pl_3", "pl_4"):
            uow.invoices.add_pending_line(pending_line(line_id))
        uow.invoices.take_pending_lines("sub_1")  # drops pl_2 to pl_4 before they are kept
        uow.invoices.add_pending_line(pending_line("pl_5"))
        uow.commit()
    assert _positions_match(store)
    with MemoryUnitOfWork(store) as uow:
        assert [p.id for p in uow.invoices.take_pending_lines("sub_1")] == ["pl_5"]


def test_rows_committed_after_a_nested_commit_keep_their_positions(store: MemoryStore) -> None:
    with MemoryUnitOfWork(store) as outer:
        outer.invoices.add_pending_line(pending_line("pl_1"))
        outer.invoices.add_pending_line(pending_line("pl_2"))
        with MemoryUnitOfWork(store) as nested:
            nested.invoices.add_pending_line(pending_line("pl_3"))
            nested.commit()
        outer.commit()
    assert _positions_match(store)
    assert store.pending_lines.order == ["pl_3", "pl_1", "pl_2"]


def test_staged_rows_that_change_keys_are_listed_in_creation_order(store: MemoryStore) -> None:
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add(invoice("in_1", customer_id="cus_1"))
        assert [i.id for i in uow.invoices.list(customer_id="cus_1")] == ["in_1"]
        uow.invoices.update(invoice("in_1", customer_id="cus_2"))
        assert uow.invoices.list(customer_id="cus_1") == []
        uow.invoices.add(invoice("in_2", customer_id="cus_2", subscription_id="sub_2"))
        uow.invoices.update(invoice("in_1", customer_id="cus_3"))
        uow.invoices.update(invoice("in_1", customer_id="cus_2"))
        assert [i.id for i in uow.invoices.list(customer_id="cus_2")] == ["in_1", "in_2"]
        assert [i.id for i in uow.invoices.list(customer_id="cus_2", after="in_1")] == ["in_2"]
        uow.commit()
    assert _customer_ids(store, "cus_2") == ["in_1", "in_2"]


def test_a_line_taken_and_added_again_later_is_listed_as_the_newest(store: MemoryStore) -> None:
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add_pending_line(pending_line("pl_1"))
        uow.invoices.add_pending_line(pending_line("pl_2"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        assert [p.id for p in uow.invoices.take_pending_lines("sub_1")] == ["pl_1", "pl_2"]
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add_pending_line(pending_line("pl_3"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        uow.invoices.add_pending_line(pending_line("pl_1"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        assert [p.id for p in uow.invoices.take_pending_lines("sub_1")] == ["pl_3", "pl_1"]
        assert uow.invoices.take_pending_lines("sub_1") == []


def test_customers_trading_emails_in_one_unit_of_work_keep_them_unique(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as uow:
        uow.customers.add(customer("cus_1", email="a@example.com"))
        uow.customers.add(customer("cus_2", email="b@example.com"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        uow.customers.update(customer("cus_1", email="c@example.com"))
        uow.customers.update(customer("cus_2", email="a@example.com"))
        uow.customers.update(customer("cus_1", email="b@example.com"))
        with pytest.raises(Conflict):
            uow.customers.add(customer("cus_3", email="a@example.com"))
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        owners = {e: uow.customers.find_by_email(f"{e}@example.com") for e in "abc"}
        assert {e: c and c.id for e, c in owners.items()} == {"a": "cus_2", "b": "cus_1", "c": None}
        uow.customers.add(customer("cus_3", email="c@example.com"))
        uow.commit()


def _payment_id(found: Payment | None) -> str | None:
    return None if found is None else found.id


def test_a_payment_is_found_by_its_idempotency_key_and_its_gateway_reference(
    store: MemoryStore,
) -> None:
    with MemoryUnitOfWork(store) as uow:
        uow.payments.add(payment("pay_1"))
        assert _payment_id(uow.payments.find(idempotency_key="key-pay_1")) == "pay_1"
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        stored = uow.payments.get("pay_1")
        uow.payments.update(attrs.evolve(stored, gateway_reference="ch_1"))
        assert _payment_id(uow.payments.find(gateway_reference="ch_1")) == "pay_1"
        uow.commit()
    with MemoryUnitOfWork(store) as uow:
        assert _payment_id(uow.payments.find(idempotency_key="key-pay_1")) == "pay_1"
        assert _payment_id(uow.payments.find(gateway_reference="ch_1")) == "pay_1"
        assert uow.payments.find(idempotency_key="key-other") is None
        assert uow.payments.find() is None


@attrs.frozen
class _Row:
    id: str
    a: str | None = None
    b: str | None = None
    group: str | None = None


def _taken(row: _Row) -> tuple[str, dict[str, str]]:
    return "taken", {}


def _table() -> Table[_Row]:
    return Table(
        "row",
        lambda row: row.id,
        uniques=[
            UniqueIndex("a", lambda r: r.a, _taken),
            UniqueIndex("b", lambda r: r.b, _taken),
        ],
        indexes={"group": lambda r: r.group},
    )


def _commit(table: Table[_Row], *writes: tuple[str, _Row | str]) -> View[_Row]:
    view: View[_Row] = View(table, lambda _: None)
    for action, arg in writes:
        getattr(view, action)(arg)
    overlay = view.take_overlay()
    assert overlay is not None
    table.apply(overlay)
    return view


def test_a_table_checks_each_of_several_unique_keys() -> None:
    table = _table()
    _commit(table, ("add", _Row("r1", a="x", b="y")))
    view: View[_Row] = View(table, lambda _: None)
    with pytest.raises(Conflict) as taken:
        view.add(_Row("r2", a="other", b="y"))
    assert taken.value.details["constraint"] == "b"
    view.update(_Row("r1", a="x", b="z"))
    view.add(_Row("r2", a="other", b="y"))
    overlay = view.take_overlay()
    assert overlay is not None
    table.apply(overlay)
    assert [table.unique_owners[1].get(k) for k in ("y", "z")] == ["r2", "r1"]


def test_rows_deleted_before_and_after_their_index_was_read_leave_it() -> None:
    table = _table()
    _commit(table, ("add", _Row("r1", group="g")), ("add", _Row("r2", group="g")))
    view: View[_Row] = View(table, lambda _: None)
    assert [r.id for r in view.bucket("group", "g")] == ["r1", "r2"]  # files both
    _commit(table, ("add", _Row("r3", group="g")), ("delete", "r1"))
    _commit(table, ("delete", "r3"), ("add", _Row("r4", group="g")))  # r3 never filed
    _commit(table, ("add", _Row("r1", group="g")))
    assert [r.id for r in view.bucket("group", "g")] == ["r2", "r4", "r1"]


def test_a_row_a_nested_commit_deleted_is_created_again_by_the_outer_update() -> None:
    table = _table()
    _commit(table, ("add", _Row("r1", group="g")))
    outer: View[_Row] = View(table, lambda _: None)
    outer.update(_Row("r1", group="h"))
    _commit(table, ("delete", "r1"))
    outer.recheck()
    overlay = outer.take_overlay()
    assert overlay is not None
    table.apply(overlay)
    view: View[_Row] = View(table, lambda _: None)
    assert [r.id for r in view.bucket("group", "h")] == ["r1"]
    assert [r.id for r in view.scan()] == ["r1"]


def _one_key_table() -> Table[_Row]:
    return Table("row", lambda row: row.id, uniques=[UniqueIndex("a", lambda r: r.a, _taken)])


def test_a_key_its_committed_owner_gave_up_in_this_unit_of_work_can_be_claimed() -> None:
    table = _one_key_table()
    _commit(table, ("add", _Row("r1", a="x")), ("add", _Row("r2", a="y")))
    view: View[_Row] = View(table, lambda _: None)
    view.delete("r1")
    view.add(_Row("r3", a="x"))  # r1, deleted, holds x no more
    view.update(_Row("r2", a="z"))
    view.add(_Row("r4", a="y"))  # r2 moved off y
    overlay = view.take_overlay()
    assert overlay is not None
    table.apply(overlay)
    assert table.unique_owners[0] == {"x": "r3", "y": "r4", "z": "r2"}


def test_a_committed_owner_updated_but_keeping_its_key_still_holds_it() -> None:
    table = _one_key_table()
    _commit(table, ("add", _Row("r1", a="x")))
    view: View[_Row] = View(table, lambda _: None)
    view.update(_Row("r1", a="x", group="g"))
    with pytest.raises(Conflict) as taken:
        view.add(_Row("r2", a="x"))
    assert taken.value.details["existing_id"] == "r1"


def test_a_row_deleted_in_this_unit_of_work_is_not_found_by_id() -> None:
    table = _one_key_table()
    _commit(table, ("add", _Row("r1", a="x")), ("add", _Row("r2", a="y")))
    view: View[_Row] = View(table, lambda _: None)
    view.delete("r1")
    with pytest.raises(NotFound):
        view.get("r1")
    assert view.get("r2") == _Row("r2", a="y")  # committed, under a live overlay
    view.add(_Row("r1", a="z"))
    assert view.get("r1") == _Row("r1", a="z")


def _fields(entry: AuditEntry) -> AuditFields:
    return attrs.astuple(entry, recurse=False)  # type: ignore[return-value]


def _change_fields(change: SubscriptionChange) -> ChangeFields:
    return attrs.astuple(change, recurse=False)  # type: ignore[return-value]


def test_add_history_stores_what_the_repositories_add_one_by_one(store: MemoryStore) -> None:
    first, second = outbox_message("evt_1"), outbox_message("evt_2", customer_id="cus_2")
    entry = attrs.evolve(audit_entry("aud_1"), after={"amount": {"amount": 5}})
    change = subscription_change("chg_1")
    other = MemoryStore()
    with MemoryUnitOfWork(store) as uow:
        uow.add_history(
            T0, [message_fields(first.id, first.event), message_fields(second.id, second.event)]
        )
        uow.add_history(T0, [], _fields(entry), _change_fields(change))
        uow.commit()
    with MemoryUnitOfWork(other) as uow:
        uow.outbox.add(first)
        uow.outbox.add(second)
        uow.audit_log.add(entry)
        uow.subscription_changes.add(change)
        uow.commit()
    for table in ("outbox", "audit_log", "subscription_changes"):
        assert getattr(store, table).rows == getattr(other, table).rows
        assert getattr(store, table).order == getattr(other, table).order
    with MemoryUnitOfWork(store) as uow:
        assert uow.outbox.pending(limit=10) == [first, second]
        assert uow.audit_log.list(subject_id="sub_1") == [entry]
        assert uow.subscription_changes.list(customer_id="cus_1") == [change]


def test_an_entry_whose_after_is_an_events_data_shares_its_packed_bytes(
    store: MemoryStore,
) -> None:
    event = attrs.evolve(outbox_message("evt_1").event, data={"total": {"amount": 5}})
    data = event.data
    entry = attrs.evolve(audit_entry("aud_1"), after=data)
    with MemoryUnitOfWork(store) as uow:
        uow.add_history(T0, [message_fields("evt_1", event)], _fields(entry))
        uow.commit()
    packed = store.outbox.rows["evt_1"][5]
    assert type(packed) is bytes
    assert store.audit_log.rows["aud_1"][-1] is packed  # marshalled once, kept twice
    with MemoryUnitOfWork(store) as uow:
        (read,) = uow.audit_log.list(subject_id=entry.subject_id)
    assert read.before is None
    assert read.after == dict(data)
    assert type(read.after) is dict  # a fresh copy, as any entry reads back


@pytest.mark.parametrize("kind", ["message", "entry", "change"])
def test_add_history_refuses_an_id_taken_before(store: MemoryStore, kind: str) -> None:
    message, entry, change = outbox_message("x_1"), audit_entry("x_1"), subscription_change("x_1")
    with MemoryUnitOfWork(store) as uow:
        uow.outbox.add(message)
        uow.audit_log.add(entry)
        uow.subscription_changes.add(change)
        uow.commit()
    arguments = {
        "message": ([message_fields("x_1", message.event)],),
        "entry": ([], _fields(entry)),
        "change": ([], None, _change_fields(change)),
    }[kind]
    with MemoryUnitOfWork(store) as uow, pytest.raises(Conflict, match="x_1"):
        uow.add_history(T0, *arguments)  # type: ignore[arg-type]


def test_add_history_refuses_an_id_twice_in_one_call(store: MemoryStore) -> None:
    event = outbox_message("evt_1").event
    with MemoryUnitOfWork(store) as uow, pytest.raises(Conflict, match="evt_1"):
        uow.add_history(T0, [message_fields("evt_1", event), message_fields("evt_1", event)])


def test_add_history_refuses_outside_the_with_block(store: MemoryStore) -> None:
    uow = MemoryUnitOfWork(store)
    with pytest.raises(RuntimeError, match="with"):
        uow.add_history(T0, [("evt_1", outbox_message("evt_1").event)])


def test_history_appended_reads_back_in_creation_order_with_rows_added_between(
    store: MemoryStore,
) -> None:
    """Rows add_history stages by append are filed before any other operation reads."""
    messages = [outbox_message(f"evt_{i}") for i in range(1, 6)]

    def fields(i: int) -> list[MessageFields]:
        return [message_fields(messages[i].id, messages[i].event)]

    with MemoryUnitOfWork(store) as uow:
        uow.add_history(T0, fields(0))
        uow.add_history(T0, fields(1))
        uow.outbox.add(messages[2])  # files the two appended rows first
        uow.add_history(T0, fields(3))  # into the overlay, which exists now
        assert uow.outbox.list() == messages[:4]
        uow.commit()
        uow.add_history(T0, fields(4))
        assert uow.outbox.pending(limit=10) == messages
        with pytest.raises(Conflict, match="evt_5"):
            uow.add_history(T0, fields(4))  # staged by append, then filed: still taken
        uow.commit()
    assert store.outbox.order == [m.id for m in messages]
    with MemoryUnitOfWork(store) as uow:
        assert uow.outbox.list() == messages


def test_history_appended_is_dropped_by_a_rollback(store: MemoryStore) -> None:
    event = outbox_message("evt_1").event
    with MemoryUnitOfWork(store) as uow:
        uow.add_history(T0, [message_fields("evt_1", event)], _fields(audit_entry("aud_1")))
        uow.rollback()
        uow.add_history(T0, [message_fields("evt_2", event)])
    assert not store.outbox.rows
    assert not store.audit_log.rows
    with MemoryUnitOfWork(store) as uow:
        uow.add_history(T0, [message_fields("evt_1", event)])  # the id is free again
        uow.commit()
    assert list(store.outbox.rows) == ["evt_1"]


def test_a_nested_commit_of_an_appended_history_id_makes_the_outer_commit_conflict(
    store: MemoryStore,
) -> None:
    event = outbox_message("evt_1").event
    with MemoryUnitOfWork(store) as outer:
        outer.add_history(T0, [message_fields("evt_1", event)], _fields(audit_entry("aud_1")))
        with MemoryUnitOfWork(store) as inner:
            inner.add_history(T0, [], _fields(audit_entry("aud_1")))
            inner.commit()
        with pytest.raises(Conflict, match="aud_1"):
            outer.commit()
    assert list(store.outbox.rows) == []  # nothing of the outer unit of work was kept
    assert list(store.audit_log.rows) == ["aud_1"]


@pytest.mark.parametrize("kind", ["message", "entry", "change"])
def test_add_history_refuses_an_id_taken_before_once_rows_are_appended(
    store: MemoryStore, kind: str
) -> None:
    """The second row of a kind staged in a transaction is checked as the first is."""
    message, entry, change = outbox_message("x_1"), audit_entry("x_1"), subscription_change("x_1")
    with MemoryUnitOfWork(store) as uow:
        uow.outbox.add(message)
        uow.audit_log.add(entry)
        uow.subscription_changes.add(change)
        uow.commit()
    first = {
        "message": ([message_fields("x_0", message.event)],),
        "entry": ([], _fields(attrs.evolve(entry, id="x_0"))),
        "change": ([], None, _change_fields(attrs.evolve(change, id="x_0"))),
    }[kind]
    taken = {
        "message": ([message_fields("x_1", message.event)],),
        "entry": ([], _fields(entry)),
        "change": ([], None, _change_fields(change)),
    }[kind]
    with MemoryUnitOfWork(store) as uow:
        uow.add_history(T0, *first)  # type: ignore[arg-type]
        with pytest.raises(Conflict, match="x_1"):
            uow.add_history(T0, *taken)  # type: ignore[arg-type]
        uow.commit()  # the first row alone
    assert (
        store.outbox.order.count("x_0")
        + store.audit_log.order.count("x_0")
        + (store.subscription_changes.order.count("x_0"))
        == 1
    )


def test_the_due_index_claims_earliest_first_whatever_the_filing_order(
    store: MemoryStore,
) -> None:
    """Instants filed in any order, claimed in batches past the list's compaction."""
    count = 1500  # more claimed instants than due_order keeps before dropping them
    hours = list(range(count))
    random.Random(7).shuffle(hours)
    with MemoryUnitOfWork(store) as uow:
        for i in hours:
            uow.subscriptions.add(subscription(f"sub_{i}", due=T0 + timedelta(hours=i)))
        uow.commit()
    claimed: list[str] = []
    renewed: list[tuple[datetime, str]] = []
    at = T0 + timedelta(hours=count)
    while True:
        with MemoryUnitOfWork(store) as uow:
            batch = uow.subscriptions.claim_due(at, limit=100)
            if not batch:
                break
            # Each batch renewed to an instant of its own, earlier than the last batch's:
            # filed in the middle of the list, not at its end.
            later = T0 + timedelta(days=400, hours=-len(claimed) // 100)
            for sub in batch:
                uow.subscriptions.update(subscription(sub.id, due=later))
                renewed.append((later, sub.id))
            uow.commit()
        claimed += [sub.id for sub in batch]
        assert _due_entries(store) == _live_entries(store)
    assert claimed == [f"sub_{i}" for i in range(count)]
    assert len(store.due_order) < count  # the claimed instants were dropped
    with MemoryUnitOfWork(store) as uow:
        again = uow.subscriptions.claim_due(T0 + timedelta(days=400), limit=count)
        assert [s.id for s in again] == [sid for _, sid in sorted(renewed)]
