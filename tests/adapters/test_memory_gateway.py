"""The fake gateway's script and ledger."""

import pytest

from lumenquest_adapters.memory import FakeGateway, GatewayOutcome, LedgerCharge
from lumenquest_adapters.testing.samples import customer, usd
from lumenquest_core.errors import (
    CurrencyMismatch,
    GatewayUnavailable,
    IdempotencyConflict,
    NotFound,
    ValidationError,
)
from lumenquest_core.money import Money
from lumenquest_core.payments import ChargeResult, ChargeStatus


def charge(gateway: FakeGateway, key: str, cents: int = 1000, who: str = "cus_1") -> ChargeResult:
    return gateway.charge(
        customer=customer(who), amount=usd(cents), idempotency_key=key, description="d", metadata={}
    )


def test_every_charge_is_in_the_ledger() -> None:
    gateway = FakeGateway()
    charge(gateway, "k1", 1000)
    charge(gateway, "k2", 250, who="cus_2")
    assert gateway.charges == [
        LedgerCharge("k1", "cus_1", usd(1000), ChargeStatus.SUCCEEDED, "ch_fake_1", "d"),
        LedgerCharge("k2", "cus_2", usd(250), ChargeStatus.SUCCEEDED, "ch_fake_2", "d"),
    ]
    assert gateway.charged_total() == usd(1250)
    assert gateway.charged_total("EUR") == Money(0, "EUR")


def test_a_replayed_key_charges_nothing_more() -> None:
    gateway = FakeGateway()
    first = charge(gateway, "k1")
    assert charge(gateway, "k1") == first
    assert len(gateway.charges) == 1
    assert gateway.calls == 2


def test_a_replayed_key_with_another_amount_is_an_idempotency_conflict() -> None:
    gateway = FakeGateway()
    charge(gateway, "k1", 1000)
    with pytest.raises(IdempotencyConflict):
        charge(gateway, "k1", 999)


def test_outcomes_are_used_in_order_then_the_default() -> None:
    gateway = FakeGateway(GatewayOutcome.decline("expired_card"))
    gateway.queue(GatewayOutcome.succeed(), GatewayOutcome.decline())
    statuses = [charge(gateway, f"k{i}").status for i in range(4)]
    assert statuses == [
        ChargeStatus.DECLINED,
        ChargeStatus.SUCCEEDED,
        ChargeStatus.DECLINED,
        ChargeStatus.SUCCEEDED,
    ]
    assert gateway.charges[0].decline_code == "expired_card"
    assert gateway.charged_total() == usd(2000)


def test_a_decline_is_replayed_for_its_key() -> None:
    gateway = FakeGateway(GatewayOutcome.decline("insufficient_funds"))
    first = charge(gateway, "k1")
    assert charge(gateway, "k1") == first
    assert first.decline_code == "insufficient_funds"


def test_a_default_of_decline_declines_everything_unscripted() -> None:
    gateway = FakeGateway(default=GatewayOutcome.decline("do_not_honor"))
    assert charge(gateway, "k1").decline_code == "do_not_honor"


def test_a_ledger_entry_gives_the_answer_its_charge_gave() -> None:
    gateway = FakeGateway(default=GatewayOutcome.decline("do_not_honor", "No."))
    answer = charge(gateway, "k1")
    [entry] = gateway.charges
    assert entry == LedgerCharge(
        "k1", "cus_1", usd(1000), ChargeStatus.DECLINED, "ch_fake_1", "d", "do_not_honor", "No."
    )
    assert answer == ChargeResult(ChargeStatus.DECLINED, "ch_fake_1", "do_not_honor", "No.")
    assert entry.result() == answer
    assert gateway.find_charge(customer("cus_1"), "k1") == answer


def test_a_customers_own_queue_goes_first() -> None:
    gateway = FakeGateway(GatewayOutcome.decline())
    gateway.queue_for("cus_2", GatewayOutcome.decline("lost_card"))
    assert charge(gateway, "k1", who="cus_2").decline_code == "lost_card"
    assert charge(gateway, "k2", who="cus_1").status is ChargeStatus.DECLINED
    assert charge(gateway, "k3", who="cus_2").status is ChargeStatus.SUCCEEDED


def test_a_timeout_charges_nothing_and_a_retry_with_the_key_goes_through() -> None:
    gateway = FakeGateway(GatewayOutcome.timeout())
    with pytest.raises(GatewayUnavailable) as raised:
        charge(gateway, "k1")
    assert raised.value.retryable
    assert gateway.charges == []
    assert charge(gateway, "k1").status is ChargeStatus.SUCCEEDED
    assert gateway.charged_total() == usd(1000)


