"""Public: the active plans and their prices (a signed-in user also sees which one they are on)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from asgi_app.auth import MaybeUser, Principal
from asgi_app.catalog import Catalog
from asgi_app.context import AppContext, Ctx
from asgi_app.envelope import Envelope, ok, ok_rendered
from asgi_app.schemas import Fields, PageParams, select_fields
from lumenquest_adapters.memory import MemoryCache
from lumenquest_core.catalog import Plan
from lumenquest_core.codec import to_jsonable
from lumenquest_core.errors import NotFound

__all__ = ["router"]

router = APIRouter(prefix="/v1/plans", tags=["public"])

_LIVE = ("trialing", "active", "past_due", "paused", "incomplete", "unpaid")


def _current_plan_ids(ctx: AppContext, principal: Principal | None) -> set[str]:
    if principal is None:
        return set()
    subs = ctx.billing.list_subscriptions(customer_id=principal.id, limit=1000)
    return {s.price.plan_id for s in subs if s.status.value in _LIVE}


def _plan_view(ctx: AppContext, plan: Plan, current: set[str]) -> dict[str, Any]:
    view: dict[str, Any] = to_jsonable(plan)
    view["prices"] = to_jsonable(ctx.billing.list_prices(plan_id=plan.id, active_only=True))
    view["current"] = plan.id in current
    return view


@router.get("", response_model=Envelope, summary="List the active plans")
async def list_plans(ctx: Ctx, user: MaybeUser, page: PageParams, fields: Fields) -> Response:
    """Return the active plans with their active prices."""
    # The catalog is read through the cache on every request. An in-process cache answers
    # without I/O, so that read stays on the event loop (a miss, once per cache TTL, reads
    # the database here); any other cache (Redis) is I/O and goes to the thread pool, as
    # does the signed-in caller's own subscriptions.
    catalog: Catalog
    if isinstance(ctx.billing.cache, MemoryCache):
        catalog = ctx.catalog.read(ctx.billing)
    else:
        catalog = await run_in_threadpool(ctx.catalog.read, ctx.billing)
    current = await run_in_threadpool(_current_plan_ids, ctx, user) if user else set()
    return ok_rendered(catalog.page(page, fields, current))


@router.get("/{plan_id}", response_model=Envelope, summary="Get an active plan")
def get_plan(
    plan_id: Annotated[str, Path(max_length=64)], ctx: Ctx, user: MaybeUser, fields: Fields
) -> Response:
    """Return one active plan with its active prices."""
    plan = ctx.billing.get_plan(plan_id)
    if not plan.active:
        raise NotFound(f"plan {plan_id} not found", details={"plan_id": plan_id})
    return ok(select_fields(_plan_view(ctx, plan, _current_plan_ids(ctx, user)), fields))
