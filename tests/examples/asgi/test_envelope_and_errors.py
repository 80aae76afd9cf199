"""The envelope on every kind of response, and the error-to-status mapping."""

from __future__ import annotations

from datetime import datetime

from tests.examples.asgi.conftest import AppFactory, Client, assert_error, data_of


def test_success_envelope_has_the_seed_shape(client: Client) -> None:
    response = client.get("/health")
    assert data_of(response) == {"status": "up"}
    stamp = response.json()["timestamp"]
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).tzinfo is not None


def test_malformed_body_is_400_in_the_envelope_without_echoing_input(client: Client) -> None:
    response = client.post(
        "/v1/auth/register", json={"email": "ada@example.com", "password": "short", "extra": 1}
    )
    error = assert_error(response, 400, "VALIDATION_ERROR")
    fields = {item["field"] for item in error["details"]["fields"]}
    assert fields == {"password", "extra"}
    assert "short" not in response.text


def test_body_that_is_not_json_is_400(client: Client) -> None:
    response = client.post(
        "/v1/auth/login", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "VALIDATION_ERROR")


def test_unknown_route_and_wrong_method_are_enveloped(client: Client) -> None:
    assert_error(client.get("/v1/nowhere"), 404, "NOT_FOUND")
    assert_error(client.delete("/v1/plans"), 405, "METHOD_NOT_ALLOWED")


def test_business_errors_map_to_their_status_and_stable_code(client: Client) -> None:
    prices = client.seed_plans()
    user = client.register()
    token = user["access_token"]
    # 404 from the library's NotFound
    assert_error(client.get("/v1/plans/plan_missing"), 404, "NOT_FOUND")
    assert_error(
        client.post("/v1/subscriptions", json={"price_id": "price_missing"}, auth=token),
        404,
        "NOT_FOUND",
    )
    sub = data_of(
        client.post("/v1/subscriptions", json={"price_id": prices["Pro monthly"]}, auth=token), 201
    )
    # 409: resuming a subscription that is not paused is an invalid transition
    assert_error(
        client.post(f"/v1/subscriptions/{sub['id']}/resume", auth=token),
        409,
        "INVALID_STATE_TRANSITION",
    )
    # 422: usage on a licensed price is well-formed but against the billing rules
    assert_error(
        client.post(f"/v1/subscriptions/{sub['id']}/usage", json={"quantity": 3}, auth=token),
        422,
        "VALIDATION_ERROR",
    )
    # 409: the same email twice
    assert_error(
        client.post(
            "/v1/auth/register", json={"email": user["email"].upper(), "password": "x" * 12}
        ),
        409,
        "CONFLICT",
    )


def test_a_fault_is_500_with_a_request_id_and_no_trace(make_client: AppFactory) -> None:
    client = make_client()

    @client.app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals at /srv/app.py line 12")

    response = client.get("/boom", headers={"X-Request-Id": "req-123"})
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert error["details"] == {"request_id": "req-123"}
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"] == "req-123"


def test_gzip_compresses_large_responses(client: Client) -> None:
    client.seed_plans()
    response = client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
