"""Fixtures of the SendGrid adapter tests: a recording mail-send API and an ECDSA key pair."""

import base64
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lumenquest_adapters.sendgrid import SendGridEmailSender
from tests.adapters.stripe.scripted_http import Answer, ScriptedServer, scripted_server

MAIL_SEND = "/v3/mail/send"
TEMPLATES = {"welcome": "d-welcome", "invoice_paid": "d-invoice-paid"}


class Signer:
    """Signs Event Webhook posts as SendGrid does: ECDSA P-256 over timestamp + body."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def sign(self, payload: bytes, timestamp: str) -> str:
        signature = self._key.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer()


@pytest.fixture
def mail_api() -> Iterator[ScriptedServer]:
    """SendGrid's mail-send endpoint, answering 202 with a fresh X-Message-Id each time."""
    with scripted_server() as server:
        server.script(
            "POST",
            MAIL_SEND,
            *[Answer(202, b"", {"X-Message-Id": f"sg-{n}"}) for n in range(1, 51)],
        )
        yield server


def make_sender(server: ScriptedServer, **options: object) -> SendGridEmailSender:
    return SendGridEmailSender.from_api_key(
        "SG.test-key",
        host=server.url,
        from_email="billing@example.com",
        templates=TEMPLATES,
        timeout_seconds=10,
        **options,  # type: ignore[arg-type]
    )
