"""The public plan list is rendered once per catalog version, and follows every change."""

from __future__ import annotations

from typing import Any

from tests.examples.asgi.conftest import Client, data_of


def _plans(client: Client, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = data_of(client.get("/v1/plans", params=params, auth=""))["items"]
    return items


def test_a_catalog_change_shows_in_the_next_list(client: Client) -> None:
    admin = client.admin_token()
    plan = data_of(client.post("/v1/admin/plans", json={"name": "Solo"}, auth=admin), 201)
    body = {"plan_id": plan["id"], "currency": "USD", "unit_amount": 900}
    price = data_of(client.post("/v1/admin/prices", json=body, auth=admin), 201)
    assert [p["name"] for p in _plans(client)] == ["Solo"]
    assert _plans(client) == _plans(client)  # the same rendering, twice

    data_of(client.patch(f"/v1/admin/plans/{plan['id']}", json={"name": "Duo"}, auth=admin))
    listed = _plans(client)
    assert [p["name"] for p in listed] == ["Duo"]
    assert [p["id"] for p in listed[0]["prices"]] == [price["id"]]

    data_of(client.delete(f"/v1/admin/prices/{price['id']}", auth=admin))
    assert _plans(client)[0]["prices"] == []
    assert _plans(client, fields="name") == [{"id": plan["id"], "name": "Duo"}]

    data_of(client.delete(f"/v1/admin/plans/{plan['id']}", auth=admin))
    assert _plans(client) == []


def test_a_signed_in_user_sees_which_plan_is_current(client: Client) -> None:
    prices = client.seed_plans()
    user = client.register()
    data_of(
        client.post(
            "/v1/subscriptions",
            json={"price_id": prices["Business per seat"]},
            auth=user["access_token"],
        ),
        201,
    )
    mine = data_of(client.get("/v1/plans", auth=user["access_token"]))["items"]
    assert {p["name"]: p["current"] for p in mine} == {
        "Business": True,
        "Free": False,
        "Pro": False,
    }
    anonymous = _plans(client)
    assert not any(p["current"] for p in anonymous)
    assert [p["id"] for p in anonymous] == [p["id"] for p in mine]
