"""The store's metrics queries give exactly the pure core's report on random histories.

``Billing.metrics`` asks the store for the MRR movement totals (classified in SQL) and
trial outcomes; :func:`~lumenquest_core.service.metrics_from_changes`
(``report_from_history``) computes the same report in Python from the change rows. On
random subscription histories (ties, out-of-order inserts, boundary instants, other
currencies, trials ending every way; written row by row or in one multi-row INSERT) the
two agree on the memory store, SQLite and PostgreSQL; the stores agree with each other;
and each store's ``mrr_movements`` equals the pure core's ``snapshot_movements`` of the
memory store's snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from lumenquest_adapters.memory import in_memory_billing
from lumenquest_adapters.sqlalchemy import create_engine_for, sqlalchemy_billing, upgrade
from lumenquest_adapters.sqlalchemy._mapping import change_row
from lumenquest_adapters.sqlalchemy._schema import subscription_changes
from lumenquest_adapters.testing.samples import T0, subscription_change
from lumenquest_core.metrics import MrrSnapshots, snapshot_movements
from lumenquest_core.money import Money
from lumenquest_core.payments import SubscriptionChange
from lumenquest_core.periods import Period
from lumenquest_core.service import Billing, metrics_from_changes
from lumenquest_core.subscriptions import SubscriptionStatus
from tests.adapters.sqlalchemy.databases import postgres_engine, postgres_schema, sqlite_url

DAY = timedelta(days=1)
_STATUSES = [s.value for s in SubscriptionStatus]
_CUSTOMERS = ["cus_a", "cus_b", "cus_c", "cus_d"]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[SubscriptionChange], datetime, datetime]:
    """A few subscriptions' changes, in random insertion order, and a period over them."""
    # Every change of a subscription names its customer (as the service writes them).
    owners = draw(st.lists(st.sampled_from(_CUSTOMERS), min_size=1, max_size=6))
    # Whole days over a short span: equal instants and changes on the bounds are common.
    day = st.integers(min_value=0, max_value=12)
    changes = []
    for n in range(draw(st.integers(min_value=0, max_value=25))):
        sub = draw(st.integers(min_value=0, max_value=len(owners) - 1))
        changes.append(
            attrs.evolve(
                subscription_change(f"chg_{n}", subscription_id=f"sub_{sub}"),
                customer_id=owners[sub],
                at=T0 + draw(day) * DAY + draw(st.sampled_from([timedelta(0), timedelta(hours=6)])),
                mrr=Money(
                    draw(st.sampled_from([0, 0, 500, 1000, 2500]) | st.integers(0, 10_000)),
                    draw(st.sampled_from(["USD", "USD", "USD", "EUR"])),
                ),
                from_status=draw(st.none() | st.sampled_from(["trialing", "trialing", *_STATUSES])),
                to_status=draw(st.sampled_from(_STATUSES)),
                plan_id=draw(st.sampled_from(["", "plan_a", "plan_b"])),
            )
        )
    start = draw(day)
    end = draw(st.integers(min_value=start + 1, max_value=14))
    return changes, T0 + start * DAY, T0 + end * DAY


def _check(
    make_billing: Callable[[], Billing],
    history: tuple[list[SubscriptionChange], datetime, datetime],
    spend: int | None,
    bulk: Engine | None = None,
) -> None:
    """Compare the reports; ``bulk``: write the history with one multi-row INSERT there."""
    changes, start, end = history
    billing = make_billing()
    memory = in_memory_billing(now=T0)
    _write(billing, changes, bulk)
    _write(memory, changes)
    period = Period(start, end)
    for currency in ("USD", "EUR"):
        marketing = None if spend is None else Money(spend, currency)
        with billing._uow() as uow:
            rows = list(uow.subscription_changes.list(until=end))
            snapshots = uow.subscription_changes.mrr_snapshots(period, currency)
            movements = uow.subscription_changes.mrr_movements(period, currency)
            outcomes = uow.subscription_changes.trial_outcomes(period, currency)
        expected = metrics_from_changes(
            rows, period=period, currency=currency, marketing_spend=marketing
        )
        assert (
            billing.metrics(start=start, end=end, currency=currency, marketing_spend=marketing)
            == expected
        )
        with memory._uow() as uow:
            in_memory: MrrSnapshots = uow.subscription_changes.mrr_snapshots(period, currency)
            memory_movements = uow.subscription_changes.mrr_movements(period, currency)
            memory_outcomes = uow.subscription_changes.trial_outcomes(period, currency)
        assert snapshots == in_memory
        # The store's aggregate is the pure core's classification of the snapshots.
        assert movements == memory_movements == snapshot_movements(in_memory, currency)
        assert movements == expected.movements
        assert sorted(outcomes) == sorted(memory_outcomes)


