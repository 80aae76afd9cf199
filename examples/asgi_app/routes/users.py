"""The signed-in customer's own data: profile, subscriptions, invoices, payments, usage, GDPR.

Every route reads the subscription (or invoice) first and answers 404 unless it is the
caller's own, so another customer's ids reveal nothing; on PostgreSQL row-level security
makes the same refusal in the database.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Path, Query
from starlette.responses import Response

from asgi_app.auth import CurrentUser, Principal
from asgi_app.context import AppContext, Ctx
from asgi_app.envelope import ApiError, Envelope, ok
from asgi_app.schemas import (
    CancelBody,
    ChangeBody,
    Fields,
    IdempotencyKey,
    PageParams,
    PauseBody,
    ProfilePatch,
    SubscribeBody,
    UsageBody,
    paged,
    select_fields,
)
from lumenquest_core.codec import to_jsonable
from lumenquest_core.errors import NotFound
from lumenquest_core.invoicing import Invoice
from lumenquest_core.subscriptions import Subscription

__all__ = ["add_hot_routes", "router"]

router = APIRouter(tags=["user"])

SubscriptionId = Annotated[str, Path(max_length=64)]
InvoiceId = Annotated[str, Path(max_length=64)]


def scoped_key(user: Principal, key: str | None) -> str | None:
    """Namespace a client's Idempotency-Key by its user, so that users never share keys."""
    return None if key is None else f"{user.id}:{key}"


def own_subscription(ctx: AppContext, user: Principal, subscription_id: str) -> Subscription:
    """Return the caller's subscription, or raise NotFound (also for another's)."""
    try:
        sub = ctx.billing.get_subscription(subscription_id)
    except NotFound:
        sub = None
    if sub is None or sub.customer_id != user.id:
        raise NotFound(
            f"subscription {subscription_id} not found",
            details={"subscription_id": subscription_id},
        )
    return sub


def _own_invoice(ctx: AppContext, user: Principal, invoice_id: str) -> Invoice:
    try:
        invoice = ctx.billing.get_invoice(invoice_id)
    except NotFound:
        invoice = None
    if invoice is None or invoice.customer_id != user.id:
        raise NotFound(f"invoice {invoice_id} not found", details={"invoice_id": invoice_id})
    return invoice


# -- subscribing -------------------------------------------------------------------------
# The paid subscribe is the API's hottest write: it is the app's own route (see
# add_hot_routes), matched before every router.


def subscribe(
    body: SubscribeBody, user: CurrentUser, ctx: Ctx, idempotency_key: IdempotencyKey = None
) -> Response:
    """Subscribe to a price; without a trial the first period is charged now."""
    sub = ctx.run(
        "subscribe",
        lambda: ctx.billing_for(user).subscribe(
            customer_id=user.id,
            price_id=body.price_id,
            quantity=body.quantity,
            trial_days=body.trial_days,
            coupon_id=body.coupon_id,
            idempotency_key=scoped_key(user, idempotency_key),
        ),
    )
    return ok(sub, "subscribed", status_code=201)


def add_hot_routes(app: FastAPI) -> None:
    """Add the paid subscribe to the app itself, ahead of every included router.

    FastAPI matches an included router's routes through a wrapper that it asks three
    times a request (whether it matches, then again to handle it), with bookkeeping
    each time; a route of the app's own is matched once, by its path. The route is the
    same (tags, OpenAPI, dependencies): only where it is looked up changes.
    """
    app.router.add_api_route(
        "/v1/subscriptions",
        subscribe,
        methods=["POST"],
        status_code=201,
        response_model=Envelope,
        summary="Subscribe",
        tags=["user"],
    )


# -- profile and GDPR ------------------------------------------------------------------


@router.get("/v1/users/me", response_model=Envelope, summary="Get my profile")
def get_me(user: CurrentUser, ctx: Ctx, fields: Fields) -> Response:
    """Return the signed-in customer's profile."""
    return ok(select_fields(to_jsonable(ctx.billing.get_customer(user.id)), fields))


@router.patch("/v1/users/me", response_model=Envelope, summary="Update my profile")
def update_me(body: ProfilePatch, user: CurrentUser, ctx: Ctx) -> Response:
    """Change the signed-in customer's name or email (the sign-in email follows)."""
    customer = ctx.run(
        "update_customer",
        lambda: ctx.billing_for(user).update_customer(user.id, email=body.email, name=body.name),
    )
    if body.email is not None:
        try:
            ctx.database.auth.update_credential(user.id, email=customer.email)
        except sa.exc.IntegrityError:
            raise ApiError(
                409, "CONFLICT", "an account with this email exists", details={"field": "email"}
            ) from None
    return ok(customer, "profile updated")


@router.get("/v1/users/me/export", response_model=Envelope, summary="Export my data (GDPR)")
def export_me(user: CurrentUser, ctx: Ctx) -> Response:
    """Return everything held about the signed-in customer, as a JSON download."""
    data = ctx.billing.export_customer(user.id)
    return ok(
        data,
        "your data",
        headers={"Content-Disposition": f'attachment; filename="lumenquest-export-{user.id}.json"'},
    )


