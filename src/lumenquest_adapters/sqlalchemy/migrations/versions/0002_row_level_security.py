"""Row-level security on PostgreSQL (a no-op on SQLite).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00

Who a transaction acts for comes from two settings, set per transaction by the unit of
work (``set_config(..., true)``, i.e. ``SET LOCAL``): ``lumenquest.customer_id`` and
``lumenquest.role`` (``user``, ``admin`` or ``system``). Unset (NULL or ``''``) matches
nothing, so a transaction that set nothing sees no customer row.

- Every customer-owned table: ENABLE and FORCE row-level security (FORCE: the owner is
  bound too; only superusers and BYPASSRLS roles are not) and two permissive policies:
  ``lumenquest_own_rows`` (role ``user``: the rows of the acting customer, read and
  write) and ``lumenquest_staff`` (role ``admin`` or ``system``: every row).
- Tables without a ``customer_id`` (invoice lines, refunds, usage records) belong to
  their parent's customer through an ``EXISTS`` on the parent (which is itself under
  row-level security); no column is added.
- Catalog tables (plans, prices, coupons): readable by every session, written by
  ``admin`` and ``system`` only.
- ``idempotency_keys`` and ``invoice_number_sequence`` hold no customer data and stay
  open to the application role.

Migrations run as the owner (or a superuser); the application connects as a role made
by :func:`lumenquest_adapters.sqlalchemy.create_app_role`.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ROLE = "current_setting('lumenquest.role', true)"
_CUSTOMER = "NULLIF(current_setting('lumenquest.customer_id', true), '')"
_USER = f"{_ROLE} = 'user'"
_STAFF = f"{_ROLE} IN ('admin', 'system')"

# Table -> its rows' customer, as an SQL condition that is true for the acting customer's.
_CUSTOMER_OWNED: dict[str, str] = {
    "customers": f"id = {_CUSTOMER}",
    **dict.fromkeys(
        (
            "subscriptions",
            "invoices",
            "pending_lines",
            "payments",
            "credit_notes",
            "outbox",  # rows without a customer: admin and system only
            "audit_logs",  # likewise
            "subscription_changes",
            "analytics_events",  # likewise
            "email_deliveries",  # likewise
        ),
        f"customer_id = {_CUSTOMER}",
    ),
    "invoice_lines": (
        "EXISTS (SELECT 1 FROM invoices AS parent WHERE parent.id = invoice_lines.invoice_id"
        f" AND parent.customer_id = {_CUSTOMER})"
    ),
    "refunds": (
        "EXISTS (SELECT 1 FROM invoices AS parent WHERE parent.id = refunds.invoice_id"
        f" AND parent.customer_id = {_CUSTOMER})"
    ),
    "usage_records": (
        "EXISTS (SELECT 1 FROM subscriptions AS parent"
        " WHERE parent.id = usage_records.subscription_id"
        f" AND parent.customer_id = {_CUSTOMER})"
    ),
}
_CATALOG = ("plans", "prices", "coupons")


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _secure(table: str) -> None:
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def upgrade() -> None:
    """Apply the revision."""
    if not _postgresql():
        return
    for table, own in _CUSTOMER_OWNED.items():
        _secure(table)
        condition = f"({_USER} AND {own})"
        op.execute(
            f"CREATE POLICY lumenquest_own_rows ON {table} FOR ALL"
            f" USING {condition} WITH CHECK {condition}"
        )
        op.execute(
            f"CREATE POLICY lumenquest_staff ON {table} FOR ALL"
            f" USING ({_STAFF}) WITH CHECK ({_STAFF})"
        )
    for table in _CATALOG:
        _secure(table)
        op.execute(f"CREATE POLICY lumenquest_read ON {table} FOR SELECT USING (true)")
        op.execute(
            f"CREATE POLICY lumenquest_staff ON {table} FOR ALL"
            f" USING ({_STAFF}) WITH CHECK ({_STAFF})"
        )


def downgrade() -> None:
    """Revert the revision."""
    if not _postgresql():
        return
    for table in (*_CUSTOMER_OWNED, *_CATALOG):
        policies = ("lumenquest_read",) if table in _CATALOG else ("lumenquest_own_rows",)
        for policy in (*policies, "lumenquest_staff"):
            op.execute(f"DROP POLICY IF EXISTS {policy} ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
