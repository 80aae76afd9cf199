"""Stripe webhooks: signature checks, the event mapping, and Billing applying them once."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from lumenquest_adapters.memory import GatewayOutcome, in_memory_billing
from lumenquest_adapters.memory._wiring import InMemoryBilling
from lumenquest_adapters.stripe import METADATA_IDEMPOTENCY_KEY, StripeGateway, parse_stripe_webhook
from lumenquest_core.errors import ValidationError
from lumenquest_core.money import Money
from lumenquest_core.payments import PaymentStatus
from lumenquest_core.periods import BillingCycle, Interval
from lumenquest_core.service import GatewayEvent, GatewayEventType
from tests.adapters.stripe.localstripe_server import GOOD_CARD, LocalStripe
from tests.adapters.stripe.scripted_http import Answer, scripted_server

SECRET = "whsec_test_lumenquest"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _payload(kind: str, obj: dict[str, Any], event_id: str = "evt_1", at: datetime = NOW) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": kind,
            "created": int(at.timestamp()),
            "data": {"object": obj},
        }
    ).encode()


def _sign(payload: bytes, at: datetime = NOW, secret: str = SECRET) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=int(at.timestamp())
    )


def _parse(payload: bytes, header: str | None = None, now: datetime = NOW) -> GatewayEvent | None:
    return parse_stripe_webhook(payload, header or _sign(payload), SECRET, now=now)


def _intent(key: str, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 1000,
        "amount_received": 1000 if status == "succeeded" else 0,
        "currency": "usd",
        "status": status,
        "metadata": {METADATA_IDEMPOTENCY_KEY: key},
        **extra,
    }


SUCCEEDED = _payload("payment_intent.succeeded", _intent("in_1:1"))


# -- verification ------------------------------------------------------------------------


def test_a_signed_event_is_accepted() -> None:
    assert _parse(SUCCEEDED) is not None


@pytest.mark.parametrize(
    ("header", "now", "reason"),
    [
        (_sign(SUCCEEDED, secret="whsec_forged"), NOW, "signature"),
        (_sign(SUCCEEDED + b" "), NOW, "signature"),
        ("t=123", NOW, "signature"),
        ("garbage", NOW, "signature"),
        ("", NOW, "signature"),
        (_sign(SUCCEEDED), NOW + timedelta(seconds=301), "stale"),
        (_sign(SUCCEEDED), NOW - timedelta(seconds=301), "future"),
    ],
    ids=["forged", "tampered", "no-signature", "garbage", "empty", "stale", "future"],
)
def test_forged_stale_or_future_webhooks_are_rejected(
    header: str, now: datetime, reason: str
) -> None:
    with pytest.raises(ValidationError, match="Stripe webhook rejected") as caught:
        parse_stripe_webhook(SUCCEEDED, header, SECRET, now=now)
    assert caught.value.details["reason"] == reason


def test_the_tolerance_is_inclusive_both_ways() -> None:
    assert _parse(SUCCEEDED, now=NOW + timedelta(seconds=300)) is not None
    assert _parse(SUCCEEDED, now=NOW - timedelta(seconds=300)) is not None


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", _payload("payment_intent.succeeded", {"id": "pi_1"})],
    ids=["not-json", "not-an-object", "missing-fields"],
)
def test_an_unparsable_signed_payload_is_rejected(payload: bytes) -> None:
    with pytest.raises(ValidationError) as caught:
        _parse(payload)
    assert caught.value.details["reason"] == "payload"


def test_event_types_lumenquest_does_not_handle_are_ignored() -> None:
    assert _parse(_payload("customer.created", {"id": "cus_1"})) is None


# -- mapping -----------------------------------------------------------------------------


def test_payment_intent_succeeded_carries_our_idempotency_key() -> None:
    assert _parse(SUCCEEDED) == GatewayEvent(
        id="evt_1",
        type=GatewayEventType.PAYMENT_SUCCEEDED,
        occurred_at=NOW,
        idempotency_key="in_1:1",
        reference="pi_1",
        amount=Money(1000, "USD"),
    )


def test_payment_intent_payment_failed_carries_the_decline() -> None:
    error = {"code": "card_declined", "decline_code": "insufficient_funds", "message": "No funds."}
    payload = _payload(
        "payment_intent.payment_failed",
        _intent("in_1:1", "requires_payment_method", last_payment_error=error),
    )
    event = _parse(payload)
    assert event is not None
    assert event.type is GatewayEventType.PAYMENT_FAILED
    assert (event.idempotency_key, event.reference) == ("in_1:1", "pi_1")
    assert (event.decline_code, event.message) == ("insufficient_funds", "No funds.")


def test_charge_refunded_carries_the_total_refunded_against_the_intent() -> None:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "amount": 1000,
        "amount_refunded": 700,
        "currency": "usd",
        "payment_intent": "pi_1",
    }
    event = _parse(_payload("charge.refunded", charge))
    assert event is not None
    assert event.type is GatewayEventType.CHARGE_REFUNDED
    assert (event.reference, event.amount) == ("pi_1", Money(700, "USD"))


def test_charge_dispute_created_names_the_intent() -> None:
    dispute = {
        "id": "dp_1",
        "object": "dispute",
        "amount": 1000,
        "currency": "eur",
        "charge": "ch_1",
        "payment_intent": "pi_1",
        "reason": "fraudulent",
    }
    event = _parse(_payload("charge.dispute.created", dispute))
    assert event is not None
    assert event.type is GatewayEventType.DISPUTE_CREATED
    assert (event.reference, event.amount, event.message) == (
        "pi_1",
        Money(1000, "EUR"),
        "fraudulent",
    )


# -- applied by Billing ------------------------------------------------------------------


@pytest.fixture
def pending() -> tuple[InMemoryBilling, str]:
    """A Billing whose first payment timed out: pending, waiting for the webhook."""
    billing = in_memory_billing(now=NOW)
    customer = billing.create_customer(email="ada@example.com", name="Ada")
    plan = billing.create_plan(name="Pro")
    price = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1000, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    billing.gateway.queue(GatewayOutcome.timeout())
    billing.subscribe(customer_id=customer.id, price_id=price.id)
    (payment,) = billing.list_payments(customer_id=customer.id)
    assert payment.status is PaymentStatus.PENDING
    return billing, payment.idempotency_key


def _state(billing: InMemoryBilling) -> tuple[object, ...]:
    return (
        billing.list_payments(),
        billing.list_refunds(),
        billing.list_outbox(),
        billing.audit_log(),
    )


def test_a_replayed_event_changes_nothing(pending: tuple[InMemoryBilling, str]) -> None:
    billing, key = pending
    payload = _payload("payment_intent.succeeded", _intent(key))
    event = _parse(payload)
    assert event is not None
    assert billing.handle_gateway_event(event) is True
    (payment,) = billing.list_payments()
    assert (payment.status, payment.gateway_reference) == (PaymentStatus.SUCCEEDED, "pi_1")
    before = _state(billing)
    replayed = _parse(payload)
    assert replayed is not None
    assert billing.handle_gateway_event(replayed) is False
    assert _state(billing) == before


def _refunded(total: int, event_id: str) -> GatewayEvent:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "amount": 1000,
        "amount_refunded": total,
        "currency": "usd",
        "payment_intent": "pi_1",
    }
    event = _parse(_payload("charge.refunded", charge, event_id))
    assert event is not None
    return event


def test_out_of_order_delivery_is_accepted(pending: tuple[InMemoryBilling, str]) -> None:
    billing, key = pending
    succeeded = _parse(_payload("payment_intent.succeeded", _intent(key), "evt_2"))
    stale_failure = _parse(
        _payload(
            "payment_intent.payment_failed",
            _intent(key, "requires_payment_method"),
            "evt_1",
            NOW - timedelta(seconds=30),
        )
    )
    assert succeeded is not None
    assert stale_failure is not None
    # A refund's event overtakes the payment's: accepted, nothing to refund yet.
    assert billing.handle_gateway_event(_refunded(400, "evt_3")) is True
    assert billing.list_refunds() == []
    assert billing.handle_gateway_event(succeeded) is True
    # The older failure arrives last: accepted, and the payment stays paid.
    assert billing.handle_gateway_event(stale_failure) is True
    assert billing.list_payments()[0].status is PaymentStatus.SUCCEEDED
    # Stripe's events carry the total refunded, so the next one catches up.
    assert billing.handle_gateway_event(_refunded(700, "evt_4")) is True
    assert [r.amount for r in billing.list_refunds()] == [Money(700, "USD")]
    assert billing.handle_gateway_event(_refunded(700, "evt_4")) is False
    assert [r.amount for r in billing.list_refunds()] == [Money(700, "USD")]


# -- end to end: localstripe signs and delivers ------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Any]:
    with scripted_server() as server:
        server.script("POST", "/webhooks/stripe", Answer(200, {"received": True}))
        yield server


def test_localstripe_delivers_a_signed_event_that_billing_applies_once(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient, receiver: Any
) -> None:
    localstripe.register_webhook(
        "lumenquest", f"{receiver.url}/webhooks/stripe", SECRET, ["payment_intent.succeeded"]
    )
    gateway = StripeGateway(stripe_client)
    billing = in_memory_billing(now=NOW, gateway=gateway)
    customer = billing.create_customer(email="ada@example.com", name="Ada")
    gateway.attach_payment_method(customer, GOOD_CARD)
    plan = billing.create_plan(name="Pro")
    price = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1000, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    billing.subscribe(customer_id=customer.id, price_id=price.id)
    (payment,) = billing.list_payments()
    assert payment.status is PaymentStatus.SUCCEEDED

    # Other tests' deliveries may still be on their way: wait for this payment's.
    delivery = receiver.wait_for(
        "POST",
        "/webhooks/stripe",
        lambda r: r.json()["data"]["object"]["id"] == payment.gateway_reference,
    )
    # localstripe signs with the wall clock, so the check uses it too.
    event = parse_stripe_webhook(
        delivery.body, delivery.headers["stripe-signature"], SECRET, now=datetime.now(UTC)
    )
    assert event is not None
    assert event.type is GatewayEventType.PAYMENT_SUCCEEDED
    assert event.idempotency_key == payment.idempotency_key
    assert event.amount == Money(1000, "USD")
    before = _state(billing)
    assert billing.handle_gateway_event(event) is True  # already settled by our own call
    assert billing.handle_gateway_event(event) is False
    assert _state(billing)[0] == before[0]
    with pytest.raises(ValidationError):
        parse_stripe_webhook(
            delivery.body,
            delivery.headers["stripe-signature"],
            "whsec_other",
            now=datetime.now(UTC),
        )
