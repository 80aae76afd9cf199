"""Indexes for the metrics queries over subscription_changes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:00:00

- ``ix_subscription_changes_metrics`` (mrr_currency, customer_id, subscription_id, at,
  seq), covering ``mrr`` on PostgreSQL: MRR at a period's start and end is one ordered
  index-only scan, windowed per subscription and grouped per customer as it streams.
- ``ix_subscription_changes_trial_ends`` (mrr_currency, at) over the changes leaving
  ``trialing`` only (a partial index): trial outcomes of a period read just those.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the revision."""
    op.create_index(
        "ix_subscription_changes_metrics",
        "subscription_changes",
        ["mrr_currency", "customer_id", "subscription_id", "at", "seq"],
        unique=False,
        postgresql_include=["mrr"],
    )
    op.create_index(
        "ix_subscription_changes_trial_ends",
        "subscription_changes",
        ["mrr_currency", "at"],
        unique=False,
        postgresql_include=["plan_id", "to_status"],
        postgresql_where=sa.text("from_status = 'trialing'"),
        sqlite_where=sa.text("from_status = 'trialing'"),
    )


def downgrade() -> None:
    """Undo the revision."""
    op.drop_index("ix_subscription_changes_trial_ends", table_name="subscription_changes")
    op.drop_index("ix_subscription_changes_metrics", table_name="subscription_changes")
