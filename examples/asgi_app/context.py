"""What routes reach through ``Depends``: the backend, the auth pieces, metrics and logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import attrs
from fastapi import Depends, Request

from asgi_app.auth import Passwords, Principal, TokenIssuer
from asgi_app.catalog import CatalogViews
from asgi_app.config import AppSettings
from asgi_app.database import Database
from asgi_app.events import OutboxDispatcher
from asgi_app.middleware import Metrics
from lumenquest_adapters.config import Backend
from lumenquest_core.errors import LumenquestError
from lumenquest_core.service import Billing

__all__ = ["AppContext", "Ctx", "get_context"]

_T = TypeVar("_T")


@attrs.define
class AppContext:
    """Everything the routes share; one per app."""

    backend: Backend
    database: Database
    app_settings: AppSettings
    passwords: Passwords
    tokens: TokenIssuer
    metrics: Metrics
    logger: Any
    dispatcher: OutboxDispatcher
    catalog: CatalogViews = attrs.field(factory=CatalogViews)
    _operation_counters: dict[tuple[str, str], Any] = attrs.field(factory=dict, init=False)

    @property
    def billing(self) -> Billing:
        """The billing facade, recording ``system`` in the audit log."""
        return self.backend.billing

    def billing_for(self, principal: Principal) -> Billing:
        """Return the billing that records ``principal`` as the actor in the audit log."""
        return self.backend.billing.as_actor(principal.actor)

    def run(self, operation: str, call: Callable[[], _T]) -> _T:
        """Run a billing operation, counting its outcome for /metrics."""
        try:
            result = call()
        except LumenquestError as exc:
            self._count(operation, exc.code)
            raise
        self._count(operation, "ok")
        return result

    def _count(self, operation: str, outcome: str) -> None:
        # Prometheus children by label values: ``labels()`` hashes and locks on every call.
        # Operations and error codes are names from our code, so the set stays small.
        key = (operation, outcome)
        counter = self._operation_counters.get(key)
        if counter is None:
            counter = self._operation_counters[key] = self.metrics.operations.labels(*key)
        counter.inc()


async def get_context(request: Request) -> AppContext:
    """Return the app's context."""
    context: AppContext = request.app.state.context
    return context


Ctx = Annotated[AppContext, Depends(get_context)]
