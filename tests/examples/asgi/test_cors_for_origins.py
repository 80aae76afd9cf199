"""CorsForOrigins sends what Starlette's CORS middleware sends, with or without an Origin."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.middleware.cors import CORSMiddleware

from asgi_app.middleware import CorsForOrigins
from tests.examples.asgi.raw_asgi import app_sending, sent_by

_OPTIONS: dict[str, Any] = {
    "allow_origins": ["http://localhost:3000"],
    "allow_credentials": True,
    "allow_methods": ["GET", "POST"],
    "allow_headers": ["Authorization", "Content-Type"],
    "expose_headers": ["X-Request-Id"],
}


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
    ours = sent_by(
        CorsForOrigins(app_sending(response_headers), **_OPTIONS), request_headers, method
    )
    theirs = sent_by(
        CORSMiddleware(app_sending(response_headers), **_OPTIONS), request_headers, method
    )
    assert ours == theirs
