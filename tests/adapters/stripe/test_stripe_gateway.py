"""StripeGateway through the official SDK against localstripe."""

import attrs
import pytest
import stripe

from lumenquest_adapters.stripe import (
    METADATA_CUSTOMER_ID,
    METADATA_IDEMPOTENCY_KEY,
    NO_PAYMENT_METHOD,
    StripeGateway,
)
from lumenquest_adapters.testing.samples import customer, usd
from lumenquest_core.errors import (
    CurrencyMismatch,
    IdempotencyConflict,
    NotFound,
    PaymentDeclined,
    ValidationError,
)
from lumenquest_core.money import Money
from lumenquest_core.payments import ChargeStatus
from tests.adapters.stripe.localstripe_server import DECLINING_CARD, GOOD_CARD, LocalStripe


def _charge(gateway: StripeGateway, key: str = "in_1:1", cents: int = 1000, who: str = "cus_1"):
    return gateway.charge(
        customer=customer(who),
        amount=usd(cents),
        idempotency_key=key,
        description="Invoice LQ-000001",
        metadata={"invoice_id": "in_1", "payment_id": "pay_1"},
    )


def _all_intents(client: stripe.StripeClient) -> list[stripe.PaymentIntent]:
    return list(client.v1.payment_intents.list({"limit": 100}).auto_paging_iter())


def test_ensure_customer_creates_a_customer_carrying_our_id(
    gateway: StripeGateway, stripe_client: stripe.StripeClient
) -> None:
    reference = gateway.ensure_customer(customer("cus_1"))
    assert reference.startswith("cus_")
    created = stripe_client.v1.customers.retrieve(reference)
    assert created.email == "cus_1@example.com"
    assert created.name == "Ada"
    assert created.metadata[METADATA_CUSTOMER_ID] == "cus_1"


def test_ensure_customer_updates_the_stored_customer_instead_of_creating(
    gateway: StripeGateway, stripe_client: stripe.StripeClient
) -> None:
    reference = gateway.ensure_customer(customer("cus_1"))
    renamed = attrs.evolve(customer("cus_1"), name="Ada Lovelace", gateway_customer_id=reference)
    assert gateway.ensure_customer(renamed) == reference
    assert stripe_client.v1.customers.retrieve(reference).name == "Ada Lovelace"
    assert len(stripe_client.v1.customers.list({"limit": 100}).data) == 1


def test_ensure_customer_with_an_unknown_stored_reference_raises_not_found(
    gateway: StripeGateway,
) -> None:
    with pytest.raises(NotFound):
        gateway.ensure_customer(attrs.evolve(customer("cus_1"), gateway_customer_id="cus_gone"))


def test_attaching_a_payment_method_makes_it_the_default(
    gateway: StripeGateway, stripe_client: stripe.StripeClient
) -> None:
    method = gateway.attach_payment_method(customer("cus_1"), GOOD_CARD)
    reference = gateway.ensure_customer(customer("cus_1"))
    settings = stripe_client.v1.customers.retrieve(reference).invoice_settings
    assert settings is not None
    assert settings.default_payment_method == method


def test_a_card_refused_when_attached_raises_payment_declined(gateway: StripeGateway) -> None:
    with pytest.raises(PaymentDeclined) as caught:
        gateway.attach_payment_method(customer("cus_1"), "pm_card_visa_chargeDeclined")
    assert caught.value.decline_code == "card_declined"


def test_a_charge_is_an_off_session_payment_intent_on_the_default_method(
    gateway: StripeGateway, stripe_client: stripe.StripeClient
) -> None:
    method = gateway.attach_payment_method(customer("cus_1"), GOOD_CARD)
    result = _charge(gateway, key="in_1:1", cents=1234)
    assert result.status is ChargeStatus.SUCCEEDED
    assert result.reference.startswith("pi_")
    intent = stripe_client.v1.payment_intents.retrieve(result.reference)
    assert intent.amount == 1234
    assert intent.currency == "usd"
    assert intent.customer == gateway.ensure_customer(customer("cus_1"))
    assert intent.payment_method == method
    assert intent.status == "succeeded"
    assert intent.metadata.to_dict() == {
        "invoice_id": "in_1",
        "payment_id": "pay_1",
        "description": "Invoice LQ-000001",
        METADATA_CUSTOMER_ID: "cus_1",
        METADATA_IDEMPOTENCY_KEY: "in_1:1",
    }


