"""On PostgreSQL each request acts for its user under row-level security: a buggy route still cannot leak."""

from __future__ import annotations

from typing import Any

from asgi_app.auth import CurrentUser
from asgi_app.context import Ctx
from asgi_app.envelope import ok
from tests.examples.asgi.conftest import Client, assert_error, data_of


def _two_customers_with_subscriptions(client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
    prices = client.seed_plans()
    made = []
    for _ in range(2):
        user = client.register()
        sub = data_of(
            client.post(
                "/v1/subscriptions",
                json={"price_id": prices["Pro monthly"]},
                auth=user["access_token"],
            ),
            201,
        )
        made.append({**user, "subscription_id": sub["id"]})
    return made[0], made[1]


def test_the_app_serves_as_a_role_that_rls_binds(pg_client: Client) -> None:
    status = data_of(pg_client.get("/status"))
    assert status["checks"]["database"]["row_level_security"] == "enforced"


def test_a_user_cannot_see_another_users_subscriptions(pg_client: Client) -> None:
    ada, bob = _two_customers_with_subscriptions(pg_client)
    assert_error(
        pg_client.get(f"/v1/subscriptions/{bob['subscription_id']}", auth=ada["access_token"]),
        404,
        "NOT_FOUND",
    )
    mine = data_of(pg_client.get("/v1/subscriptions", auth=ada["access_token"]))["items"]
    assert [s["id"] for s in mine] == [ada["subscription_id"]]


def test_a_route_that_forgets_the_ownership_check_still_leaks_nothing(pg_client: Client) -> None:
    @pg_client.app.get("/v1/buggy/{subscription_id}")
    def buggy(subscription_id: str, user: CurrentUser, ctx: Ctx) -> Any:
        # The bug: no check that the subscription is the caller's, and no customer filter.
        everything = ctx.billing.list_subscriptions(limit=1000)
        return ok(
            {
                "one": ctx.billing.get_subscription(subscription_id),
                "all": [s.id for s in everything],
            }
        )

    ada, bob = _two_customers_with_subscriptions(pg_client)
    leaked = pg_client.get(f"/v1/buggy/{bob['subscription_id']}", auth=ada["access_token"])
    assert_error(leaked, 404, "NOT_FOUND")  # the database says Bob's row does not exist
    own = data_of(pg_client.get(f"/v1/buggy/{ada['subscription_id']}", auth=ada["access_token"]))
    assert own["all"] == [ada["subscription_id"]]


def test_admin_routes_see_every_customer(pg_client: Client) -> None:
    ada, bob = _two_customers_with_subscriptions(pg_client)
    admin = pg_client.admin_token()
    everyone = data_of(pg_client.get("/v1/admin/subscriptions", auth=admin))["items"]
    assert {s["id"] for s in everyone} == {ada["subscription_id"], bob["subscription_id"]}


def test_an_anonymous_request_sees_the_catalog_and_no_customer(pg_client: Client) -> None:
    @pg_client.app.get("/v1/buggy-public")
    def buggy_public(ctx: Ctx) -> Any:
        return ok([c.id for c in ctx.billing.list_customers()])

    _two_customers_with_subscriptions(pg_client)
    assert data_of(pg_client.get("/v1/buggy-public")) == []
    assert len(data_of(pg_client.get("/v1/plans"))["items"]) == 3
