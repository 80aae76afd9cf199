"""The routers' route order is a cost only: no route takes another's requests.

The routers (and the hottest routes first in them) are ordered by how often they are
asked for, and the paid subscribe is the app's own route, ahead of them all; that is
safe only while no route matches a request meant for another, whatever their order.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from asgi_app.routes import admin, auth, operations, public, users
from tests.examples.asgi.conftest import Client


def _hot_routes() -> list[APIRoute]:
    app = FastAPI()
    users.add_hot_routes(app)
    return [route for route in app.router.routes if isinstance(route, APIRoute)]


def test_no_route_answers_another_routes_requests() -> None:
    """A plain path is matched by its own route only, for each of its methods."""
    routers = (public.router, users.router, auth.router, admin.router)
    routes = _hot_routes() + [
        route
        for router in (*routers, operations.webhooks, operations.probes)
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    for route in routes:
        if "{" in route.path:
            continue
        rivals = [
            other.path
            for other in routes
            if other is not route
            and other.methods & route.methods
            and other.path_regex.match(route.path)
        ]
        assert rivals == [], f"{sorted(route.methods)} {route.path}"


def test_the_paid_subscribe_is_the_first_route_a_signed_in_request_is_matched_against(
    client: Client,
) -> None:
    # The app's own routes come first: FastAPI's documentation routes, then the hot ones,
    # then the included routers (each behind one wrapper route).
    routes = client.app.router.routes
    first = next(route for route in routes if isinstance(route, APIRoute))
    assert (first.path, first.methods) == ("/v1/subscriptions", {"POST"})
    assert routes.index(first) < min(
        index for index, route in enumerate(routes) if not isinstance(route, (APIRoute, Route))
    )
