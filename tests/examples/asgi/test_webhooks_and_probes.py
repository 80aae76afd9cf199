"""Stripe and SendGrid webhooks through their adapters' verification; /health, /status, /metrics."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lumenquest_adapters.config import Settings
from tests.examples.asgi.conftest import AppFactory, Client, assert_error, data_of

STRIPE_SECRET = "whsec_test_secret"


def _settings(template: Path, directory: Path, **values: object) -> Settings:
    path = directory / f"{uuid.uuid4().hex}.db"
    shutil.copyfile(template, path)
    return Settings(database_url=f"sqlite:///{path}", migrate=False, **values)  # type: ignore[arg-type]


def _stripe_post(client: Client, event: dict[str, object], secret: str = STRIPE_SECRET) -> object:
    payload = json.dumps(event).encode()
    stamp = int(client.clock.now().timestamp())
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return client.post(
        "/v1/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": f"t={stamp},v1={digest}", "Content-Type": "application/json"},
    )


def test_stripe_events_are_verified_and_applied_once(
    make_client: AppFactory, sqlite_template: Path, tmp_path: Path
) -> None:
    client = make_client(
        settings=_settings(sqlite_template, tmp_path, stripe_webhook_secret=STRIPE_SECRET)
    )
    event = {
        "id": "evt_1",
        "type": "charge.dispute.created",
        "created": int(client.clock.now().timestamp()),
        "data": {"object": {"id": "dp_1", "charge": "ch_1", "amount": 100, "currency": "usd"}},
    }
    assert data_of(_stripe_post(client, event)) == {"handled": True}  # type: ignore[arg-type]
    assert data_of(_stripe_post(client, event)) == {"handled": False}  # type: ignore[arg-type]
    ignored = {**event, "id": "evt_2", "type": "customer.created"}
    assert data_of(_stripe_post(client, ignored)) == {"handled": False}  # type: ignore[arg-type]
    forged = _stripe_post(client, {**event, "id": "evt_3"}, secret="whsec_wrong")
    error = assert_error(forged, 400, "INVALID_WEBHOOK")  # type: ignore[arg-type]
    assert error["details"]["reason"] == "signature"
    metrics = client.get("/metrics").text
    assert 'lumenquest_webhook_events_total{outcome="applied",source="stripe"} 1.0' in metrics


def test_sendgrid_events_are_verified(
    make_client: AppFactory, sqlite_template: Path, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    client = make_client(
        settings=_settings(sqlite_template, tmp_path, sendgrid_webhook_public_key=public)
    )
    payload = json.dumps(
        [{"event": "delivered", "lumenquest_message_id": "msg_unknown", "email": "a@b.co"}]
    ).encode()
    stamp = "1767225600"
    signature = base64.b64encode(
        key.sign(stamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    ).decode()
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }
    response = client.post("/v1/webhooks/sendgrid", content=payload, headers=headers)
    assert data_of(response) == {"recorded": 0}  # an email this database never sent
    bad = dict(headers, **{"X-Twilio-Email-Event-Webhook-Timestamp": "1767225601"})
    assert_error(
        client.post("/v1/webhooks/sendgrid", content=payload, headers=bad), 400, "INVALID_WEBHOOK"
    )


def test_webhooks_that_are_not_configured_are_404(client: Client) -> None:
    assert_error(client.post("/v1/webhooks/stripe", content=b"{}"), 404, "NOT_FOUND")
    assert_error(client.post("/v1/webhooks/sendgrid", content=b"[]"), 404, "NOT_FOUND")


def test_health_and_status(client: Client) -> None:
    assert data_of(client.get("/health")) == {"status": "up"}
    status = data_of(client.get("/status"))
    checks = status["checks"]
    assert checks["database"]["status"] == "up"
    assert checks["database"]["backend"] == "sqlite"
    assert checks["database"]["latency_ms"] >= 0
    assert checks["gateway"]["kind"] == "fake"
    assert checks["email"]["kind"] == "console"


def test_status_reports_an_unreachable_redis_as_503(
    make_client: AppFactory, sqlite_template: Path, tmp_path: Path
) -> None:
    settings = _settings(sqlite_template, tmp_path, redis_url="redis://127.0.0.1:1/0")
    client = make_client(settings=settings, rate_limit_enabled=False)
    error = assert_error(client.get("/status"), 503, "DEGRADED")
    assert error["details"]["checks"]["redis"]["status"] == "down"


def test_metrics_count_requests_by_route_template_and_status(client: Client) -> None:
    prices = client.seed_plans()
    token = client.register()["access_token"]
    sub = data_of(
        client.post("/v1/subscriptions", json={"price_id": prices["Pro monthly"]}, auth=token), 201
    )
    client.get(f"/v1/subscriptions/{sub['id']}", auth=token)
    client.get("/v1/subscriptions/sub_missing", auth=token)
    text = client.get("/metrics").text
    assert (
        'lumenquest_http_requests_total{method="GET",route="/v1/subscriptions/{subscription_id}",status="200"} 1.0'
        in text
    )
    assert 'route="/v1/subscriptions/{subscription_id}",status="404"' in text
    assert "lumenquest_http_request_duration_seconds_bucket" in text
    assert 'lumenquest_billing_operations_total{operation="subscribe",outcome="ok"} 1.0' in text
    assert sub["id"] not in text  # raw paths never become labels
