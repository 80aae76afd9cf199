"""Request bodies and shared query parameters: pydantic at the HTTP boundary only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import attrs
from fastapi import Depends, Header, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from asgi_app.envelope import ApiError
from lumenquest_core.codec import to_jsonable
from lumenquest_core.customers import normalize_email
from lumenquest_core.errors import NotFound

__all__ = [
    "ChangeBody",
    "CancelBody",
    "CreditNoteBody",
    "Fields",
    "IdempotencyKey",
    "LoginBody",
    "MoneyBody",
    "Page",
    "PageParams",
    "PauseBody",
    "PlanBody",
    "PlanPatch",
    "PriceBody",
    "ProfilePatch",
    "RefreshBody",
    "RefundBody",
    "RegisterBody",
    "RolePatch",
    "SubscribeBody",
    "UsageBody",
    "paged",
    "select_fields",
    "in_memory",
]

_T = TypeVar("_T")


# The small dependencies below are ``async def`` on purpose: FastAPI runs a plain ``def``
# dependency in the thread pool, a hop that costs more than the work itself.


class _Body(BaseModel):
    # Unknown fields are a client bug worth a 400, not something to ignore silently.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _email(value: str) -> str:
    return normalize_email(value)


Email = Annotated[str, Field(min_length=3, max_length=254), AfterValidator(_email)]
Password = Annotated[str, Field(min_length=8, max_length=256)]
Currency = Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")]
Id = Annotated[str, Field(min_length=1, max_length=64)]


class RegisterBody(_Body):
    """A new account."""

    email: Email
    password: Password
    name: str = Field(default="", max_length=200)


class LoginBody(_Body):
    """Sign-in credentials; ``cookie`` also sets HttpOnly cookies for web clients."""

    email: Email
    password: str = Field(min_length=1, max_length=256)
    cookie: bool = False


class RefreshBody(_Body):
    """A refresh token (or none, to use the ``lq_refresh`` cookie)."""

    refresh_token: str | None = Field(default=None, min_length=1, max_length=200)
    cookie: bool = False


class ProfilePatch(_Body):
    """Changes to one's own profile."""

    name: str | None = Field(default=None, max_length=200)
    email: Email | None = None


class RolePatch(_Body):
    """An administrator's change to a user."""

    role: Literal["user", "admin"] | None = None
    name: str | None = Field(default=None, max_length=200)


class SubscribeBody(_Body):
    """Subscribe the signed-in customer to a price."""

    price_id: Id
    quantity: int = Field(default=1, ge=1, le=100_000)
    trial_days: int | None = Field(default=None, ge=0, le=730)
    coupon_id: Id | None = None


class ChangeBody(_Body):
    """A change of price and/or quantity (``timing`` None: upgrades now, downgrades at period end)."""

    price_id: Id | None = None
    quantity: int | None = Field(default=None, ge=1, le=100_000)
    timing: Literal["immediate", "period_end"] | None = None
    proration_behavior: Literal["create_prorations", "always_invoice", "none"] = "create_prorations"


class CancelBody(_Body):
    """How to cancel."""

    at_period_end: bool = True
    prorate: bool = False


class PauseBody(_Body):
    """When collection resumes by itself (None: until resumed)."""

    resumes_at: datetime | None = None


class UsageBody(_Body):
    """Metered usage to record."""

    quantity: int = Field(ge=0, le=1_000_000_000)
    at: datetime | None = None


class MoneyBody(_Body):
    """An amount in minor units (cents) and its ISO 4217 currency."""

    amount: int = Field(ge=0, le=10**12)
    currency: Currency


class PlanBody(_Body):
    """A new plan."""

    name: str = Field(min_length=1, max_length=200)
    features: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=100
    )
    description: str = Field(default="", max_length=2000)


