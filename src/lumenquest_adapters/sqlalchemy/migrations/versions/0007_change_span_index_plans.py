"""The change-span triggers read a subscription's chain through its index, whatever the statistics.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 04:00:00

- PL/pgSQL plans a trigger's queries once per session and keeps the plan. A session that
  first fired the triggers of migration 0005 while ``subscription_changes`` was empty or
  tiny, and whose statistics said so (autovacuum off or behind), keeps a sequential scan
  and sorts the whole table for every row it inserts afterwards: 5 ms a row at 20,000
  rows, growing with the table. Both functions now plan without sequential or bitmap
  scans, so each lookup is the ordered index scan of ``ix_subscription_changes_metrics``
  (the chain's equality prefix, then ``(at, seq)``), a few pages whatever the table's size.
- PostgreSQL only: SQLite has no cached plans and no such setting.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FUNCTIONS = ("lumenquest_change_span_new()", "lumenquest_change_span_close()")

# A function's SET applies while its queries are planned as well as run. Bitmap scans go
# too: on a table the planner believes empty it may prefer one plus a sort of the chain.
_SETTINGS = ("enable_seqscan", "enable_bitmapscan")


def upgrade() -> None:
    """Plan the trigger functions' queries without sequential or bitmap scans."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in _FUNCTIONS:
        for setting in _SETTINGS:
            op.execute(f"ALTER FUNCTION {function} SET {setting} = off")


def downgrade() -> None:
    """Let the planner choose again."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in _FUNCTIONS:
        for setting in _SETTINGS:
            op.execute(f"ALTER FUNCTION {function} RESET {setting}")
