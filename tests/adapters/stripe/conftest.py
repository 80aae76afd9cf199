"""Fixtures of the Stripe adapter tests: localstripe, reset before each test."""

from collections.abc import Iterator

import pytest
import stripe

from lumenquest_adapters.stripe import StripeGateway
from tests.adapters.stripe.localstripe_server import LocalStripe, running


@pytest.fixture(scope="session")
def localstripe_session() -> Iterator[LocalStripe]:
    with running() as server:
        yield server


@pytest.fixture
def localstripe(localstripe_session: LocalStripe) -> LocalStripe:
    """localstripe, emptied."""
    localstripe_session.reset()
    return localstripe_session


@pytest.fixture
def stripe_client(localstripe: LocalStripe) -> stripe.StripeClient:
    """A StripeClient on localstripe, without the SDK's retries."""
    return stripe.StripeClient(
        "sk_test_lumenquest",
        base_addresses={"api": localstripe.api_base},
        max_network_retries=0,
    )


@pytest.fixture
def gateway(stripe_client: stripe.StripeClient) -> StripeGateway:
    return StripeGateway(stripe_client)
