"""SendGridEmailSender and the Event Webhook, through the SDK against a local mail-send API."""

import json

import pytest
import python_http_client
from sendgrid import SendGridAPIClient

from lumenquest_adapters.memory import in_memory_billing
from lumenquest_adapters.sendgrid import SendGridEmailSender, parse_sendgrid_events
from lumenquest_adapters.testing.samples import email_message
from lumenquest_core.errors import (
    ConfigurationError,
    GatewayUnavailable,
    LumenquestError,
    ValidationError,
)
from lumenquest_core.money import Money
from lumenquest_core.ports import DeliveryStatus, EmailMessage
from tests.adapters.sendgrid.conftest import MAIL_SEND, Signer, make_sender
from tests.adapters.stripe.scripted_http import DROP, Answer, ScriptedServer, scripted_server

TIMESTAMP = "1767225600"


def test_a_message_is_sent_as_a_dynamic_template_with_tracking(mail_api: ScriptedServer) -> None:
    sender = make_sender(mail_api, from_name="Lumen Billing", categories=["billing"])
    message = EmailMessage(
        message_id="evt_9.invoice_paid",
        to="ada@example.com",
        template="invoice_paid",
        data={"name": "Ada", "amount": Money(1234, "USD")},
        customer_id="cus_1",
    )
    assert sender.send(message) == "sg-1"
    (request,) = mail_api.requests_to("POST", MAIL_SEND)
    assert request.headers["authorization"] == "Bearer SG.test-key"
    assert request.json() == {
        "from": {"email": "billing@example.com", "name": "Lumen Billing"},
        "personalizations": [
            {
                "to": [{"email": "ada@example.com"}],
                "dynamic_template_data": {
                    "name": "Ada",
                    "amount": {"amount": 1234, "currency": "USD"},
                },
            }
        ],
        "template_id": "d-invoice-paid",
        "categories": ["billing", "invoice_paid"],
        "custom_args": {"lumenquest_message_id": "evt_9.invoice_paid"},
        "mail_settings": {"sandbox_mode": {"enable": False}},
    }


def test_sandbox_mode_is_switched_on_and_needs_no_message_id() -> None:
    with scripted_server() as sandbox_api:
        sandbox_api.script("POST", MAIL_SEND, Answer(200, b""))
        sender = make_sender(sandbox_api, sandbox=True)
        assert sender.send(email_message("evt_1.welcome")) == "evt_1.welcome"
        (request,) = sandbox_api.requests_to("POST", MAIL_SEND)
        assert request.json()["mail_settings"] == {"sandbox_mode": {"enable": True}}


def test_an_unmapped_template_is_a_configuration_error(mail_api: ScriptedServer) -> None:
    message = EmailMessage(message_id="m1", to="ada@example.com", template="trial_ending")
    with pytest.raises(ConfigurationError, match="trial_ending"):
        make_sender(mail_api).send(message)
    assert mail_api.requests == []


def _errors(*messages: str) -> bytes:
    return json.dumps({"errors": [{"message": m, "field": None} for m in messages]}).encode()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Answer(400, _errors("The from address does not match a verified Sender Identity.")), ValidationError),
        (Answer(413, _errors("Payload too large")), ValidationError),
        (Answer(401, _errors("The provided authorization grant is invalid.")), ConfigurationError),
        (Answer(403, _errors("access forbidden")), ConfigurationError),
        (Answer(404, _errors("not found")), ConfigurationError),
        (Answer(429, _errors("too many requests")), GatewayUnavailable),
        (Answer(500, b"oops"), GatewayUnavailable),
        (Answer(503, _errors("unavailable")), GatewayUnavailable),
        (DROP, GatewayUnavailable),
    ],
    ids=["400", "413", "401", "403", "404", "429", "500", "503", "dropped"],
)  # fmt: skip
def test_each_sendgrid_failure_maps_to_a_core_error(
    answer: Answer, expected: type[LumenquestError]
) -> None:
    with scripted_server() as api:
        api.script("POST", MAIL_SEND, answer)
        with pytest.raises(expected) as caught:
            make_sender(api).send(email_message())
    assert type(caught.value) is expected
    assert caught.value.retryable is (expected is GatewayUnavailable)
    assert isinstance(caught.value.__cause__, python_http_client.HTTPError | OSError)


def test_a_bad_request_carries_sendgrids_message() -> None:
    with scripted_server() as api:
        api.script("POST", MAIL_SEND, Answer(400, _errors("Bad template id.", "Bad email.")))
        with pytest.raises(ValidationError, match=r"Bad template id\.; Bad email\."):
            make_sender(api).send(email_message())


