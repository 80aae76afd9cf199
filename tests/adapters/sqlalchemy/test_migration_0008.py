"""Migration 0008: logs and history lose their keys to the rows they describe, nothing else.

On SQLite the tables are rebuilt: their rows, indexes, triggers and remaining keys must
come through, and downgrading must bring the keys back.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import downgrade, metadata, upgrade
from tests.adapters.sqlalchemy.test_row_level_security import CATALOG_ROWS, NOW, _rows

LOGS = ("outbox", "audit_logs", "analytics_events", "email_deliveries", "subscription_changes")
DROPPED = {
    ("outbox", "customer_id"),
    ("audit_logs", "customer_id"),
    ("analytics_events", "customer_id"),
    ("email_deliveries", "customer_id"),
    ("subscription_changes", "customer_id"),
    ("subscription_changes", "from_price_id"),
    ("subscription_changes", "to_price_id"),
    ("subscription_changes", "plan_id"),
}


def _keys(engine: Engine) -> set[tuple[str, str]]:
    inspector = sa.inspect(engine)
    return {
        (table, column)
        for table in LOGS
        for key in inspector.get_foreign_keys(table)
        for column in key["constrained_columns"]
    }


def _insert(engine: Engine, rows: dict[str, dict[str, Any]]) -> None:
    with engine.begin() as connection:
        for name in metadata.sorted_tables:
            if name.name in rows:
                connection.execute(name.insert().values(rows[name.name]))


def _dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as connection:
        return {
            table: [tuple(r) for r in connection.execute(sa.select(metadata.tables[table]))]
            for table in LOGS
        }


@pytest.fixture
def at_0007(empty_engine: Engine) -> Engine:
    """A database at revision 0007 holding one customer's rows in every table."""
    upgrade(empty_engine, "0007")
    _insert(empty_engine, {**CATALOG_ROWS, **_rows("cus_a")})
    return empty_engine


def test_the_keys_go_and_every_row_stays(at_0007: Engine) -> None:
    before = _dump(at_0007)
    assert _keys(at_0007) >= DROPPED
    upgrade(at_0007)
    assert _keys(at_0007) == {
        ("email_deliveries", "event_id"),
        ("subscription_changes", "subscription_id"),
    }
    assert _dump(at_0007) == before


def test_history_may_name_a_price_that_is_not_in_the_catalog(at_0007: Engine) -> None:
    upgrade(at_0007)
    change = {
        **_rows("cus_a")["subscription_changes"],
        "id": "sc_gone",
        "to_price_id": "price_gone",
        "plan_id": "plan_gone",
        "at": NOW + timedelta(days=1),
    }
    _insert(at_0007, {"subscription_changes": change})


def test_the_remaining_keys_still_hold(at_0007: Engine) -> None:
    upgrade(at_0007)
    orphan = {**_rows("cus_a")["email_deliveries"], "message_id": "m2", "event_id": "evt_gone"}
    with pytest.raises(sa.exc.IntegrityError):
        _insert(at_0007, {"email_deliveries": orphan})


def test_the_change_spans_are_still_kept(at_0007: Engine) -> None:
    """The span trigger survives the SQLite rebuild: a new MRR closes the span before it."""
    upgrade(at_0007)
    later = {
        **_rows("cus_a")["subscription_changes"],
        "id": "sc_up",
        "kind": "changed",
        "mrr": 2000,
        "at": NOW + timedelta(days=2),
    }
    _insert(at_0007, {"subscription_changes": later})
    changes = metadata.tables["subscription_changes"]
    with at_0007.connect() as connection:
        closed = connection.execute(
            sa.select(changes.c.superseded_at).where(changes.c.id == "sc_cus_a")
        ).scalar_one()
    assert closed is not None
    assert closed.replace(tzinfo=None) == (NOW + timedelta(days=2)).replace(tzinfo=None)


def test_downgrade_brings_the_keys_back_and_keeps_the_rows(at_0007: Engine) -> None:
    before = _dump(at_0007)
    upgrade(at_0007)
    downgrade(at_0007, "0007")
    assert _keys(at_0007) >= DROPPED
    assert _dump(at_0007) == before
