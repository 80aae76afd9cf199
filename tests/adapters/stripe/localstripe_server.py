"""localstripe in a background thread, on 127.0.0.1 only, plus what it lacks of Stripe's API.

``localstripe``'s own command listens on every interface, so its aiohttp ``app`` is run
here with ``AppRunner`` and ``TCPSite(runner, "127.0.0.1", 0)`` in a thread with its own
event loop. One instance per test session (its store is module-global); ``reset()``
empties it between tests (``DELETE /_config/data``).

localstripe lacks three behaviours of Stripe's API that the gateway relies on; a
middleware in front of its routes adds them as Stripe's API reference documents them:

- **Listing a customer's PaymentIntents** (``GET /v1/payment_intents?customer=…``):
  localstripe refuses the filter, so the middleware lists all and keeps the customer's.

- **Idempotent requests.** A POST with an ``Idempotency-Key`` is answered once; the same
  key with the same body replays the first status and body, the same key with another
  body is a 400 ``idempotency_error``. (localstripe ignores the header.)
- **Decline codes.** localstripe declines a charge with ``code: card_declined`` only and
  no PaymentIntent in the error. Stripe's 402 carries the issuer's ``decline_code`` and
  the ``payment_intent``. The middleware adds the intent, and the decline code scripted
  with :meth:`LocalStripe.script_decline` (localstripe has one declining card, not one
  per decline code).

localstripe's store also pickles itself to a fixed file under /tmp on every write; that
is switched off so that parallel runs never share state through the disk.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from aiohttp import web

with warnings.catch_warnings():
    # localstripe registers plain functions as handlers, which aiohttp deprecates.
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import resources, webhooks
    from localstripe import server as localstripe_server

from tests.adapters.stripe.scripted_http import wait_until_listening

__all__ = ["DECLINING_CARD", "GOOD_CARD", "LocalStripe", "running"]

GOOD_CARD = "pm_card_visa"
"""A Stripe test PaymentMethod that attaches and charges successfully."""

DECLINING_CARD = "pm_card_chargeCustomerFail"
"""A Stripe test PaymentMethod that attaches but whose charges are declined."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LocalStripe:
    """A running localstripe; ``api_base`` is what ``StripeClient`` points at."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._replays: dict[str, tuple[bytes, int, bytes]] = {}
        self._decline_codes: deque[str] = deque()
        self._lock = threading.Lock()
        self.port = 0

    @property
    def api_base(self) -> str:
        """The base URL of the API, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the app on 127.0.0.1 and a free port; return once it accepts connections."""
        resources.store.dump_to_disk = lambda: None  # type: ignore[method-assign]
        app = localstripe_server.app
        if self._compat not in app.middlewares:
            app.middlewares.insert(0, self._compat)
        self._thread.start()
        self.port = self._call(self._start()).result(timeout=30)
        wait_until_listening("127.0.0.1", self.port)

    async def _start(self) -> int:
        self._runner = web.AppRunner(localstripe_server.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        address = self._runner.addresses[0]
        return int(address[1])

    def stop(self) -> None:
        """Stop the server, cancel pending webhook deliveries and end the thread."""
        self._call(self._stop()).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _call(self, coroutine: Awaitable[Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]

    def reset(self) -> None:
        """Forget every object, webhook, idempotent answer and scripted decline."""
        request = urllib.request.Request(f"{self.api_base}/_config/data", method="DELETE")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        webhooks._webhooks.clear()
        with self._lock:
            self._replays.clear()
            self._decline_codes.clear()

    # -- configuration -----------------------------------------------------------------

    def register_webhook(
        self, name: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """Have localstripe POST events (all, or ``events``), signed with ``secret``, to ``url``."""
        config: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            config["events"] = events
        body = json.dumps(config).encode()
        request = urllib.request.Request(
            f"{self.api_base}/_config/webhooks/{name}",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def script_decline(self, decline_code: str) -> None:
        """Give the next declined PaymentIntent this ``decline_code``, as an issuer would."""
        with self._lock:
            self._decline_codes.append(decline_code)

    # -- what localstripe lacks ----------------------------------------------------------

    @web.middleware
    async def _compat(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if (
            request.method == "GET"
            and request.path == "/v1/payment_intents"
            and "customer" in request.query
        ):
            return await self._list_intents_of_customer(request, handler)
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or key is None:
            return await handler(request)
        body = await request.read()
        scope = f"{request.path}|{key}"
        with self._lock:
            first = self._replays.get(scope)
        if first is not None:
            first_body, status, answer = first
            if first_body != body:
                return _error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same"
                    " parameters they were first used with.",
                )
            return web.Response(status=status, body=answer, content_type="application/json")
        response = await handler(request)
        assert isinstance(response, web.Response)
        answer = response.body if isinstance(response.body, bytes) else b""
        if response.status == 402 and request.path == "/v1/payment_intents":
            answer = self._enrich_card_error(answer)
            response = web.Response(status=402, body=answer, content_type="application/json")
        if response.status < 500:
            with self._lock:
                self._replays[scope] = (body, response.status, answer)
        return response

    async def _list_intents_of_customer(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        # Stripe filters the list by customer; localstripe refuses the parameter.
        customer = request.query["customer"]
        query = {k: v for k, v in request.query.items() if k != "customer"}
        response = await handler(request.clone(rel_url=request.rel_url.with_query(query)))
        assert isinstance(response, web.Response)
        if response.status != 200 or not isinstance(response.body, bytes):
            return response
        payload = json.loads(response.body)
        payload["data"] = [i for i in payload["data"] if i.get("customer") == customer]
        return web.json_response(payload)

    def _enrich_card_error(self, answer: bytes) -> bytes:
        payload = json.loads(answer)
        error = payload["error"]
        error["type"] = "card_error"
        charge = resources.store.get("charge:" + str(error.get("charge")))
        if charge is not None and charge.payment_intent:
            intent = resources.PaymentIntent._api_retrieve(charge.payment_intent)
            error["payment_intent"] = intent._export()
        with self._lock:
            if self._decline_codes:
                error["decline_code"] = self._decline_codes.popleft()
        return json.dumps(payload).encode()


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


_shared: LocalStripe | None = None
_users = 0
_shared_lock = threading.Lock()


@contextmanager
def running() -> Iterator[LocalStripe]:
    """Share one localstripe among the fixtures that use it; the last one out stops it.

    localstripe's app and store are module-global, so a process runs one instance; a
    session fixture in each test module that needs it enters this context.
    """
    global _shared, _users  # noqa: PLW0603
    with _shared_lock:
        if _shared is None:
            _shared = LocalStripe()
            _shared.start()
        _users += 1
        server = _shared
    try:
        yield server
    finally:
        with _shared_lock:
            _users -= 1
            if _users == 0:
                server.stop()
                _shared = None
