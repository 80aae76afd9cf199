"""Events reach the email handler after the response, at least once, and each email once.

On SQLite the request's own task delivers once its response is out; on PostgreSQL one
background task per app does, batching the events of many requests.
"""

from __future__ import annotations

from collections import Counter

from anyio.from_thread import BlockingPortal

from lumenquest_adapters.memory import RecordingEmailSender
from lumenquest_core.errors import GatewayUnavailable
from lumenquest_core.ports import EmailMessage
from tests.examples.asgi.conftest import AppFactory, Client, data_of


class FlakyEmail(RecordingEmailSender):
    """Fails its first ``failures`` sends, as a provider that is briefly down."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def send(self, message: EmailMessage) -> str:
        if self.failures:
            self.failures -= 1
            raise GatewayUnavailable("the email provider is down")
        return super().send(message)


def _register_and_subscribe(client: Client, price_id: str) -> str:
    """Register a user and subscribe it to a charged (no trial) price; return its email."""
    user = client.register()
    sub = data_of(
        client.post("/v1/subscriptions", json={"price_id": price_id}, auth=user["access_token"]),
        201,
    )
    assert sub["status"] == "active"
    return str(user["email"])


def _templates(email: RecordingEmailSender, to: str) -> list[str]:
    return sorted(message.template for message in email.sent if message.to == to)


def _sent_once(email: RecordingEmailSender) -> bool:
    return set(Counter(message.message_id for message in email.sent).values()) == {1}


def test_sqlite_delivers_in_the_request_once_the_response_is_out(make_client: AppFactory) -> None:
    email = RecordingEmailSender()
    client = make_client(email=email)
    assert client.context.dispatcher.background is False
    price = client.seed_plans()["Business per seat"]
    to = _register_and_subscribe(client, price)
    assert _templates(email, to) == ["invoice_paid", "welcome"]
    assert _sent_once(email)
    assert client.context.billing.dispatch_events() == 0  # nothing left pending


def test_sqlite_an_email_that_failed_goes_with_the_next_write(make_client: AppFactory) -> None:
    email = FlakyEmail(failures=1)
    client = make_client(email=email)
    price = client.seed_plans()["Business per seat"]
    user = client.register()  # its welcome email fails: the event stays in the outbox
    assert _templates(email, user["email"]) == []
    data_of(
        client.post("/v1/subscriptions", json={"price_id": price}, auth=user["access_token"]),
        201,
    )
    assert _templates(email, user["email"]) == ["invoice_paid", "welcome"]
    assert _sent_once(email)


def test_postgresql_delivers_in_the_background_each_email_once(
    make_pg_client: AppFactory, portal: BlockingPortal
) -> None:
    email = RecordingEmailSender()
    client = make_pg_client(email=email)
    dispatcher = client.context.dispatcher
    assert dispatcher.background is True
    price = client.seed_plans()["Business per seat"]
    recipients = [_register_and_subscribe(client, price) for _ in range(3)]
    portal.call(dispatcher.idle)
    for to in recipients:
        assert _templates(email, to) == ["invoice_paid", "welcome"]
    assert _sent_once(email)
    assert client.context.billing.dispatch_events() == 0


def test_postgresql_retries_a_failed_delivery_until_it_goes(
    make_pg_client: AppFactory, portal: BlockingPortal
) -> None:
    email = FlakyEmail(failures=2)
    client = make_pg_client(email=email)
    client.context.dispatcher.first_retry_seconds = 0.01
    price = client.seed_plans()["Business per seat"]
    to = _register_and_subscribe(client, price)
    portal.call(client.context.dispatcher.idle)
    assert email.failures == 0
    assert _templates(email, to) == ["invoice_paid", "welcome"]
    assert _sent_once(email)


def test_postgresql_shutdown_delivers_what_is_still_pending(
    make_pg_client: AppFactory, portal: BlockingPortal
) -> None:
    email = FlakyEmail(failures=1)
    client = make_pg_client(email=email)
    client.context.dispatcher.first_retry_seconds = 3600  # the retry would come too late
    price = client.seed_plans()["Business per seat"]
    to = _register_and_subscribe(client, price)
    portal.call(client.context.dispatcher.close)
    assert _templates(email, to) == ["invoice_paid", "welcome"]
    assert _sent_once(email)
