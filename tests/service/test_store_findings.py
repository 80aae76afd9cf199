"""What running the scenarios on SQLite and PostgreSQL (tests/service/stores.py) found."""

from __future__ import annotations

from datetime import timedelta

from lumenquest_adapters.memory import GatewayOutcome
from lumenquest_core import SubscriptionStatus
from tests.service.scenario import Shop, at
from tests.service.test_stateful_findings import _GatewayThatCannotLookUp


def test_a_run_claims_a_subscription_waiting_on_the_gateway_once() -> None:
    # Expiry cannot ask the gateway, so the subscription stays due; the run must not
    # claim it again batch after batch until its limit (it once did: 10,000 claims).
    shop = Shop(pending_payment_grace=timedelta(days=3), gateway=_GatewayThatCannotLookUp())
    shop.billing.gateway.queue(GatewayOutcome.unknown())
    sub = shop.subscribe()
    summary = shop.go(at(1, 2))
    assert shop.sub(sub.id).status is SubscriptionStatus.INCOMPLETE
    assert summary.subscriptions == 1
