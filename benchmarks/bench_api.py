"""The example app's HTTP overhead, in-process: requests/s through the ASGI stack beside ``Billing``.

Run: ``.venv/bin/python benchmarks/bench_api.py`` (2,000 requests per figure) or with
``--requests N``; ``--smoke`` uses 50, to prove the benchmark still works. Measured in
one process, on one SQLite file, sequentially (one request at a time, so the figures
are per-request costs, not a concurrency test), through httpx's ASGI transport:

- ``GET /v1/plans`` (anonymous; envelope, middleware, rate limiter, logging) beside
  two baselines: ``Billing.list_plans`` + ``list_prices`` per plan called directly, and
  a bare FastAPI hello-world (a sync route, like ours) through the same transport;
- an authenticated ``POST /v1/subscriptions/{id}/usage`` (JWT check, ownership read,
  a write with its audit row) beside ``Billing.record_usage`` called directly.

Logs go to a null handler: the point is the stack, not the terminal. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from asgi_app.config import AppSettings
from asgi_app.main import create_app
from asgi_app.seed import seed_plans
from lumenquest_adapters.config import Settings
from lumenquest_adapters.memory import FakeGateway, TestClock
from lumenquest_core import BillingCycle, Interval, Money

START = datetime(2026, 1, 1, tzinfo=UTC)


def percentile(samples: list[float], q: float) -> float:
    """Return the q-th percentile (0..1) of ``samples`` in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def timed(n: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, list[float]]:
    """Run ``call`` n times in a row; return (requests per second, per-call seconds)."""
    samples = []
    began = time.perf_counter()
    for _ in range(n):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return n / (time.perf_counter() - began), samples


def timed_sync(n: int, call: Callable[[], Any]) -> float:
    """Run ``call`` n times in a row; return calls per second."""
    began = time.perf_counter()
    for _ in range(n):
        call()
    return n / (time.perf_counter() - began)


async def measure(n: int, directory: Path) -> dict[str, float]:
    """Return the figures for ``n`` requests of each kind."""
    logger = logging.getLogger("lumenquest.api")
    logger.handlers[:] = [logging.NullHandler()]
    logger.propagate = False
    app = create_app(
        Settings(database_url=f"sqlite:///{directory / 'bench.db'}"),
        app_settings=AppSettings(
            rate_limit_enabled=False,
            argon2_time_cost=1,
            argon2_memory_kib=64,
            jwt_secret="bench-secret-bench-secret-bench-secret-0123",
        ),
        clock=TestClock(START),
        gateway=FakeGateway(),
    )
    context = app.state.context
    billing = context.billing
    seed_plans(context)
    plan = billing.create_plan(name="Metered API")
    metered = billing.create_price(
        plan_id=plan.id,
        unit_amount=Money(1, "USD"),
        cycle=BillingCycle(Interval.MONTH),
        usage_type="metered",
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        registered = await client.post(
            "/v1/auth/register",
            json={"email": "bench@example.com", "password": "bench-password-1"},
        )
        token = registered.json()["data"]["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        created = await client.post(
            "/v1/subscriptions", json={"price_id": metered.id}, headers=auth
        )
        sub_id = created.json()["data"]["id"]
        customer_id = created.json()["data"]["customer_id"]

        async def get_plans() -> None:
            response = await client.get("/v1/plans")
            assert response.status_code == 200, response.text

        async def post_usage() -> None:
            response = await client.post(
                f"/v1/subscriptions/{sub_id}/usage", json={"quantity": 1}, headers=auth
            )
            assert response.status_code == 201, response.text

        await get_plans()  # warm the catalog cache, as a running server's would be
        plans_rps, plans_samples = await timed(n, get_plans)
        usage_rps, usage_samples = await timed(n, post_usage)

    def plans_direct() -> None:
        for item in billing.list_plans(active_only=True):
            billing.list_prices(plan_id=item.id, active_only=True)

    bare = FastAPI()

    @bare.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=bare), base_url="http://bench"
    ) as client:

        async def get_hello() -> None:
            response = await client.get("/hello")
            assert response.status_code == 200

        await get_hello()
        bare_rps, _ = await timed(n, get_hello)

    direct_plans_rps = timed_sync(n, plans_direct)
    direct_usage_rps = timed_sync(n, lambda: billing.record_usage(sub_id, quantity=1))
    assert customer_id
    context.database.dispose()
    return {
        "get_plans_requests_per_s": plans_rps,
        "get_plans_p50_ms": percentile(plans_samples, 0.5),
        "get_plans_p99_ms": percentile(plans_samples, 0.99),
        "bare_fastapi_hello_requests_per_s": bare_rps,
        "billing_list_plans_calls_per_s": direct_plans_rps,
        "post_usage_requests_per_s": usage_rps,
        "post_usage_p50_ms": percentile(usage_samples, 0.5),
        "post_usage_p99_ms": percentile(usage_samples, 0.99),
        "billing_record_usage_calls_per_s": direct_usage_rps,
        "requests_per_figure": n,
    }


def main() -> None:
    """Parse the arguments, measure, print a table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="50 requests: does it still run")
    args = parser.parse_args()
    n = 50 if args.smoke else args.requests
    if n < 1:
        parser.error("--requests must be at least 1")
    with tempfile.TemporaryDirectory() as directory:
        figures = asyncio.run(measure(n, Path(directory)))
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:12.2f}")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
