"""What a batch holds until it commits: its queued rows outside the garbage collector's
passes, one price JSON per price, and the very Conflicts of unbatched writes."""

from __future__ import annotations

import gc
from datetime import timedelta
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import quoted_name

from lumenquest_adapters.sqlalchemy import SqlAlchemyUnitOfWork, _mapping, _raw, upgrade
from lumenquest_adapters.sqlalchemy._mapping import (
    price_from_row,
    price_row,
    price_snapshot,
    shared_price_json,
    shared_price_text,
)
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
from lumenquest_core.errors import Conflict
from lumenquest_core.periods import Period


def _stored_parents(engine: Engine) -> None:
    upgrade(engine)
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.customers.add(customer("cus_1"))
        uow.plans.add(plan("plan_1"))
        uow.prices.add(subscription("sub_1").price)
        for sub_id in ("sub_1", "sub_2", "sub_3"):
            uow.subscriptions.add(subscription(sub_id))
        uow.commit()


def test_a_batch_holds_its_queued_rows_where_the_collector_does_not_look(
    empty_engine: Engine,
) -> None:
    _stored_parents(empty_engine)
    with SqlAlchemyUnitOfWork(empty_engine) as uow:
        uow.prepare_batch(subscriptions=["sub_1"])
        uow.invoices.add(invoice("in_1"))  # with a line, its taxes and tax rates
        uow.payments.add(payment("pay_1"))
        uow.outbox.add(outbox_message("evt_1"))
        renewed = uow.subscriptions.get("sub_1")
        uow.subscriptions.update(attrs.evolve(renewed, quantity=2))
        batch = uow.batch
        assert batch is not None
        queued = batch.writes
        assert sorted(set(queued.tables)) == [
            "invoice_lines",
            "invoices",
            "outbox",
            "payments",
            "subscriptions",
        ]
        gc.collect()
        # Nothing a write holds is followed by the collector: plain values only. (SQLite
        # keeps an event's data as the domain's mapping: its runs are not PostgreSQL's.)
        kept_as_data = set() if empty_engine.dialect.name == "postgresql" else {"outbox"}
        tracked = [
            table
            for table, row in zip(queued.tables, queued.values, strict=True)
            if gc.is_tracked(row)
        ]
        assert set(tracked) <= kept_as_data
        # Plain names, not SQLAlchemy's quoted_name (a str subclass the collector follows).
        assert {type(name) for name in queued.tables} == {str}
        uow.commit()
    with SqlAlchemyUnitOfWork(empty_engine) as uow:
        assert uow.subscriptions.get("sub_1").quantity == 2
        assert uow.invoices.get("in_1").lines == invoice("in_1").lines
        assert uow.payments.get("pay_1") == payment("pay_1")


def test_claimed_subscriptions_of_one_price_share_its_json_and_renew_without_it(
    postgres_empty: Engine,
) -> None:
    _stored_parents(postgres_empty)
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        claimed = uow.subscriptions.claim_due(T0 + timedelta(days=40), limit=10)
        assert [sub.id for sub in claimed] == ["sub_1", "sub_2", "sub_3"]
        rows = [uow.claimed[sub.id][1] for sub in claimed]
        # Keyed by plain str, not SQLAlchemy's quoted_name (which the collector tracks,
        # and which made every JSON comparison take the slow, canonical-text way).
        assert {type(name) for row in rows for name in row} == {str}
        assert {type(name) for name in rows[0]["price"]} == {str}
        assert rows[0]["price"] is rows[1]["price"] is rows[2]["price"]
        assert claimed[0].price is claimed[1].price
        uow.prepare_batch(subscriptions=[sub.id for sub in claimed])
        uow.subscriptions.update(attrs.evolve(claimed[0], quantity=3))
        batch = uow.batch
        assert batch is not None
        # The renewed subscription keeps its price: the queued update leaves it out.
        assert "price" not in batch.writes.values[-1]
        assert batch.writes.values[-1]["quantity"] == 3
        uow.commit()
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        stored = uow.subscriptions.get("sub_1")
        assert stored.quantity == 3
        assert stored.price == subscription("sub_1").price


def _taken_cycle(uow: SqlAlchemyUnitOfWork) -> None:
    uow.invoices.add(invoice("in_2"))  # sub_1's cycle invoice for T0's period, again


def _taken_key(uow: SqlAlchemyUnitOfWork) -> None:
    uow.payments.add(payment("pay_2", idempotency_key="key-pay_1"))


def _moved_into_taken_cycle(uow: SqlAlchemyUnitOfWork) -> None:
    # Only the period moves: the update's own values lack the subscription the rule names.
    stored = uow.invoices.get("in_3")
    assert stored.period is not None
    uow.invoices.update(attrs.evolve(stored, period=Period(T0, stored.period.end)))


