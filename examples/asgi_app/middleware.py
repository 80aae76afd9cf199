"""One pure-ASGI middleware for what every request needs, in a fixed order.

Request id → identity (anonymous until a dependency says otherwise) → access token
read once → rate limit (429 in the envelope, ``RateLimit-*`` and ``Retry-After``) →
the app → security headers, metrics and one JSON log line → after an unsafe method,
the outbox's events are handed to delivery (:mod:`asgi_app.events`). An exception that
escapes the app becomes a 500 envelope carrying the request id; the traceback goes to
the log only.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_app.auth import ACCESS_COOKIE, Principal, TokenIssuer
from asgi_app.database import ANONYMOUS, set_identity
from asgi_app.envelope import error_response
from asgi_app.logs import log_request
from lumenquest_core.ports import Clock, RateLimiter

__all__ = ["CompressWhenAccepted", "CorsForOrigins", "Metrics", "RateLimits", "RequestMiddleware"]


class Metrics:
    """The Prometheus series the app exports (one registry per app, so tests can build many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lumenquest_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lumenquest_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.operations = Counter(
            "lumenquest_billing_operations",
            "Billing operations done through the API, by operation and outcome",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "lumenquest_webhook_events",
            "Webhook events received, by source and outcome",
            ["source", "outcome"],
            registry=self.registry,
        )


@attrs.frozen
class RateLimits:
    """Requests per window per client, by route family (the seed's auth/api/admin)."""

    enabled: bool
    auth: int
    api: int
    admin: int
    window_seconds: int


_SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"geolocation=(), camera=(), microphone=()"),
]
# The API answers JSON only; /docs needs the Swagger UI's assets from a CDN and inline init.
_API_CSP = b"default-src 'none'; frame-ancestors 'none'"
_DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net;"
    b" style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net;"
    b" img-src 'self' data: https://fastapi.tiangolo.com; frame-ancestors 'none'"
)
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_UNLIMITED_PREFIXES = ("/health", "/status", "/metrics", "/docs", "/redoc", "/openapi.json")


def _family(path: str) -> str | None:
    if path.startswith(_UNLIMITED_PREFIXES) or path.startswith("/v1/webhooks"):
        return None  # probes and signed gateway callbacks are not clients to throttle
    if path.startswith("/v1/auth"):
        return "auth"
    if path.startswith("/v1/admin"):
        return "admin"
    return "api"


def _wanted_headers(scope: Scope) -> tuple[str, str, str]:
    """Return the X-Request-Id, Authorization and Cookie headers (first of each, or "")."""
    # One pass over the raw list (ASGI servers lowercase the names) instead of a
    # case-insensitive lookup per header.
    request_id = authorization = cookie = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if request_id is None:
                request_id = value
        elif name == b"authorization":
            if authorization is None:
                authorization = value
        elif name == b"cookie" and cookie is None:
            cookie = value
    return (
        "" if request_id is None else request_id.decode("latin-1"),
        "" if authorization is None else authorization.decode("latin-1"),
        "" if cookie is None else cookie.decode("latin-1"),
    )


def _request_id(given: str) -> str:
    # Accept a caller's id only if it is short and plain: it goes into every log line.
    if 0 < len(given) <= 64 and all(c.isalnum() or c in "-_." for c in given):
        return given
    return uuid.uuid4().hex


def _bearer(authorization: str, cookie: str) -> str | None:
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    for part in cookie.split(";"):
        name, _, token = part.strip().partition("=")
        if name == ACCESS_COOKIE and token:
            return token
    return None