def _write(store: Billing, changes: list[SubscriptionChange], bulk: Engine | None = None) -> None:
    """Store the changes one by one, in order; ``bulk``: in one multi-row INSERT there."""
    if bulk is None:
        with store._uow() as uow:
            for change in changes:
                uow.subscription_changes.add(change)
            uow.commit()
    elif changes:
        # One statement: the span triggers of each row see the rows after it too.
        with bulk.begin() as connection:
            connection.execute(
                sa.insert(subscription_changes).values([change_row(c) for c in changes])
            )


def _spans(rows: list[Any]) -> dict[int, datetime | None]:
    """Return when each paying change stops holding, recomputed from its chain alone.

    A chain is one subscription's changes in one currency, by ``(at, seq)``. A change
    whose MRR differs from the one before it starts a run and holds until the next run
    starts (None: still holds); the others (repeats) hold at no instant: their own ``at``.
    """
    chains: dict[tuple[str, str, str], list[Any]] = {}
    for row in sorted(rows, key=lambda r: (r.at, r.seq)):
        chains.setdefault((row.mrr_currency, row.customer_id, row.subscription_id), []).append(row)
    until: dict[int, datetime | None] = {}
    for chain in chains.values():
        starts = [i for i, row in enumerate(chain) if i == 0 or row.mrr != chain[i - 1].mrr]
        for i, row in enumerate(chain):
            if i in starts:
                later = [chain[j].at for j in starts if j > i]
                until[row.seq] = later[0] if later else None
            else:
                until[row.seq] = row.at
    return until


_PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _on(engine: Engine) -> Callable[[], Billing]:
    def make() -> Billing:
        with engine.begin() as connection:
            connection.execute(subscription_changes.delete())
        return sqlalchemy_billing(engine, migrate=False)

    return make


@pytest.fixture(scope="module")
def sqlite_metrics_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("metrics") / "metrics.db"
    # The histories are change rows alone, without their customers and subscriptions.
    engine = create_engine_for(sqlite_url(path), enforce_foreign_keys=False)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_metrics_engine(postgres_url: str) -> Iterator[Engine]:
    with postgres_schema(postgres_url) as schema:
        engine = postgres_engine(postgres_url, schema, enforce_foreign_keys=False)
        upgrade(engine)
        yield engine
        engine.dispose()


@_PROPERTY
@given(history=histories(), spend=st.none() | st.integers(0, 50_000))
def test_memory_store_queries_equal_the_pure_report(history: Any, spend: int | None) -> None:
    _check(lambda: in_memory_billing(now=T0), history, spend)


@_PROPERTY
@given(history=histories(), spend=st.none() | st.integers(0, 50_000), bulk=st.booleans())
def test_sqlite_queries_equal_the_pure_report(
    sqlite_metrics_engine: Engine, history: Any, spend: int | None, bulk: bool
) -> None:
    engine = sqlite_metrics_engine
    _check(_on(engine), history, spend, engine if bulk else None)


@_PROPERTY
@given(history=histories(), spend=st.none() | st.integers(0, 50_000), bulk=st.booleans())
def test_postgres_queries_equal_the_pure_report(
    postgres_metrics_engine: Engine, history: Any, spend: int | None, bulk: bool
) -> None:
    engine = postgres_metrics_engine
    _check(_on(engine), history, spend, engine if bulk else None)


@_PROPERTY
@given(history=histories(), bulk=st.booleans())
def test_postgres_span_triggers_give_what_each_chain_gives(
    postgres_metrics_engine: Engine, history: Any, bulk: bool
) -> None:
    """Whatever the insertion order, each paying change's superseded_at is its chain's."""
    engine = postgres_metrics_engine
    changes, _, _ = history
    _write(_on(engine)(), changes, engine if bulk else None)
    with engine.connect() as connection:
        rows = list(connection.execute(sa.select(subscription_changes)))
    expected = _spans(rows)
    stored = {row.seq: row.superseded_at for row in rows if row.mrr > 0}
    assert stored == {seq: expected[seq] for seq in stored}