def _rekeyed_payment(uow: SqlAlchemyUnitOfWork) -> None:
    uow.payments.update(attrs.evolve(uow.payments.get("pay_3"), idempotency_key="key-pay_1"))


def _write_and_commit(uow: SqlAlchemyUnitOfWork, write: Any) -> None:
    write(uow)  # raises here unbatched, at commit batched
    uow.commit()


_CYCLE = (
    "subscription sub_1 already has a cycle invoice for the period starting " + T0.isoformat(),
    {
        "kind": "invoice",
        "constraint": "invoice_subscription_cycle",
        "subscription_id": "sub_1",
        "period_start": T0.isoformat(),
    },
)
_KEY = (
    "a payment with idempotency key 'key-pay_1' already exists",
    {"kind": "payment", "constraint": "payment_idempotency_key", "idempotency_key": "key-pay_1"},
)


@pytest.mark.parametrize(
    ("write", "row_id", "expected"),
    [
        (_taken_cycle, "in_2", _CYCLE),
        (_taken_key, "pay_2", _KEY),
        (_moved_into_taken_cycle, "in_3", _CYCLE),
        (_rekeyed_payment, "pay_3", _KEY),
    ],
)
def test_a_queued_write_breaking_its_rule_raises_the_unbatched_conflict(
    empty_engine: Engine, write: Any, row_id: str, expected: tuple[str, dict[str, str]]
) -> None:
    _stored_parents(empty_engine)
    with SqlAlchemyUnitOfWork(empty_engine) as uow:
        uow.invoices.add(invoice("in_1"))
        uow.payments.add(payment("pay_1"))
        uow.invoices.add(invoice("in_3", period_start=T0 + timedelta(days=31)))
        uow.payments.add(payment("pay_3"))
        uow.commit()
    message, details = expected
    for batch in (True, False):
        with SqlAlchemyUnitOfWork(empty_engine) as uow:
            if batch:
                uow.prepare_batch(invoices=["in_3"], payments_for_update=["pay_3"])
            with pytest.raises(Conflict) as raised:
                _write_and_commit(uow, write)
        assert str(raised.value) == message
        assert raised.value.details == {**details, "id": row_id}


def test_a_price_json_is_shared_only_when_it_is_the_very_same() -> None:
    kept = shared_price_json(price_row(price("price_shared")))  # a copy of the first is kept
    same = price_row(price("price_shared"))
    assert same == kept
    assert shared_price_json(same) is kept
    # Equal by ==, not the same JSON: read as it is, so that an update still rewrites it.
    assert shared_price_json({**same, "unit_amount": 1000.0}) is not kept
    assert shared_price_json({**same, "active": 1}) is not kept
    assert price_snapshot(price_from_row(same)) is kept
    # A row keyed by quoted_name (as SQLAlchemy names columns) is kept with str keys.
    quoted = {quoted_name(name, None): value for name, value in price_row(price("q")).items()}
    assert {type(name) for name in shared_price_json(quoted)} == {str}


def test_a_price_json_text_read_again_is_neither_decoded_nor_compared_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    same = price_row(price("price_text"))
    text = _mapping.json_dumps(same)
    decoded: list[str] = []
    real = _mapping._decode
    monkeypatch.setattr(_mapping, "_decode", lambda text: decoded.append(text) or real(text))
    kept = shared_price_text(text)
    assert kept is shared_price_json(same)  # the value shared_price_json shares
    assert shared_price_text(str(text)) is kept
    assert decoded == [text]
    # Another text of equal JSON that is not the same: its own value, as read.
    other = shared_price_text(text.replace('"active":true', '"active":1'))
    assert other is not kept
    assert other == {**same, "active": 1}


def test_postgresql_reads_a_subscriptions_price_as_its_text_once_per_text(
    postgres_empty: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stored_parents(postgres_empty)
    statements: list[str] = []
    real_fetched = _raw._fetched
    monkeypatch.setattr(
        _raw, "_fetched", lambda c, s, p: statements.append(s) or real_fetched(c, s, p)
    )
    decoded: list[str] = []
    real_decode = _mapping._decode
    monkeypatch.setattr(_mapping, "_decode", lambda text: decoded.append(text) or real_decode(text))
    monkeypatch.setattr(_mapping, "_PRICE_TEXTS", {})
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:
        uow.prepare_batch(subscriptions=["sub_1", "sub_2", "sub_3"])
        read = [uow.subscriptions.get(sub_id) for sub_id in ("sub_1", "sub_2", "sub_3")]
    assert any("price::text" in statement for statement in statements)
    assert len(decoded) == 1  # the three subscriptions keep one price: one text
    assert read == [subscription(sub_id) for sub_id in ("sub_1", "sub_2", "sub_3")]
    with postgres_empty.connect() as connection:  # SQLAlchemy's own reads are unchanged
        price_json = connection.execute(sa.text("SELECT price FROM subscriptions")).scalar()
    assert price_json == price_row(subscription("sub_1").price)