def test_a_lost_response_charged_once_and_the_retry_learns_the_outcome() -> None:
    gateway = FakeGateway(GatewayOutcome.unknown())
    with pytest.raises(GatewayUnavailable):
        charge(gateway, "k1")
    assert len(gateway.charges) == 1
    retried = charge(gateway, "k1")
    assert retried.reference == gateway.charges[0].reference
    assert gateway.charged_total() == usd(1000)


def test_a_charge_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        charge(FakeGateway(), "k1", 0)


def test_customer_references_are_readable_and_stable() -> None:
    gateway = FakeGateway()
    assert gateway.ensure_customer(customer("cus_9")) == "cus_fake_1"
    assert gateway.ensure_customer(customer("cus_9")) == "cus_fake_1"
    assert gateway.ensure_customer(customer("cus_3")) == "cus_fake_2"


def test_refunds_are_in_the_ledger() -> None:
    gateway = FakeGateway()
    reference = charge(gateway, "k1").reference
    assert gateway.refund(reference=reference, amount=usd(300), idempotency_key="r1") == "re_fake_1"
    assert [(r.charge_reference, r.amount) for r in gateway.refunds] == [(reference, usd(300))]
    assert gateway.refunded_total() == usd(300)


def test_a_refund_of_an_unknown_or_declined_charge_is_not_found() -> None:
    gateway = FakeGateway(GatewayOutcome.decline())
    declined = charge(gateway, "k1").reference
    with pytest.raises(NotFound):
        gateway.refund(reference=declined, amount=usd(1), idempotency_key="r1")
    with pytest.raises(NotFound):
        gateway.refund(reference="ch_nope", amount=usd(1), idempotency_key="r2")


def test_a_refund_in_another_currency_is_a_mismatch() -> None:
    gateway = FakeGateway()
    reference = charge(gateway, "k1").reference
    with pytest.raises(CurrencyMismatch):
        gateway.refund(reference=reference, amount=Money(100, "EUR"), idempotency_key="r1")


def test_a_replayed_refund_key_with_another_amount_is_an_idempotency_conflict() -> None:
    gateway = FakeGateway()
    reference = charge(gateway, "k1").reference
    gateway.refund(reference=reference, amount=usd(100), idempotency_key="r1")
    with pytest.raises(IdempotencyConflict):
        gateway.refund(reference=reference, amount=usd(200), idempotency_key="r1")


def test_a_replayed_key_in_another_currency_is_an_idempotency_conflict() -> None:
    gateway = FakeGateway()
    charge(gateway, "k1", 1000)
    with pytest.raises(IdempotencyConflict):
        gateway.charge(
            customer=customer("cus_1"),
            amount=Money(1000, "EUR"),
            idempotency_key="k1",
            description="d",
            metadata={},
        )


def test_the_ledger_is_a_fresh_list_of_charges_each_time() -> None:
    gateway = FakeGateway(GatewayOutcome.decline("expired_card", "Expired."))
    charge(gateway, "k1", 1000)
    charge(gateway, "k2", 500)
    ledger = gateway.charges
    assert ledger == [
        LedgerCharge(
            "k1",
            "cus_1",
            usd(1000),
            ChargeStatus.DECLINED,
            "ch_fake_1",
            "d",
            "expired_card",
            "Expired.",
        ),
        LedgerCharge("k2", "cus_1", usd(500), ChargeStatus.SUCCEEDED, "ch_fake_2", "d"),
    ]
    ledger.clear()  # the caller's copy: the gateway's ledger is untouched
    assert len(gateway.charges) == 2
    assert gateway.find_charge(customer("cus_1"), "k1") == ChargeResult(
        ChargeStatus.DECLINED, "ch_fake_1", "expired_card", "Expired."
    )
    assert gateway.find_charge(customer("cus_2"), "k1") is None


def test_a_new_charge_answers_a_result_equal_to_its_constructors() -> None:
    """The result is built through the class's slots (see _gateway): the same object."""
    gateway = FakeGateway()
    answer = charge(gateway, "k1")
    assert type(answer) is ChargeResult
    assert answer == ChargeResult(ChargeStatus.SUCCEEDED, "ch_fake_1")
    assert hash(answer) == hash(ChargeResult(ChargeStatus.SUCCEEDED, "ch_fake_1"))
    assert repr(answer) == repr(ChargeResult(ChargeStatus.SUCCEEDED, "ch_fake_1"))