class RequestMiddleware:
    """Request id, identity, token, rate limit, headers, metrics, logs and the 500 envelope."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenIssuer,
        clock: Clock,
        limiter: RateLimiter,
        limits: RateLimits,
        metrics: Metrics,
        logger: Any,
        hsts: bool,
        after_write: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.after_write = after_write
        self.tokens = tokens
        self.clock = clock
        self.limiter = limiter
        self.limits = limits
        self.metrics = metrics
        self.logger = logger
        self.hsts = hsts
        # The fixed part of the security headers, built once: (API, docs) × (plain, HTTPS).
        self._fixed_headers = {
            (docs, https): self._fixed_security_headers(docs=docs, https=https)
            for docs in (False, True)
            for https in (False, True)
        }
        # Prometheus children by label values: ``labels()`` hashes and locks on every call.
        self._counted: dict[tuple[str, str, str], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request (other scope types pass straight through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given_id, authorization, cookie = _wanted_headers(scope)
        request_id = _request_id(given_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        set_identity(ANONYMOUS)  # until an auth dependency proves who is asking
        principal = self._authenticate(_bearer(authorization, cookie), state)
        path: str = scope["path"]
        status_holder = [500]
        extra_headers = self._security_headers(path, scope, request_id)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", []), *extra_headers]
            await send(message)

        rate_headers, refused = self._rate_limit(path, scope, principal)
        extra_headers += rate_headers
        try:
            if refused is not None:
                await refused(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception:
            # The traceback goes in as text, through the redaction processor; exc_info
            # would make the logging module append the raw, unredacted one.
            self.logger.error(
                "unhandled error",
                exception=traceback.format_exc(),
                request_id=request_id,
                method=scope["method"],
                path=path,
                user_id=principal.id if principal else None,
            )
            if status_holder[0] == 500:
                response = error_response(
                    500,
                    "INTERNAL_ERROR",
                    "something went wrong on our side; quote the request id if you report it",
                    {"request_id": request_id},
                )
                await response(scope, receive, send_wrapper)
        self._observe(scope, path, status_holder[0], started, request_id, principal)
        # An unsafe method may have written events to the outbox (even one that failed
        # after a commit): deliver them now that the response is out.
        if self.after_write is not None and scope["method"] not in _SAFE_METHODS:
            await self.after_write()

    def _authenticate(self, token: str | None, state: dict[str, Any]) -> Principal | None:
        if token is None:
            return None
        checked = self.tokens.check(token, self.clock.now()) if token else "invalid"
        if isinstance(checked, Principal):
            state["principal"] = checked
            return checked
        state["auth_error"] = checked
        return None

    def _fixed_security_headers(self, *, docs: bool, https: bool) -> list[tuple[bytes, bytes]]:
        extra = [*_SECURITY_HEADERS, (b"content-security-policy", _DOCS_CSP if docs else _API_CSP)]
        if not docs:
            extra.append((b"cache-control", b"no-store"))
        if self.hsts or https:
            extra.append(_HSTS)
        return extra

    def _security_headers(
        self, path: str, scope: Scope, request_id: str
    ) -> list[tuple[bytes, bytes]]:
        docs = path.startswith(("/docs", "/redoc"))
        fixed = self._fixed_headers[docs, scope.get("scheme") == "https"]
        return [*fixed, (b"x-request-id", request_id.encode())]

    def _rate_limit(
        self, path: str, scope: Scope, principal: Principal | None
    ) -> tuple[list[tuple[bytes, bytes]], Callable[..., Any] | None]:
        family = _family(path)
        if not self.limits.enabled or family is None or scope["method"] == "OPTIONS":
            return [], None
        limit = getattr(self.limits, family)
        client = scope.get("client")
        who = f"user:{principal.id}" if principal else f"ip:{client[0] if client else 'unknown'}"
        decision = self.limiter.hit(
            f"ratelimit:{family}:{who}", limit=limit, window_seconds=self.limits.window_seconds
        )
        rate = [
            (b"ratelimit-limit", str(decision.limit).encode()),
            (b"ratelimit-remaining", str(decision.remaining).encode()),
            (b"ratelimit-reset", str(decision.reset_after_seconds).encode()),
            (
                b"ratelimit-policy",
                f"{limit};w={self.limits.window_seconds}".encode(),
            ),
        ]
        if decision.allowed:
            return rate, None
        refused = error_response(
            429,
            "RATE_LIMITED",
            f"too many requests: {limit} per {self.limits.window_seconds} s for {family} routes",
            {"limit": limit, "retry_after_seconds": decision.reset_after_seconds},
            {"Retry-After": str(decision.reset_after_seconds)},
        )
        return rate, refused

    def _observe(
        self,
        scope: Scope,
        path: str,
        status: int,
        started: float,
        request_id: str,
        principal: Principal | None,
    ) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        # The template (/v1/subscriptions/{subscription_id}), never the raw path: bounded labels.
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        counted_key = (method, template, str(status))
        counted = self._counted.get(counted_key)
        if counted is None:
            counted = self._counted[counted_key] = self.metrics.requests.labels(*counted_key)
        counted.inc()
        timed = self._timed.get((method, template))
        if timed is None:
            timed = self._timed[method, template] = self.metrics.latency.labels(method, template)
        timed.observe(elapsed)
        log_request(
            request_id=request_id,
            method=method,
            route=template,
            path=path,
            status=status,
            duration_ms=round(elapsed * 1000, 3),
            user_id=principal.id if principal else None,
        )


class CompressWhenAccepted:
    """Starlette's GZip for clients that accept gzip; a plain pass-through for the others.

    Starlette wraps every response to look at it even when it will not compress; here a
    client that does not ask for gzip costs a header scan, and a response that could
    have been compressed still says ``Vary: Accept-Encoding``.
    """

    def __init__(self, app: ASGIApp, *, minimum_size: int) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Compress for clients that accept gzip; add ``Vary`` for the others."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                if b"gzip" in value:
                    await self.gzip(scope, receive, send)
                    return
                break
        minimum_size = self.minimum_size

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                length = b""
                for name, value in headers:
                    if name == b"content-length":
                        length = value
                    elif name == b"content-encoding":
                        break  # already encoded: gzip would have left it alone
                else:
                    # Unknown length (streamed): gzip might have compressed it.
                    if not length or int(length) >= minimum_size:
                        message["headers"] = _with_vary(headers, b"Accept-Encoding")
            await send(message)

        await self.app(scope, receive, send_with_vary)


class CorsForOrigins:
    """Starlette's CORS for requests that carry an ``Origin``; for the others, its ``Vary`` only.

    For a request without ``Origin`` (an API client, not a browser's cross-origin call)
    Starlette's middleware only adds ``Origin`` to the response's ``Vary``, parsing the
    request's and the response's headers into objects to do so. Here that request's
    ``Vary`` is written straight into the raw list, as Starlette writes it: the values
    of every ``vary`` header joined, ``Origin`` last, in the first one's place.
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Apply CORS to a request with an ``Origin``; add ``Vary: Origin`` for the others."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, _value in scope["headers"]:
            if name == b"origin":
                await self.cors(scope, receive, send)
                return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_vary(message.get("headers", []), b"Origin")
            await send(message)

        await self.app(scope, receive, send_with_vary)


def _with_vary(headers: Any, token: bytes) -> list[tuple[bytes, bytes]]:
    """Return ``headers`` with their ``vary`` values and ``token`` joined in one header.

    As Starlette's ``MutableHeaders.add_vary_header`` writes it: in the first ``vary``'s
    place, the others dropped, ``token`` last.
    """
    varied: list[tuple[bytes, bytes]] = []
    values: list[bytes] = []
    at = -1
    for name, value in headers:
        if name == b"vary":
            if at < 0:
                at = len(varied)
                varied.append((name, value))  # its place, filled below
            values.append(value)
        else:
            varied.append((name, value))
    values.append(token)
    if at < 0:
        varied.append((b"vary", token))
    else:
        varied[at] = (b"vary", b", ".join(values))
    return varied