def test_a_retry_with_the_same_key_charges_once(
    gateway: StripeGateway, stripe_client: stripe.StripeClient
) -> None:
    gateway.attach_payment_method(customer("cus_1"), GOOD_CARD)
    first = _charge(gateway)
    assert _charge(gateway) == first
    assert [i.id for i in _all_intents(stripe_client)] == [first.reference]
    with pytest.raises(IdempotencyConflict):
        _charge(gateway, cents=999)


def test_a_declined_charge_is_a_result_with_the_intent_and_decline_code(
    gateway: StripeGateway, localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> None:
    gateway.attach_payment_method(customer("cus_1"), DECLINING_CARD)
    localstripe.script_decline("insufficient_funds")
    result = _charge(gateway)
    assert result.status is ChargeStatus.DECLINED
    assert result.decline_code == "insufficient_funds"
    assert result.message == "Your card was declined."
    intent = stripe_client.v1.payment_intents.retrieve(result.reference)
    assert intent.status == "requires_payment_method"
    assert _charge(gateway) == result  # replayed, not charged again


def test_a_customer_without_a_payment_method_is_declined_without_an_intent(
    gateway: StripeGateway, stripe_client: stripe.StripeClient
) -> None:
    gateway.ensure_customer(customer("cus_1"))
    for who in ("cus_1", "cus_never_synced"):
        result = _charge(gateway, who=who)
        assert result.status is ChargeStatus.DECLINED
        assert result.decline_code == NO_PAYMENT_METHOD
    assert _all_intents(stripe_client) == []


def test_a_charge_that_is_not_positive_is_refused(gateway: StripeGateway) -> None:
    with pytest.raises(ValidationError):
        _charge(gateway, cents=0)


def test_refunds_are_partial_or_full_and_once_per_key(
    gateway: StripeGateway, stripe_client: stripe.StripeClient
) -> None:
    gateway.attach_payment_method(customer("cus_1"), GOOD_CARD)
    charge = _charge(gateway)
    first = gateway.refund(reference=charge.reference, amount=usd(300), idempotency_key="re:1")
    assert first.startswith("re_")
    assert gateway.refund(reference=charge.reference, amount=usd(300), idempotency_key="re:1") == (
        first
    )
    with pytest.raises(IdempotencyConflict):
        gateway.refund(reference=charge.reference, amount=usd(200), idempotency_key="re:1")
    rest = gateway.refund(reference=charge.reference, amount=usd(700), idempotency_key="re:2")
    refunds = stripe_client.v1.refunds.list({"payment_intent": charge.reference}).data
    assert sorted((r.id, r.amount) for r in refunds) == sorted([(first, 300), (rest, 700)])
    with pytest.raises(ValidationError):
        gateway.refund(reference=charge.reference, amount=usd(1), idempotency_key="re:3")


def test_a_refund_in_another_currency_raises_currency_mismatch(gateway: StripeGateway) -> None:
    gateway.attach_payment_method(customer("cus_1"), GOOD_CARD)
    charge = _charge(gateway)
    with pytest.raises(CurrencyMismatch):
        gateway.refund(reference=charge.reference, amount=Money(100, "EUR"), idempotency_key="re:1")


def test_refunding_an_unknown_or_declined_charge_raises_not_found(
    gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    with pytest.raises(NotFound):
        gateway.refund(reference="pi_missing", amount=usd(100), idempotency_key="re:1")
    gateway.attach_payment_method(customer("cus_1"), DECLINING_CARD)
    declined = _charge(gateway)
    with pytest.raises(NotFound):
        gateway.refund(reference=declined.reference, amount=usd(100), idempotency_key="re:2")