def test_an_unreachable_sendgrid_is_gateway_unavailable() -> None:
    with scripted_server() as api:
        closed = api
    with pytest.raises(GatewayUnavailable):
        make_sender(closed).send(email_message())


# -- the signed event webhook -------------------------------------------------------------


def _events(*pairs: tuple[str, str], extra: dict[str, object] | None = None) -> bytes:
    return json.dumps(
        [
            {
                "email": "ada@example.com",
                "timestamp": 1767225600,
                "event": event,
                "sg_event_id": f"sg_event_{n}",
                "sg_message_id": "sg-1.filter",
                "lumenquest_message_id": message_id,
                **(extra or {}),
            }
            for n, (message_id, event) in enumerate(pairs)
        ]
    ).encode()


def test_signed_events_map_to_delivery_statuses(signer: Signer) -> None:
    kinds = ["processed", "delivered", "bounce", "dropped", "deferred", "open", "click"]
    payload = _events(*[(f"m{n}", kind) for n, kind in enumerate(kinds)])
    parsed = parse_sendgrid_events(
        payload, signer.sign(payload, TIMESTAMP), TIMESTAMP, signer.public_key
    )
    assert parsed == [
        ("m0", DeliveryStatus.PROCESSED),
        ("m1", DeliveryStatus.DELIVERED),
        ("m2", DeliveryStatus.BOUNCE),
        ("m3", DeliveryStatus.DROPPED),
        ("m4", DeliveryStatus.DEFERRED),
        ("m5", DeliveryStatus.OPEN),
        ("m6", DeliveryStatus.CLICK),
    ]


def test_other_events_and_other_senders_emails_are_left_out(signer: Signer) -> None:
    ours = json.loads(_events(("m1", "delivered"), ("m2", "spamreport")))
    theirs = {"email": "x@example.com", "event": "delivered", "sg_event_id": "e9"}
    payload = json.dumps([*ours, theirs]).encode()
    signature = signer.sign(payload, TIMESTAMP)
    assert parse_sendgrid_events(payload, signature, TIMESTAMP, signer.public_key) == [
        ("m1", DeliveryStatus.DELIVERED)
    ]


def test_forged_or_tampered_posts_are_rejected(signer: Signer) -> None:
    payload = _events(("m1", "bounce"))
    signature = signer.sign(payload, TIMESTAMP)
    forger = Signer()
    cases = [
        (payload, forger.sign(payload, TIMESTAMP), TIMESTAMP),
        (_events(("m2", "bounce")), signature, TIMESTAMP),
        (payload, signature, "1767225601"),
        (payload, "not base64!", TIMESTAMP),
        (payload, "", TIMESTAMP),
        (b"\xff\xfe", signature, TIMESTAMP),
    ]
    for body, sig, stamp in cases:
        with pytest.raises(ValidationError, match="SendGrid event webhook rejected"):
            parse_sendgrid_events(body, sig, stamp, signer.public_key)


def test_a_signed_body_that_is_not_a_list_of_events_is_rejected(signer: Signer) -> None:
    for payload in (b"{}", b"nope", b"[1]"):
        with pytest.raises(ValidationError) as caught:
            parse_sendgrid_events(
                payload, signer.sign(payload, TIMESTAMP), TIMESTAMP, signer.public_key
            )
        assert caught.value.details["reason"] == "payload"


def test_a_malformed_verification_key_is_a_configuration_error(signer: Signer) -> None:
    payload = _events(("m1", "open"))
    with pytest.raises(ConfigurationError):
        parse_sendgrid_events(payload, signer.sign(payload, TIMESTAMP), TIMESTAMP, "bm9wZQ==")


def test_a_bounce_reported_by_the_webhook_marks_the_customer_undeliverable(
    mail_api: ScriptedServer, signer: Signer
) -> None:
    billing = in_memory_billing(email=make_sender(mail_api))
    customer = billing.create_customer(email="ada@example.com", name="Ada")
    (welcome,) = mail_api.requests_to("POST", MAIL_SEND)
    message_id = welcome.json()["custom_args"]["lumenquest_message_id"]
    payload = _events((message_id, "delivered"), (message_id, "bounce"))
    for found_id, status in parse_sendgrid_events(
        payload, signer.sign(payload, TIMESTAMP), TIMESTAMP, signer.public_key
    ):
        billing.record_email_event(found_id, status)
    assert billing.get_customer(customer.id).email_deliverable is False


def test_the_sender_is_built_on_the_sdk_client_with_a_timeout() -> None:
    sender = SendGridEmailSender.from_api_key(
        "SG.key", from_email="billing@example.com", templates={}, timeout_seconds=5
    )
    client = sender._client
    assert isinstance(client, SendGridAPIClient)
    assert client.client.timeout == 5
    assert sender.sandbox is False
