"""Each Stripe answer localstripe cannot give, through the SDK against a scripted server.

The server answers as Stripe's API reference documents (error objects, dropped
connections); the gateway must translate each into the core's errors.
"""

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import stripe

from lumenquest_adapters.stripe import METADATA_IDEMPOTENCY_KEY, StripeGateway
from lumenquest_adapters.testing.samples import customer, usd
from lumenquest_core.customers import Customer
from lumenquest_core.errors import (
    ConfigurationError,
    GatewayUnavailable,
    IdempotencyConflict,
    LumenquestError,
    NotFound,
    ValidationError,
)
from lumenquest_core.payments import ChargeResult, ChargeStatus
from tests.adapters.stripe.scripted_http import DROP, Answer, ScriptedServer, scripted_server

INTENTS = "/v1/payment_intents"


@pytest.fixture
def api() -> Iterator[ScriptedServer]:
    with scripted_server() as server:
        server.script(
            "GET",
            "/v1/customers/cus_stub",
            Answer(
                body={
                    "id": "cus_stub",
                    "object": "customer",
                    "invoice_settings": {"default_payment_method": "pm_stub"},
                    "metadata": {},
                }
            ),
        )
        yield server


def _gateway(api: ScriptedServer, retries: int = 0) -> StripeGateway:
    return StripeGateway.from_api_key(
        "sk_test_stub", api_base=api.url, max_network_retries=retries, timeout_seconds=10
    )


def _synced() -> Customer:
    return attrs.evolve(customer("cus_1"), gateway_customer_id="cus_stub")


def _charge(gateway: StripeGateway, key: str = "in_1:1", cents: int = 1000) -> ChargeResult:
    return gateway.charge(
        customer=_synced(),
        amount=usd(cents),
        idempotency_key=key,
        description="",
        metadata={"invoice_id": "in_1"},
    )


def _intent(status: str = "succeeded", cents: int = 1000, key: str = "in_1:1") -> dict[str, Any]:
    return {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": cents,
        "currency": "usd",
        "status": status,
        "metadata": {METADATA_IDEMPOTENCY_KEY: key},
        "last_payment_error": None,
    }


def _error(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **extra}}


def _empty_list() -> Answer:
    return Answer(body={"object": "list", "data": [], "has_more": False, "url": INTENTS})


ERRORS = [
    (Answer(429, _error("invalid_request_error", "Too many requests", code="rate_limit")), GatewayUnavailable, stripe.RateLimitError),
    (Answer(500, _error("api_error", "Something went wrong")), GatewayUnavailable, stripe.APIError),
    (Answer(503, _error("api_error", "Service unavailable")), GatewayUnavailable, stripe.APIError),
    (DROP, GatewayUnavailable, stripe.APIConnectionError),
    (Answer(401, _error("invalid_request_error", "Invalid API Key provided")), ConfigurationError, stripe.AuthenticationError),
    (Answer(403, _error("invalid_request_error", "The key lacks permission")), ConfigurationError, stripe.PermissionError),
    (Answer(400, _error("invalid_request_error", "Invalid currency", param="currency")), ConfigurationError, stripe.InvalidRequestError),
    (Answer(404, _error("invalid_request_error", "No such customer", code="resource_missing")), NotFound, stripe.InvalidRequestError),
    (Answer(400, _error("idempotency_error", "Keys can only be reused with the same parameters")), IdempotencyConflict, stripe.IdempotencyError),
]  # fmt: skip


@pytest.mark.parametrize(("answer", "expected", "cause"), ERRORS)
def test_each_stripe_failure_maps_to_a_core_error(
    api: ScriptedServer,
    answer: Answer,
    expected: type[LumenquestError],
    cause: type[stripe.StripeError],
) -> None:
    api.script("POST", INTENTS, answer)
    api.script("GET", INTENTS, _empty_list())
    with pytest.raises(expected) as caught:
        _charge(_gateway(api))
    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, cause)
    assert caught.value.retryable is (expected is GatewayUnavailable)
    assert len(api.requests_to("POST", INTENTS)) == 1


def test_the_charge_request_is_what_stripe_documents(api: ScriptedServer) -> None:
    api.script("POST", INTENTS, Answer(body=_intent()))
    assert _charge(_gateway(api)) == ChargeResult(ChargeStatus.SUCCEEDED, "pi_1")
    (sent,) = api.requests_to("POST", INTENTS)
    assert sent.headers["idempotency-key"] == "in_1:1"
    assert sent.headers["authorization"] == "Bearer sk_test_stub"
    assert sent.form() == {
        "amount": "1000",
        "currency": "usd",
        "customer": "cus_stub",
        "payment_method": "pm_stub",
        "confirm": "true",
        "off_session": "true",
        "metadata[invoice_id]": "in_1",
        "metadata[lumenquest_customer_id]": "cus_1",
        "metadata[lumenquest_idempotency_key]": "in_1:1",
    }


