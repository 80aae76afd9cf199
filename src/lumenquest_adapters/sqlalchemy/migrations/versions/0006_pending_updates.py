"""A subscription can hold a change that waits for its invoice to be paid.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 23:00:00

- ``subscriptions.pending_update``: the price, quantity, invoice and expiry of a change
  made with ``payment_required`` whose payment is not settled yet (NULL: none). It is
  applied when that invoice is paid and dropped, its invoice voided, when the payment is
  declined or it expires; ``next_action_at`` already counts its expiry.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lumenquest_adapters.sqlalchemy._ddl import JSONType

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column."""
    op.add_column("subscriptions", sa.Column("pending_update", JSONType(), nullable=True))


def downgrade() -> None:
    """Drop the column."""
    op.drop_column("subscriptions", "pending_update")
