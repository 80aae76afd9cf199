"""Outbox delivery (emails, analytics) after the response, off the request path.

``Billing`` writes every event to the outbox in the same transaction as the change, and
can deliver them right after its commit, inside the call. The app builds it with
``dispatch_immediately=False`` instead and delivers here: a request that may have
written events (any unsafe method) calls :meth:`OutboxDispatcher.notify` once its
response is sent, and one task per app drains the outbox with
``Billing.dispatch_events`` in the thread pool, acting as ``system`` (row-level
security: the outbox holds every customer's events). Requests that arrive while it
runs are folded into its next round, so under load one batch delivers the events of
many requests.

Delivery stays at least once, as the outbox makes it: nothing is marked delivered until
its email has been sent; a failing round (an email provider down) is retried with a
growing delay, and whatever is still pending is picked up by the next round, at
start-up or at shutdown (:meth:`OutboxDispatcher.drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.concurrency import run_in_threadpool

from asgi_app.database import SYSTEM, acting
from lumenquest_core.service import Billing

__all__ = ["OutboxDispatcher"]

_FIRST_RETRY_SECONDS = 1.0
_LAST_RETRY_SECONDS = 60.0


class OutboxDispatcher:
    """Delivers the outbox in the background, one round at a time, coalescing requests."""

    def __init__(self, billing: Billing, logger: Any, *, background: bool = True) -> None:
        self._billing = billing
        self._logger = logger
        self.background = background
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.delivered = 0
        self.first_retry_seconds = _FIRST_RETRY_SECONDS
        self._waiting = False  # in a retry's delay
        self.error: str | None = None  # what made the last failed round fail
        self._closed = False

    async def start(self) -> None:
        """Deliver what an earlier run (or the start-up seeding) left in the outbox."""
        await self.after_write()

    async def after_write(self) -> None:
        """Deliver after a response that may have written events: in the background, or now.

        Not in the background on SQLite: there a writer in the background would make the
        requests' own transactions fail ("database is locked") rather than wait; there the
        request's task delivers, after its response was sent, as one writer among them.
        """
        if self.background:
            self.notify()
            return
        try:
            await run_in_threadpool(self.drain)
        except Exception as exc:  # the response is out; the next round delivers them
            self._logger.warning("outbox delivery failed", error=type(exc).__name__)

    def notify(self) -> None:
        """Ask for a round soon (from the event loop): events may be waiting."""
        task = self._task
        if self._closed:
            return
        if task is not None and not task.done():
            self._again = True  # the running task goes round once more
            return
        self._again = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def idle(self) -> None:
        """Wait until no round is running or due (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def drain(self) -> int:
        """Deliver what is pending now, in the calling thread; return how many."""
        with acting(SYSTEM):
            delivered = self._billing.dispatch_events()
        self.delivered += delivered
        return delivered

    async def close(self) -> None:
        """Stop the background task, then deliver what is still pending (at shutdown)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            if self._waiting:
                task.cancel()  # only a retry's delay: no delivery is under way
            with contextlib.suppress(asyncio.CancelledError):
                await task  # a round under way finishes (its thread cannot be stopped)
        try:
            await run_in_threadpool(self.drain)
        except Exception as exc:  # still down: the next start delivers them
            self._logger.warning("outbox delivery failed at shutdown", error=type(exc).__name__)

    async def _run(self) -> None:
        delay = self.first_retry_seconds
        while await self._round():
            if self._closed:
                return  # close() delivers what is left
            self._logger.warning(
                "outbox delivery failed; retrying", retry_in_seconds=delay, error=self.error
            )
            self._waiting = True
            try:
                await asyncio.sleep(delay)
            finally:
                self._waiting = False
            delay = min(2 * delay, _LAST_RETRY_SECONDS)

    async def _round(self) -> bool:
        """Deliver until nothing more was asked for; return whether a round failed."""
        while not self._closed:
            self._again = False
            try:
                await run_in_threadpool(self.drain)
            except Exception as exc:  # an email provider or the database is down
                self.error = type(exc).__name__
                return True
            if not self._again:
                return False
        return False
