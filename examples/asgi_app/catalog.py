"""The public catalog as the API shows it: active plans with their active prices.

Every request still reads the plans and prices through ``Billing`` (so through the
library's cache, and so it sees every change ``Billing`` invalidates); what is kept
here is only the rendering of one version of the catalog: the JSON-ready plan views,
and the rendered pages of it that anonymous visitors ask for. A catalog that reads back
different (a plan renamed, a price archived, in this process or another sharing the
cache) is rendered anew.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import attrs

from asgi_app.envelope import render
from asgi_app.schemas import Page, in_memory, paged
from lumenquest_core.catalog import Plan, Price
from lumenquest_core.codec import to_jsonable
from lumenquest_core.service import Billing

__all__ = ["Catalog", "CatalogViews"]

# Pages rendered per catalog version (limit × cursor × fields): bounded, since the
# cursor and the fields come from clients.
_MAX_RENDERED = 256


@attrs.frozen(eq=False)
class Catalog:
    """One version of the active catalog and its renderings."""

    plans: list[Plan]
    prices: list[Price]
    views: dict[str, dict[str, Any]]
    rendered: dict[tuple[int, str | None, frozenset[str] | None], bytes] = attrs.field(factory=dict)

    def page(self, page: Page, fields: frozenset[str] | None, current: set[str]) -> bytes:
        """Return one page of the plans, rendered; ``current`` marks the caller's plans."""
        if current:
            views = self.views
            return render(
                paged(
                    in_memory(self.plans),
                    page,
                    fields,
                    view=lambda plan: {**views[plan.id], "current": plan.id in current},
                )
            )
        key = (page.limit, page.cursor, fields)
        body = self.rendered.get(key)
        if body is None:
            body = render(paged(in_memory(self.plans), page, fields, view=self._view))
            if len(self.rendered) >= _MAX_RENDERED:
                self.rendered.clear()
            self.rendered[key] = body
        return body

    def _view(self, plan: Plan) -> dict[str, Any]:
        return self.views[plan.id]


class CatalogViews:
    """The latest :class:`Catalog`, re-rendered when the catalog reads back different."""

    def __init__(self) -> None:
        self._latest: Catalog | None = None

    def read(self, billing: Billing) -> Catalog:
        """Read the active plans and prices through ``billing`` (its cache); return their catalog."""
        plans = billing.list_plans(active_only=True)
        prices = billing.list_prices(active_only=True)
        latest = self._latest
        if latest is not None and latest.plans == plans and latest.prices == prices:
            return latest
        latest = self._latest = Catalog(plans, prices, _views(plans, prices))
        return latest


def _views(plans: list[Plan], prices: list[Price]) -> dict[str, dict[str, Any]]:
    by_plan: dict[str, list[Any]] = defaultdict(list)
    for price in prices:  # ordered by id, as list_prices(plan_id=…) orders them
        by_plan[price.plan_id].append(to_jsonable(price))
    views: dict[str, dict[str, Any]] = {}
    for plan in plans:
        view: dict[str, Any] = to_jsonable(plan)
        view["prices"] = by_plan.get(plan.id, [])
        view["current"] = False
        views[plan.id] = view
    return views
