"""The EmailSender contract, run on SendGridEmailSender against a local mail-send API."""

from collections.abc import Iterator

import pytest

from lumenquest_adapters.sendgrid import SendGridEmailSender
from lumenquest_adapters.testing import EmailSenderContract
from tests.adapters.sendgrid.conftest import MAIL_SEND, make_sender
from tests.adapters.stripe.scripted_http import Answer, ScriptedServer, scripted_server


class TestSendGridEmailSender(EmailSenderContract):
    server: ScriptedServer

    @pytest.fixture(autouse=True)
    def _mail_api(self) -> Iterator[None]:
        with scripted_server() as server:
            server.script(
                "POST", MAIL_SEND, *[Answer(202, b"", {"X-Message-Id": f"sg-{n}"}) for n in (1, 2)]
            )
            self.server = server
            yield

    def make_sender(self) -> SendGridEmailSender:
        return make_sender(self.server)
