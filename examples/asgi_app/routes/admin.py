"""Administration (role ``admin``): catalog, users, every subscription, refunds, credit notes, runs, analytics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from asgi_app.auth import AdminUser
from asgi_app.context import Ctx
from asgi_app.envelope import ApiError, Envelope, ok
from asgi_app.routes.users import scoped_key
from asgi_app.schemas import (
    CreditNoteBody,
    Fields,
    IdempotencyKey,
    PageParams,
    PlanBody,
    PlanPatch,
    PriceBody,
    RefundBody,
    RolePatch,
    in_memory,
    paged,
    select_fields,
)
from lumenquest_core.catalog import Tier
from lumenquest_core.codec import to_jsonable
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])

AnId = Annotated[str, Path(max_length=64)]
SubscriptionStatusName = Literal[
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "paused",
    "unpaid",
    "canceled",
]


# -- plans and prices ------------------------------------------------------------------


@router.get("/plans", response_model=Envelope, summary="List every plan")
def list_plans(admin: AdminUser, ctx: Ctx, page: PageParams, fields: Fields) -> Response:
    """Return every plan, archived ones too."""
    return ok(paged(in_memory(ctx.billing.list_plans()), page, fields))


@router.post("/plans", status_code=201, response_model=Envelope, summary="Create a plan")
def create_plan(
    body: PlanBody, admin: AdminUser, ctx: Ctx, idempotency_key: IdempotencyKey = None
) -> Response:
    """Create a plan with the features it grants."""
    plan = ctx.run(
        "create_plan",
        lambda: ctx.billing_for(admin).create_plan(
            name=body.name,
            features=body.features,
            description=body.description,
            idempotency_key=scoped_key(admin, idempotency_key),
        ),
    )
    return ok(plan, "plan created", status_code=201)


@router.get("/plans/{plan_id}", response_model=Envelope, summary="Get a plan")
def get_plan(plan_id: AnId, admin: AdminUser, ctx: Ctx, fields: Fields) -> Response:
    """Return a plan with all its prices."""
    plan = to_jsonable(ctx.billing.get_plan(plan_id))
    plan["prices"] = to_jsonable(ctx.billing.list_prices(plan_id=plan_id))
    return ok(select_fields(plan, fields))


@router.patch("/plans/{plan_id}", response_model=Envelope, summary="Update a plan")
def update_plan(plan_id: AnId, body: PlanPatch, admin: AdminUser, ctx: Ctx) -> Response:
    """Change a plan; ``active: false`` archives it."""
    plan = ctx.run(
        "update_plan",
        lambda: ctx.billing_for(admin).update_plan(
            plan_id,
            name=body.name,
            features=body.features,
            description=body.description,
            active=body.active,
        ),
    )
    return ok(plan, "plan updated")


@router.delete("/plans/{plan_id}", response_model=Envelope, summary="Archive a plan")
def archive_plan(plan_id: AnId, admin: AdminUser, ctx: Ctx) -> Response:
    """Archive a plan: no new subscriptions; existing ones keep it."""
    plan = ctx.run(
        "archive_plan", lambda: ctx.billing_for(admin).update_plan(plan_id, active=False)
    )
    return ok(plan, "plan archived")


@router.get("/prices", response_model=Envelope, summary="List prices")
def list_prices(
    admin: AdminUser,
    ctx: Ctx,
    page: PageParams,
    fields: Fields,
    plan_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Return every price, optionally of one plan."""
    return ok(paged(in_memory(ctx.billing.list_prices(plan_id=plan_id)), page, fields))


@router.post("/prices", status_code=201, response_model=Envelope, summary="Create a price")
def create_price(
    body: PriceBody, admin: AdminUser, ctx: Ctx, idempotency_key: IdempotencyKey = None
) -> Response:
    """Create a price (amounts in minor units); prices never change afterwards: archive and replace."""
    currency = body.currency.upper()
    tiers = [
        Tier(
            t.up_to,
            Money(t.unit_amount, currency),
            None if t.flat_amount is None else Money(t.flat_amount, currency),
        )
        for t in body.tiers
    ]
    price = ctx.run(
        "create_price",
        lambda: ctx.billing_for(admin).create_price(
            plan_id=body.plan_id,
            unit_amount=None if body.unit_amount is None else Money(body.unit_amount, currency),
            cycle=BillingCycle(Interval(body.interval), body.interval_count),
            currency=currency,
            scheme=body.scheme,
            tiers=tiers,
            usage_type=body.usage_type,
            trial_days=body.trial_days,
            nickname=body.nickname,
            idempotency_key=scoped_key(admin, idempotency_key),
        ),
    )
    return ok(price, "price created", status_code=201)


