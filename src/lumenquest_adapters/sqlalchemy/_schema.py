"""The tables, as SQLAlchemy Core ``Table`` objects on one ``MetaData``.

Money is a BIGINT of minor units beside a CHAR(3) currency; every instant is a
``timestamptz`` (naive UTC text on SQLite); every relation between records is a foreign
key, checked at commit (``DEFERRABLE INITIALLY DEFERRED``) so that a unit of work may
write rows in any order. Logs and history (outbox, audit trail, analytics events, email
deliveries, subscription changes) name the customer, prices and plan they describe
without one (migration 0008): they record what was, are written only beside the change
they describe, and a key would lock those rows at every write (a popular price once a
renewal, in every worker). Each keeps the key to its own subject (a change's
subscription, a delivery's event). Tables whose rows are listed in creation order have
a ``seq`` key.

Exactly-once billing is enforced here, whatever the code above does: one
subscription-cycle invoice per subscription and period (a partial unique index), one
payment per idempotency key, one outbox row per event id, one email per event and
template.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from lumenquest_adapters.sqlalchemy._ddl import (
    ID,
    JSONType,
    Timestamp,
    is_currency,
    one_of,
    seq_type,
)
from lumenquest_core.catalog import PricingScheme, UsageType
from lumenquest_core.coupons import CouponDuration
from lumenquest_core.customers import Role
from lumenquest_core.invoicing import BillingReason, CreditNoteOutcome, InvoiceStatus
from lumenquest_core.lines import LineKind
from lumenquest_core.payments import PaymentStatus
from lumenquest_core.periods import Interval
from lumenquest_core.ports import DeliveryStatus
from lumenquest_core.subscriptions import SubscriptionStatus

__all__ = [
    "analytics_events",
    "audit_logs",
    "coupons",
    "credit_notes",
    "customers",
    "email_deliveries",
    "idempotency_keys",
    "invoice_lines",
    "invoice_number_sequence",
    "invoices",
    "metadata",
    "outbox",
    "payments",
    "pending_lines",
    "plans",
    "prices",
    "refunds",
    "subscription_changes",
    "subscriptions",
    "usage_records",
]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _fk(target: str) -> sa.ForeignKey:
    return sa.ForeignKey(target, deferrable=True, initially="DEFERRED")


def _currency(name: str = "currency", *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.CHAR(3), nullable=nullable)


def _currency_check(name: str = "currency") -> sa.CheckConstraint:
    return sa.CheckConstraint(is_currency(sa.column(name)), name=name)


def _non_negative(*names: str) -> list[sa.CheckConstraint]:
    return [sa.CheckConstraint(f"{n} >= 0", name=f"{n}_non_negative") for n in names]


def _seq() -> sa.Column[int]:
    return sa.Column("seq", seq_type(), primary_key=True, autoincrement=True)


customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", ID(), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    _currency(nullable=True),
    sa.Column("credit_balance", sa.BigInteger(), nullable=True),
    sa.Column("gateway_customer_id", sa.String(255), nullable=True),
    sa.Column("email_deliverable", sa.Boolean(), nullable=False),
    sa.Column("erased_at", Timestamp(), nullable=True),
    sa.Column("metadata", JSONType(), nullable=False),
    sa.Column("created_at", Timestamp(), nullable=False),
    _currency_check(),
    sa.CheckConstraint(one_of("role", Role), name="role"),
    sa.CheckConstraint(
        "credit_balance IS NULL OR currency IS NOT NULL", name="balance_has_currency"
    ),
)

plans = sa.Table(
    "plans",
    metadata,
    sa.Column("id", ID(), primary_key=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("features", JSONType(), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("metadata", JSONType(), nullable=False),
)

prices = sa.Table(
    "prices",
    metadata,
    sa.Column("id", ID(), primary_key=True),
    sa.Column("plan_id", ID(), _fk("plans.id"), nullable=False, index=True),
    _currency(),
    sa.Column("interval", sa.String(8), nullable=False),
    sa.Column("interval_count", sa.Integer(), nullable=False),
    sa.Column("scheme", sa.String(32), nullable=False),
    sa.Column("unit_amount", sa.BigInteger(), nullable=True),
    sa.Column("tiers", JSONType(), nullable=False),
    sa.Column("usage_type", sa.String(16), nullable=False),
    sa.Column("trial_days", sa.Integer(), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("nickname", sa.Text(), nullable=False),
    _currency_check(),
    sa.CheckConstraint(one_of("interval", Interval), name="interval"),
    sa.CheckConstraint("interval_count >= 1", name="interval_count_positive"),
    sa.CheckConstraint(one_of("scheme", PricingScheme), name="scheme"),
    sa.CheckConstraint(one_of("usage_type", UsageType), name="usage_type"),
    *_non_negative("unit_amount", "trial_days"),
)

coupons = sa.Table(
    "coupons",
    metadata,
    sa.Column("id", ID(), primary_key=True),
    sa.Column("name", sa.Text(), nullable=False),
    # A decimal's exact text ("12.5"): no float ever touches a percentage.
    sa.Column("percent_off", sa.String(32), nullable=True),
    sa.Column("amount_off", sa.BigInteger(), nullable=True),
    _currency("amount_off_currency", nullable=True),
    sa.Column("duration", sa.String(16), nullable=False),
    sa.Column("duration_in_cycles", sa.Integer(), nullable=True),
    _currency_check("amount_off_currency"),
    sa.CheckConstraint(one_of("duration", CouponDuration), name="duration"),
    sa.CheckConstraint("amount_off > 0", name="amount_off_positive"),
    sa.CheckConstraint(
        "(percent_off IS NULL) <> (amount_off IS NULL)", name="percent_or_amount_off"
    ),
    sa.CheckConstraint(
        "(amount_off IS NULL) = (amount_off_currency IS NULL)", name="amount_off_has_currency"
    ),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", ID(), primary_key=True),
    sa.Column("customer_id", ID(), _fk("customers.id"), nullable=False),
    sa.Column("price_id", ID(), _fk("prices.id"), nullable=False),
    # The price as the subscription holds it (a price's amounts never change; its flags may).
    sa.Column("price", JSONType(), nullable=False),
    sa.Column("quantity", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("anchor", Timestamp(), nullable=False),
    sa.Column("current_period_start", Timestamp(), nullable=False),
    sa.Column("current_period_end", Timestamp(), nullable=False),
    sa.Column("created_at", Timestamp(), nullable=False),
    sa.Column("trial_end", Timestamp(), nullable=True),
    sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
    sa.Column("canceled_at", Timestamp(), nullable=True),
    sa.Column("ended_at", Timestamp(), nullable=True),
    sa.Column("paused_at", Timestamp(), nullable=True),
    sa.Column("resumes_at", Timestamp(), nullable=True),
    sa.Column("scheduled_price_id", ID(), _fk("prices.id"), nullable=True),
    sa.Column("scheduled_change", JSONType(), nullable=True),
    sa.Column("discount_coupon_id", ID(), _fk("coupons.id"), nullable=True),
    sa.Column("discount", JSONType(), nullable=True),
    sa.Column("failed_payments", sa.Integer(), nullable=False),
    sa.Column("next_payment_retry_at", Timestamp(), nullable=True),
    sa.Column("trial_reminder_sent_at", Timestamp(), nullable=True),
    # lumenquest_core.subscriptions.next_action_at(row), kept equal on every write.
    sa.Column("next_action_at", Timestamp(), nullable=True),
    sa.Column("pending_update", JSONType(), nullable=True),
    sa.CheckConstraint(one_of("status", SubscriptionStatus), name="status"),
    sa.CheckConstraint("current_period_end > current_period_start", name="period_ends_after_start"),
    *_non_negative("quantity", "failed_payments"),
    sa.Index(None, "customer_id", "status"),
    # claim_due's order: an index scan, no sort, however many subscriptions are due.
    sa.Index(None, "next_action_at", "id"),
)

invoices = sa.Table(
    "invoices",
    metadata,
    _seq(),
    sa.Column("id", ID(), nullable=False, unique=True),
    sa.Column("customer_id", ID(), _fk("customers.id"), nullable=False, index=True),
    sa.Column("subscription_id", ID(), _fk("subscriptions.id"), nullable=True),
    sa.Column("number", sa.String(64), nullable=True),
    _currency(),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("billing_reason", sa.String(32), nullable=False),
    sa.Column("created_at", Timestamp(), nullable=False),
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
    sa.Column("period_start", Timestamp(), nullable=True),
    sa.Column("period_end", Timestamp(), nullable=True),
    sa.Column("discount_coupon_id", ID(), _fk("coupons.id"), nullable=True),
    sa.Column("due_at", Timestamp(), nullable=True),
    sa.Column("finalized_at", Timestamp(), nullable=True),
    sa.Column("paid_at", Timestamp(), nullable=True),
    sa.Column("voided_at", Timestamp(), nullable=True),
    sa.Column("marked_uncollectible_at", Timestamp(), nullable=True),
    _currency_check(),
    sa.CheckConstraint(one_of("status", InvoiceStatus), name="status"),
    sa.CheckConstraint(one_of("billing_reason", BillingReason), name="billing_reason"),
    sa.CheckConstraint("total = subtotal - discount + tax", name="total"),
    *_non_negative(
        "discount",
        "tax",
        "inclusive_tax",
        "credit_applied",
        "amount_due",
        "amount_paid",
        "amount_credited",
        "amount_refunded",
    ),
    sa.Index(None, "subscription_id", "status"),
    # Exactly-once billing: one cycle invoice per subscription and period.
    sa.Index(
        "uq_invoices_subscription_cycle",
        "subscription_id",
        "period_start",
        unique=True,
        postgresql_where=sa.text("billing_reason = 'subscription_cycle'"),
        sqlite_where=sa.text("billing_reason = 'subscription_cycle'"),
    ),
)


def _line_columns() -> list[sa.Column[Any] | sa.CheckConstraint]:
    return [
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        _currency(),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("period_start", Timestamp(), nullable=True),
        sa.Column("period_end", Timestamp(), nullable=True),
        sa.Column("price_id", ID(), _fk("prices.id"), nullable=True),
        sa.Column("line_subscription_id", ID(), _fk("subscriptions.id"), nullable=True),
        sa.Column("discountable", sa.Boolean(), nullable=False),
        sa.Column("tax_rates", JSONType(), nullable=False),
        _currency_check(),
        sa.CheckConstraint(one_of("kind", LineKind), name="kind"),
        *_non_negative("quantity"),
    ]


invoice_lines = sa.Table(
    "invoice_lines",
    metadata,
    sa.Column(
        "invoice_id",
        ID(),
        sa.ForeignKey("invoices.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
        primary_key=True,
    ),
    sa.Column("position", sa.Integer(), primary_key=True),
    *_line_columns(),
    # Aligned with the line: its share of the invoice discount, and its taxes.
    sa.Column("discount_amount", sa.BigInteger(), nullable=False),
    sa.Column("taxes", JSONType(), nullable=False),
    *_non_negative("discount_amount"),
)

pending_lines = sa.Table(
    "pending_lines",
    metadata,
    _seq(),
    sa.Column("id", ID(), nullable=False, unique=True),
    sa.Column("customer_id", ID(), _fk("customers.id"), nullable=False),
    sa.Column("subscription_id", ID(), _fk("subscriptions.id"), nullable=False, index=True),
    sa.Column("created_at", Timestamp(), nullable=False),
    *_line_columns(),
)

payments = sa.Table(
    "payments",
    metadata,
    _seq(),
    sa.Column("id", ID(), nullable=False, unique=True),
    sa.Column("invoice_id", ID(), _fk("invoices.id"), nullable=False, index=True),
    sa.Column("customer_id", ID(), _fk("customers.id"), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    _currency(),
    sa.Column("status", sa.String(16), nullable=False),
    # Exactly-once charging: one payment per idempotency key.
    sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("created_at", Timestamp(), nullable=False),
    # Gateway webhooks name the charge by its reference.
    sa.Column("gateway_reference", sa.String(255), nullable=True, index=True),
    sa.Column("failure_code", sa.String(255), nullable=True),
    sa.Column("failure_message", sa.Text(), nullable=False),
    sa.Column("amount_refunded", sa.BigInteger(), nullable=True),
    sa.Column("settled_at", Timestamp(), nullable=True),
    _currency_check(),
    sa.CheckConstraint(one_of("status", PaymentStatus), name="status"),
    *_non_negative("amount", "amount_refunded", "attempt"),
    sa.Index(
        "ix_payments_pending",
        "created_at",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    ),
)

refunds = sa.Table(
    "refunds",
    metadata,
    _seq(),
    sa.Column("id", ID(), nullable=False, unique=True),
    sa.Column("payment_id", ID(), _fk("payments.id"), nullable=False, index=True),
    sa.Column("invoice_id", ID(), _fk("invoices.id"), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    _currency(),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("created_at", Timestamp(), nullable=False),
    _currency_check(),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
)

credit_notes = sa.Table(
    "credit_notes",
    metadata,
    _seq(),
    sa.Column("id", ID(), nullable=False, unique=True),
    sa.Column("number", sa.String(64), nullable=False),
    sa.Column("invoice_id", ID(), _fk("invoices.id"), nullable=False, index=True),
    sa.Column("customer_id", ID(), _fk("customers.id"), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    _currency(),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("created_at", Timestamp(), nullable=False),
    sa.Column("memo", sa.Text(), nullable=False),
    _currency_check(),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint(one_of("outcome", CreditNoteOutcome), name="outcome"),
)

usage_records = sa.Table(
    "usage_records",
    metadata,
    _seq(),
    sa.Column("id", ID(), nullable=False, unique=True),
    sa.Column("subscription_id", ID(), _fk("subscriptions.id"), nullable=False),
    sa.Column("quantity", sa.BigInteger(), nullable=False),
    sa.Column("at", Timestamp(), nullable=False),
    *_non_negative("quantity"),
    sa.Index(None, "subscription_id", "at"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    _seq(),
    # Exactly-once events: one row per event id.
    sa.Column("id", ID(), nullable=False, unique=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("subject_id", ID(), nullable=False),
    sa.Column("customer_id", ID(), nullable=True, index=True),  # a log: no foreign key
    sa.Column("occurred_at", Timestamp(), nullable=False),
    sa.Column("data", JSONType(), nullable=False),
    sa.Column("created_at", Timestamp(), nullable=False),
    sa.Column("delivered_at", Timestamp(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    *_non_negative("attempts"),
    sa.Index(
        "ix_outbox_undelivered",
        "seq",
        postgresql_where=sa.text("delivered_at IS NULL"),
        sqlite_where=sa.text("delivered_at IS NULL"),
    ),
)

audit_logs = sa.Table(
    "audit_logs",
    metadata,
    _seq(),
    sa.Column("id", ID(), nullable=False, unique=True),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(255), nullable=False),
    sa.Column("subject_type", sa.String(64), nullable=False),
    sa.Column("subject_id", ID(), nullable=False, index=True),
    sa.Column("at", Timestamp(), nullable=False),
    sa.Column("customer_id", ID(), nullable=True, index=True),  # a log: no foreign key
    sa.Column("before", JSONType(), nullable=True),
    sa.Column("after", JSONType(), nullable=True),
)

subscription_changes = sa.Table(
    "subscription_changes",
    metadata,
    _seq(),
    sa.Column("id", ID(), nullable=False, unique=True),
    sa.Column("subscription_id", ID(), _fk("subscriptions.id"), nullable=False),
    # History: the customer, prices and plan as they were, without foreign keys.
    sa.Column("customer_id", ID(), nullable=False, index=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("at", Timestamp(), nullable=False, index=True),
    sa.Column("from_status", sa.String(24), nullable=True),
    sa.Column("to_status", sa.String(24), nullable=False),
    sa.Column("from_price_id", ID(), nullable=True),
    sa.Column("to_price_id", ID(), nullable=False),
    sa.Column("from_quantity", sa.Integer(), nullable=True),
    sa.Column("to_quantity", sa.Integer(), nullable=False),
    sa.Column("mrr", sa.BigInteger(), nullable=False),
    _currency("mrr_currency"),
    sa.Column("plan_id", ID(), nullable=True),
    sa.Column("data", JSONType(), nullable=False),
    # Written by triggers (migration 0005), never by the code: when this paying change
    # stopped holding; NULL while it holds, ``at`` for a repeat of the MRR before it.
    sa.Column("superseded_at", Timestamp(), nullable=True),
    _currency_check("mrr_currency"),
    sa.Index(None, "subscription_id", "at"),
    # Metrics (migration 0003): every subscription's history in one ordered index-only
    # scan, grouped by customer as it streams; and the few changes that end a trial.
    sa.Index(
        "ix_subscription_changes_metrics",
        "mrr_currency",
        "customer_id",
        "subscription_id",
        "at",
        "seq",
        postgresql_include=["mrr"],
    ),
    sa.Index(
        "ix_subscription_changes_trial_ends",
        "mrr_currency",
        "at",
        postgresql_include=["plan_id", "to_status"],
        postgresql_where=sa.text("from_status = 'trialing'"),
        sqlite_where=sa.text("from_status = 'trialing'"),
    ),
    # Metrics (migration 0005): MRR at an instant sums the paying rows that still hold
    # (per customer, in order) and those that stopped after it; the history is not read.
    sa.Index(
        "ix_subscription_changes_open",
        "mrr_currency",
        "customer_id",
        "subscription_id",
        postgresql_include=["at", "mrr"],
        postgresql_where=sa.text("superseded_at IS NULL AND mrr > 0"),
        sqlite_where=sa.text("superseded_at IS NULL AND mrr > 0"),
    ),
    sa.Index(
        "ix_subscription_changes_closed",
        "mrr_currency",
        "superseded_at",
        postgresql_include=["customer_id", "at", "mrr"],
        postgresql_where=sa.text("superseded_at > at AND mrr > 0"),
        sqlite_where=sa.text("superseded_at > at AND mrr > 0"),
    ),
)

analytics_events = sa.Table(
    "analytics_events",
    metadata,
    _seq(),
    sa.Column("id", ID(), nullable=False, unique=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("customer_id", ID(), nullable=True, index=True),  # a log: no foreign key
    # The seed's created_at: when the event happened.
    sa.Column("occurred_at", Timestamp(), nullable=False, index=True),
    sa.Column("properties", JSONType(), nullable=False),
)

email_deliveries = sa.Table(
    "email_deliveries",
    metadata,
    _seq(),
    sa.Column("message_id", sa.String(255), nullable=False, unique=True),
    sa.Column("event_id", ID(), _fk("outbox.id"), nullable=False),
    sa.Column("template", sa.String(64), nullable=False),
    sa.Column("recipient", sa.String(254), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp(), nullable=False),
    sa.Column("customer_id", ID(), nullable=True, index=True),  # a log: no foreign key
    sa.Column("provider_id", sa.String(255), nullable=True),
    sa.Column("updated_at", Timestamp(), nullable=True),
    sa.CheckConstraint(one_of("status", DeliveryStatus), name="status"),
    # Exactly-once emails: one per event and template.
    sa.UniqueConstraint("event_id", "template"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(255), nullable=False),
    sa.Column("result", JSONType(), nullable=False),
    sa.Column("created_at", Timestamp(), nullable=False),
    sa.Column("expires_at", Timestamp(), nullable=False, index=True),
)

# A one-row counter, updated in the invoice's transaction: gapless, and rolled back with it.
invoice_number_sequence = sa.Table(
    "invoice_number_sequence",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("last_value", sa.BigInteger(), nullable=False),
    sa.CheckConstraint("id = 1", name="one_row"),
    *_non_negative("last_value"),
)
