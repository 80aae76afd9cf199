"""The whole journey over HTTP, on SQLite and on PostgreSQL under row-level security."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.examples.asgi.conftest import PASSWORD, Client, assert_error, data_of


@pytest.fixture(params=["sqlite", "postgresql"])
def any_client(request: pytest.FixtureRequest) -> Client:
    name = "client" if request.param == "sqlite" else "pg_client"
    client: Client = request.getfixturevalue(name)
    return client


def _renew(client: Client, login: dict[str, Any]) -> None:
    """Refresh the session after the clock moved past the access token's hour."""
    fresh = data_of(client.post("/v1/auth/refresh", json={"refresh_token": login["refresh_token"]}))
    login.update(fresh)
    client.token = fresh["access_token"]


def _line_amounts(invoice: dict[str, Any]) -> list[int]:
    return [line["amount"]["amount"] for line in invoice["lines"]]


def test_register_to_delete(any_client: Client) -> None:
    client = any_client
    prices = client.seed_plans()

    # register → login → list plans
    email = "grace@example.com"
    client.register(email=email)
    login = data_of(client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}))
    client.token = login["access_token"]
    plans = data_of(client.get("/v1/plans"))["items"]
    assert {p["name"] for p in plans} == {"Free", "Pro", "Business"}
    assert not any(p["current"] for p in plans)

    # subscribe with a trial (Pro monthly: $20, 14 days)
    sub = data_of(client.post("/v1/subscriptions", json={"price_id": prices["Pro monthly"]}), 201)
    assert sub["status"] == "trialing"
    pro = next(p for p in data_of(client.get("/v1/plans"))["items"] if p["name"] == "Pro")
    assert pro["current"] is True

    # the trial converts on the test clock when the billing run sees it
    client.clock.advance(days=14)
    data_of(client.post("/v1/admin/run-due", auth=client.admin_token()))
    _renew(client, login)
    sub = data_of(client.get(f"/v1/subscriptions/{sub['id']}"))
    assert sub["status"] == "active"
    invoices = data_of(client.get("/v1/invoices"))["items"]
    assert [(i["status"], i["total"]["amount"]) for i in invoices][-1] == ("paid", 2000)

    # upgrade half-way through the period to 2 seats of Business ($30): Stripe's amounts
    period = sub["current_period"]
    client.clock.advance(days=15, hours=12)  # Jan 15 → Feb 15 is 31 days; half is 15.5
    _renew(client, login)
    body = {
        "price_id": prices["Business per seat"],
        "quantity": 2,
        "proration_behavior": "always_invoice",
    }
    preview = data_of(client.post(f"/v1/subscriptions/{sub['id']}/preview", json=body))
    assert _line_amounts(preview)[:2] == [-1000, 1500]
    changed = data_of(client.post(f"/v1/subscriptions/{sub['id']}/change", json=body))
    assert changed["price"]["id"] == prices["Business per seat"]
    assert changed["current_period"] == period
    latest = data_of(client.get("/v1/invoices"))["items"][-1]
    assert _line_amounts(latest) == [-1000, 1500]
    assert (latest["status"], latest["total"]["amount"]) == ("paid", 500)
    payments = data_of(client.get("/v1/payments"))["items"]
    assert [p["amount"]["amount"] for p in payments] == [2000, 500]

    # downgrade back to Pro: scheduled for the period end by the default policy
    down = data_of(
        client.post(
            f"/v1/subscriptions/{sub['id']}/change",
            json={"price_id": prices["Pro monthly"], "quantity": 1},
        )
    )
    assert down["scheduled_change"]["price"]["id"] == prices["Pro monthly"]
    assert down["price"]["id"] == prices["Business per seat"]
    client.clock.advance(days=16)
    admin = client.admin_token()
    data_of(client.post("/v1/admin/run-due", auth=admin))
    _renew(client, login)
    renewed = data_of(client.get(f"/v1/subscriptions/{sub['id']}"))
    assert renewed["price"]["id"] == prices["Pro monthly"]
    assert data_of(client.get("/v1/invoices"))["items"][-1]["total"]["amount"] == 2000

    # cancel at period end, then undo it, then cancel now
    canceling = data_of(client.post(f"/v1/subscriptions/{sub['id']}/cancel"))
    assert canceling["cancel_at_period_end"] is True
    data_of(client.post(f"/v1/subscriptions/{sub['id']}/reactivate"))
    ended = data_of(
        client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"at_period_end": False})
    )
    assert ended["status"] == "canceled"

    # export, then delete
    export = client.get("/v1/users/me/export")
    assert "attachment" in export.headers["content-disposition"]
    exported = data_of(export)
    assert exported["customer"]["email"] == email
    assert len(exported["invoices"]) == 3
    data_of(client.delete("/v1/users/me"))
    assert_error(
        client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}),
        401,
        "INVALID_CREDENTIALS",
    )
    erased = data_of(client.get(f"/v1/admin/users/{login['user']['id']}", auth=admin))
    assert erased["erased_at"] is not None
    assert email not in str(erased)


