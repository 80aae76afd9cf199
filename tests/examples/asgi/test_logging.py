"""Structured JSON logs: one line per request with its id, user and route, and never a secret."""

from __future__ import annotations

import json

import pytest

from asgi_app import logs
from tests.examples.asgi.conftest import PASSWORD, Client, data_of


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lumenquest.api"]


def test_request_lines_carry_request_id_user_and_route(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="lumenquest.api")
    user = client.register()
    client.get("/v1/users/me", auth=user["access_token"], headers={"X-Request-Id": "abc-1"})
    line = next(entry for entry in _lines(caplog) if entry.get("request_id") == "abc-1")
    assert line["user_id"] == user["user"]["id"]
    assert line["route"] == "/v1/users/me"
    assert line["status"] == 200
    assert line["level"] == "info"


def test_passwords_tokens_keys_and_card_numbers_never_reach_the_logs(
    client: Client, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level("DEBUG", logger="lumenquest.api")
    card = "4242 4242 4242 4242"
    secret_password = "hunter2-" + PASSWORD
    user = client.register(password=secret_password)
    login = data_of(
        client.post("/v1/auth/login", json={"email": user["email"], "password": secret_password})
    )
    tokens = [user["access_token"], user["refresh_token"], login["access_token"]]
    client.get("/v1/users/me", auth=login["access_token"])
    client.get(f"/v1/plans?card={card.replace(' ', '')}&token={login['refresh_token']}")
    data_of(client.post("/v1/auth/refresh", json={"refresh_token": login["refresh_token"]}))
    client.post(
        "/v1/auth/refresh", json={"refresh_token": login["refresh_token"]}
    )  # reuse: a warning

    # A careless log call in a route, with secrets in keys and in free text.
    logger = client.context.logger
    logger.info(
        "careless",
        password=secret_password,
        stripe_api_key="sk_live_abcdefghijklmnop",
        note=f"user typed {card} and Bearer {tokens[0]}",
        nested={"card_number": card, "ok": "visible"},
    )

    captured = caplog.text + capsys.readouterr().out
    assert "careless" in captured
    assert "visible" in captured
    for secret in [
        secret_password,
        card,
        card.replace(" ", ""),
        "sk_live_abcdefghijklmnop",
        *tokens,
    ]:
        assert secret not in captured, f"leaked: {secret[:12]}…"
    assert any(
        entry.get("event") == "refresh token reuse: family revoked" for entry in _lines(caplog)
    )


def test_a_500_logs_the_traceback_but_not_the_secrets(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="lumenquest.api")

    @client.app.get("/explode")
    def explode() -> None:
        raise RuntimeError("card 4000 0000 0000 0002 failed")

    client.get("/explode", headers={"X-Request-Id": "boom-1"})
    errors = [e for e in _lines(caplog) if e.get("level") == "error"]
    assert errors
    assert errors[0]["request_id"] == "boom-1"
    assert "RuntimeError" in str(errors[0]["exception"])
    assert "4000 0000 0000 0002" not in caplog.text


@pytest.mark.parametrize(
    "text",
    [
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl here",
        "header: bEaReR abc.def-123",
        "card 4242-4242-4242-4242 used",
        "key rk_test_0123456789 leaked",
        "key SG.abc-def.ghi_jkl leaked",
        "/v1/subscriptions/sub_0123456789abcdef",
        "2026-11-26T01:00:00.000000Z",
        "",
    ],
)
def test_scrub_matches_the_patterns_applied_one_by_one(text: str) -> None:
    # The one-pass pre-check must never let through what the patterns would mask.
    expected = text
    for pattern in logs._SENSITIVE_TEXT:
        expected = pattern.sub(logs.REDACTED, expected)
    assert logs._scrub(text) == expected
