"""Register, login, token expiry, refresh rotation with reuse detection, logout, cookies."""

from __future__ import annotations

import sqlalchemy as sa

from asgi_app.database import credentials, refresh_tokens
from tests.examples.asgi.conftest import PASSWORD, Client, assert_error, data_of


def test_register_normalises_the_email_and_stores_only_an_argon2_hash(client: Client) -> None:
    data = client.register(email="  Ada@Example.COM ")
    me = data_of(client.get("/v1/users/me", auth=data["access_token"]))
    assert me["email"] == "ada@example.com"
    assert me["role"] == "user"
    with client.context.database.engine.connect() as connection:
        row = connection.execute(sa.select(credentials)).one()
        stored = {r.token_hash for r in connection.execute(sa.select(refresh_tokens))}
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in row.password_hash
    assert data["refresh_token"] not in stored  # only its SHA-256 is kept


def test_login_with_a_wrong_password_or_unknown_email_is_401(client: Client) -> None:
    user = client.register()
    wrong = client.post("/v1/auth/login", json={"email": user["email"], "password": "nope-nope"})
    unknown = client.post("/v1/auth/login", json={"email": "who@example.com", "password": "x" * 9})
    assert_error(wrong, 401, "INVALID_CREDENTIALS")
    assert_error(unknown, 401, "INVALID_CREDENTIALS")
    ok = client.post("/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
    assert data_of(ok)["expires_in"] == 3600


def test_access_tokens_expire_after_one_hour_on_the_clock(client: Client) -> None:
    token = client.register()["access_token"]
    client.clock.advance(minutes=59)
    data_of(client.get("/v1/users/me", auth=token))
    client.clock.advance(minutes=1)
    error = assert_error(client.get("/v1/users/me", auth=token), 401, "UNAUTHENTICATED")
    assert error["details"]["reason"] == "expired"


def test_missing_malformed_and_forged_tokens_are_401(client: Client) -> None:
    error = assert_error(client.get("/v1/users/me", auth=""), 401, "UNAUTHENTICATED")
    assert error["details"]["reason"] == "missing"
    response = client.get("/v1/users/me", auth="not-a-jwt")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_error(response, 401, "UNAUTHENTICATED")
    token = client.register()["access_token"]
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[::-1]}"
    assert_error(client.get("/v1/users/me", auth=forged), 401, "UNAUTHENTICATED")
    assert_error(
        client.get("/v1/users/me", headers={"Authorization": f"Basic {token}"}, auth=""),
        401,
        "UNAUTHENTICATED",
    )


def test_refresh_rotates_and_reusing_an_old_token_revokes_the_family(client: Client) -> None:
    first = client.register()["refresh_token"]
    second = data_of(client.post("/v1/auth/refresh", json={"refresh_token": first}))
    assert second["refresh_token"] != first
    third = data_of(
        client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    )
    # The first token is presented again: someone copied it. Everybody in the family is out.
    assert_error(
        client.post("/v1/auth/refresh", json={"refresh_token": first}), 401, "REFRESH_TOKEN_REUSED"
    )
    error = assert_error(
        client.post("/v1/auth/refresh", json={"refresh_token": third["refresh_token"]}),
        401,
        "INVALID_REFRESH_TOKEN",
    )
    assert error["details"]["reason"] == "revoked"


def test_another_login_is_a_separate_family(client: Client) -> None:
    user = client.register()
    other = data_of(
        client.post("/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
    )
    data_of(client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]}))
    client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})  # reuse
    data_of(client.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}))


def test_refresh_tokens_expire(client: Client) -> None:
    token = client.register()["refresh_token"]
    client.clock.advance(days=31)
    error = assert_error(
        client.post("/v1/auth/refresh", json={"refresh_token": token}), 401, "INVALID_REFRESH_TOKEN"
    )
    assert error["details"]["reason"] == "expired"


def test_logout_revokes_the_refresh_family(client: Client) -> None:
    token = client.register()["refresh_token"]
    data_of(client.post("/v1/auth/logout", json={"refresh_token": token}))
    assert_error(
        client.post("/v1/auth/refresh", json={"refresh_token": token}), 401, "INVALID_REFRESH_TOKEN"
    )


def test_refresh_picks_up_a_new_role(client: Client) -> None:
    user = client.register()
    admin = client.admin_token()
    data_of(
        client.patch(f"/v1/admin/users/{user['user']['id']}", json={"role": "admin"}, auth=admin)
    )
    assert_error(client.get("/v1/admin/users", auth=user["access_token"]), 403, "FORBIDDEN")
    fresh = data_of(client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]}))
    data_of(client.get("/v1/admin/users", auth=fresh["access_token"]))


def test_cookie_mode_keeps_tokens_out_of_the_body(client: Client) -> None:
    user = client.register()
    response = client.post(
        "/v1/auth/login", json={"email": user["email"], "password": PASSWORD, "cookie": True}
    )
    data = data_of(response)
    assert "access_token" not in data
    assert "refresh_token" not in data
    cookies = response.headers.get_list("set-cookie")
    assert all("HttpOnly" in c and "SameSite=strict" in c for c in cookies)
    access = response.cookies["lq_access"]
    me = client.get("/v1/users/me", auth="", headers={"Cookie": f"lq_access={access}"})
    assert data_of(me)["id"] == user["user"]["id"]
    refresh = response.cookies["lq_refresh"]
    rotated = client.post("/v1/auth/refresh", auth="", headers={"Cookie": f"lq_refresh={refresh}"})
    assert "lq_refresh" in rotated.cookies


def test_refresh_without_a_token_is_400(client: Client) -> None:
    assert_error(client.post("/v1/auth/refresh", json={}), 400, "VALIDATION_ERROR")
    assert_error(
        client.post("/v1/auth/refresh", json={"refresh_token": "made-up"}),
        401,
        "INVALID_REFRESH_TOKEN",
    )