def test_pause_resume_and_metered_usage(any_client: Client) -> None:
    client = any_client
    admin = client.admin_token()
    plan = data_of(client.post("/v1/admin/plans", json={"name": "API"}, auth=admin), 201)
    metered = data_of(
        client.post(
            "/v1/admin/prices",
            json={
                "plan_id": plan["id"],
                "currency": "usd",
                "unit_amount": 2,
                "usage_type": "metered",
            },
            auth=admin,
        ),
        201,
    )
    client.token = client.register()["access_token"]
    sub = data_of(client.post("/v1/subscriptions", json={"price_id": metered["id"]}), 201)
    client.clock.advance(minutes=30)
    data_of(client.post(f"/v1/subscriptions/{sub['id']}/usage", json={"quantity": 40}), 201)
    data_of(client.post(f"/v1/subscriptions/{sub['id']}/usage", json={"quantity": 2}), 201)
    usage = data_of(client.get(f"/v1/subscriptions/{sub['id']}/usage"))["items"]
    assert [u["quantity"] for u in usage] == [40, 2]
    analytics = data_of(client.get("/v1/usage/analytics"))
    assert analytics["subscriptions"][0]["total"] == 42
    paused = data_of(client.post(f"/v1/subscriptions/{sub['id']}/pause"))
    assert paused["status"] == "paused"
    resumed = data_of(client.post(f"/v1/subscriptions/{sub['id']}/resume"))
    assert resumed["status"] == "active"


def test_admin_catalog_refunds_credit_notes_and_analytics(any_client: Client) -> None:
    client = any_client
    prices = client.seed_plans()
    admin = client.admin_token()
    client.token = client.register()["access_token"]
    sub = data_of(
        client.post(
            "/v1/subscriptions", json={"price_id": prices["Business per seat"], "quantity": 3}
        ),
        201,
    )
    assert sub["status"] == "active"
    payment = data_of(client.get("/v1/payments"))["items"][0]
    invoice = data_of(client.get("/v1/invoices"))["items"][0]
    refund = data_of(
        client.post(
            "/v1/admin/refunds",
            json={"payment_id": payment["id"], "amount": {"amount": 500, "currency": "USD"}},
            auth=admin,
        ),
        201,
    )
    assert refund["amount"]["amount"] == 500
    note = data_of(
        client.post(
            "/v1/admin/credit-notes",
            json={
                "invoice_id": invoice["id"],
                "amount": {"amount": 300, "currency": "USD"},
                "outcome": "credit_balance",
            },
            auth=admin,
        ),
        201,
    )
    assert note["amount"]["amount"] == 300
    assert len(data_of(client.get("/v1/admin/refunds", auth=admin))["items"]) == 1
    assert len(data_of(client.get("/v1/admin/credit-notes", auth=admin))["items"]) == 1
    everything = data_of(client.get("/v1/admin/subscriptions", auth=admin))["items"]
    assert [s["id"] for s in everything] == [sub["id"]]
    start = (client.clock.now() - timedelta(days=1)).isoformat()
    end = (client.clock.now() + timedelta(days=1)).isoformat()
    report = data_of(
        client.get("/v1/admin/analytics", params={"start": start, "end": end}, auth=admin)
    )
    assert report["mrr"] == {"amount": 4500, "currency": "USD"}
    assert report["arr"] == {"amount": 54000, "currency": "USD"}
    assert report["movements"]["new"]["amount"] == 4500
    archived = data_of(client.delete(f"/v1/admin/plans/{sub['price']['plan_id']}", auth=admin))
    assert archived["active"] is False
    assert "Business" not in {p["name"] for p in data_of(client.get("/v1/plans"))["items"]}