def test_a_card_error_is_a_decline_with_the_issuers_code(api: ScriptedServer) -> None:
    declined = {**_intent("requires_payment_method"), "id": "pi_declined"}
    api.script(
        "POST",
        INTENTS,
        Answer(
            402,
            _error(
                "card_error",
                "Your card has insufficient funds.",
                code="card_declined",
                decline_code="insufficient_funds",
                charge="ch_1",
                payment_intent=declined,
            ),
        ),
    )
    assert _charge(_gateway(api)) == ChargeResult(
        ChargeStatus.DECLINED,
        "pi_declined",
        decline_code="insufficient_funds",
        message="Your card has insufficient funds.",
    )


def test_a_lost_response_is_resolved_by_looking_the_intent_up(api: ScriptedServer) -> None:
    api.script("POST", INTENTS, DROP)
    api.script(
        "GET",
        INTENTS,
        Answer(
            body={
                "object": "list",
                "data": [_intent(key="in_0:1") | {"id": "pi_0"}, _intent()],
                "has_more": False,
                "url": INTENTS,
            }
        ),
    )
    assert _charge(_gateway(api)) == ChargeResult(ChargeStatus.SUCCEEDED, "pi_1")
    assert len(api.requests_to("POST", INTENTS)) == 1
    (lookup,) = api.requests_to("GET", INTENTS)
    assert lookup.query["customer"] == ["cus_stub"]


def test_a_looked_up_intent_for_another_amount_is_an_idempotency_conflict(
    api: ScriptedServer,
) -> None:
    api.script("POST", INTENTS, DROP)
    api.script(
        "GET",
        INTENTS,
        Answer(body={"object": "list", "data": [_intent(cents=5)], "has_more": False}),
    )
    with pytest.raises(IdempotencyConflict):
        _charge(_gateway(api))


def test_the_sdk_retries_a_5xx_with_the_same_idempotency_key(api: ScriptedServer) -> None:
    api.script(
        "POST",
        INTENTS,
        Answer(500, _error("api_error", "Something went wrong")),
        Answer(body=_intent()),
    )
    assert _charge(_gateway(api, retries=1)).status is ChargeStatus.SUCCEEDED
    keys = [r.headers["idempotency-key"] for r in api.requests_to("POST", INTENTS)]
    assert keys == ["in_1:1", "in_1:1"]


def test_a_processing_intent_leaves_the_payment_pending(api: ScriptedServer) -> None:
    api.script("POST", INTENTS, Answer(body=_intent("processing")))
    with pytest.raises(GatewayUnavailable, match="processing"):
        _charge(_gateway(api))


def test_find_charge_reads_the_intent_by_its_metadata(api: ScriptedServer) -> None:
    api.script(
        "GET", INTENTS, Answer(body={"object": "list", "data": [_intent()], "has_more": False})
    )
    gateway = _gateway(api)
    assert gateway.find_charge(_synced(), "in_1:1") == ChargeResult(ChargeStatus.SUCCEEDED, "pi_1")
    assert gateway.find_charge(_synced(), "in_2:1") is None


def test_a_refund_stripe_finds_too_large_raises_validation_error(api: ScriptedServer) -> None:
    charge = {"id": "ch_1", "object": "charge", "amount": 1000, "amount_refunded": 0}
    api.script("GET", f"{INTENTS}/pi_1", Answer(body=_intent() | {"latest_charge": charge}))
    api.script("GET", "/v1/refunds", Answer(body={"object": "list", "data": [], "has_more": False}))
    api.script(
        "POST",
        "/v1/refunds",
        Answer(
            400,
            _error(
                "invalid_request_error",
                "Refund amount ($10.00) is greater than unrefunded amount on charge ($5.00)",
                code="amount_too_large",
                param="amount",
            ),
        ),
    )
    gateway = _gateway(api)
    with pytest.raises(ValidationError, match="greater than unrefunded"):
        gateway.refund(reference="pi_1", amount=usd(1000), idempotency_key="re:1")
    (sent,) = api.requests_to("POST", "/v1/refunds")
    assert sent.headers["idempotency-key"] == "re:1"
    assert sent.form() == {
        "payment_intent": "pi_1",
        "amount": "1000",
        "metadata[lumenquest_idempotency_key]": "re:1",
    }


def test_an_unreachable_stripe_is_gateway_unavailable() -> None:
    with scripted_server() as server:
        closed = server.url
    gateway = StripeGateway.from_api_key("sk_test_stub", api_base=closed, max_network_retries=0)
    with pytest.raises(GatewayUnavailable) as caught:
        gateway.ensure_customer(customer("cus_1"))
    assert isinstance(caught.value.__cause__, stripe.APIConnectionError)