@router.get("/prices/{price_id}", response_model=Envelope, summary="Get a price")
def get_price(price_id: AnId, admin: AdminUser, ctx: Ctx, fields: Fields) -> Response:
    """Return a price."""
    return ok(select_fields(to_jsonable(ctx.billing.get_price(price_id)), fields))


@router.delete("/prices/{price_id}", response_model=Envelope, summary="Archive a price")
def archive_price(price_id: AnId, admin: AdminUser, ctx: Ctx) -> Response:
    """Stop offering a price; existing subscriptions keep it."""
    price = ctx.run("archive_price", lambda: ctx.billing_for(admin).archive_price(price_id))
    return ok(price, "price archived")


# -- users -----------------------------------------------------------------------------


@router.get("/users", response_model=Envelope, summary="List users")
def list_users(admin: AdminUser, ctx: Ctx, page: PageParams, fields: Fields) -> Response:
    """Return every customer, by id."""
    return ok(
        paged(
            lambda limit, after: ctx.billing.list_customers(limit=limit, after=after), page, fields
        )
    )


@router.get("/users/{user_id}", response_model=Envelope, summary="Get a user")
def get_user(user_id: AnId, admin: AdminUser, ctx: Ctx, fields: Fields) -> Response:
    """Return a customer."""
    return ok(select_fields(to_jsonable(ctx.billing.get_customer(user_id)), fields))


@router.patch("/users/{user_id}", response_model=Envelope, summary="Update a user's role or name")
def update_user(user_id: AnId, body: RolePatch, admin: AdminUser, ctx: Ctx) -> Response:
    """Promote, demote or rename a customer (a new role applies at the user's next refresh)."""
    if user_id == admin.id and body.role == "user":
        # Refuse the one change that could leave nobody able to administer.
        raise ApiError(409, "CONFLICT", "an administrator cannot demote themselves")
    customer = ctx.run(
        "update_customer",
        lambda: ctx.billing_for(admin).update_customer(user_id, role=body.role, name=body.name),
    )
    return ok(customer, "user updated")


# -- subscriptions, invoices, payments -------------------------------------------------


@router.get("/subscriptions", response_model=Envelope, summary="List every subscription")
def list_subscriptions(
    admin: AdminUser,
    ctx: Ctx,
    page: PageParams,
    fields: Fields,
    customer_id: Annotated[str | None, Query(max_length=64)] = None,
    status: SubscriptionStatusName | None = None,
) -> Response:
    """Return subscriptions by id, optionally of one customer or status."""
    return ok(
        paged(
            lambda limit, after: ctx.billing.list_subscriptions(
                customer_id=customer_id, status=status, limit=limit, after=after
            ),
            page,
            fields,
        )
    )


@router.get(
    "/subscriptions/{subscription_id}", response_model=Envelope, summary="Get any subscription"
)
def get_subscription(subscription_id: AnId, admin: AdminUser, ctx: Ctx, fields: Fields) -> Response:
    """Return any subscription."""
    return ok(select_fields(to_jsonable(ctx.billing.get_subscription(subscription_id)), fields))


@router.post(
    "/subscriptions/{subscription_id}/cancel",
    response_model=Envelope,
    summary="Cancel any subscription now",
)
def cancel_subscription(
    subscription_id: AnId, admin: AdminUser, ctx: Ctx, idempotency_key: IdempotencyKey = None
) -> Response:
    """Cancel a subscription immediately."""
    sub = ctx.run(
        "cancel",
        lambda: ctx.billing_for(admin).cancel(
            subscription_id, idempotency_key=scoped_key(admin, idempotency_key)
        ),
    )
    return ok(sub, "subscription canceled")


