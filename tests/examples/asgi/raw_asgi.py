"""Call an ASGI middleware with a raw scope and record what it sends, to compare with Starlette's."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Message, Receive, Scope, Send


def app_sending(headers: list[tuple[bytes, bytes]], body: bytes = b"{}") -> Any:
    """Return an ASGI app that answers every request 200 with these headers and body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})

    return app


def sent_by(middleware: Any, request_headers: list[tuple[bytes, bytes]], method: str) -> Any:
    """Return the messages ``middleware`` sends for one request: type, status, headers, body."""
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {"type": "http", "method": method, "path": "/v1/plans", "headers": request_headers}
    asyncio.run(middleware(scope, receive, send))
    return [(m["type"], m.get("status"), m.get("headers"), m.get("body")) for m in messages]
