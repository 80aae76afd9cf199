"""The seed's response envelope, the error-to-status mapping, and the exception handlers.

Success: ``{"success": true, "data": …, "message": …, "timestamp": …}``.
Error: ``{"success": false, "error": {"code", "message", "details"}, "timestamp": …}``.

Statuses: 400 a malformed request (shape, types, unknown fields), 401, 403, 404, 409 a
business rule, an invalid transition or an idempotency conflict, 422 a well-formed
request the billing rules reject (an archived plan, a currency mismatch, a declined
card), 429, 503 a remote service that is down (retryable), 500 only for real faults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from lumenquest_core.codec import to_jsonable
from lumenquest_core.errors import (
    Conflict,
    GatewayUnavailable,
    LumenquestError,
    NotFound,
    PaymentDeclined,
    ValidationError,
)

__all__ = [
    "ApiError",
    "Envelope",
    "ErrorBody",
    "ErrorEnvelope",
    "error_response",
    "install_error_handlers",
    "ok",
    "ok_rendered",
    "render",
    "status_for",
]


class Envelope(BaseModel):
    """A successful response."""

    success: bool = True
    data: Any = None
    message: str = "OK"
    timestamp: str


class ErrorBody(BaseModel):
    """What went wrong, with a stable machine-readable ``code``."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(BaseModel):
    """A failed response."""

    success: bool = False
    error: ErrorBody
    timestamp: str


class ApiError(Exception):
    """An HTTP-level refusal (401, 403, 429…) carried to the envelope handler."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _dumps(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def render(data: Any) -> bytes:
    """Return JSON-ready ``data`` as the envelope writes it, for :func:`ok_rendered`."""
    return _dumps(data)


def ok(
    data: Any = None,
    message: str = "OK",
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Return a success envelope around ``data`` (domain objects become JSON-ready dicts)."""
    body = {"success": True, "data": to_jsonable(data), "message": message, "timestamp": _now()}
    return Response(_dumps(body), status_code, headers, media_type="application/json")


def ok_rendered(
    data: bytes,
    message: str = "OK",
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Return a success envelope around ``data`` already rendered by :func:`render`.

    The same bytes as ``ok(data)``: for a body that is worth rendering once and reusing.
    """
    body = b"".join(
        (
            b'{"success":true,"data":',
            data,
            b',"message":',
            _dumps(message),
            b',"timestamp":"',
            _now().encode(),
            b'"}',
        )
    )
    return Response(body, status_code, headers, media_type="application/json")


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Return an error envelope."""
    body = {
        "success": False,
        "error": {"code": code, "message": message, "details": to_jsonable(dict(details or {}))},
        "timestamp": _now(),
    }
    return Response(_dumps(body), status_code, headers, media_type="application/json")


def status_for(error: LumenquestError) -> int:
    """Return the HTTP status for a lumenquest error (by its class, so subclasses follow)."""
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, ValidationError | PaymentDeclined):
        return 422
    if isinstance(error, GatewayUnavailable):
        return 503
    return 500  # ConfigurationError and anything unknown: a fault on our side


_HTTP_CODES: Mapping[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def _validation_details(errors: Sequence[Any]) -> dict[str, Any]:
    fields = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        # Never echo the input back: it may be a password.
        field = ".".join(location[1:]) or (location[0] if location else "")
        fields.append({"field": field, "reason": error["msg"]})
    return {"fields": fields}


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app raises leave in the envelope with its status."""

    @app.exception_handler(LumenquestError)
    async def _lumenquest(request: Request, exc: LumenquestError) -> Response:
        status = status_for(exc)
        if status == 500:
            # The message may describe our configuration; the client gets the request id.
            raise exc
        headers = {"Retry-After": "5"} if exc.retryable else None
        return error_response(status, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(
            400, "VALIDATION_ERROR", "the request is not valid", _validation_details(exc.errors())
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else code.lower()
        return error_response(exc.status_code, code, message, None, exc.headers)