@router.get("/invoices", response_model=Envelope, summary="List invoices")
def list_invoices(
    admin: AdminUser,
    ctx: Ctx,
    page: PageParams,
    fields: Fields,
    customer_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Return invoices, oldest first, optionally of one customer."""
    return ok(
        paged(
            lambda limit, after: ctx.billing.list_invoices(
                customer_id=customer_id, limit=limit, after=after
            ),
            page,
            fields,
        )
    )


@router.get("/payments", response_model=Envelope, summary="List payments")
def list_payments(
    admin: AdminUser,
    ctx: Ctx,
    page: PageParams,
    fields: Fields,
    customer_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Return payments, oldest first, optionally of one customer."""
    return ok(
        paged(
            lambda limit, after: ctx.billing.list_payments(
                customer_id=customer_id, limit=limit, after=after
            ),
            page,
            fields,
        )
    )


# -- refunds and credit notes ----------------------------------------------------------


@router.post("/refunds", status_code=201, response_model=Envelope, summary="Refund a payment")
def refund(
    body: RefundBody, admin: AdminUser, ctx: Ctx, idempotency_key: IdempotencyKey = None
) -> Response:
    """Refund all or part of a successful payment through the gateway."""
    amount = (
        None if body.amount is None else Money(body.amount.amount, body.amount.currency.upper())
    )
    result = ctx.run(
        "refund",
        lambda: ctx.billing_for(admin).refund(
            body.payment_id,
            amount=amount,
            reason=body.reason,
            idempotency_key=scoped_key(admin, idempotency_key),
        ),
    )
    return ok(result, "refunded", status_code=201)


@router.get("/refunds", response_model=Envelope, summary="List refunds")
def list_refunds(
    admin: AdminUser,
    ctx: Ctx,
    page: PageParams,
    fields: Fields,
    invoice_id: Annotated[str | None, Query(max_length=64)] = None,
    payment_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Return refunds, oldest first."""
    return ok(
        paged(
            lambda limit, after: ctx.billing.list_refunds(
                invoice_id=invoice_id, payment_id=payment_id, limit=limit, after=after
            ),
            page,
            fields,
        )
    )


@router.post(
    "/credit-notes", status_code=201, response_model=Envelope, summary="Issue a credit note"
)
def issue_credit_note(
    body: CreditNoteBody, admin: AdminUser, ctx: Ctx, idempotency_key: IdempotencyKey = None
) -> Response:
    """Reduce an invoice: lower what is due, refund, or credit the customer's balance."""
    note = ctx.run(
        "issue_credit_note",
        lambda: ctx.billing_for(admin).issue_credit_note(
            body.invoice_id,
            amount=Money(body.amount.amount, body.amount.currency.upper()),
            reason=body.reason,
            outcome=body.outcome,
            idempotency_key=scoped_key(admin, idempotency_key),
        ),
    )
    return ok(note, "credit note issued", status_code=201)


@router.get("/credit-notes", response_model=Envelope, summary="List credit notes")
def list_credit_notes(
    admin: AdminUser,
    ctx: Ctx,
    page: PageParams,
    fields: Fields,
    customer_id: Annotated[str | None, Query(max_length=64)] = None,
    invoice_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Return credit notes, oldest first."""
    return ok(
        paged(
            lambda limit, after: ctx.billing.list_credit_notes(
                customer_id=customer_id, invoice_id=invoice_id, limit=limit, after=after
            ),
            page,
            fields,
        )
    )


# -- operations and analytics ----------------------------------------------------------


@router.post("/run-due", response_model=Envelope, summary="Run due billing work now")
def run_due(
    admin: AdminUser,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    """Renewals, trial ends, scheduled changes, retries and reminders due now."""
    summary = ctx.run("run_due", lambda: ctx.billing_for(admin).run_due(limit=limit))
    return ok(summary, "billing run done")


@router.get("/analytics", response_model=Envelope, summary="System analytics")
def analytics(
    admin: AdminUser,
    ctx: Ctx,
    start: Annotated[datetime | None, Query(description="default: 30 days before end")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
    currency: Annotated[str, Query(pattern=r"^[A-Za-z]{3}$")] = "USD",
    marketing_spend: Annotated[
        int | None, Query(ge=0, le=10**12, description="minor units, for CAC")
    ] = None,
) -> Response:
    """MRR, ARR, movements, churn, NRR, ARPA, LTV, CAC, trial and plan conversion for a range."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"{name} needs a timezone (e.g. 2026-01-01T00:00:00Z)",
                details={"fields": [{"field": name, "reason": "no timezone"}]},
            )
    end = end or ctx.billing.clock.now()
    start = start or end - timedelta(days=30)
    if start >= end:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            "start must be before end",
            details={"fields": [{"field": "start", "reason": "not before end"}]},
        )
    code = currency.upper()
    report = ctx.billing.metrics(
        start=start,
        end=end,
        currency=code,
        marketing_spend=None if marketing_spend is None else Money(marketing_spend, code),
    )
    return ok(report)
