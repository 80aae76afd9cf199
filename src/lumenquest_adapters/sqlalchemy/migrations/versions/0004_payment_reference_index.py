"""Index payments by gateway reference, which gateway webhooks name the charge by.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 19:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the revision."""
    op.create_index("ix_payments_gateway_reference", "payments", ["gateway_reference"])


def downgrade() -> None:
    """Revert the revision."""
    op.drop_index("ix_payments_gateway_reference", table_name="payments")
