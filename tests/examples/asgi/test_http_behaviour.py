"""Rate limits, security headers, CORS, pagination and sparse fieldsets."""

from __future__ import annotations

import uuid

from lumenquest_adapters.config import Settings
from tests.examples.asgi.conftest import AppFactory, Client, assert_error, data_of


def test_auth_routes_allow_five_a_minute_then_429_with_retry_after(make_client: AppFactory) -> None:
    client = make_client(rate_limit_auth=5)
    body = {"email": "nobody@example.com", "password": "whatever-1"}
    statuses = [client.post("/v1/auth/login", json=body).status_code for _ in range(5)]
    assert statuses == [401] * 5
    refused = client.post("/v1/auth/login", json=body)
    error = assert_error(refused, 429, "RATE_LIMITED")
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert error["details"]["retry_after_seconds"] == retry_after
    assert refused.headers["ratelimit-limit"] == "5"
    assert refused.headers["ratelimit-remaining"] == "0"
    # The window passes on the clock: allowed again.
    client.clock.advance(seconds=retry_after)
    assert client.post("/v1/auth/login", json=body).status_code == 401


def test_api_limits_count_per_user_and_admin_has_its_own(make_client: AppFactory) -> None:
    client = make_client(rate_limit_api=3, rate_limit_admin=4)
    ada = client.register()["access_token"]
    bob = client.register()["access_token"]
    for remaining in ("2", "1", "0"):
        response = client.get("/v1/users/me", auth=ada)
        assert response.headers["ratelimit-remaining"] == remaining
    assert_error(client.get("/v1/users/me", auth=ada), 429, "RATE_LIMITED")
    data_of(client.get("/v1/users/me", auth=bob))  # another client, another budget
    admin = client.admin_token()
    assert [client.get("/v1/admin/users", auth=admin).status_code for _ in range(5)] == [
        200,
        200,
        200,
        200,
        429,
    ]
    # Probes and the docs are never limited.
    assert {client.get("/health").status_code for _ in range(10)} == {200}


def test_rate_limits_go_through_redis_when_configured(
    make_client: AppFactory, redis_url: str, sqlite_template: object, tmp_path: object
) -> None:
    import shutil  # noqa: PLC0415

    path = f"{tmp_path}/redis.db"
    shutil.copyfile(str(sqlite_template), path)
    settings = Settings(
        database_url=f"sqlite:///{path}",
        migrate=False,
        redis_url=redis_url,
        redis_prefix=f"lq-asgi-test-{uuid.uuid4().hex}:",
    )
    client = make_client(settings=settings, rate_limit_auth=2)
    body = {"email": "nobody@example.com", "password": "whatever-1"}
    assert [client.post("/v1/auth/login", json=body).status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]
    assert data_of(client.get("/status"))["checks"]["redis"]["status"] == "up"


def test_security_headers_on_every_response(make_client: AppFactory) -> None:
    client = make_client()
    for response in (client.get("/health"), client.get("/v1/nowhere"), client.get("/v1/users/me")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers
        assert response.headers["x-request-id"]
    behind_tls = make_client(behind_tls=True)
    assert "max-age=" in behind_tls.get("/health").headers["strict-transport-security"]


def test_cors_is_configurable_and_off_in_production(make_client: AppFactory) -> None:
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Idempotency-Key",
    }
    allowed = make_client(cors_origins=["https://app.example.com"])
    response = allowed.request("OPTIONS", "/v1/subscriptions", headers=preflight)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "Idempotency-Key" in response.headers["access-control-allow-headers"]
    other = allowed.get("/health", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers
    production = make_client(environment="production")
    response = production.get("/health", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in response.headers


def test_pagination_walks_every_item_once_and_fields_select(client: Client) -> None:
    admin = client.admin_token()
    for n in range(5):
        data_of(client.post("/v1/admin/plans", json={"name": f"Plan {n}"}, auth=admin), 201)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, "fields": "name"} | ({"cursor": cursor} if cursor else {})
        page = data_of(client.get("/v1/admin/plans", params=params, auth=admin))
        pages += 1
        for item in page["items"]:
            assert set(item) == {"id", "name"}
            seen.append(item["name"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"Plan {n}" for n in range(5)]
    assert pages == 3
    assert_error(
        client.get("/v1/admin/plans", params={"cursor": "nope"}, auth=admin), 400, "INVALID_CURSOR"
    )
    assert_error(
        client.get("/v1/admin/plans", params={"limit": 0}, auth=admin), 400, "VALIDATION_ERROR"
    )
    assert_error(
        client.get("/v1/admin/plans", params={"fields": "a;b"}, auth=admin), 400, "VALIDATION_ERROR"
    )


def test_store_paged_lists_use_the_store_cursor(client: Client) -> None:
    admin = client.admin_token()
    ids = {client.register()["user"]["id"] for _ in range(3)}
    first = data_of(client.get("/v1/admin/users", params={"limit": 2}, auth=admin))
    rest = data_of(
        client.get(
            "/v1/admin/users", params={"limit": 2, "cursor": first["next_cursor"]}, auth=admin
        )
    )
    listed = [u["id"] for u in first["items"] + rest["items"]]
    assert ids <= set(listed)
    assert len(listed) == len(set(listed)) == 4  # three users and the admin
    assert rest["next_cursor"] is None


def test_payments_are_paged_by_the_store_and_an_unknown_cursor_is_refused(client: Client) -> None:
    prices = client.seed_plans()
    user, other = client.register(), client.register()
    for _ in range(3):
        data_of(
            client.post(
                "/v1/subscriptions",
                json={"price_id": prices["Business per seat"]},
                auth=user["access_token"],
            ),
            201,
        )
    token = user["access_token"]
    first = data_of(client.get("/v1/payments", params={"limit": 2}, auth=token))
    rest = data_of(
        client.get("/v1/payments", params={"limit": 2, "cursor": first["next_cursor"]}, auth=token)
    )
    ids = [p["id"] for p in first["items"] + rest["items"]]
    assert len(ids) == len(set(ids)) == 3
    assert rest["next_cursor"] is None
    assert data_of(client.get("/v1/payments", auth=other["access_token"]))["items"] == []
    assert_error(
        client.get("/v1/payments", params={"cursor": "pay_404"}, auth=token), 400, "INVALID_CURSOR"
    )
