"""The example app served by uvicorn, loaded over loopback: requests/s and p50/p99 latency.

Run: ``.venv/bin/python benchmarks/bench_api.py`` (2,000 timed requests per figure) or
with ``--requests N``; ``--smoke`` uses 200, to prove the benchmark still works (well
under a minute, no PostgreSQL needed).

Each server is a separate process, ``uvicorn`` with one worker on 127.0.0.1 and a free
port, started the way ``python -m asgi_app`` serves the app (no access log; the app's
own request log goes to a file). This process loads them with ``httpx.AsyncClient``
keeping ``--concurrency`` (16) requests in flight over keep-alive connections, after a
warm-up; each latency is one request's round trip as the client sees it. Measured in
the same run:

- ``GET /v1/plans`` (anonymous; envelope, middleware, rate limiter, request log,
  catalog cache) on the example app over an SQLite file seeded with the demo plans,
  beside a bare FastAPI hello-world (``benchmarks/_hello_app.py``, one sync route)
  served the same way; the share of the bare requests/s is the figure (target ≥ 50 %);
- ``POST /v1/subscriptions`` on PostgreSQL (target ≥ 300 requests/s, p99 < 100 ms):
  a throwaway database is created, the app started with ``LUMENQUEST_DATABASE_URL``
  on it (migrated and seeded at start-up), users registered and logged in through the
  API (not timed); each timed request subscribes one of them, with its bearer token, to
  the seeded "Pro" price, which starts a 14-day trial (subscription, events, audit,
  history; nothing is charged), and, as a second figure (``subscribe_paid_*``), to the
  "Business" price, which has no trial (an invoice, a charge through the fake gateway
  and its settlement as well). Under wrk, ``*_server_cpu_ms`` is the server process's
  CPU time per request: one worker cannot serve more than 1000 / that many a second.
  The database is dropped afterwards. PostgreSQL is ``--postgres-url`` (default
  ``LUMENQUEST_POSTGRES_URL`` or the local ``test`` database); without it this part is
  skipped (``"postgres_skipped": 1``) unless ``LUMENQUEST_REQUIRE_SERVICES=1``.

Rate limits are raised (not switched off) and argon2 made cheap through the app's
``LUMENQUEST_*`` variables; nothing else in the environment's ``LUMENQUEST_*`` reaches
the servers (so no Redis: in-memory limiter and cache, as a one-worker server has).
The client shares the machine with the servers, so the figures are a floor. A full run
loads with ``wrk`` (Debian's package; one thread, ``--seconds`` per figure, its own
latency percentiles) when it is installed, since a Python client tops out near the
hello-world's rate and would measure itself; ``--smoke`` and machines without wrk use
httpx (``"wrk_used": 0``). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import httpx
import sqlalchemy as sa

from lumenquest_adapters.sqlalchemy import create_engine_for

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
READY_ATTEMPTS = 300  # polls 0.05 s apart: up to ~15 s for a server to answer
PLANS_TARGET_PCT = 50
SUBSCRIBE_TARGET_PER_S = 300
SUBSCRIBE_TARGET_P99_MS = 100

# The app's own variables: limits far above what the run sends, cheap password hashing
# (setup only), a fixed signing key, the request log kept (a file, not a terminal).
APP_ENV = {
    "LUMENQUEST_RATE_LIMIT_AUTH": "10000000",
    "LUMENQUEST_RATE_LIMIT_API": "10000000",
    "LUMENQUEST_RATE_LIMIT_ADMIN": "10000000",
    "LUMENQUEST_ARGON2_TIME_COST": "1",
    "LUMENQUEST_ARGON2_MEMORY_KIB": "64",
    "LUMENQUEST_JWT_SECRET": "bench-secret-bench-secret-bench-secret-0123",
}

Request = Callable[[httpx.AsyncClient, int], Any]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_env(**extra: str) -> dict[str, str]:
    """Return this environment without its ``LUMENQUEST_*`` variables, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMENQUEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "examples"), str(ROOT)])
    return env | APP_ENV | extra


