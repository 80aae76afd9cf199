"""Gateway webhooks (Stripe, SendGrid) and the probes: /health, /status, /metrics."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from asgi_app.context import AppContext, Ctx
from asgi_app.database import SYSTEM, acting
from asgi_app.envelope import ApiError, Envelope, ErrorEnvelope, error_response, ok
from lumenquest_adapters.memory import FakeGateway
from lumenquest_core.errors import ValidationError

__all__ = ["probes", "webhooks"]

webhooks = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
probes = APIRouter(tags=["health"])


def _not_configured(name: str, variable: str) -> ApiError:
    return ApiError(
        404, "NOT_FOUND", f"{name} webhooks are not configured here", details={"setting": variable}
    )


def _rejected(source: str, ctx: AppContext, exc: ValidationError) -> ApiError:
    ctx.metrics.webhooks.labels(source, "rejected").inc()
    return ApiError(400, "INVALID_WEBHOOK", exc.message, details=exc.details)


@webhooks.post("/stripe", response_model=Envelope, summary="Stripe events")
async def stripe_webhook(request: Request, ctx: Ctx) -> Response:
    """Verify a Stripe event (Stripe-Signature) and apply it once."""
    secret = ctx.backend.settings.stripe_webhook_secret
    if secret is None:
        raise _not_configured("Stripe", "LUMENQUEST_STRIPE_WEBHOOK_SECRET")
    from lumenquest_adapters.stripe import parse_stripe_webhook  # noqa: PLC0415 - an extra

    payload = await request.body()
    try:
        event = parse_stripe_webhook(
            payload,
            request.headers.get("stripe-signature", ""),
            secret.get_secret_value(),
            now=ctx.billing.clock.now(),
        )
    except ValidationError as exc:
        raise _rejected("stripe", ctx, exc) from None
    if event is None:
        ctx.metrics.webhooks.labels("stripe", "ignored").inc()
        return ok({"handled": False}, "event type not used")
    with acting(SYSTEM):
        applied = await run_in_threadpool(ctx.billing.handle_gateway_event, event)
    ctx.metrics.webhooks.labels("stripe", "applied" if applied else "duplicate").inc()
    return ok({"handled": applied}, "applied" if applied else "already applied")


@webhooks.post("/sendgrid", response_model=Envelope, summary="SendGrid delivery events")
async def sendgrid_webhook(request: Request, ctx: Ctx) -> Response:
    """Verify a signed SendGrid Event Webhook post and record each delivery status."""
    key = ctx.backend.settings.sendgrid_webhook_public_key
    if key is None:
        raise _not_configured("SendGrid", "LUMENQUEST_SENDGRID_WEBHOOK_PUBLIC_KEY")
    from lumenquest_adapters.sendgrid import (  # noqa: PLC0415 - an extra
        SIGNATURE_HEADER,
        TIMESTAMP_HEADER,
        parse_sendgrid_events,
    )

    payload = await request.body()
    try:
        events = parse_sendgrid_events(
            payload,
            request.headers.get(SIGNATURE_HEADER, ""),
            request.headers.get(TIMESTAMP_HEADER, ""),
            key.get_secret_value(),
        )
    except ValidationError as exc:
        raise _rejected("sendgrid", ctx, exc) from None

    def record() -> int:
        recorded = 0
        for message_id, status in events:
            try:
                ctx.billing.record_email_event(message_id, status)
                recorded += 1
            except LookupError:
                continue  # an email this database did not send (another environment's)
        return recorded

    with acting(SYSTEM):
        recorded = await run_in_threadpool(record)
    ctx.metrics.webhooks.labels("sendgrid", "applied").inc(recorded)
    return ok({"recorded": recorded}, "events recorded")


@probes.get("/health", response_model=Envelope, summary="Is the process up")
async def health() -> Response:
    """Answer as long as the process serves requests; touches nothing else."""
    return ok({"status": "up"}, "up")


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # a probe reports every failure instead of raising it
        return {
            "status": "down",
            "error": type(exc).__name__,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
    result = {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 3)}
    if isinstance(detail, dict):
        result.update(detail)
    return result


def _reach(url: str) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((parts.hostname or "", port), timeout=2):
        pass


def _checks(ctx: AppContext) -> dict[str, dict[str, Any]]:
    settings = ctx.backend.settings
    checks = {
        "database": _timed(
            lambda: {
                "backend": ctx.database.engine.dialect.name,
                "row_level_security": ctx.database.row_level_security(),
            }
        )
    }
    if settings.redis_url is not None:
        import redis  # noqa: PLC0415 - only when Redis is configured

        def ping() -> None:
            client = redis.Redis.from_url(
                settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
                socket_timeout=2,
            )
            try:
                client.ping()
            finally:
                client.close()

        checks["redis"] = _timed(ping)
    else:
        checks["redis"] = {"status": "not_configured", "note": "in-process rate limiter and cache"}
    if isinstance(ctx.billing.gateway, FakeGateway):
        checks["gateway"] = {"status": "up", "kind": "fake", "latency_ms": 0.0}
    else:
        base = settings.stripe_api_base or "https://api.stripe.com"
        checks["gateway"] = _timed(lambda: _reach(base)) | {"kind": "stripe"}
    if settings.sendgrid_api_key is None:
        checks["email"] = {"status": "up", "kind": "console", "latency_ms": 0.0}
    else:
        host = settings.sendgrid_host or "https://api.sendgrid.com"
        checks["email"] = _timed(lambda: _reach(host)) | {"kind": "sendgrid"}
    return checks


@probes.get(
    "/status",
    response_model=Envelope,
    responses={503: {"model": ErrorEnvelope, "description": "a dependency is down"}},
    summary="Dependencies and their latency",
)
async def status(ctx: Ctx) -> Response:
    """Check the database, Redis, the payment gateway and email, with latencies."""
    with acting(SYSTEM):
        checks = await run_in_threadpool(_checks, ctx)
    down = sorted(name for name, check in checks.items() if check["status"] == "down")
    if down:
        return error_response(
            503, "DEGRADED", f"unreachable: {', '.join(down)}", {"checks": checks}
        )
    return ok({"status": "up", "checks": checks}, "all dependencies reachable")


@probes.get("/metrics", include_in_schema=False)
async def metrics(ctx: Ctx) -> Response:
    """Prometheus exposition: request counts and latencies by route and status, billing counters."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