@router.delete("/v1/users/me", response_model=Envelope, summary="Delete my account (GDPR)")
def delete_me(user: CurrentUser, ctx: Ctx) -> Response:
    """Cancel every subscription, erase personal data and sign out everywhere; invoices stay, anonymised."""
    ctx.run("erase_customer", lambda: ctx.billing_for(user).erase_customer(user.id))
    ctx.database.auth.delete_user(user.id, ctx.billing.clock.now())
    return ok({"id": user.id, "erased": True}, "account deleted")


# -- subscriptions ---------------------------------------------------------------------


@router.get("/v1/subscriptions", response_model=Envelope, summary="List my subscriptions")
def list_subscriptions(user: CurrentUser, ctx: Ctx, page: PageParams, fields: Fields) -> Response:
    """Return the signed-in customer's subscriptions, by id."""
    return ok(
        paged(
            lambda limit, after: ctx.billing.list_subscriptions(
                customer_id=user.id, limit=limit, after=after
            ),
            page,
            fields,
        )
    )


@router.get(
    "/v1/subscriptions/{subscription_id}", response_model=Envelope, summary="Get my subscription"
)
def get_subscription(
    subscription_id: SubscriptionId, user: CurrentUser, ctx: Ctx, fields: Fields
) -> Response:
    """Return one of the signed-in customer's subscriptions."""
    return ok(select_fields(to_jsonable(own_subscription(ctx, user, subscription_id)), fields))


@router.post(
    "/v1/subscriptions/{subscription_id}/preview",
    response_model=Envelope,
    summary="Preview a change",
)
def preview_change(
    subscription_id: SubscriptionId, body: ChangeBody, user: CurrentUser, ctx: Ctx
) -> Response:
    """Return the upcoming invoice a change would produce; nothing is written."""
    own_subscription(ctx, user, subscription_id)
    invoice = ctx.billing.preview_change(
        subscription_id,
        price_id=body.price_id,
        quantity=body.quantity,
        timing=body.timing,
        proration_behavior=body.proration_behavior,
    )
    return ok(invoice, "preview: nothing was changed")


