"""Every route × {anonymous, user, another user, admin}: exactly the expected access decision.

The table must name every operation of the app's OpenAPI schema (the test enumerates
them), so a new route without a decision here fails the suite.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.examples.asgi.conftest import Client, data_of

# How a route decides who may call it:
#   public   anyone
#   auth     anyone (the body decides; an empty one is a 400)
#   own      signed-in; another user's resource is a 404; nobody's is refused with 401
#   self     signed-in, acting on oneself only (no resource id in the path)
#   admin    the admin role
#   webhook  signed by the gateway (not configured here: 404 for everyone)
#   probe    anyone
ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v1/auth/register"): "auth",
    ("POST", "/v1/auth/login"): "auth",
    ("POST", "/v1/auth/refresh"): "auth",
    ("POST", "/v1/auth/logout"): "public",
    ("GET", "/v1/plans"): "public",
    ("GET", "/v1/plans/{plan_id}"): "public",
    ("GET", "/v1/users/me"): "self",
    ("PATCH", "/v1/users/me"): "self",
    ("GET", "/v1/users/me/export"): "self",
    ("GET", "/v1/subscriptions"): "self",
    ("POST", "/v1/subscriptions"): "self",
    ("GET", "/v1/subscriptions/{subscription_id}"): "own",
    ("POST", "/v1/subscriptions/{subscription_id}/preview"): "own",
    ("POST", "/v1/subscriptions/{subscription_id}/change"): "own",
    ("POST", "/v1/subscriptions/{subscription_id}/cancel"): "own",
    ("POST", "/v1/subscriptions/{subscription_id}/reactivate"): "own",
    ("POST", "/v1/subscriptions/{subscription_id}/pause"): "own",
    ("POST", "/v1/subscriptions/{subscription_id}/resume"): "own",
    ("POST", "/v1/subscriptions/{subscription_id}/usage"): "own",
    ("GET", "/v1/subscriptions/{subscription_id}/usage"): "own",
    ("GET", "/v1/usage/analytics"): "self",
    ("GET", "/v1/invoices"): "self",
    ("GET", "/v1/invoices/{invoice_id}"): "own",
    ("GET", "/v1/payments"): "self",
    ("GET", "/v1/admin/plans"): "admin",
    ("POST", "/v1/admin/plans"): "admin",
    ("GET", "/v1/admin/plans/{plan_id}"): "admin",
    ("PATCH", "/v1/admin/plans/{plan_id}"): "admin",
    ("DELETE", "/v1/admin/plans/{plan_id}"): "admin",
    ("GET", "/v1/admin/prices"): "admin",
    ("POST", "/v1/admin/prices"): "admin",
    ("GET", "/v1/admin/prices/{price_id}"): "admin",
    ("DELETE", "/v1/admin/prices/{price_id}"): "admin",
    ("GET", "/v1/admin/users"): "admin",
    ("GET", "/v1/admin/users/{user_id}"): "admin",
    ("PATCH", "/v1/admin/users/{user_id}"): "admin",
    ("GET", "/v1/admin/subscriptions"): "admin",
    ("GET", "/v1/admin/subscriptions/{subscription_id}"): "admin",
    ("POST", "/v1/admin/subscriptions/{subscription_id}/cancel"): "admin",
    ("GET", "/v1/admin/invoices"): "admin",
    ("GET", "/v1/admin/payments"): "admin",
    ("POST", "/v1/admin/refunds"): "admin",
    ("GET", "/v1/admin/refunds"): "admin",
    ("POST", "/v1/admin/credit-notes"): "admin",
    ("GET", "/v1/admin/credit-notes"): "admin",
    ("POST", "/v1/admin/run-due"): "admin",
    ("GET", "/v1/admin/analytics"): "admin",
    ("POST", "/v1/webhooks/stripe"): "webhook",
    ("POST", "/v1/webhooks/sendgrid"): "webhook",
    ("GET", "/health"): "probe",
    ("GET", "/status"): "probe",
    # Last: it erases the caller.
    ("DELETE", "/v1/users/me"): "self",
}

ROLES = ("anonymous", "user", "other", "admin")


def expected(kind: str, role: str, method: str, path: str) -> int | None:
    """The exact status, or None for "allowed": neither 401, 403 nor 404, and no 5xx."""
    if kind in ("public", "probe"):
        return None
    if kind == "auth":
        return 400  # the matrix sends an empty body: allowed in, refused by validation
    if kind == "webhook":
        return 404
    if role == "anonymous":
        return 401
    if kind == "admin":
        return None if role == "admin" else 403
    if kind == "own" and role != "user":
        return 404  # another customer's subscription or invoice does not exist for you
    return None


def test_the_table_covers_every_route(client: Client) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in client.app.openapi()["paths"].items()
        for method in operations
    }
    assert documented == set(ROUTES)


@pytest.fixture
def world(client: Client) -> dict[str, Any]:
    prices = client.seed_plans()
    admin = client.admin_token()
    user = client.register()
    other = client.register()
    sub = data_of(
        client.post(
            "/v1/subscriptions",
            json={"price_id": prices["Business per seat"]},
            auth=user["access_token"],
        ),
        201,
    )
    invoice = data_of(client.get("/v1/invoices", auth=user["access_token"]))["items"][0]
    payment = data_of(client.get("/v1/payments", auth=user["access_token"]))["items"][0]
    price = client.context.billing.get_price(prices["Pro monthly"])
    return {
        "tokens": {
            "anonymous": "",
            "user": user["access_token"],
            "other": other["access_token"],
            "admin": admin,
        },
        "ids": {
            "subscription_id": sub["id"],
            "invoice_id": invoice["id"],
            "plan_id": price.plan_id,
            "price_id": price.id,
            "user_id": user["user"]["id"],
        },
        "bodies": {
            ("PATCH", "/v1/users/me"): {"name": "New name"},
            ("POST", "/v1/subscriptions"): {"price_id": prices["Free"]},
            ("POST", "/v1/subscriptions/{subscription_id}/usage"): {"quantity": 1},
            ("POST", "/v1/admin/plans"): {"name": "Matrix"},
            ("PATCH", "/v1/admin/plans/{plan_id}"): {"description": "changed"},
            ("POST", "/v1/admin/prices"): {
                "plan_id": price.plan_id,
                "currency": "USD",
                "unit_amount": 100,
            },
            ("PATCH", "/v1/admin/users/{user_id}"): {"name": "Renamed"},
            ("POST", "/v1/admin/refunds"): {"payment_id": payment["id"]},
            ("POST", "/v1/admin/credit-notes"): {
                "invoice_id": invoice["id"],
                "amount": {"amount": 1, "currency": "USD"},
            },
        },
    }


def test_every_route_for_every_role(client: Client, world: dict[str, Any]) -> None:
    problems = []
    for (method, template), kind in ROUTES.items():
        path = template.format(**world["ids"])
        body = world["bodies"].get((method, template), {} if method != "GET" else None)
        for role in ROLES:
            response = client.request(method, path, auth=world["tokens"][role], json=body)
            want = expected(kind, role, method, template)
            got = response.status_code
            allowed = got not in (401, 403, 404) and got < 500
            if (want is None and not allowed) or (want is not None and got != want):
                problems.append(f"{method} {template} as {role}: {got} (want {want or 'allowed'})")
            assert "success" in response.json()
    assert not problems, "\n".join(problems)