class Server:
    """One uvicorn process on 127.0.0.1; its output goes to a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._output: IO[bytes] = log.open("wb")
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env=env,
            cwd=ROOT,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, path: str) -> None:
        """Poll ``path`` until it answers 200 (bounded), or raise with the server's output."""
        with httpx.Client(base_url=self.base_url, timeout=2) as client:
            for _ in range(READY_ATTEMPTS):
                if self.process.poll() is not None:
                    break
                with suppress(httpx.TransportError):
                    if client.get(path).status_code == 200:
                        return
                time.sleep(0.05)
        raise SystemExit(f"{self.name} did not come up:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        """Return the last lines the server printed."""
        self._output.flush()
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """Terminate the process we started (kill it if it will not stop)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self._output.close()


@contextmanager
def serving(servers: list[Server]) -> Iterator[None]:
    """Stop every server in ``servers`` on the way out, whatever happened."""
    try:
        yield
    finally:
        for server in servers:
            server.stop()


def app_server(name: str, database_url: str, directory: Path) -> Server:
    """Start ``python -m asgi_app --demo`` (migrates, seeds the demo plans) on ``database_url``."""
    return Server(
        name,
        [sys.executable, "-m", "asgi_app", "--demo"],
        server_env(LUMENQUEST_DATABASE_URL=database_url),
        directory / f"{name}.log",
    )


def percentile_ms(samples: list[float], q: float) -> float:
    """Return the q-th percentile (0..1) of ``samples`` (seconds) in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def load(
    client: httpx.AsyncClient, n: int, concurrency: int, request: Request, expected: int
) -> tuple[float, list[float]]:
    """Send ``n`` requests, ``concurrency`` in flight; return (requests/s, latencies in s)."""
    samples: list[float] = []
    counter = iter(range(n))
    failures: list[str] = []

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            response = await request(client, index)
            samples.append(time.perf_counter() - started)
            if response.status_code != expected and len(failures) < 3:
                failures.append(f"{response.status_code} {response.text[:300]}")

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    if failures:
        raise SystemExit(f"unexpected responses: {failures}")
    return n / elapsed, samples


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: int, concurrency: int, script: Path | None = None) -> dict[str, float]:
    """Load ``url`` with wrk (one thread); return requests/s and p50/p99 in milliseconds."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    out = done.stdout
    if "Non-2xx or 3xx responses" in out:
        raise SystemExit(f"unexpected responses from {url}:\n{out}")

    def latency(percent: str) -> float:
        value = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if value is None:
            raise SystemExit(f"no {percent}% latency in wrk's output:\n{out}")
        return float(value[1]) * _WRK_UNITS[value[2]]

    per_s = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    count = re.search(r"^\s+(\d+) requests in ", out, re.MULTILINE)
    if per_s is None or count is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{out}")
    return {
        "req_per_s": float(per_s[1]),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": float(count[1]),
    }


def cpu_seconds(pid: int) -> float | None:
    """Return the CPU time (user + system) process ``pid`` has used, where /proc tells."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def subscribe_script(directory: Path, tokens: list[str], price_id: str) -> Path:
    """Write a wrk script that subscribes, cycling over the users' bearer tokens."""
    script = directory / "subscribe.lua"
    quoted = ", ".join(json.dumps(token) for token in tokens)
    body = json.dumps(json.dumps({"price_id": price_id}))
    script.write_text(
        f"local tokens = {{{quoted}}}\n"
        "local count = 0\n"
        "request = function()\n"
        "  count = count + 1\n"
        "  local headers = {['Content-Type'] = 'application/json',\n"
        "    ['Authorization'] = 'Bearer ' .. tokens[(count % #tokens) + 1]}\n"
        f"  return wrk.format('POST', '/v1/subscriptions', headers, {body})\n"
        "end\n"
    )
    return script


def client_for(server: Server, concurrency: int) -> httpx.AsyncClient:
    """Return a keep-alive client for ``server`` with one connection per in-flight request."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30)


async def measure_get(
    server: Server, path: str, n: int, concurrency: int, prefix: str
) -> dict[str, float]:
    """Warm ``server`` up, then time ``n`` GETs of ``path``."""

    async def get(client: httpx.AsyncClient, _: int) -> httpx.Response:
        return await client.get(path)

    async with client_for(server, concurrency) as client:
        await load(client, 4 * concurrency, concurrency, get, 200)  # warm-up, not timed
        per_s, samples = await load(client, n, concurrency, get, 200)
    return {
        f"{prefix}_req_per_s": per_s,
        f"{prefix}_p50_ms": percentile_ms(samples, 0.5),
        f"{prefix}_p99_ms": percentile_ms(samples, 0.99),
    }


async def measure_subscribe(
    server: Server, n: int, concurrency: int, wrk_seconds: int = 0, plan_name: str = "Pro"
) -> dict[str, float]:
    """Register users (not timed), then time subscriptions to the plan's first price.

    ``n`` requests through httpx, or ``wrk_seconds`` of wrk when that is given. The
    figures are named ``subscribe_*`` for Pro (a trial) and ``subscribe_paid_*`` else.
    """
    prefix = "subscribe" if plan_name == "Pro" else "subscribe_paid"
    async with client_for(server, concurrency) as client:
        plans = (await client.get("/v1/plans")).json()["data"]["items"]
        chosen = next(plan for plan in plans if plan["name"] == plan_name)
        price_id = chosen["prices"][0]["id"]
        run = uuid.uuid4().hex[:8]

        async def sign_in(index: int) -> dict[str, str]:
            credentials = {
                "email": f"bench-{run}-{index}@example.com",
                "password": "bench-password-1",
            }
            registered = await client.post("/v1/auth/register", json=credentials)
            assert registered.status_code == 201, registered.text
            login = await client.post("/v1/auth/login", json=credentials)
            assert login.status_code == 200, login.text
            return {"Authorization": f"Bearer {login.json()['data']['access_token']}"}

        users = await asyncio.gather(*(sign_in(i) for i in range(2 * concurrency)))

        async def subscribe(client: httpx.AsyncClient, index: int) -> httpx.Response:
            headers = users[index % len(users)]
            return await client.post(
                "/v1/subscriptions", json={"price_id": price_id}, headers=headers
            )

        await load(client, 2 * concurrency, concurrency, subscribe, 201)  # warm-up
        if wrk_seconds:
            tokens = [user["Authorization"].removeprefix("Bearer ") for user in users]
            script = subscribe_script(server.log.parent, tokens, price_id)
            before = cpu_seconds(server.process.pid)
            found = wrk(server.base_url, wrk_seconds, concurrency, script)
            after = cpu_seconds(server.process.pid)
            requests = found.pop("requests")
            if before is not None and after is not None and requests:
                # The one server process's CPU a request costs: with one worker its
                # requests/s cannot pass 1000 / this, whatever the database does.
                found["server_cpu_ms"] = 1000 * (after - before) / requests
            return {f"{prefix}_{k}": v for k, v in found.items()} | {f"{prefix}_users": len(users)}
        per_s, samples = await load(client, n, concurrency, subscribe, 201)
    return {
        f"{prefix}_req_per_s": per_s,
        f"{prefix}_p50_ms": percentile_ms(samples, 0.5),
        f"{prefix}_p99_ms": percentile_ms(samples, 0.99),
        f"{prefix}_users": len(users),
    }


def measure_plans(
    n: int, concurrency: int, directory: Path, wrk_seconds: int = 0
) -> dict[str, float]:
    """``GET /v1/plans`` on the example app beside the bare hello-world, same run."""
    app = app_server("plans-app", f"sqlite:///{directory / 'bench.db'}", directory)
    hello = Server(
        "hello-app",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "_hello_app:app",
            "--app-dir",
            str(ROOT / "benchmarks"),
            "--host",
            "127.0.0.1",
            "--workers",
            "1",
            "--no-access-log",
        ],
        server_env(),
        directory / "hello-app.log",
    )
    with serving([app, hello]):
        app.wait_ready("/health")
        hello.wait_ready("/hello")
        if wrk_seconds:
            wrk(f"{app.base_url}/v1/plans", 2, concurrency)  # warm-up, not kept
            plans = wrk(f"{app.base_url}/v1/plans", wrk_seconds, concurrency)
            wrk(f"{hello.base_url}/hello", 2, concurrency)
            bare = wrk(f"{hello.base_url}/hello", wrk_seconds, concurrency)
            figures = {f"plans_{k}": v for k, v in plans.items() if k != "requests"}
            figures |= {f"hello_{k}": v for k, v in bare.items() if k != "requests"}
        else:
            figures = asyncio.run(measure_get(app, "/v1/plans", n, concurrency, "plans"))
            figures |= asyncio.run(measure_get(hello, "/hello", n, concurrency, "hello"))
    figures["plans_share_of_hello_pct"] = (
        100 * figures["plans_req_per_s"] / figures["hello_req_per_s"]
    )
    figures["plans_meets_target"] = int(figures["plans_share_of_hello_pct"] >= PLANS_TARGET_PCT)
    return figures


def postgres_admin(url: str) -> sa.Engine | None:
    """Return an autocommit engine on ``url``, or None when PostgreSQL is unreachable."""
    try:
        admin = create_engine_for(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except Exception as exc:  # any failure to connect means: no PostgreSQL here
        if os.environ.get("LUMENQUEST_REQUIRE_SERVICES") == "1":
            raise SystemExit(f"PostgreSQL is required but unreachable: {exc}") from exc
        return None
    return admin


def measure_postgres(
    url: str, n: int, concurrency: int, directory: Path, wrk_seconds: int = 0
) -> dict[str, float]:
    """``POST /v1/subscriptions`` on a throwaway PostgreSQL database, or the skip marker."""
    admin = postgres_admin(url)
    if admin is None:
        return {"postgres_skipped": 1}
    name = f"lq_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        database_url = admin.url.set(database=name).render_as_string(hide_password=False)
        app = app_server("subscribe-app", database_url, directory)
        with serving([app]):
            app.wait_ready("/health")
            figures = asyncio.run(measure_subscribe(app, n, concurrency, wrk_seconds))
            figures |= asyncio.run(
                measure_subscribe(app, n, concurrency, wrk_seconds, plan_name="Business")
            )
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    for prefix in ("subscribe", "subscribe_paid"):
        figures[f"{prefix}_meets_target"] = int(
            figures[f"{prefix}_req_per_s"] >= SUBSCRIBE_TARGET_PER_S
            and figures[f"{prefix}_p99_ms"] < SUBSCRIBE_TARGET_P99_MS
        )
    figures["postgres_skipped"] = 0
    return figures


def main() -> None:
    """Parse the arguments, measure, print a table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per figure")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--smoke", action="store_true", help="200 requests: does it still run")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("LUMENQUEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    parser.add_argument(
        "--seconds", type=int, default=10, help="wrk's duration per figure (when wrk is used)"
    )
    args = parser.parse_args()
    n = 200 if args.smoke else args.requests
    # wrk (Debian's package) loads from C and so measures the server, not the client;
    # without it, or for --smoke, the httpx client sets the ceiling of every figure.
    wrk_seconds = 0 if args.smoke or shutil.which("wrk") is None else args.seconds
    if n < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    with tempfile.TemporaryDirectory() as directory:
        figures: dict[str, float] = {"requests_per_figure": n, "concurrency": args.concurrency}
        figures["wrk_used"] = int(wrk_seconds > 0)
        figures |= measure_plans(n, args.concurrency, Path(directory), wrk_seconds)
        figures |= measure_postgres(
            args.postgres_url, n, args.concurrency, Path(directory), wrk_seconds
        )
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:12.2f}")
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
