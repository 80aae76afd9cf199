"""CompressWhenAccepted sends what Starlette's GZip middleware sends to a client without gzip."""

from __future__ import annotations

import pytest
from starlette.middleware.gzip import GZipMiddleware

from asgi_app.middleware import CompressWhenAccepted
from tests.examples.asgi.raw_asgi import app_sending, sent_by

_LONG = b"x" * 2000  # past the minimum size: a gzip client would get it compressed


@pytest.mark.parametrize(
    ("response_headers", "body"),
    [
        ([(b"content-type", b"application/json"), (b"content-length", b"2000")], _LONG),
        ([(b"content-length", b"2")], b"{}"),  # too short to compress: no Vary
        ([(b"content-type", b"text/plain")], _LONG),  # streamed, length unknown
        ([(b"vary", b"Origin"), (b"content-length", b"2000")], _LONG),
        ([(b"vary", b"Origin"), (b"x-a", b"1"), (b"vary", b"Cookie")], _LONG),
        ([(b"content-encoding", b"br")], _LONG),  # encoded already
    ],
)
@pytest.mark.parametrize("accept", [None, b"br", b"identity"])
def test_a_client_without_gzip_gets_starlettes_response(
    response_headers: list[tuple[bytes, bytes]], body: bytes, accept: bytes | None
) -> None:
    request = [(b"host", b"api")] + ([] if accept is None else [(b"accept-encoding", accept)])
    app = app_sending(response_headers, body)
    ours = sent_by(CompressWhenAccepted(app, minimum_size=1000), request, "GET")
    theirs = sent_by(GZipMiddleware(app, minimum_size=1000), request, "GET")
    assert ours == theirs
