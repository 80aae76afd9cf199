"""A batch's update sends the columns whose stored value changed, JSON by its exact text."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import SqlAlchemyUnitOfWork, _batch, _raw, upgrade
from lumenquest_adapters.sqlalchemy._batch import Batch
from lumenquest_adapters.sqlalchemy._errors import DescribeRow, described
from lumenquest_adapters.sqlalchemy._mapping import _canonical
from lumenquest_adapters.sqlalchemy._mapping import same_json as _same_json
from lumenquest_adapters.sqlalchemy._schema import customers
from lumenquest_adapters.testing.samples import T0, customer, plan, price, subscription
from lumenquest_core.errors import Conflict

HOUR = timedelta(hours=1)

_atoms = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(-2, 2)
    | st.sampled_from([0.0, -0.0, 1.0, float("nan")])
    | st.text(max_size=3)
)
_keys = st.text(max_size=2) | st.integers(0, 2) | st.booleans()
_data = st.recursive(
    _atoms,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=2), inner, max_size=3)
        | st.dictionaries(_keys, inner, max_size=3)
        | st.dictionaries(st.text(max_size=2), inner, max_size=3).map(MappingProxyType)
        | st.lists(inner, max_size=3).map(tuple)
    ),
    max_leaves=12,
)


def _canonical_or_error(value: Any) -> str:
    try:
        return _canonical(value)
    except TypeError:  # mixed key types do not sort
        return "error"


def _same_or_error(old: Any, new: Any) -> bool | str:
    try:
        return _same_json(old, new)
    except TypeError:
        return "error"


def _expected(old: Any, new: Any) -> bool | str:
    old_text, new_text = _canonical_or_error(old), _canonical_or_error(new)
    return "error" if "error" in (old_text, new_text) else old_text == new_text


@given(_data, _data)
def test_equal_json_is_the_same_exactly_when_its_canonical_text_is(old: Any, new: Any) -> None:
    if old != new:
        return
    # Where either side's text cannot be made, the comparison may raise as the encoder does.
    assert _same_or_error(old, new) in (_expected(old, new), "error")
    if _expected(old, new) != "error":
        assert _same_json(old, new) == _expected(old, new)


def _copied(value: Any) -> Any:
    """Return a copy of ``value``, every container new, leaves shared."""
    if isinstance(value, MappingProxyType):
        return MappingProxyType({k: _copied(v) for k, v in value.items()})
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copied(v) for v in value)
    return value


@given(_data)
def test_a_copy_is_the_same_json(value: Any) -> None:
    same = _copied(value)
    assert _same_or_error(value, same) == _expected(value, same)


def test_a_column_the_stored_row_lacks_or_holds_another_way_is_a_change() -> None:
    batch = Batch()
    batch.stored["customers", "cus_1"] = {"id": "cus_1", "name": "A", "email": None}
    # Absent from the stored row (a read of other columns): changed, even to None.
    assert batch.changed(customers, "customers", "id", {"id": "cus_1", "role": None}) == {
        "id": "cus_1",
        "role": None,
    }
    # Equal values, not the same objects, are no change; in the row's order, key first.
    same = {"id": "cus_1", "name": "".join(["A"]), "email": None}
    assert batch.changed(customers, "customers", "id", same) is None
    assert batch.changed(customers, "customers", "id", {"name": "B", "id": "cus_1"}) == {
        "name": "B",
        "id": "cus_1",
    }


def test_json_equal_by_eq_but_not_the_same_is_a_change() -> None:
    batch = Batch()
    stored = {"id": "cus_1", "name": "A", "metadata": {"n": 1, "tags": [1.0], "z": 0.0}}
    batch.stored["customers", "cus_1"] = stored
    assert batch.changed(customers, "customers", "id", dict(stored)) is None
    assert (
        batch.changed(
            customers, "customers", "id", {**stored, "metadata": dict(stored["metadata"])}
        )
        is None
    )
    for metadata in (
        {"n": True, "tags": [1.0], "z": 0.0},
        {"n": 1, "tags": [1], "z": 0.0},
        {"n": 1, "tags": [True], "z": 0.0},
        {"n": 1, "tags": [1.0], "z": -0.0},
    ):
        assert metadata == stored["metadata"]
        changed = {**stored, "metadata": metadata}
        assert batch.changed(customers, "customers", "id", changed) == {
            "id": "cus_1",
            "metadata": metadata,
        }
    assert batch.changed(customers, "customers", "id", {**stored, "name": "B"}) == {
        "id": "cus_1",
        "name": "B",
    }


@pytest.mark.parametrize("instants_kept", [4096, 2])
def test_rows_copied_in_bulk_read_back_as_written(
    postgres_empty: Engine, instants_kept: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More rows than a pipeline takes: COPY, JSON as text the driver escapes (tabs,
    # newlines, backslashes, quotes, non-ASCII), numbers of each JSON type, instants
    # in UTC and in another zone, the memo of their text emptied when full or not.
    monkeypatch.setattr(_raw, "_INSTANT_TEXTS_KEPT", instants_kept)
    upgrade(postgres_empty)
    zone = timezone(timedelta(hours=-5))
    texts = ["tab\there", "new\nline", "back\\slash", 'a "quote"', "ünï ✓", "\\N", ""]
    written = [
        attrs.evolve(
            customer(f"cus_{i:03}"),
            metadata={
                "text": texts[i % len(texts)],
                "n": [1, 1.0, True, None, 2.5][i % 5],
                "nested": {"list": [texts[(i + 1) % len(texts)], {"deep": i}]},
            },
            erased_at=(T0 + i * HOUR).astimezone(zone) if i % 2 else T0 + i * HOUR,
        )
        for i in range(130)
    ]
    copied: list[object] = []
    real = _batch._copy
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.prepare_batch()
        for one in written:
            uow.customers.add(one)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_batch, "_copy", lambda *a: copied.append(a[1]) or real(*a))
            uow.commit()
    assert copied == [customers]
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        for one in written:
            read = uow.customers.get(one.id)
            assert read == one
            assert read.metadata == one.metadata
            assert _canonical(read.metadata) == _canonical(one.metadata)
            assert read.erased_at is not None
            assert read.erased_at.tzinfo is UTC


def test_rows_loaded_by_many_ids_are_found_whatever_their_ids_hold(postgres_empty: Engine) -> None:
    # A batch reads its rows by id in one statement, the ids as one array literal: ids
    # it must quote and escape (quotes, backslashes, braces, commas, spaces, NULL, "").
    upgrade(postgres_empty)
    ids = ['cus_"q"', "cus_\\b", "cus_{x}", "cus_a,b", "cus_ sp", "NULL", "cus_ü✓", "", "cus_1"]
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        for i, customer_id in enumerate(ids):
            uow.customers.add(customer(customer_id, email=f"c{i}@example.com"))
        uow.commit()
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.prepare_batch(customers=[*ids, "cus_missing"])
        assert {c.id for c in (uow.recall(customers, i) for i in ids) if c is not None} == set(ids)
        assert uow.recall(customers, "cus_missing") is None


@pytest.mark.parametrize("instants_kept", [4096, 2])
def test_rows_updated_set_based_read_back_as_written(
    postgres_empty: Engine, instants_kept: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Enough updates of one shape for one set-based statement (in a bulk flush), its
    # instants as array elements from the memo (emptied when full or not), some in
    # another zone.
    monkeypatch.setattr(_raw, "_INSTANT_TEXTS_KEPT", instants_kept)
    upgrade(postgres_empty)
    zone = timezone(timedelta(hours=3))
    ids = [f"cus_{i:02}" for i in range(25)]
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        for customer_id in ids:
            uow.customers.add(customer(customer_id))
        uow.commit()
    literals: list[object] = []
    real = _batch.array_literals
    monkeypatch.setattr(_batch, "array_literals", lambda *a: literals.append(a) or real(*a))
    expected = {}
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.prepare_batch(customers=ids)
        for i in range(110):  # more new rows than a pipeline takes: the bulk flush
            uow.customers.add(customer(f"cus_n{i:03}"))
        for i, customer_id in enumerate(ids):
            erased = T0 + (i % 4) * HOUR
            changed = attrs.evolve(
                uow.customers.get(customer_id),
                erased_at=erased.astimezone(zone) if i % 3 else erased,
            )
            uow.customers.update(changed)
            expected[customer_id] = changed
        uow.commit()
    assert len(literals) == 1
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        for customer_id, wanted in expected.items():
            read = uow.customers.get(customer_id)
            assert read == wanted
            assert read.erased_at is not None
            assert read.erased_at.tzinfo is UTC


def _add_and_commit(uow: SqlAlchemyUnitOfWork, one: Any) -> None:
    uow.customers.add(one)  # raises here unbatched, at commit batched
    uow.commit()


@pytest.mark.parametrize(
    ("second", "message", "details"),
    [
        (
            customer("cus_1", email="other@example.com"),
            "customer 'cus_1' already exists",
            {"kind": "customer", "id": "cus_1", "constraint": "primary_key"},
        ),
        (
            customer("cus_2", email="cus_1@example.com"),
            "a customer with this email already exists",
            {"kind": "customer", "constraint": "customer_email", "field": "email"},
        ),
    ],
)
def test_a_queued_write_that_breaks_a_rule_raises_its_own_conflict(
    empty_engine: Engine, second: Any, message: str, details: dict[str, str]
) -> None:
    # The Conflict is described from the queued row only when the bulk write fails and
    # the writes are replayed one by one: the same error as without a batch.
    upgrade(empty_engine)
    with SqlAlchemyUnitOfWork(empty_engine) as uow:
        uow.customers.add(customer("cus_1"))
        uow.commit()
    for batch in (True, False):
        with SqlAlchemyUnitOfWork(empty_engine) as uow:
            if batch:
                uow.prepare_batch()
            with pytest.raises(Conflict) as raised:
                _add_and_commit(uow, second)
        assert str(raised.value) == message
        assert raised.value.details == details
    with SqlAlchemyUnitOfWork(empty_engine) as uow:
        uow.customers.add(customer("cus_3"))
        uow.commit()
    with SqlAlchemyUnitOfWork(empty_engine) as uow:  # an update's, queued, then replayed
        uow.prepare_batch(customers=["cus_3"])
        taken = attrs.evolve(uow.customers.get("cus_3"), email="cus_1@example.com")
        uow.customers.update(taken)  # queued
        with pytest.raises(Conflict, match="a customer with this email already exists"):
            uow.commit()


def test_a_plain_describe_is_used_as_it_is() -> None:
    def describe(name: str | None) -> Conflict | None:
        return None

    assert described(describe, {"id": "x"}) is describe
    assert described(None, {"id": "x"}) is None
    with pytest.raises(NotImplementedError):
        DescribeRow().of({"id": "x"})


def test_a_claim_takes_the_earliest_due_first_ties_by_id(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    dues = {"sub_c": T0 + HOUR, "sub_a": T0 + 2 * HOUR, "sub_b": T0 + HOUR, "sub_d": T0 + 9 * HOUR}
    with SqlAlchemyUnitOfWork(empty_engine) as uow:
        uow.customers.add(customer("cus_1"))
        uow.plans.add(plan("plan_1"))
        uow.prices.add(price("price_1"))
        for sub_id, due in dues.items():
            uow.subscriptions.add(subscription(sub_id, due=due))
        uow.commit()
    with SqlAlchemyUnitOfWork(empty_engine) as uow:
        claimed = uow.subscriptions.claim_due(T0 + 2 * HOUR, limit=10)
        assert [s.id for s in claimed] == ["sub_b", "sub_c", "sub_a"]  # sub_d not yet due
        assert claimed[0] == subscription("sub_b", due=T0 + HOUR)
        assert uow.subscriptions.claim_due(T0 + 2 * HOUR, limit=2)[-1].id == "sub_c"
