"""The initial schema: every table, its constraints and indexes.

Revision ID: 0001
Revises: -
Create Date: 2026-11-25 17:43:26.240259
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lumenquest_adapters.sqlalchemy._ddl import JSONType, is_currency

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the revision."""
    op.create_table(
        "coupons",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("percent_off", sa.String(length=32), nullable=True),
        sa.Column("amount_off", sa.BigInteger(), nullable=True),
        sa.Column("amount_off_currency", sa.CHAR(length=3), nullable=True),
        sa.Column("duration", sa.String(length=16), nullable=False),
        sa.Column("duration_in_cycles", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            is_currency(sa.column("amount_off_currency")),
            name=op.f("ck_coupons_amount_off_currency"),
        ),
        sa.CheckConstraint(
            "duration IN ('once', 'repeating', 'forever')", name=op.f("ck_coupons_duration")
        ),
        sa.CheckConstraint(
            "(amount_off IS NULL) = (amount_off_currency IS NULL)",
            name=op.f("ck_coupons_amount_off_has_currency"),
        ),
        sa.CheckConstraint(
            "(percent_off IS NULL) <> (amount_off IS NULL)",
            name=op.f("ck_coupons_percent_or_amount_off"),
        ),
        sa.CheckConstraint("amount_off > 0", name=op.f("ck_coupons_amount_off_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=True),
        sa.Column("credit_balance", sa.BigInteger(), nullable=True),
        sa.Column("gateway_customer_id", sa.String(length=255), nullable=True),
        sa.Column("email_deliverable", sa.Boolean(), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("metadata", JSONType(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(is_currency(sa.column("currency")), name=op.f("ck_customers_currency")),
        sa.CheckConstraint("role IN ('user', 'admin')", name=op.f("ck_customers_role")),
        sa.CheckConstraint(
            "credit_balance IS NULL OR currency IS NOT NULL",
            name=op.f("ck_customers_balance_has_currency"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("email", name=op.f("uq_customers_email")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=255), nullable=False),
        sa.Column("result", JSONType(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"], unique=False
    )
    op.create_table(
        "invoice_number_sequence",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_value", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_invoice_number_sequence_one_row")),
        sa.CheckConstraint(
            "last_value >= 0", name=op.f("ck_invoice_number_sequence_last_value_non_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_number_sequence")),
    )
    op.bulk_insert(
        sa.table(
            "invoice_number_sequence",
            sa.column("id", sa.Integer()),
            sa.column("last_value", sa.BigInteger()),
        ),
        [{"id": 1, "last_value": 0}],
    )
    op.create_table(
        "plans",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("features", JSONType(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("metadata", JSONType(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
    )
    op.create_table(
        "analytics_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("properties", JSONType(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_analytics_events_customer_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_analytics_events")),
        sa.UniqueConstraint("id", name=op.f("uq_analytics_events_id")),
    )
    op.create_index(
        op.f("ix_analytics_events_customer_id"), "analytics_events", ["customer_id"], unique=False
    )
    op.create_index(
        op.f("ix_analytics_events_occurred_at"), "analytics_events", ["occurred_at"], unique=False
    )
    op.create_table(
        "audit_logs",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=255), nullable=False),
        sa.Column("subject_type", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("before", JSONType(), nullable=True),
        sa.Column("after", JSONType(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_audit_logs_customer_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_logs")),
        sa.UniqueConstraint("id", name=op.f("uq_audit_logs_id")),
    )
    op.create_index(op.f("ix_audit_logs_customer_id"), "audit_logs", ["customer_id"], unique=False)
    op.create_index(op.f("ix_audit_logs_subject_id"), "audit_logs", ["subject_id"], unique=False)
    op.create_table(
        "outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSONType(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_outbox_attempts_non_negative")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_outbox_customer_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox")),
        sa.UniqueConstraint("id", name=op.f("uq_outbox_id")),
    )
    op.create_index(op.f("ix_outbox_customer_id"), "outbox", ["customer_id"], unique=False)
    op.create_index(
        "ix_outbox_undelivered",
        "outbox",
        ["seq"],
        unique=False,
        postgresql_where=sa.text("delivered_at IS NULL"),
        sqlite_where=sa.text("delivered_at IS NULL"),
    )
    op.create_table(
        "prices",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("plan_id", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("interval", sa.String(length=8), nullable=False),
        sa.Column("interval_count", sa.Integer(), nullable=False),
        sa.Column("scheme", sa.String(length=32), nullable=False),
        sa.Column("unit_amount", sa.BigInteger(), nullable=True),
        sa.Column("tiers", JSONType(), nullable=False),
        sa.Column("usage_type", sa.String(length=16), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("nickname", sa.Text(), nullable=False),
        sa.CheckConstraint(is_currency(sa.column("currency")), name=op.f("ck_prices_currency")),
        sa.CheckConstraint(
            "interval IN ('day', 'week', 'month', 'year')", name=op.f("ck_prices_interval")
        ),
        sa.CheckConstraint(
            "scheme IN ('flat', 'per_unit', 'tiered_graduated', 'tiered_volume')",
            name=op.f("ck_prices_scheme"),
        ),
        sa.CheckConstraint(
            "usage_type IN ('licensed', 'metered')", name=op.f("ck_prices_usage_type")
        ),
        sa.CheckConstraint("interval_count >= 1", name=op.f("ck_prices_interval_count_positive")),
        sa.CheckConstraint("trial_days >= 0", name=op.f("ck_prices_trial_days_non_negative")),
        sa.CheckConstraint("unit_amount >= 0", name=op.f("ck_prices_unit_amount_non_negative")),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_prices_plan_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prices")),
    )
    op.create_index(op.f("ix_prices_plan_id"), "prices", ["plan_id"], unique=False)
    op.create_table(
        "email_deliveries",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("provider_id", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('sent', 'processed', 'delivered', 'deferred', 'bounce', 'dropped', 'open', 'click')",
            name=op.f("ck_email_deliveries_status"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_email_deliveries_customer_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["outbox.id"],
            name=op.f("fk_email_deliveries_event_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_email_deliveries")),
        sa.UniqueConstraint(
            "event_id", "template", name=op.f("uq_email_deliveries_event_id_template")
        ),
        sa.UniqueConstraint("message_id", name=op.f("uq_email_deliveries_message_id")),
    )
    op.create_index(
        op.f("ix_email_deliveries_customer_id"), "email_deliveries", ["customer_id"], unique=False
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("price_id", sa.String(length=255), nullable=False),
        sa.Column("price", JSONType(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("anchor", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trial_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resumes_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scheduled_price_id", sa.String(length=255), nullable=True),
        sa.Column("scheduled_change", JSONType(), nullable=True),
        sa.Column("discount_coupon_id", sa.String(length=255), nullable=True),
        sa.Column("discount", JSONType(), nullable=True),
        sa.Column("failed_payments", sa.Integer(), nullable=False),
        sa.Column("next_payment_retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trial_reminder_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_action_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'paused', 'unpaid', 'canceled')",
            name=op.f("ck_subscriptions_status"),
        ),
        sa.CheckConstraint(
            "current_period_end > current_period_start",
            name=op.f("ck_subscriptions_period_ends_after_start"),
        ),
        sa.CheckConstraint(
            "failed_payments >= 0", name=op.f("ck_subscriptions_failed_payments_non_negative")
        ),
        sa.CheckConstraint("quantity >= 0", name=op.f("ck_subscriptions_quantity_non_negative")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_subscriptions_customer_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["discount_coupon_id"],
            ["coupons.id"],
            name=op.f("fk_subscriptions_discount_coupon_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["price_id"],
            ["prices.id"],
            name=op.f("fk_subscriptions_price_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["scheduled_price_id"],
            ["prices.id"],
            name=op.f("fk_subscriptions_scheduled_price_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    op.create_index(
        op.f("ix_subscriptions_customer_id_status"),
        "subscriptions",
        ["customer_id", "status"],
        unique=False,
    )
    op.create_index(
        op.f("ix_subscriptions_next_action_at_id"),
        "subscriptions",
        ["next_action_at", "id"],
        unique=False,
    )
    op.create_table(
        "invoices",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("subscription_id", sa.String(length=255), nullable=True),
        sa.Column("number", sa.String(length=64), nullable=True),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("billing_reason", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subtotal", sa.BigInteger(), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("tax", sa.BigInteger(), nullable=False),
        sa.Column("inclusive_tax", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("credit_applied", sa.BigInteger(), nullable=False),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.Column("amount_credited", sa.BigInteger(), nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("discount_coupon_id", sa.String(length=255), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("marked_uncollectible_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(is_currency(sa.column("currency")), name=op.f("ck_invoices_currency")),
        sa.CheckConstraint(
            "billing_reason IN ('subscription_create', 'subscription_cycle', 'subscription_update', 'manual')",
            name=op.f("ck_invoices_billing_reason"),
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'open', 'paid', 'void', 'uncollectible')",
            name=op.f("ck_invoices_status"),
        ),
        sa.CheckConstraint(
            "amount_credited >= 0", name=op.f("ck_invoices_amount_credited_non_negative")
        ),
        sa.CheckConstraint("amount_due >= 0", name=op.f("ck_invoices_amount_due_non_negative")),
        sa.CheckConstraint("amount_paid >= 0", name=op.f("ck_invoices_amount_paid_non_negative")),
        sa.CheckConstraint(
            "amount_refunded >= 0", name=op.f("ck_invoices_amount_refunded_non_negative")
        ),
        sa.CheckConstraint(
            "credit_applied >= 0", name=op.f("ck_invoices_credit_applied_non_negative")
        ),
        sa.CheckConstraint("discount >= 0", name=op.f("ck_invoices_discount_non_negative")),
        sa.CheckConstraint(
            "inclusive_tax >= 0", name=op.f("ck_invoices_inclusive_tax_non_negative")
        ),
        sa.CheckConstraint("tax >= 0", name=op.f("ck_invoices_tax_non_negative")),
        sa.CheckConstraint("total = subtotal - discount + tax", name=op.f("ck_invoices_total")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_invoices_customer_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["discount_coupon_id"],
            ["coupons.id"],
            name=op.f("fk_invoices_discount_coupon_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_invoices_subscription_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_invoices")),
        sa.UniqueConstraint("id", name=op.f("uq_invoices_id")),
    )
    op.create_index(op.f("ix_invoices_customer_id"), "invoices", ["customer_id"], unique=False)
    op.create_index(
        op.f("ix_invoices_subscription_id_status"),
        "invoices",
        ["subscription_id", "status"],
        unique=False,
    )
    op.create_index(
        "uq_invoices_subscription_cycle",
        "invoices",
        ["subscription_id", "period_start"],
        unique=True,
        postgresql_where=sa.text("billing_reason = 'subscription_cycle'"),
        sqlite_where=sa.text("billing_reason = 'subscription_cycle'"),
    )
    op.create_table(
        "pending_lines",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("price_id", sa.String(length=255), nullable=True),
        sa.Column("line_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("discountable", sa.Boolean(), nullable=False),
        sa.Column("tax_rates", JSONType(), nullable=False),
        sa.CheckConstraint(
            is_currency(sa.column("currency")), name=op.f("ck_pending_lines_currency")
        ),
        sa.CheckConstraint(
            "kind IN ('subscription', 'proration', 'usage', 'one_off')",
            name=op.f("ck_pending_lines_kind"),
        ),
        sa.CheckConstraint("quantity >= 0", name=op.f("ck_pending_lines_quantity_non_negative")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_pending_lines_customer_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["line_subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_pending_lines_line_subscription_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["price_id"],
            ["prices.id"],
            name=op.f("fk_pending_lines_price_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_pending_lines_subscription_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_pending_lines")),
        sa.UniqueConstraint("id", name=op.f("uq_pending_lines_id")),
    )
    op.create_index(
        op.f("ix_pending_lines_subscription_id"), "pending_lines", ["subscription_id"], unique=False
    )
    op.create_table(
        "subscription_changes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_status", sa.String(length=24), nullable=True),
        sa.Column("to_status", sa.String(length=24), nullable=False),
        sa.Column("from_price_id", sa.String(length=255), nullable=True),
        sa.Column("to_price_id", sa.String(length=255), nullable=False),
        sa.Column("from_quantity", sa.Integer(), nullable=True),
        sa.Column("to_quantity", sa.Integer(), nullable=False),
        sa.Column("mrr", sa.BigInteger(), nullable=False),
        sa.Column("mrr_currency", sa.CHAR(length=3), nullable=False),
        sa.Column("plan_id", sa.String(length=255), nullable=True),
        sa.Column("data", JSONType(), nullable=False),
        sa.CheckConstraint(
            is_currency(sa.column("mrr_currency")),
            name=op.f("ck_subscription_changes_mrr_currency"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_subscription_changes_customer_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["from_price_id"],
            ["prices.id"],
            name=op.f("fk_subscription_changes_from_price_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_subscription_changes_plan_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscription_changes_subscription_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["to_price_id"],
            ["prices.id"],
            name=op.f("fk_subscription_changes_to_price_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_subscription_changes")),
        sa.UniqueConstraint("id", name=op.f("uq_subscription_changes_id")),
    )
    op.create_index(
        op.f("ix_subscription_changes_at"), "subscription_changes", ["at"], unique=False
    )
    op.create_index(
        op.f("ix_subscription_changes_customer_id"),
        "subscription_changes",
        ["customer_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_subscription_changes_subscription_id_at"),
        "subscription_changes",
        ["subscription_id", "at"],
        unique=False,
    )
    op.create_table(
        "usage_records",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("quantity >= 0", name=op.f("ck_usage_records_quantity_non_negative")),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_usage_records_subscription_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_usage_records")),
        sa.UniqueConstraint("id", name=op.f("uq_usage_records_id")),
    )
    op.create_index(
        op.f("ix_usage_records_subscription_id_at"),
        "usage_records",
        ["subscription_id", "at"],
        unique=False,
    )
    op.create_table(
        "credit_notes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("memo", sa.Text(), nullable=False),
        sa.CheckConstraint(
            is_currency(sa.column("currency")), name=op.f("ck_credit_notes_currency")
        ),
        sa.CheckConstraint(
            "outcome IN ('refund', 'credit_balance', 'reduce_amount_due')",
            name=op.f("ck_credit_notes_outcome"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_notes_amount_positive")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_credit_notes_customer_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_credit_notes_invoice_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint("id", name=op.f("uq_credit_notes_id")),
    )
    op.create_index(
        op.f("ix_credit_notes_customer_id"), "credit_notes", ["customer_id"], unique=False
    )
    op.create_index(
        op.f("ix_credit_notes_invoice_id"), "credit_notes", ["invoice_id"], unique=False
    )
    op.create_table(
        "invoice_lines",
        sa.Column("invoice_id", sa.String(length=255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("price_id", sa.String(length=255), nullable=True),
        sa.Column("line_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("discountable", sa.Boolean(), nullable=False),
        sa.Column("tax_rates", JSONType(), nullable=False),
        sa.Column("discount_amount", sa.BigInteger(), nullable=False),
        sa.Column("taxes", JSONType(), nullable=False),
        sa.CheckConstraint(
            is_currency(sa.column("currency")), name=op.f("ck_invoice_lines_currency")
        ),
        sa.CheckConstraint(
            "kind IN ('subscription', 'proration', 'usage', 'one_off')",
            name=op.f("ck_invoice_lines_kind"),
        ),
        sa.CheckConstraint(
            "discount_amount >= 0", name=op.f("ck_invoice_lines_discount_amount_non_negative")
        ),
        sa.CheckConstraint("quantity >= 0", name=op.f("ck_invoice_lines_quantity_non_negative")),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_lines_invoice_id"),
            ondelete="CASCADE",
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["line_subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_invoice_lines_line_subscription_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["price_id"],
            ["prices.id"],
            name=op.f("fk_invoice_lines_price_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("invoice_id", "position", name=op.f("pk_invoice_lines")),
    )
    op.create_table(
        "payments",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gateway_reference", sa.String(length=255), nullable=True),
        sa.Column("failure_code", sa.String(length=255), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(is_currency(sa.column("currency")), name=op.f("ck_payments_currency")),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_payments_status")
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_payments_amount_non_negative")),
        sa.CheckConstraint(
            "amount_refunded >= 0", name=op.f("ck_payments_amount_refunded_non_negative")
        ),
        sa.CheckConstraint("attempt >= 0", name=op.f("ck_payments_attempt_non_negative")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_payments_customer_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_payments_invoice_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_payments")),
        sa.UniqueConstraint("id", name=op.f("uq_payments_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payments_idempotency_key")),
    )
    op.create_index(op.f("ix_payments_customer_id"), "payments", ["customer_id"], unique=False)
    op.create_index(op.f("ix_payments_invoice_id"), "payments", ["invoice_id"], unique=False)
    op.create_index(
        "ix_payments_pending",
        "payments",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "refunds",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("payment_id", sa.String(length=255), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(is_currency(sa.column("currency")), name=op.f("ck_refunds_currency")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refunds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_refunds_invoice_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_refunds_payment_id"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_refunds")),
        sa.UniqueConstraint("id", name=op.f("uq_refunds_id")),
    )
    op.create_index(op.f("ix_refunds_invoice_id"), "refunds", ["invoice_id"], unique=False)
    op.create_index(op.f("ix_refunds_payment_id"), "refunds", ["payment_id"], unique=False)


def downgrade() -> None:
    """Undo the revision."""
    op.drop_index(op.f("ix_refunds_payment_id"), table_name="refunds")
    op.drop_index(op.f("ix_refunds_invoice_id"), table_name="refunds")
    op.drop_table("refunds")
    op.drop_index(
        "ix_payments_pending",
        table_name="payments",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.drop_index(op.f("ix_payments_invoice_id"), table_name="payments")
    op.drop_index(op.f("ix_payments_customer_id"), table_name="payments")
    op.drop_table("payments")
    op.drop_table("invoice_lines")
    op.drop_index(op.f("ix_credit_notes_invoice_id"), table_name="credit_notes")
    op.drop_index(op.f("ix_credit_notes_customer_id"), table_name="credit_notes")
    op.drop_table("credit_notes")
    op.drop_index(op.f("ix_usage_records_subscription_id_at"), table_name="usage_records")
    op.drop_table("usage_records")
    op.drop_index(
        op.f("ix_subscription_changes_subscription_id_at"), table_name="subscription_changes"
    )
    op.drop_index(op.f("ix_subscription_changes_customer_id"), table_name="subscription_changes")
    op.drop_index(op.f("ix_subscription_changes_at"), table_name="subscription_changes")
    op.drop_table("subscription_changes")
    op.drop_index(op.f("ix_pending_lines_subscription_id"), table_name="pending_lines")
    op.drop_table("pending_lines")
    op.drop_index(
        "uq_invoices_subscription_cycle",
        table_name="invoices",
        postgresql_where=sa.text("billing_reason = 'subscription_cycle'"),
        sqlite_where=sa.text("billing_reason = 'subscription_cycle'"),
    )
    op.drop_index(op.f("ix_invoices_subscription_id_status"), table_name="invoices")
    op.drop_index(op.f("ix_invoices_customer_id"), table_name="invoices")
    op.drop_table("invoices")
    op.drop_index(op.f("ix_subscriptions_next_action_at_id"), table_name="subscriptions")
    op.drop_index(op.f("ix_subscriptions_customer_id_status"), table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_index(op.f("ix_email_deliveries_customer_id"), table_name="email_deliveries")
    op.drop_table("email_deliveries")
    op.drop_index(op.f("ix_prices_plan_id"), table_name="prices")
    op.drop_table("prices")
    op.drop_index(
        "ix_outbox_undelivered",
        table_name="outbox",
        postgresql_where=sa.text("delivered_at IS NULL"),
        sqlite_where=sa.text("delivered_at IS NULL"),
    )
    op.drop_index(op.f("ix_outbox_customer_id"), table_name="outbox")
    op.drop_table("outbox")
    op.drop_index(op.f("ix_audit_logs_subject_id"), table_name="audit_logs")
    op.drop_index(op.f("ix_audit_logs_customer_id"), table_name="audit_logs")
    op.drop_table("audit_logs")
    op.drop_index(op.f("ix_analytics_events_occurred_at"), table_name="analytics_events")
    op.drop_index(op.f("ix_analytics_events_customer_id"), table_name="analytics_events")
    op.drop_table("analytics_events")
    op.drop_table("plans")
    op.drop_table("invoice_number_sequence")
    op.drop_index(op.f("ix_idempotency_keys_expires_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("customers")
    op.drop_table("coupons")