class PlanPatch(_Body):
    """Changes to a plan; ``active: false`` archives it."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    features: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, max_length=100
    )
    description: str | None = Field(default=None, max_length=2000)
    active: bool | None = None


class TierBody(_Body):
    """One tier of a tiered price (``up_to`` None: the last, unbounded tier)."""

    up_to: int | None = Field(default=None, ge=1)
    unit_amount: int = Field(ge=0, le=10**12)
    flat_amount: int | None = Field(default=None, ge=0, le=10**12)


class PriceBody(_Body):
    """A new price for a plan."""

    plan_id: Id
    currency: Currency
    unit_amount: int | None = Field(default=None, ge=0, le=10**12)
    interval: Literal["day", "week", "month", "year"] = "month"
    interval_count: int = Field(default=1, ge=1, le=36)
    scheme: Literal["flat", "per_unit", "tiered_graduated", "tiered_volume"] = "per_unit"
    tiers: list[TierBody] = Field(default_factory=list, max_length=20)
    usage_type: Literal["licensed", "metered"] = "licensed"
    trial_days: int = Field(default=0, ge=0, le=730)
    nickname: str = Field(default="", max_length=200)


class RefundBody(_Body):
    """A refund of a payment (no amount: all that is left)."""

    payment_id: Id
    amount: MoneyBody | None = None
    reason: str = Field(default="requested_by_customer", max_length=200)


class CreditNoteBody(_Body):
    """A credit note against an invoice."""

    invoice_id: Id
    amount: MoneyBody
    reason: str = Field(default="", max_length=200)
    outcome: Literal["reduce_amount_due", "refund", "credit_balance"] | None = None


@attrs.frozen
class Page:
    """A page request: at most ``limit`` items after the opaque ``cursor``."""

    limit: int
    cursor: str | None


async def _page(
    limit: Annotated[int, Query(ge=1, le=100, description="items per page")] = 20,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="next_cursor from the previous page"),
    ] = None,
) -> Page:
    return Page(limit, cursor)


PageParams = Annotated[Page, Depends(_page)]


async def _fields(
    fields: Annotated[
        str | None,
        Query(
            max_length=500,
            pattern=r"^[A-Za-z0-9_,]+$",
            description="sparse fieldset: comma-separated top-level fields to return",
        ),
    ] = None,
) -> frozenset[str] | None:
    return None if fields is None else frozenset(f for f in fields.split(",") if f)


Fields = Annotated[frozenset[str] | None, Depends(_fields)]


# A header parameter of the route itself (``= None`` where used), not a dependency that
# returns it: FastAPI solves each dependency level at a cost, on every request that has it.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="repeat a POST safely: the same key and body give the first result",
    ),
]


def select_fields(item: Any, fields: frozenset[str] | None) -> Any:
    """Keep only ``fields`` of a JSON-ready object (always with its ``id``)."""
    if fields is None or not isinstance(item, dict):
        return item
    return {k: v for k, v in item.items() if k in fields or k == "id"}


def paged(
    fetch: Callable[[int, str | None], Sequence[_T]],
    page: Page,
    fields: frozenset[str] | None,
    *,
    view: Callable[[_T], Any] = to_jsonable,
) -> dict[str, Any]:
    """Fetch one more than asked to know whether a next page exists; shape ``{items, next_cursor}``.

    The cursor is the last item's ``id``; a cursor the store cannot place is a 400.
    """
    try:
        items = list(fetch(page.limit + 1, page.cursor))
    except NotFound:
        raise ApiError(
            400,
            "INVALID_CURSOR",
            "cursor is not a next_cursor from this list",
            details={"fields": [{"field": "cursor", "reason": "unknown"}]},
        ) from None
    more = len(items) > page.limit
    items = items[: page.limit]
    return {
        "items": [select_fields(view(item), fields) for item in items],
        "next_cursor": str(items[-1].id) if more and items else None,  # type: ignore[attr-defined]
    }


def in_memory(items: Sequence[_T]) -> Callable[[int, str | None], list[_T]]:
    """Return a page fetcher over a list the store does not page itself (ordered as given)."""

    def fetch(limit: int, cursor: str | None) -> list[_T]:
        start = 0
        if cursor is not None:
            ids = [str(item.id) for item in items]  # type: ignore[attr-defined]
            if cursor not in ids:
                raise NotFound("cursor")
            start = ids.index(cursor) + 1
        return list(items[start : start + limit])

    return fetch
