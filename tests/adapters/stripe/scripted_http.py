"""A scripted HTTP server on 127.0.0.1 that records requests, for SDK-level adapter tests.

Used by the Stripe tests (answers as Stripe's API reference documents, where localstripe
cannot) and by the SendGrid tests (the SendGrid v3 mail-send API).

Each test scripts answers per ``(method, path)``; an unscripted request gets a 404. An
answer can also drop the connection without responding (a lost response). The server
runs in a thread, binds 127.0.0.1 on a free port, and stops when its ``with`` ends.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

__all__ = [
    "DROP",
    "Answer",
    "Recorded",
    "ScriptedServer",
    "scripted_server",
    "wait_until_listening",
]


def wait_until_listening(host: str, port: int, attempts: int = 200) -> None:
    """Poll a TCP connect until the server accepts, a bounded number of times."""
    for _ in range(attempts):
        try:
            with socket.create_connection((host, port), timeout=0.05):
                return
        except OSError:
            continue
    raise RuntimeError(f"nothing listens on {host}:{port}")


@attrs.frozen
class Answer:
    """One scripted response."""

    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes sent as is
    headers: Mapping[str, str] = attrs.field(factory=dict)
    drop: bool = False  # close the connection without answering


DROP = Answer(drop=True)


@attrs.frozen
class Recorded:
    """One request the server received."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """Return the body parsed as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """Return the body parsed as a form (Stripe's encoding), one value per key."""
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


class ScriptedServer:
    """The running server: ``script`` answers, read ``requests``; ``url`` is its base."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._answers: dict[tuple[str, str], deque[Answer]] = {}
        self._lock = threading.Condition()
        self.url = ""

    def script(self, method: str, path: str, *answers: Answer) -> None:
        """Queue answers for ``method path``; the last one repeats once the others are used."""
        with self._lock:
            self._answers.setdefault((method, path), deque()).extend(answers)

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        """Return the requests received for ``method path``, in order."""
        with self._lock:
            return self._matching(method, path)

    def wait_for(
        self,
        method: str,
        path: str,
        match: Callable[[Recorded], bool] = lambda _: True,
        timeout: float = 15,
    ) -> Recorded:
        """Block until a request to ``method path`` that ``match``es arrives (bounded wait)."""

        def arrived() -> Recorded | None:
            return next((r for r in self._matching(method, path) if match(r)), None)

        with self._lock:
            found = self._lock.wait_for(arrived, timeout=timeout)
        assert found is not None, f"no matching {method} {path} within {timeout} s"
        return found

    def _matching(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def _answer(self, request: Recorded) -> Answer:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()
            queue = self._answers.get((request.method, request.path))
            if not queue:
                return Answer(404, {"error": {"type": "invalid_request_error", "message": "?"}})
            return queue.popleft() if len(queue) > 1 else queue[0]


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            answer = server._answer(
                Recorded(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
            )
            if answer.drop:
                self.close_connection = True
                return
            payload = (
                answer.body
                if isinstance(answer.body, bytes)
                else json.dumps(answer.body).encode()
                if answer.body is not None
                else b""
            )
            self.send_response(answer.status)
            if not isinstance(answer.body, bytes):
                self.send_header("Content-Type", "application/json")
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    """Run a ScriptedServer on 127.0.0.1 and a free port for the ``with`` block."""
    server = ScriptedServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    server.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        wait_until_listening("127.0.0.1", int(port))
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
