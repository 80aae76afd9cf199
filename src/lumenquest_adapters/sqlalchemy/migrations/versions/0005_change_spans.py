"""Each paying change row knows when it stops holding: metrics read live rows only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 12:00:00

- ``subscription_changes.superseded_at``: a change holds (its MRR is its subscription's)
  from ``at`` until ``superseded_at`` (NULL: still holds). The chain is the changes of one
  subscription in one currency, ordered by ``(at, seq)``. A change with the same MRR as
  the one before it (a renewal) is a repeat: its ``superseded_at`` is its own ``at``, so
  it holds at no instant and the span before it goes on unwritten. Only the value of
  paying rows (``mrr > 0``) is kept exact; the queries read no other.
- Triggers keep it (rows are append-only): after a change is inserted, the span it ends
  is closed (one row updated, none for a repeat); one inserted before a later change of
  its subscription redoes that subscription's spans. On PostgreSQL a ``BEFORE`` trigger
  also sets the new row's own value, so that a repeat costs no write. Both work for any
  insert (one row, many rows, COPY): the write path is unchanged.
- ``ix_subscription_changes_open`` (paying rows that still hold, per customer) and
  ``ix_subscription_changes_closed`` (paying rows by the instant they stopped): MRR at a
  period's start and end reads those, not every subscription's history.
- Existing rows are filled in by one statement.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lumenquest_adapters.sqlalchemy._ddl import Timestamp

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_CHAIN = (
    "{c}.mrr_currency = NEW.mrr_currency AND {c}.customer_id = NEW.customer_id"
    " AND {c}.subscription_id = NEW.subscription_id"
)

# Each row of one chain (or of all, partitioned) with the instant it stops holding: the
# next change with another MRR for the first of a run of equal MRR, its own ``at`` for
# the repeats after it. No WITH clause: SQLite refuses one inside a trigger.
_SPANS = """
SELECT seq, CASE WHEN starts THEN min(CASE WHEN starts THEN at END) OVER (
           PARTITION BY mrr_currency, customer_id, subscription_id ORDER BY at, seq
           ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
       ELSE at END AS until
FROM (
    SELECT seq, at, mrr_currency, customer_id, subscription_id,
           COALESCE(mrr <> lag(mrr) OVER (
               PARTITION BY mrr_currency, customer_id, subscription_id ORDER BY at, seq
           ), {true}) AS starts
    FROM subscription_changes {where}
) AS chain
"""

_NEW_CHAIN = "AS s WHERE " + _CHAIN.format(c="s")
_PREVIOUS = _CHAIN.format(c="p")
_LATER = _CHAIN.format(c="s")
_SAME = _CHAIN.format(c="c")
_CHAIN_SPANS_PG = _SPANS.format(true="true", where=_NEW_CHAIN)
_CHAIN_SPANS_SQLITE = _SPANS.format(true="1", where=_NEW_CHAIN)

_POSTGRESQL = [
    f"""
CREATE FUNCTION lumenquest_change_span_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- No write to another row here: ON CONFLICT DO NOTHING may skip this one.
    NEW.superseded_at := NULL;
    IF NEW.mrr = (
        SELECT p.mrr FROM subscription_changes AS p
        WHERE {_PREVIOUS} AND (p.at, p.seq) < (NEW.at, NEW.seq)
        ORDER BY p.at DESC, p.seq DESC LIMIT 1
    ) THEN
        NEW.superseded_at := NEW.at;  -- a repeat
    END IF;
    RETURN NEW;
END $$
""",
    f"""
CREATE FUNCTION lumenquest_change_span_close() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM subscription_changes AS s
        WHERE {_LATER} AND (s.at, s.seq) > (NEW.at, NEW.seq)
    ) THEN
        UPDATE subscription_changes AS c SET superseded_at = spans.until
        FROM ({_CHAIN_SPANS_PG}) AS spans
        WHERE c.seq = spans.seq AND c.mrr > 0 AND c.superseded_at IS DISTINCT FROM spans.until;
    ELSIF NEW.superseded_at IS NULL THEN
        UPDATE subscription_changes AS c SET superseded_at = NEW.at
        WHERE {_SAME} AND c.superseded_at IS NULL AND c.mrr > 0
          AND c.seq <> NEW.seq;
    END IF;
    RETURN NULL;
END $$
""",
    "CREATE TRIGGER lumenquest_change_span_new BEFORE INSERT ON subscription_changes"
    " FOR EACH ROW EXECUTE FUNCTION lumenquest_change_span_new()",
    "CREATE TRIGGER lumenquest_change_span_close AFTER INSERT ON subscription_changes"
    " FOR EACH ROW EXECUTE FUNCTION lumenquest_change_span_close()",
    # Derived data must follow every insert, in replica mode too (which skips foreign
    # keys for loads and tests, and applies logical replication).
    "ALTER TABLE subscription_changes ENABLE ALWAYS TRIGGER lumenquest_change_span_new",
    "ALTER TABLE subscription_changes ENABLE ALWAYS TRIGGER lumenquest_change_span_close",
]

# SQLite cannot set NEW's columns before the insert: one trigger redoes the chain.
_SQLITE = [
    f"""
CREATE TRIGGER lumenquest_change_span_close AFTER INSERT ON subscription_changes
BEGIN
    UPDATE subscription_changes SET superseded_at = spans.until
    FROM ({_CHAIN_SPANS_SQLITE}) AS spans
    WHERE subscription_changes.seq = spans.seq AND subscription_changes.mrr > 0
      AND subscription_changes.superseded_at IS NOT spans.until;
END
"""
]


def upgrade() -> None:
    """Apply the revision."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.add_column("subscription_changes", sa.Column("superseded_at", Timestamp(), nullable=True))
    every_span = _SPANS.format(true="true" if postgresql else "1", where="")
    op.execute(
        f"UPDATE subscription_changes SET superseded_at = spans.until FROM ({every_span}) AS spans"
        " WHERE subscription_changes.seq = spans.seq AND subscription_changes.mrr > 0"
        " AND spans.until IS NOT NULL"  # the new column is NULL: write only the others
    )
    op.create_index(
        "ix_subscription_changes_open",
        "subscription_changes",
        ["mrr_currency", "customer_id", "subscription_id"],
        unique=False,
        postgresql_include=["at", "mrr"],
        postgresql_where=sa.text("superseded_at IS NULL AND mrr > 0"),
        sqlite_where=sa.text("superseded_at IS NULL AND mrr > 0"),
    )
    op.create_index(
        "ix_subscription_changes_closed",
        "subscription_changes",
        ["mrr_currency", "superseded_at"],
        unique=False,
        postgresql_include=["customer_id", "at", "mrr"],
        postgresql_where=sa.text("superseded_at > at AND mrr > 0"),
        sqlite_where=sa.text("superseded_at > at AND mrr > 0"),
    )
    for statement in _POSTGRESQL if postgresql else _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    """Undo the revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER lumenquest_change_span_close ON subscription_changes")
        op.execute("DROP TRIGGER lumenquest_change_span_new ON subscription_changes")
        op.execute("DROP FUNCTION lumenquest_change_span_close()")
        op.execute("DROP FUNCTION lumenquest_change_span_new()")
    else:
        op.execute("DROP TRIGGER lumenquest_change_span_close")
    op.drop_index("ix_subscription_changes_closed", table_name="subscription_changes")
    op.drop_index("ix_subscription_changes_open", table_name="subscription_changes")
    op.drop_column("subscription_changes", "superseded_at")
