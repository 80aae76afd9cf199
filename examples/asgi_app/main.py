"""``create_app``: the Lumen Quest backend over HTTP, each route a few lines over ``Billing``.

Configuration is the library's ``LUMENQUEST_*`` variables (database, Redis, Stripe,
SendGrid) plus the app's own (:class:`asgi_app.config.AppSettings`: JWT secret, CORS,
rate limits, the owner URL for row-level security). Unset, it runs on an SQLite file
with in-memory rate limits, the fake gateway and console email.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from anyio import to_thread
from fastapi import FastAPI

from asgi_app.auth import Passwords, TokenIssuer
from asgi_app.config import AppSettings, load_app_settings
from asgi_app.context import AppContext
from asgi_app.database import Database
from asgi_app.envelope import ErrorEnvelope, install_error_handlers
from asgi_app.events import OutboxDispatcher
from asgi_app.logs import get_logger
from asgi_app.middleware import (
    CompressWhenAccepted,
    CorsForOrigins,
    Metrics,
    RateLimits,
    RequestMiddleware,
)
from asgi_app.routes import admin, auth, operations, public, users
from lumenquest_adapters.config import Settings, build_backend, load_settings
from lumenquest_core.ports import Clock

__all__ = ["create_app"]

API_VERSION = "1.0.0"

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": text}
    for status, text in (
        (400, "malformed request (VALIDATION_ERROR, INVALID_CURSOR…)"),
        (401, "not signed in, or the token is invalid or expired"),
        (403, "signed in without the needed role"),
        (404, "no such resource (or not yours)"),
        (409, "business rule, invalid state transition or idempotency conflict"),
        (422, "well-formed but rejected by the billing rules"),
        (429, "rate limited: see Retry-After"),
        (500, "a fault on our side; quote error.details.request_id"),
        (503, "a payment or email service is unavailable; retry"),
    )
}


# The documentation's sections, in this order (else in the order of the first route of
# each, and the paid subscribe, a user route, is the app's first).
_TAGS = [
    {"name": "public", "description": "The catalog: active plans and their prices."},
    {"name": "user", "description": "The signed-in customer's own data and subscriptions."},
    {"name": "auth", "description": "Register, sign in, refresh and sign out."},
    {
        "name": "admin",
        "description": "Plans and prices, users, every subscription, refunds, due work, analytics.",
    },
    {"name": "webhooks", "description": "Stripe and SendGrid events, verified."},
    {"name": "health", "description": "Liveness, the services' status, and Prometheus metrics."},
]


def create_app(
    settings: Settings | None = None,
    *,
    app_settings: AppSettings | None = None,
    **ports: Any,
) -> FastAPI:
    """Build the app; ``ports`` (clock, gateway, email, cache, rate_limiter…) override the wiring."""
    settings = settings or load_settings()
    app_settings = app_settings or load_app_settings()
    database = Database(
        settings.database_url.get_secret_value(),
        owner_url=(
            app_settings.owner_database_url.get_secret_value()
            if app_settings.owner_database_url
            else None
        ),
        migrate=settings.migrate,
        pool_size=app_settings.pool_size(),
        pre_ping=app_settings.database_pre_ping,
    )
    # Events are delivered by the app's dispatcher after the response (asgi_app.events),
    # not inside each billing call.
    options: dict[str, Any] = {"dispatch_immediately": False, **ports}
    backend = build_backend(settings, unit_of_work=database.unit_of_work_factory(), **options)
    clock: Clock = backend.billing.clock
    logger = get_logger(app_settings.log_level)
    dispatcher = OutboxDispatcher(backend.billing, logger, background=database.postgresql)
    metrics = Metrics()
    tokens = TokenIssuer(
        app_settings.signing_key(), timedelta(seconds=app_settings.access_token_seconds)
    )
    context = AppContext(
        backend=backend,
        database=database,
        app_settings=app_settings,
        passwords=Passwords(
            time_cost=app_settings.argon2_time_cost, memory_kib=app_settings.argon2_memory_kib
        ),
        tokens=tokens,
        metrics=metrics,
        logger=logger,
        dispatcher=dispatcher,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        to_thread.current_default_thread_limiter().total_tokens = app_settings.worker_threads
        await dispatcher.start()
        # What start-up made (modules, routes, schemas, the seeded catalog) lives as long
        # as the process: leave it out of the collector's full passes, which otherwise
        # walk it all and pause every request in flight.
        gc.collect()
        gc.freeze()
        yield
        await dispatcher.close()
        database.dispose()

    app = FastAPI(
        title="Lumen Quest API",
        version=API_VERSION,
        description=(
            "Subscription billing over HTTP: every response is the envelope "
            "`{success, data, message, timestamp}` or `{success: false, error: "
            "{code, message, details}, timestamp}`."
        ),
        responses=_ERRORS,
        lifespan=lifespan,
        openapi_tags=_TAGS,
    )
    app.state.context = context
    install_error_handlers(app)
    # The paid subscribe, the hottest write, is the app's own route: matched before the
    # routers, once, by its path. A request is matched against the routers in this order,
    # each route tried in turn, twice (FastAPI asks each router whether it matches, then
    # the one that does): the hottest first. The catalog's two routes, then the signed-in
    # customer's, then sign-in, whose argon2 hash dwarfs its match. No path is in two
    # routers, so the order changes nothing but the cost.
    users.add_hot_routes(app)
    for router in (
        public.router,
        users.router,
        auth.router,
        admin.router,
        operations.webhooks,
        operations.probes,
    ):
        app.include_router(router)

    # Added innermost first: the request middleware sees the app's response, GZip
    # compresses it (envelopes for 429/500 too), CORS answers preflights outermost.
    app.add_middleware(
        RequestMiddleware,
        tokens=tokens,
        clock=clock,
        limiter=backend.rate_limiter,
        limits=RateLimits(
            enabled=app_settings.rate_limit_enabled,
            auth=app_settings.rate_limit_auth,
            api=app_settings.rate_limit_api,
            admin=app_settings.rate_limit_admin,
            window_seconds=app_settings.rate_limit_window_seconds,
        ),
        metrics=metrics,
        logger=logger,
        hsts=app_settings.behind_tls,
        after_write=dispatcher.after_write,
    )
    app.add_middleware(CompressWhenAccepted, minimum_size=1000)
    origins = app_settings.allowed_origins()
    if origins:
        app.add_middleware(
            CorsForOrigins,
            allow_origins=origins,
            allow_credentials="*" not in origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
            expose_headers=[
                "X-Request-Id",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "Retry-After",
            ],
            max_age=600,
        )
    return app