@router.post(
    "/v1/subscriptions/{subscription_id}/change",
    response_model=Envelope,
    summary="Change price or quantity",
)
def change_subscription(
    subscription_id: SubscriptionId,
    body: ChangeBody,
    user: CurrentUser,
    ctx: Ctx,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Upgrade, downgrade or change the quantity (upgrades now, downgrades at period end by default)."""
    own_subscription(ctx, user, subscription_id)
    sub = ctx.run(
        "change_subscription",
        lambda: ctx.billing_for(user).change_subscription(
            subscription_id,
            price_id=body.price_id,
            quantity=body.quantity,
            timing=body.timing,
            proration_behavior=body.proration_behavior,
            idempotency_key=scoped_key(user, idempotency_key),
        ),
    )
    return ok(sub, "subscription changed")


@router.post(
    "/v1/subscriptions/{subscription_id}/cancel", response_model=Envelope, summary="Cancel"
)
def cancel(
    subscription_id: SubscriptionId,
    user: CurrentUser,
    ctx: Ctx,
    idempotency_key: IdempotencyKey = None,
    body: CancelBody | None = None,
) -> Response:
    """Cancel at period end (the default) or now, optionally crediting the unused time."""
    own_subscription(ctx, user, subscription_id)
    options = body or CancelBody()
    sub = ctx.run(
        "cancel",
        lambda: ctx.billing_for(user).cancel(
            subscription_id,
            at_period_end=options.at_period_end,
            prorate=options.prorate,
            idempotency_key=scoped_key(user, idempotency_key),
        ),
    )
    return ok(sub, "subscription canceled")


@router.post(
    "/v1/subscriptions/{subscription_id}/reactivate",
    response_model=Envelope,
    summary="Undo a scheduled cancellation",
)
def reactivate(
    subscription_id: SubscriptionId,
    user: CurrentUser,
    ctx: Ctx,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Undo a cancellation scheduled for the period end."""
    own_subscription(ctx, user, subscription_id)
    sub = ctx.run(
        "reactivate",
        lambda: ctx.billing_for(user).reactivate(
            subscription_id, idempotency_key=scoped_key(user, idempotency_key)
        ),
    )
    return ok(sub, "subscription reactivated")


@router.post("/v1/subscriptions/{subscription_id}/pause", response_model=Envelope, summary="Pause")
def pause(
    subscription_id: SubscriptionId,
    user: CurrentUser,
    ctx: Ctx,
    idempotency_key: IdempotencyKey = None,
    body: PauseBody | None = None,
) -> Response:
    """Pause collection until resumed (or until ``resumes_at``)."""
    own_subscription(ctx, user, subscription_id)
    resumes_at = body.resumes_at if body else None
    sub = ctx.run(
        "pause",
        lambda: ctx.billing_for(user).pause(
            subscription_id,
            resumes_at=resumes_at,
            idempotency_key=scoped_key(user, idempotency_key),
        ),
    )
    return ok(sub, "subscription paused")


@router.post(
    "/v1/subscriptions/{subscription_id}/resume", response_model=Envelope, summary="Resume"
)
def resume(
    subscription_id: SubscriptionId,
    user: CurrentUser,
    ctx: Ctx,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Resume a paused subscription."""
    own_subscription(ctx, user, subscription_id)
    sub = ctx.run(
        "resume",
        lambda: ctx.billing_for(user).resume(
            subscription_id, idempotency_key=scoped_key(user, idempotency_key)
        ),
    )
    return ok(sub, "subscription resumed")


@router.post(
    "/v1/subscriptions/{subscription_id}/usage",
    status_code=201,
    response_model=Envelope,
    summary="Record usage",
)
def record_usage(
    subscription_id: SubscriptionId,
    body: UsageBody,
    user: CurrentUser,
    ctx: Ctx,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Record usage of a metered subscription (billed in arrears at renewal)."""
    own_subscription(ctx, user, subscription_id)
    record = ctx.run(
        "record_usage",
        lambda: ctx.billing_for(user).record_usage(
            subscription_id,
            quantity=body.quantity,
            at=body.at,
            idempotency_key=scoped_key(user, idempotency_key),
        ),
    )
    return ok(record, "usage recorded", status_code=201)


@router.get(
    "/v1/subscriptions/{subscription_id}/usage",
    response_model=Envelope,
    summary="List usage records",
)
def list_usage(
    subscription_id: SubscriptionId, user: CurrentUser, ctx: Ctx, page: PageParams, fields: Fields
) -> Response:
    """Return a subscription's usage records, oldest first."""
    own_subscription(ctx, user, subscription_id)
    return ok(
        paged(
            lambda limit, after: ctx.billing.list_usage(subscription_id, limit=limit, after=after),
            page,
            fields,
        )
    )


@router.get("/v1/usage/analytics", response_model=Envelope, summary="My usage analytics")
def usage_analytics(
    user: CurrentUser,
    ctx: Ctx,
    start: Annotated[datetime | None, Query(description="default: 30 days before end")] = None,
    end: Annotated[datetime | None, Query(description="default: the end of today (UTC)")] = None,
) -> Response:
    """Return usage per subscription over ``[start, end)``: the total and a per-day series."""
    now = ctx.billing.clock.now()
    end_of_today = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    end = _aware(end, "end") or end_of_today
    start = _aware(start, "start") or end - timedelta(days=30)
    if start >= end:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            "start must be before end",
            details={"fields": [{"field": "start", "reason": "not before end"}]},
        )
    report: list[dict[str, Any]] = []
    for sub in ctx.billing.list_subscriptions(customer_id=user.id, limit=1000):
        if sub.price.usage_type.value != "metered":
            continue
        daily: dict[str, int] = defaultdict(int)
        for record in ctx.billing.list_usage(sub.id):
            if start <= record.at < end:
                daily[record.at.date().isoformat()] += record.quantity
        report.append(
            {
                "subscription_id": sub.id,
                "price_id": sub.price.id,
                "total": sum(daily.values()),
                "daily": [{"date": d, "quantity": q} for d, q in sorted(daily.items())],
            }
        )
    return ok({"start": start, "end": end, "subscriptions": report})


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"{field} needs a timezone (e.g. 2026-01-01T00:00:00Z)",
            details={"fields": [{"field": field, "reason": "no timezone"}]},
        )
    return value


# -- billing history -------------------------------------------------------------------


@router.get("/v1/invoices", response_model=Envelope, summary="List my invoices")
def list_invoices(user: CurrentUser, ctx: Ctx, page: PageParams, fields: Fields) -> Response:
    """Return the signed-in customer's invoices, oldest first."""
    return ok(
        paged(
            lambda limit, after: ctx.billing.list_invoices(
                customer_id=user.id, limit=limit, after=after
            ),
            page,
            fields,
        )
    )


@router.get("/v1/invoices/{invoice_id}", response_model=Envelope, summary="Get my invoice")
def get_invoice(invoice_id: InvoiceId, user: CurrentUser, ctx: Ctx, fields: Fields) -> Response:
    """Return one of the signed-in customer's invoices with its lines."""
    return ok(select_fields(to_jsonable(_own_invoice(ctx, user, invoice_id)), fields))


@router.get("/v1/payments", response_model=Envelope, summary="List my payments")
def list_payments(user: CurrentUser, ctx: Ctx, page: PageParams, fields: Fields) -> Response:
    """Return the signed-in customer's payments, oldest first."""
    return ok(
        paged(
            lambda limit, after: ctx.billing.list_payments(
                customer_id=user.id, limit=limit, after=after
            ),
            page,
            fields,
        )
    )
