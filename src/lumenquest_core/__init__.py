"""lumenquest core: the pure billing domain, its ports and the ``Billing`` facade.

Everything here is free of I/O: time comes in as an argument (or through the ``Clock``
port), money is integer minor units, and storage, payments and email are ports that
``lumenquest_adapters`` implements. Lifecycle transitions live in
:mod:`lumenquest_core.subscriptions` and invoice transitions in
:mod:`lumenquest_core.invoicing` (``subscriptions.renew(sub, at)``,
``invoicing.finalize(invoice, number=…, at=…)``) because their short names read best
qualified by their module.
"""

from lumenquest_core import invoicing, subscriptions
from lumenquest_core.catalog import (
    Plan,
    PlanChange,
    Price,
    PricingScheme,
    Tier,
    UsageType,
    compare,
    monthly_amount,
)
from lumenquest_core.coupons import Coupon, CouponDuration, Discount
from lumenquest_core.customers import Customer, Role, normalize_email
from lumenquest_core.dunning import DunningPolicy, FinalAction, next_retry_at, retry_schedule
from lumenquest_core.errors import (
    ConfigurationError,
    Conflict,
    CurrencyMismatch,
    GatewayUnavailable,
    IdempotencyConflict,
    InvalidTransition,
    LumenquestError,
    NaiveDatetime,
    NotFound,
    PaymentDeclined,
    UnknownCurrency,
    ValidationError,
)
from lumenquest_core.events import DomainEvent, EventName
from lumenquest_core.invoicing import (
    BillingReason,
    CreditNote,
    CreditNoteOutcome,
    FixedTaxRates,
    Invoice,
    InvoiceNumbering,
    InvoiceStatus,
    LineTax,
    NoTax,
    Refund,
    TaxCalculator,
    build_invoice,
    customer_balance_after,
    format_invoice_number,
    issue_credit_note,
    record_refund,
    usage_line,
)
from lumenquest_core.lines import InvoiceLine, LineKind, TaxRate
from lumenquest_core.metrics import (
    HistoryPoint,
    MetricsReport,
    MrrMovements,
    MrrSnapshots,
    arpa,
    arr,
    cac,
    customer_churn_rate,
    customer_mrr,
    gross_revenue_churn_rate,
    ltv,
    metrics_report,
    mrr,
    mrr_movements,
    net_revenue_churn_rate,
    net_revenue_retention,
    plan_conversion_rates,
    report_from_history,
    subscription_mrr,
    trial_conversion_rate,
)
from lumenquest_core.money import Money, allocate, currency_exponent, round_half_even
from lumenquest_core.payments import (
    AuditEntry,
    ChargeResult,
    ChargeStatus,
    Payment,
    PaymentStatus,
    SubscriptionChange,
    UsageRecord,
)
from lumenquest_core.periods import BillingCycle, Interval, Period, add_cycles, aware, period_at
from lumenquest_core.proration import (
    ChangeTiming,
    Granularity,
    ProrationBehavior,
    change_lines,
    prorate,
)
from lumenquest_core.service import Billing, GatewayEvent, GatewayEventType, RunSummary, new_id
from lumenquest_core.subscriptions import (
    PendingUpdate,
    ScheduledChange,
    Subscription,
    SubscriptionStatus,
    Transition,
    next_action_at,
)

__all__ = [
    # money
    "Money",
    "allocate",
    "currency_exponent",
    "round_half_even",
    # time
    "BillingCycle",
    "Interval",
    "Period",
    "add_cycles",
    "aware",
    "period_at",
    # catalog
    "Plan",
    "PlanChange",
    "Price",
    "PricingScheme",
    "Tier",
    "UsageType",
    "compare",
    "monthly_amount",
    # proration
    "ChangeTiming",
    "Granularity",
    "ProrationBehavior",
    "change_lines",
    "prorate",
    # subscriptions
    "PendingUpdate",
    "ScheduledChange",
    "Subscription",
    "SubscriptionStatus",
    "Transition",
    "next_action_at",
    "subscriptions",
    # invoicing
    "BillingReason",
    "Coupon",
    "CouponDuration",
    "CreditNote",
    "CreditNoteOutcome",
    "Discount",
    "FixedTaxRates",
    "Invoice",
    "InvoiceLine",
    "InvoiceNumbering",
    "InvoiceStatus",
    "LineKind",
    "LineTax",
    "NoTax",
    "Refund",
    "TaxCalculator",
    "TaxRate",
    "build_invoice",
    "customer_balance_after",
    "format_invoice_number",
    "invoicing",
    "issue_credit_note",
    "record_refund",
    "usage_line",
    # dunning
    "DunningPolicy",
    "FinalAction",
    "next_retry_at",
    "retry_schedule",
    # metrics
    "HistoryPoint",
    "MetricsReport",
    "MrrMovements",
    "MrrSnapshots",
    "arpa",
    "arr",
    "cac",
    "customer_churn_rate",
    "customer_mrr",
    "gross_revenue_churn_rate",
    "ltv",
    "metrics_report",
    "mrr",
    "mrr_movements",
    "net_revenue_churn_rate",
    "net_revenue_retention",
    "plan_conversion_rates",
    "report_from_history",
    "subscription_mrr",
    "trial_conversion_rate",
    # customers, payments, history
    "AuditEntry",
    "ChargeResult",
    "ChargeStatus",
    "Customer",
    "Payment",
    "PaymentStatus",
    "Role",
    "SubscriptionChange",
    "UsageRecord",
    "normalize_email",
    # events
    "DomainEvent",
    "EventName",
    # the facade
    "Billing",
    "GatewayEvent",
    "GatewayEventType",
    "RunSummary",
    "new_id",
    # errors
    "ConfigurationError",
    "Conflict",
    "CurrencyMismatch",
    "GatewayUnavailable",
    "IdempotencyConflict",
    "InvalidTransition",
    "LumenquestError",
    "NaiveDatetime",
    "NotFound",
    "PaymentDeclined",
    "UnknownCurrency",
    "ValidationError",
]
