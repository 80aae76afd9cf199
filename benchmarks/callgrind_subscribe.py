"""Paid subscribes through the example app in-process, for callgrind (and a statement count).

``PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no
--toggle-collect=functools_reduce .venv/bin/python benchmarks/callgrind_subscribe.py -n 40``
counts the instructions of ``-n`` paid subscribes ("Business", no trial: invoice, charge,
settlement) and the outbox delivery they cause, and nothing of the setup: the event
loop's part runs inside one ``functools.reduce``, and every call handed to the thread
pool (the sync route, its dependencies, the outbox round) inside one of its own, in its
thread. ``--statements`` prints the statements and round trips per request (those of
the outbox's delivery rounds apart); ``--profile`` a cProfile by CPU time of the same
requests with the thread pool's calls run inline. ``CG_NO_OUTBOX=1`` leaves delivery
out (what it costs: the difference), ``CG_ONE_ROUND=1`` delivers it all in one round
after the requests (what a round costs, apart from its events), ``CG_STUB_BILLING=1``
answers every subscribe with one subscription made beforehand, no outbox (what the HTTP
layer costs: all that is left), ``CG_PREPARED=1`` prints psycopg's prepared
statements per pooled connection, ``CG_TRACE=1`` every statement counted, ``CG_PROFILE_OUT=path`` keeps the profile.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_api import APP_ENV, DEFAULT_POSTGRES_URL, postgres_admin  # noqa: E402

_run_sync = anyio.to_thread.run_sync


async def _counted_run_sync(func: Any, *args: Any, **kw: Any) -> Any:
    # functools.reduce is the marker callgrind toggles on, in the worker thread too.
    return await _run_sync(lambda: functools.reduce(lambda _, __: func(*args), [0], None), **kw)


def count_statements() -> dict[str, int]:
    """Count statements sent (a pipelined executemany per row) and ``Connection.wait`` calls.

    Every exchange with the server goes through ``wait``: one a statement, one a pipeline
    (at its sync). Counted apart for the outbox's delivery rounds (``dispatch_events``).
    """
    from lumenquest_core.service import Billing  # noqa: PLC0415  # after the path is set

    counts = {"statements": 0, "round_trips": 0, "outbox_statements": 0, "outbox_round_trips": 0}
    where = threading.local()
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
    wait, dispatch = psycopg.Connection.wait, Billing.dispatch_events
    pipe_exit = psycopg.Pipeline.__exit__

    trace = os.environ.get("CG_TRACE") == "1"

    def add(name: str, many: int = 1, what: Any = "") -> None:
        counts[("outbox_" if getattr(where, "outbox", False) else "") + name] += many
        if trace:
            print("   ", name, many, str(what)[:100].replace("\n", " "), file=sys.stderr)

    def run(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        add("statements", 1, query)
        return execute(self, query, params, **kw)

    def run_many(self: Any, query: Any, params: Any, **kw: Any) -> Any:
        params = list(params)
        add("statements", len(params), query)
        return executemany(self, query, params, **kw)

    def waiting(self: Any, gen: Any, *args: Any, **kw: Any) -> Any:
        name = getattr(gen, "__name__", "")
        idle = self.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # A pipeline's exchanges are counted once, at its end; entering one sends nothing,
        # nor does a rollback (the pool's reset) or a commit (after a pipeline that
        # committed) of a connection not in a transaction.
        if (
            self.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
            and name != "_enter_gen"
            and not (name in ("_rollback_gen", "_commit_gen") and idle)
        ):
            add("round_trips", 1, gen)
        return wait(self, gen, *args, **kw)

    def pipeline_exit(self: Any, *args: Any) -> Any:
        add("round_trips")
        return pipe_exit(self, *args)

    def dispatching(self: Any, *args: Any, **kw: Any) -> Any:
        where.outbox = True
        try:
            return dispatch(self, *args, **kw)
        finally:
            where.outbox = False

    from lumenquest_adapters.sqlalchemy import _raw  # noqa: PLC0415

    session_run = _raw._Session.run

    def run_straight(self: Any, commands: Any) -> Any:
        # Statements sent to libpq straight: one round trip for all of them.
        for statement, *_ in commands:
            add("statements", 1, statement)
        add("round_trips", 1, "pipeline")
        return session_run(self, commands)

    _raw._Session.run = run_straight  # type: ignore[method-assign]
    psycopg.Cursor.execute = run  # type: ignore[method-assign]
    psycopg.Cursor.executemany = run_many  # type: ignore[method-assign]
    psycopg.Connection.wait = waiting  # type: ignore[method-assign]
    psycopg.Pipeline.__exit__ = pipeline_exit  # type: ignore[method-assign]
    Billing.dispatch_events = dispatching  # type: ignore[method-assign]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--plan", default="Business")
    parser.add_argument("--statements", action="store_true")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    admin = postgres_admin(os.environ.get("LUMENQUEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    assert admin is not None
    name = f"lq_cg_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        for key in [k for k in os.environ if k.startswith("LUMENQUEST_")]:
            del os.environ[key]
        os.environ.update(APP_ENV | {"LUMENQUEST_DATABASE_URL": url})
        drive(args.n, args.plan, args.statements, args.concurrency, args.profile)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def drive(  # noqa: PLR0915  # a script: setup, warm-up, then the counted run
    n: int, plan_name: str, statements: bool, concurrency: int, profile: bool = False
) -> None:
    from asgi_app.main import create_app  # noqa: PLC0415  # after the environment is set
    from asgi_app.seed import seed_plans  # noqa: PLC0415

    app = create_app()
    seed_plans(app.state.context)
    loop = asyncio.new_event_loop()
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    dispatcher = app.state.context.dispatcher
    users: list[dict[str, str]] = []
    one_round = False

    async def setup() -> str:
        plans = (await client.get("/v1/plans")).json()["data"]["items"]
        price_id: str = next(p for p in plans if p["name"] == plan_name)["prices"][0]["id"]
        for index in range(8):
            credentials = {"email": f"cg-{index}@example.com", "password": "cg-password-1"}
            assert (await client.post("/v1/auth/register", json=credentials)).status_code == 201
            login = await client.post("/v1/auth/login", json=credentials)
            users.append({"Authorization": f"Bearer {login.json()['data']['access_token']}"})
        return price_id

    price_id = loop.run_until_complete(setup())

    async def subscribe(index: int) -> None:
        response = await client.post(
            "/v1/subscriptions", json={"price_id": price_id}, headers=users[index % 8]
        )
        assert response.status_code == 201, response.text

    async def many(count: int) -> None:
        # ``concurrency`` in flight, as the benchmark keeps: outbox rounds coalesce as there.
        indexes = iter(range(count))

        async def worker() -> None:
            for index in indexes:
                await subscribe(index)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if one_round:
            await anyio.to_thread.run_sync(dispatcher.drain)
        await dispatcher.idle()

    loop.run_until_complete(many(16))  # warm-up: every user linked to the gateway
    drain, rounds = dispatcher.drain, [0]

    def counted_drain() -> int:
        rounds[0] += 1
        return int(drain())

    dispatcher.drain = counted_drain
    if os.environ.get("CG_NO_OUTBOX") == "1":  # to see what delivery costs: none of it
        dispatcher.notify = lambda: None
    if os.environ.get("CG_STUB_BILLING") == "1":  # the HTTP layer alone
        from lumenquest_core.service import Billing  # noqa: PLC0415  # after the path is set

        made = app.state.context.billing.list_subscriptions(limit=1)[0]
        Billing.subscribe = lambda self, **_: made  # type: ignore[method-assign]
        dispatcher.notify = lambda: None
    elif os.environ.get("CG_ONE_ROUND") == "1":  # what a round costs beside its events
        dispatcher.notify = lambda: None
        one_round = True
    gc.collect()
    counts = count_statements() if statements else None
    if profile:
        import contextvars  # noqa: PLC0415  # profiling only
        import cProfile  # noqa: PLC0415
        import pstats  # noqa: PLC0415

        async def inline(func: Any, *args: Any, **kw: Any) -> Any:
            return contextvars.copy_context().run(func, *args)

        anyio.to_thread.run_sync = inline  # type: ignore[assignment]
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        loop.run_until_complete(many(n))
        profiler.disable()
        if dump := os.environ.get("CG_PROFILE_OUT"):  # for snakeviz or pstats later
            profiler.dump_stats(dump)
        pstats.Stats(profiler).sort_stats(os.environ.get("CG_SORT", "cumulative")).print_stats(150)
    anyio.to_thread.run_sync = _counted_run_sync  # type: ignore[assignment]
    functools.reduce(lambda _, __: loop.run_until_complete(many(n)), [0], None)
    anyio.to_thread.run_sync = _run_sync  # type: ignore[assignment]
    if counts is not None:
        print({k: v / n for k, v in counts.items()}, "per request")
    print(f"outbox: {rounds[0]} rounds for {n} requests", file=sys.stderr)
    if os.environ.get("CG_PREPARED") == "1":  # psycopg's prepared statements, per connection
        for record in list(app.state.context.database.engine.pool._pool.queue):
            prepared = record.dbapi_connection._prepared
            print(
                f"prepared: {len(prepared._names)} kept, {prepared._prepared_idx} made,",
                f"{len(prepared._counts)} seen",
                file=sys.stderr,
            )
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(lifespan.__aexit__(None, None, None))
    loop.close()


if __name__ == "__main__":
    main()
