"""In-process clients for the example app: a migrated SQLite template copied per test, a test clock."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))

from asgi_app.config import AppSettings  # noqa: E402
from asgi_app.main import create_app  # noqa: E402
from asgi_app.seed import seed_admin, seed_plans  # noqa: E402
from lumenquest_adapters.config import Settings  # noqa: E402
from lumenquest_adapters.memory import FakeGateway, TestClock  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)
PASSWORD = "correct horse battery staple"

# Cheap argon2 for tests (the production default costs ~50 ms a hash) and limits high
# enough that only the rate-limit tests meet them.
FAST = {
    "argon2_time_cost": 1,
    "argon2_memory_kib": 64,
    "rate_limit_auth": 10_000,
    "rate_limit_api": 10_000,
    "rate_limit_admin": 10_000,
    "jwt_secret": "test-secret-test-secret-test-secret-0123456789",
}


class Client:
    """A synchronous face on httpx's in-process ASGI transport (no network, no threads per call)."""

    def __init__(self, app: FastAPI, portal: BlockingPortal) -> None:
        self.app = app
        self._portal = portal
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        self.token: str | None = None

    def request(
        self, method: str, url: str, *, auth: str | None = None, **options: Any
    ) -> httpx.Response:
        headers = dict(options.pop("headers", {}) or {})
        token = auth if auth is not None else self.token
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        call = partial(self._client.request, method, url, headers=headers, **options)
        return self._portal.call(call)

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)

    def patch(self, url: str, **options: Any) -> httpx.Response:
        return self.request("PATCH", url, **options)

    def delete(self, url: str, **options: Any) -> httpx.Response:
        return self.request("DELETE", url, **options)

    @property
    def context(self) -> Any:
        return self.app.state.context

    @property
    def clock(self) -> TestClock:
        clock: TestClock = self.context.billing.clock
        return clock

    def register(self, email: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
        """Register a new user and return its token data (the client keeps no token)."""
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        response = self.post(
            "/v1/auth/register", json={"email": email, "password": password}, auth=""
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        data["email"] = email
        return data

    def admin_token(self) -> str:
        """Seed the demo admin and return an access token for it."""
        account = seed_admin(self.context)
        response = self.post(
            "/v1/auth/login", json={"email": account.email, "password": account.password}, auth=""
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["data"]["access_token"]
        return token

    def seed_plans(self) -> dict[str, str]:
        """Seed the demo catalog; return price ids by nickname."""
        seed_plans(self.context)
        prices = self.context.billing.list_prices()
        return {price.nickname: price.id for price in prices}


@pytest.fixture(scope="session")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as running:
        yield running


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated once (lumenquest's schema and the app's tables) for every test to copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    app = create_app(Settings(database_url=f"sqlite:///{path}"), app_settings=AppSettings(**FAST))
    app.state.context.database.dispose()
    return path


AppFactory = Callable[..., Client]


@pytest.fixture
def make_client(
    sqlite_template: Path, tmp_path: Path, portal: BlockingPortal
) -> Iterator[AppFactory]:
    made: list[Client] = []

    def make(
        *,
        settings: Settings | None = None,
        gateway: Any = None,
        email: Any = None,
        **app_options: Any,
    ) -> Client:
        if settings is None:
            path = tmp_path / f"{uuid.uuid4().hex}.db"
            shutil.copyfile(sqlite_template, path)
            settings = Settings(database_url=f"sqlite:///{path}", migrate=False)
        app = create_app(
            settings,
            app_settings=AppSettings(**{**FAST, **app_options}),
            clock=TestClock(START),
            gateway=gateway or FakeGateway(),
            email=email,
        )
        client = Client(app, portal)
        made.append(client)
        return client

    yield make
    for client in made:
        portal.call(client._client.aclose)
        # The outbox dispatcher (PostgreSQL) may still be delivering: let it finish first.
        portal.call(client.context.dispatcher.close)
        client.context.database.dispose()


@pytest.fixture
def client(make_client: AppFactory) -> Client:
    return make_client()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert an error envelope with ``status`` and ``code``; return its error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error", "timestamp"}, body
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    error: dict[str, Any] = body["error"]
    return error


def data_of(response: httpx.Response, status: int = 200) -> Any:
    """Assert a success envelope with ``status``; return its data."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "data", "message", "timestamp"}, body
    assert body["success"] is True
    return body["data"]


@pytest.fixture(scope="module")
def postgres_database(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A schema of its own and a login role that RLS binds; yields (app URL, owner URL)."""
    import sqlalchemy as sa  # noqa: PLC0415

    schema = f"lq_asgi_{uuid.uuid4().hex[:10]}"
    role = f"lq_asgi_app_{uuid.uuid4().hex[:10]}"
    owner = sa.create_engine(postgres_url)
    with owner.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    path = f"?options=-csearch_path%3D{schema}"
    owner_url = sa.make_url(postgres_url).render_as_string(hide_password=False) + path
    app_url = (
        sa.make_url(postgres_url).set(username=role).render_as_string(hide_password=False) + path
    )
    try:
        yield app_url, owner_url
    finally:
        with owner.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            exists = connection.execute(
                sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
            ).first()
            if exists is not None:
                connection.exec_driver_sql(f'DROP OWNED BY "{role}"')
                connection.exec_driver_sql(f'DROP ROLE "{role}"')
        owner.dispose()


@pytest.fixture
def make_pg_client(postgres_database: tuple[str, str], make_client: AppFactory) -> AppFactory:
    """Make clients on PostgreSQL, serving as a role row-level security binds (tables emptied first)."""
    import sqlalchemy as sa  # noqa: PLC0415

    app_url, owner_url = postgres_database

    def make(**options: Any) -> Client:
        client = make_client(
            settings=Settings(database_url=app_url), owner_database_url=owner_url, **options
        )
        owner = client.context.database.owner_engine
        from asgi_app.database import metadata as app_metadata  # noqa: PLC0415
        from lumenquest_adapters.sqlalchemy import metadata  # noqa: PLC0415

        tables = [*metadata.sorted_tables, *app_metadata.sorted_tables]
        with owner.begin() as connection:
            connection.exec_driver_sql(f"TRUNCATE {', '.join(t.name for t in tables)} CASCADE")
            connection.execute(sa.text("INSERT INTO invoice_number_sequence VALUES (1, 0)"))
        return client

    return make


@pytest.fixture
def pg_client(make_pg_client: AppFactory) -> Client:
    """A client on PostgreSQL, serving as a role row-level security binds (tables emptied first)."""
    return make_pg_client()
