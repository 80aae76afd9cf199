"""The routers' route order is a cost only: no route takes another's requests.

The routers (and the hottest routes first in them, the paid subscribe at the top of the
user's) are ordered by how often they are asked for; that is safe only while no route
matches a request meant for another, whatever their order.
"""

from __future__ import annotations

from fastapi.routing import APIRoute

from asgi_app.routes import admin, auth, operations, public, users


def test_no_route_answers_another_routes_requests() -> None:
    """A plain path is matched by its own route only, for each of its methods."""
    routers = (public.router, users.router, auth.router, admin.router)
    routes = [
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


def test_the_paid_subscribe_is_the_first_route_a_signed_in_request_is_matched_against() -> None:
    first = users.router.routes[0]
    assert isinstance(first, APIRoute)
    assert (first.path, first.methods) == ("/v1/subscriptions", {"POST"})
