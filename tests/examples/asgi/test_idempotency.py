"""Idempotency-Key on POST: a replay returns the first result; other arguments are a 409."""

from __future__ import annotations

from tests.examples.asgi.conftest import Client, assert_error, data_of


def test_a_replayed_subscribe_returns_the_first_subscription(client: Client) -> None:
    prices = client.seed_plans()
    client.token = client.register()["access_token"]
    body = {"price_id": prices["Business per seat"], "quantity": 2}
    headers = {"Idempotency-Key": "order-42"}
    first = data_of(client.post("/v1/subscriptions", json=body, headers=headers), 201)
    again = data_of(client.post("/v1/subscriptions", json=body, headers=headers), 201)
    assert again["id"] == first["id"]
    assert len(data_of(client.get("/v1/subscriptions"))["items"]) == 1
    assert len(data_of(client.get("/v1/payments"))["items"]) == 1  # charged once
    other = {"price_id": prices["Business per seat"], "quantity": 3}
    assert_error(
        client.post("/v1/subscriptions", json=other, headers=headers), 409, "IDEMPOTENCY_CONFLICT"
    )


def test_keys_belong_to_their_user(client: Client) -> None:
    prices = client.seed_plans()
    body = {"price_id": prices["Pro monthly"]}
    headers = {"Idempotency-Key": "same-key"}
    ada = client.register()["access_token"]
    bob = client.register()["access_token"]
    first = data_of(client.post("/v1/subscriptions", json=body, headers=headers, auth=ada), 201)
    second = data_of(client.post("/v1/subscriptions", json=body, headers=headers, auth=bob), 201)
    assert first["id"] != second["id"]
    assert first["customer_id"] != second["customer_id"]


def test_a_replayed_cancel_and_admin_create(client: Client) -> None:
    prices = client.seed_plans()
    admin = client.admin_token()
    client.token = client.register()["access_token"]
    sub = data_of(client.post("/v1/subscriptions", json={"price_id": prices["Pro monthly"]}), 201)
    headers = {"Idempotency-Key": "cancel-1"}
    url = f"/v1/subscriptions/{sub['id']}/cancel"
    first = data_of(client.post(url, json={"at_period_end": False}, headers=headers))
    again = data_of(client.post(url, json={"at_period_end": False}, headers=headers))
    assert first["status"] == again["status"] == "canceled"
    plan_headers = {"Idempotency-Key": "plan-1"}
    one = data_of(
        client.post("/v1/admin/plans", json={"name": "X"}, headers=plan_headers, auth=admin), 201
    )
    two = data_of(
        client.post("/v1/admin/plans", json={"name": "X"}, headers=plan_headers, auth=admin), 201
    )
    assert one["id"] == two["id"]


def test_an_overlong_key_is_400(client: Client) -> None:
    client.token = client.register()["access_token"]
    response = client.post(
        "/v1/subscriptions", json={"price_id": "p"}, headers={"Idempotency-Key": "k" * 201}
    )
    assert_error(response, 400, "VALIDATION_ERROR")


def test_a_key_out_of_bounds_is_a_400_and_charges_nothing(client: Client) -> None:
    prices = client.seed_plans()
    client.token = client.register()["access_token"]
    body = {"price_id": prices["Business per seat"]}
    for key in ("", "k" * 201):
        response = client.post("/v1/subscriptions", json=body, headers={"Idempotency-Key": key})
        assert_error(response, 400, "VALIDATION_ERROR")
    assert data_of(client.get("/v1/payments"))["items"] == []


def test_signed_in_writes_document_the_key_and_the_bearer_token(client: Client) -> None:
    """The key is a plain header parameter and auth one dependency: the schema is as before."""
    schema = client.app.openapi()
    assert schema["components"]["securitySchemes"] == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "an access token from /v1/auth/login",
        }
    }
    for path, method in (("/v1/subscriptions", "post"), ("/v1/admin/plans", "post")):
        operation = schema["paths"][path][method]
        assert operation["security"] == [{"HTTPBearer": []}]
        (key,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert key["in"] == "header"
        assert key["required"] is False
        assert {("minLength", 1), ("maxLength", 200)} <= key["schema"]["anyOf"][0].items()
    register = schema["paths"]["/v1/auth/register"]["post"]
    assert "security" not in register
