"""CorsForOrigins sends what Starlette's CORS middleware sends, with or without an Origin."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

from asgi_app.middleware import CorsForOrigins

_OPTIONS: dict[str, Any] = {
    "allow_origins": ["http://localhost:3000"],
    "allow_credentials": True,
    "allow_methods": ["GET", "POST"],
    "allow_headers": ["Authorization", "Content-Type"],
    "expose_headers": ["X-Request-Id"],
}


def _app(headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def _sent(middleware: Any, request_headers: list[tuple[bytes, bytes]], method: str) -> Any:
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {"type": "http", "method": method, "path": "/v1/plans", "headers": request_headers}
    asyncio.run(middleware(scope, receive, send))
    return [(m["type"], m.get("status"), m.get("headers"), m.get("body")) for m in messages]


@pytest.mark.parametrize(
    "response_headers",
    [
        [(b"content-type", b"application/json")],
        [(b"vary", b"Accept-Encoding"), (b"content-length", b"2")],
        [(b"vary", b"Accept-Encoding"), (b"x-a", b"1"), (b"vary", b"Cookie")],
    ],
)
@pytest.mark.parametrize(
    ("request_headers", "method"),
    [
        ([(b"host", b"api")], "GET"),
        ([(b"origin", b"http://localhost:3000")], "GET"),
        ([(b"origin", b"http://evil.example")], "POST"),
        (
            [(b"origin", b"http://localhost:3000"), (b"access-control-request-method", b"POST")],
            "OPTIONS",
        ),
    ],
)
def test_the_same_response_as_starlettes(
    response_headers: list[tuple[bytes, bytes]],
    request_headers: list[tuple[bytes, bytes]],
    method: str,
) -> None:
    ours = _sent(CorsForOrigins(_app(response_headers), **_OPTIONS), request_headers, method)
    theirs = _sent(CORSMiddleware(_app(response_headers), **_OPTIONS), request_headers, method)
    assert ours == theirs
