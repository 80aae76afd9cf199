"""Logs and history name the rows they describe without foreign keys.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 10:00:00

- Dropped: the keys of ``outbox.customer_id``, ``audit_logs.customer_id``,
  ``analytics_events.customer_id``, ``email_deliveries.customer_id`` and of
  ``subscription_changes``' ``customer_id``, ``from_price_id``, ``to_price_id`` and
  ``plan_id``. Each table keeps its key to its own subject (a change's subscription, a
  delivery's event), and every column and index stays.
- Why: these rows record what was, and are written only beside the change they
  describe, from the rows it read. A key checks and locks its parent row at every write:
  a renewal made eight such checks, 17 % of the server's instructions for it (callgrind:
  2.55M to 2.11M), and locked the subscription's price in every worker at once.
- SQLite cannot drop a constraint: each table is rebuilt from its own ``CREATE`` text
  without the clause (SQLite's documented procedure), keeping its indexes and triggers.
"""

from __future__ import annotations

import re

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# (table, column, the table and column it referenced)
_KEYS = (
    ("outbox", "customer_id", "customers", "id"),
    ("audit_logs", "customer_id", "customers", "id"),
    ("analytics_events", "customer_id", "customers", "id"),
    ("email_deliveries", "customer_id", "customers", "id"),
    ("subscription_changes", "customer_id", "customers", "id"),
    ("subscription_changes", "from_price_id", "prices", "id"),
    ("subscription_changes", "to_price_id", "prices", "id"),
    ("subscription_changes", "plan_id", "plans", "id"),
)


def _name(table: str, column: str) -> str:
    return f"fk_{table}_{column}"


def _clause(table: str, column: str, parent: str, parent_column: str) -> str:
    """Return the constraint as SQLAlchemy writes it in a CREATE TABLE."""
    return (
        f"CONSTRAINT {_name(table, column)} FOREIGN KEY({column})"
        f" REFERENCES {parent} ({parent_column}) DEFERRABLE INITIALLY DEFERRED"
    )


_OLD = "_lumenquest_old_"


def _tables() -> list[str]:
    return list(dict.fromkeys(table for table, *_ in _KEYS))


def _rebuild_sqlite(creates: dict[str, str]) -> None:
    """Remake each table from its new ``CREATE`` text, keeping rows, indexes and triggers.

    SQLite's procedure for what ALTER TABLE cannot do. All are renamed away first, so
    that a key between two of them (a delivery's event) reaches the new table; the old
    ones go children first, and their indexes and triggers are made again last.
    """
    bind = op.get_bind()
    others: list[str] = []
    for table in creates:
        others += bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master"
            " WHERE tbl_name = ? AND type IN ('index', 'trigger') AND sql IS NOT NULL",
            (table,),
        ).scalars()
    bind.exec_driver_sql("PRAGMA legacy_alter_table = ON")  # trigger bodies stay as they are
    try:
        for table in creates:
            bind.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {_OLD}{table}")
    finally:
        bind.exec_driver_sql("PRAGMA legacy_alter_table = OFF")
    for table, create in creates.items():
        bind.exec_driver_sql(create)
        bind.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM {_OLD}{table}")
    for table in reversed(creates):
        bind.exec_driver_sql(f"DROP TABLE {_OLD}{table}")
    for sql in others:
        bind.exec_driver_sql(sql)


def _creates() -> dict[str, str]:
    """Each table's ``CREATE`` text, parents first (a delivery references the outbox)."""
    bind = op.get_bind()
    return {
        table: str(
            bind.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).scalar_one()
        )
        for table in _tables()
    }


def upgrade() -> None:
    """Drop the keys."""
    if op.get_bind().dialect.name == "postgresql":
        for table, column, *_ in _KEYS:
            op.drop_constraint(_name(table, column), table, type_="foreignkey")
        return
    creates = _creates()
    for table, column, *parent in _KEYS:
        clause = re.escape(_clause(table, column, *parent))
        creates[table], found = re.subn(rf",\s*{clause}", "", creates[table])
        if found != 1:
            raise RuntimeError(f"{table}: the key {_name(table, column)} was not found")
    _rebuild_sqlite(creates)


def downgrade() -> None:
    """Put the keys back."""
    if op.get_bind().dialect.name == "postgresql":
        for table, column, parent, parent_column in _KEYS:
            op.create_foreign_key(
                _name(table, column),
                table,
                parent,
                [column],
                [parent_column],
                deferrable=True,
                initially="DEFERRED",
            )
        return
    creates = _creates()
    for table, create in creates.items():
        clauses = "".join(f", \n\t{_clause(*k)}" for k in _KEYS if k[0] == table)
        if not create.rstrip().endswith(")"):
            raise RuntimeError(f"{table}: unexpected CREATE TABLE text")
        creates[table] = create.rstrip()[:-1].rstrip() + clauses + "\n)"
    _rebuild_sqlite(creates)
