"""The PaymentGateway contract, run on StripeGateway against localstripe."""

from collections.abc import Iterator

import pytest
import stripe

from lumenquest_adapters.stripe import StripeGateway
from lumenquest_adapters.testing import PaymentGatewayContract
from lumenquest_adapters.testing.samples import customer
from lumenquest_core.ports import PaymentGateway
from tests.adapters.stripe.localstripe_server import (
    DECLINING_CARD,
    GOOD_CARD,
    LocalStripe,
    running,
)


@pytest.fixture(scope="session")
def localstripe_session() -> Iterator[LocalStripe]:
    with running() as server:
        yield server


class TestStripeGatewayOnLocalstripe(PaymentGatewayContract):
    server: LocalStripe

    @pytest.fixture(autouse=True)
    def _localstripe(self, localstripe_session: LocalStripe) -> None:
        localstripe_session.reset()
        self.server = localstripe_session

    def make_gateway(self) -> StripeGateway:
        client = stripe.StripeClient(
            "sk_test_contract",
            base_addresses={"api": self.server.api_base},
            max_network_retries=0,
        )
        gateway = StripeGateway(client)
        # The suite charges "cus_1": give it a card that pays, as a host would once.
        gateway.attach_payment_method(customer("cus_1"), GOOD_CARD)
        return gateway

    def script_decline(self, gateway: PaymentGateway, decline_code: str) -> None:
        assert isinstance(gateway, StripeGateway)
        # localstripe's card that attaches but is declined when charged; the issuer's
        # decline code is what Stripe adds to the card error (see localstripe_server).
        gateway.attach_payment_method(customer("cus_1"), DECLINING_CARD)
        self.server.script_decline(decline_code)
