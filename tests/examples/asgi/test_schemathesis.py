"""schemathesis over the app's own OpenAPI schema, as a user and as an admin, in-process.

Every operation gets a bounded number of generated requests (valid and invalid); each
response must not be a 5xx, must match the documented status codes and schemas, and
must be the envelope.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.examples.asgi.conftest import Client, data_of

MAX_EXAMPLES = 3


@schemathesis.check
def enveloped(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every documented response is the seed's envelope."""
    body = response.json()
    assert isinstance(body, dict), "the body is not a JSON object"
    assert isinstance(body.get("success"), bool), "no boolean success"
    assert "timestamp" in body, "no timestamp"
    if body["success"]:
        assert {"data", "message"} <= set(body), "a success without data and message"
    else:
        assert set(body["error"]) == {"code", "message", "details"}, "an error without its shape"
    return None


@pytest.fixture
def world(client: Client) -> dict[str, Any]:
    prices = client.seed_plans()
    user = client.register()
    data_of(
        client.post(
            "/v1/subscriptions", json={"price_id": prices["Pro monthly"]}, auth=user["access_token"]
        ),
        201,
    )
    return {"client": client, "tokens": [user["access_token"], client.admin_token()]}


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    enveloped,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_as_user_and_admin(world: dict[str, Any], mode: GenerationMode) -> None:
    api = schemathesis.openapi.from_asgi("/openapi.json", world["client"].app)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 50
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            for token in world["tokens"]:
                case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:
            # Nothing to make invalid (no parameters, no body): the positive run covers it.
            assert mode is GenerationMode.NEGATIVE
