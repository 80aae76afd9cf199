"""Invoicing and money back: refunds, credit notes, credit balance, paid changes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import attrs
import pytest

from lumenquest_adapters.memory import FakeGateway, GatewayOutcome, MemoryUnitOfWork
from lumenquest_core import (
    CreditNoteOutcome,
    Customer,
    EventName,
    GatewayUnavailable,
    InvalidTransition,
    InvoiceStatus,
    NotFound,
    PaymentDeclined,
    PaymentStatus,
    SubscriptionStatus,
    ValidationError,
)
from tests.service.scenario import CountingShop, Shop, at, footprint, usd

HALF_WAY_THROUGH_JANUARY = at(1, 16, 12)


def paid_first_invoice() -> tuple[Shop, str, str]:
    """Return a shop, Ada's first (paid, $10) invoice id and its payment id."""
    shop = Shop()
    shop.subscribe()
    [invoice] = shop.invoices()
    [payment] = shop.billing.list_payments(invoice_id=invoice.id)
    return shop, invoice.id, payment.id


# -- refunds --------------------------------------------------------------------------


def test_a_partial_refund_goes_through_the_gateway_and_reduces_what_is_refundable() -> None:
    shop, invoice_id, payment_id = paid_first_invoice()
    refund = shop.billing.refund(payment_id, amount=usd(300))
    assert refund.amount == usd(300)
    assert shop.billing.get_invoice(invoice_id).amount_refunded == usd(300)
    [payment] = shop.billing.list_payments(invoice_id=invoice_id)
    assert payment.refundable() == usd(700)
    [ledger] = shop.billing.gateway.refunds
    assert ledger.amount == usd(300)
    assert ledger.charge_reference == payment.gateway_reference
    assert shop.billing.list_refunds(invoice_id=invoice_id) == [refund]


def test_payments_and_refunds_are_paged_by_cursor() -> None:
    shop, invoice_id, payment_id = paid_first_invoice()
    shop.go(at(2, 1))
    shop.go(at(3, 1))
    every = shop.billing.list_payments(customer_id=shop.ada.id)
    assert len(every) == 3
    first = shop.billing.list_payments(customer_id=shop.ada.id, limit=2)
    rest = shop.billing.list_payments(customer_id=shop.ada.id, limit=2, after=first[-1].id)
    assert first + rest == every
    shop.billing.refund(payment_id, amount=usd(100))
    shop.billing.refund(payment_id, amount=usd(200))
    [one] = shop.billing.list_refunds(invoice_id=invoice_id, limit=1)
    [two] = shop.billing.list_refunds(invoice_id=invoice_id, after=one.id)
    assert (one.amount, two.amount) == (usd(100), usd(200))
    with pytest.raises(NotFound):
        shop.billing.list_payments(after="pay_404")


def test_a_full_refund_refunds_what_is_left() -> None:
    shop, invoice_id, payment_id = paid_first_invoice()
    shop.billing.refund(payment_id, amount=usd(300))
    rest = shop.billing.refund(payment_id)
    assert rest.amount == usd(700)
    assert shop.billing.get_invoice(invoice_id).amount_refunded == usd(1000)
    assert shop.billing.gateway.refunded_total() == usd(1000)


def test_a_refund_over_the_refundable_amount_is_refused_and_writes_nothing() -> None:
    shop, _, payment_id = paid_first_invoice()
    shop.billing.refund(payment_id, amount=usd(600))
    before = footprint(shop.billing)
    with pytest.raises(ValidationError):
        shop.billing.refund(payment_id, amount=usd(401))
    with pytest.raises(ValidationError):
        shop.billing.refund(payment_id, amount=usd(0))
    assert footprint(shop.billing) == before


def test_a_refund_records_an_event_and_an_audit_row() -> None:
    shop, _, payment_id = paid_first_invoice()
    refund = shop.billing.as_actor("admin:7").refund(payment_id, amount=usd(100))
    [event] = [m.event for m in shop.billing.list_outbox() if m.event.subject_id == refund.id]
    assert event.name is EventName.REFUND_CREATED
    [row] = [
        a for a in shop.billing.audit_log(subject_id=payment_id) if a.action == "refund.created"
    ]
    assert row.actor == "admin:7"


# -- credit notes and the credit balance -------------------------------------------------


def test_a_credit_note_to_the_credit_balance_pays_part_of_the_next_invoice() -> None:
    shop, invoice_id, _ = paid_first_invoice()
    note = shop.billing.issue_credit_note(
        invoice_id, amount=usd(400), outcome=CreditNoteOutcome.CREDIT_BALANCE, reason="outage"
    )
    assert note.outcome is CreditNoteOutcome.CREDIT_BALANCE
    assert shop.billing.get_invoice(invoice_id).amount_credited == usd(400)
    assert shop.balance() == usd(400)
    assert shop.billing.gateway.refunds == []
    shop.go(at(2, 1))
    renewal = shop.invoices()[-1]
    assert renewal.credit_applied == usd(400)
    assert renewal.amount_due == usd(600)
    assert shop.billing.gateway.charges[-1].amount == usd(600)
    assert shop.balance() == usd(0)


def test_a_credit_note_with_a_refund_outcome_goes_through_the_gateway() -> None:
    shop, invoice_id, payment_id = paid_first_invoice()
    note = shop.billing.issue_credit_note(invoice_id, amount=usd(250), outcome="refund")
    assert note.outcome is CreditNoteOutcome.REFUND
    [ledger] = shop.billing.gateway.refunds
    assert ledger.amount == usd(250)
    [refund] = shop.billing.list_refunds(payment_id=payment_id)
    assert refund.amount == usd(250)
    invoice = shop.billing.get_invoice(invoice_id)
    assert (invoice.amount_credited, invoice.amount_refunded) == (usd(250), usd(250))
    assert shop.balance() == usd(0)
    [payment] = shop.billing.list_payments(invoice_id=invoice_id)
    assert payment.refundable() == usd(750)
    assert shop.billing.list_credit_notes(invoice_id=invoice_id) == [note]


def test_a_credit_note_on_an_open_invoice_lowers_what_is_due() -> None:
    shop = Shop()
    shop.billing.gateway.queue(GatewayOutcome.decline())
    sub = shop.subscribe()
    [invoice] = shop.invoices(sub.id)
    shop.billing.issue_credit_note(invoice.id, amount=usd(1000))
    credited = shop.billing.get_invoice(invoice.id)
    assert credited.status is InvoiceStatus.PAID
    assert credited.amount_due == usd(0)


def test_a_credit_note_refund_larger_than_what_was_paid_is_refused() -> None:
    shop, invoice_id, _ = paid_first_invoice()
    before = footprint(shop.billing)
    with pytest.raises(ValidationError):
        shop.billing.issue_credit_note(invoice_id, amount=usd(1001), outcome="refund")
    assert footprint(shop.billing) == before


def test_voiding_an_open_invoice_returns_the_credit_it_used() -> None:
    shop, invoice_id, _ = paid_first_invoice()
    shop.billing.issue_credit_note(invoice_id, amount=usd(400), outcome="credit_balance")
    shop.billing.gateway.queue(GatewayOutcome.decline())
    shop.go(at(2, 1))
    renewal = shop.invoices()[-1]
    assert renewal.credit_applied == usd(400)
    assert shop.balance() == usd(0)
    shop.billing.void_invoice(renewal.id)
    assert shop.balance() == usd(400)


def test_an_expired_incomplete_subscription_gives_back_the_credit_its_invoice_used() -> None:
    shop, invoice_id, _ = paid_first_invoice()
    shop.billing.issue_credit_note(invoice_id, amount=usd(500), outcome="credit_balance")
    shop.billing.gateway.queue(GatewayOutcome.decline())
    sub = shop.subscribe(shop.pro)
    [invoice] = shop.invoices(sub.id)
    assert (invoice.credit_applied, invoice.amount_due) == (usd(500), usd(1500))
    assert shop.balance() == usd(0)
    shop.go(at(1, 1, 23))
    assert shop.sub(sub.id).status is SubscriptionStatus.INCOMPLETE_EXPIRED
    assert shop.billing.get_invoice(invoice.id).status is InvoiceStatus.VOID
    assert shop.balance() == usd(500)


def test_a_one_off_invoice_is_charged_at_once() -> None:
    shop = Shop()
    invoice = shop.billing.create_invoice(
        customer_id=shop.ada.id, items=[("Setup", usd(5000)), ("Training", usd(2500))]
    )
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.total == usd(7500)
    assert shop.billing.gateway.charges[-1].amount == usd(7500)


# -- changes that must be paid first ----------------------------------------------------


def test_a_declined_payment_required_upgrade_keeps_the_old_plan() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.basic)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    shop.billing.gateway.queue(GatewayOutcome.decline("card_declined"))
    with pytest.raises(PaymentDeclined) as declined:
        shop.billing.change_subscription(
            sub.id,
            price_id=shop.pro.id,
            proration_behavior="always_invoice",
            payment_required=True,
        )
    assert declined.value.decline_code == "card_declined"
    kept = shop.sub(sub.id)
    assert kept.price.id == shop.basic.id
    assert kept.status is SubscriptionStatus.ACTIVE
    assert kept.failed_payments == 0
    proration = shop.invoices(sub.id)[-1]
    assert proration.status is InvoiceStatus.VOID
    assert [line.amount.amount for line in proration.lines] == [-500, 1000]
    shop.go(at(2, 1))
    assert shop.invoices(sub.id)[-1].total == usd(1000)


def test_a_paid_payment_required_upgrade_changes_the_plan() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.basic)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    changed = shop.billing.change_subscription(
        sub.id, price_id=shop.pro.id, proration_behavior="always_invoice", payment_required=True
    )
    assert changed.price.id == shop.pro.id
    assert shop.invoices(sub.id)[-1].status is InvoiceStatus.PAID
    assert shop.billing.gateway.charges[-1].amount == usd(500)


def test_a_declined_upgrade_without_payment_required_opens_dunning() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.basic)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    shop.billing.gateway.queue(GatewayOutcome.decline())
    changed = shop.billing.change_subscription(
        sub.id, price_id=shop.pro.id, proration_behavior="always_invoice"
    )
    assert changed.price.id == shop.pro.id
    assert changed.status is SubscriptionStatus.PAST_DUE
    assert changed.next_payment_retry_at == at(1, 19, 12)
    assert shop.invoices(sub.id)[-1].status is InvoiceStatus.OPEN
    shop.go(at(1, 19, 12))
    assert shop.sub(sub.id).status is SubscriptionStatus.ACTIVE
    assert shop.invoices(sub.id)[-1].status is InvoiceStatus.PAID


def test_a_paid_upgrade_uses_up_a_coupon_cycle_once() -> None:
    """The proration invoice is one of the coupon's invoices; the change must not undo that."""
    shop = Shop()
    coupon = shop.billing.create_coupon(
        amount_off=usd(100), duration="repeating", duration_in_cycles=2
    )
    sub = shop.subscribe(shop.basic, coupon_id=coupon.id)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    changed = shop.billing.change_subscription(
        sub.id, price_id=shop.pro.id, proration_behavior="always_invoice", payment_required=True
    )
    assert changed.discount is None
    shop.go(at(2, 1))
    assert [i.discount for i in shop.invoices(sub.id)] == [usd(100), usd(100), usd(0)]
    assert [c.amount for c in shop.billing.gateway.charges] == [usd(900), usd(400), usd(2000)]


def test_a_free_payment_required_upgrade_applies_with_the_coupon_used() -> None:
    """With nothing to pay the change applies at once, and the invoice still used the coupon."""
    shop = Shop()
    coupon = shop.billing.create_coupon(percent_off=50, duration="repeating", duration_in_cycles=2)
    sub = shop.subscribe(shop.basic, coupon_id=coupon.id)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    changed = shop.billing.change_subscription(
        sub.id, price_id=shop.pro.id, proration_behavior="always_invoice", payment_required=True
    )
    assert changed.price.id == shop.pro.id
    assert changed.discount is None
    assert shop.invoices(sub.id)[-1].amount_due == usd(0)
    shop.go(at(2, 1))
    assert shop.invoices(sub.id)[-1].discount == usd(0)


def test_a_declined_payment_required_upgrade_uses_up_no_coupon_cycle() -> None:
    shop = Shop()
    coupon = shop.billing.create_coupon(
        amount_off=usd(100), duration="repeating", duration_in_cycles=2
    )
    sub = shop.subscribe(shop.basic, coupon_id=coupon.id)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    before = shop.sub(sub.id)
    shop.billing.gateway.queue(GatewayOutcome.decline())
    with pytest.raises(PaymentDeclined):
        shop.billing.change_subscription(
            sub.id,
            price_id=shop.pro.id,
            proration_behavior="always_invoice",
            payment_required=True,
        )
    assert shop.sub(sub.id) == before
    shop.go(at(2, 1))
    assert shop.invoices(sub.id)[-1].discount == usd(100)


def test_a_payment_required_upgrade_whose_charge_times_out_is_not_applied() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.basic)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    shop.billing.gateway.queue(GatewayOutcome.timeout())
    with pytest.raises(GatewayUnavailable) as unavailable:
        shop.billing.change_subscription(
            sub.id,
            price_id=shop.pro.id,
            proration_behavior="always_invoice",
            payment_required=True,
        )
    assert unavailable.value.retryable
    assert shop.sub(sub.id).price.id == shop.basic.id
    proration = shop.invoices(sub.id)[-1]
    assert proration.status is InvoiceStatus.OPEN
    [payment] = shop.billing.list_payments(invoice_id=proration.id)
    assert payment.status is PaymentStatus.PENDING


# -- a change paid first whose payment is not known at once (Stripe's pending updates) --

FIVE_MINUTES_LATER = at(1, 16, 12) + timedelta(minutes=6)


def held_upgrade(shop: Shop, outcome: GatewayOutcome) -> str:
    """Upgrade Ada half-way through January, paying first, with ``outcome``; return the sub id."""
    sub = shop.subscribe(shop.basic)
    shop.clock.set(HALF_WAY_THROUGH_JANUARY)
    shop.billing.gateway.queue(outcome)
    with pytest.raises(GatewayUnavailable):
        shop.billing.change_subscription(
            sub.id,
            price_id=shop.pro.id,
            proration_behavior="always_invoice",
            payment_required=True,
        )
    return sub.id


def test_a_held_change_waits_with_its_invoice_and_refuses_other_changes() -> None:
    shop = Shop()
    sub_id = held_upgrade(shop, GatewayOutcome.unknown())
    held = shop.sub(sub_id)
    assert held.price.id == shop.basic.id
    assert held.pending_update is not None
    assert held.pending_update.price.id == shop.pro.id
    assert held.pending_update.invoice_id == shop.invoices(sub_id)[-1].id
    assert held.pending_update.expires_at == at(1, 17, 11)  # 23 hours, before the period end
    before = footprint(shop.billing)
    with pytest.raises(InvalidTransition):
        shop.billing.change_subscription(sub_id, quantity=2)
    with pytest.raises(InvalidTransition):
        shop.billing.cancel(sub_id)
    assert footprint(shop.billing) == before


def test_a_change_whose_charge_went_through_unseen_applies_when_run_due_finds_it() -> None:
    shop = Shop()
    sub_id = held_upgrade(shop, GatewayOutcome.unknown())
    summary = shop.go(FIVE_MINUTES_LATER)
    assert summary.payments_succeeded == 1
    changed = shop.sub(sub_id)
    assert changed.price.id == shop.pro.id
    assert changed.pending_update is None
    proration = shop.invoices(sub_id)[-1]
    assert proration.status is InvoiceStatus.PAID
    assert [c.amount for c in shop.billing.gateway.charges] == [usd(1000), usd(500)]
    shop.go(at(2, 1))
    assert shop.invoices(sub_id)[-1].total == usd(2000)


def test_a_change_whose_charge_timed_out_applies_when_the_resent_charge_succeeds() -> None:
    shop = Shop()
    sub_id = held_upgrade(shop, GatewayOutcome.timeout())
    shop.go(FIVE_MINUTES_LATER)
    assert shop.sub(sub_id).price.id == shop.pro.id
    assert shop.invoices(sub_id)[-1].status is InvoiceStatus.PAID
    assert [c.amount for c in shop.billing.gateway.charges] == [usd(1000), usd(500)]


def test_a_held_change_whose_resent_charge_is_declined_is_dropped_without_dunning() -> None:
    shop = Shop()
    sub_id = held_upgrade(shop, GatewayOutcome.timeout())
    shop.billing.gateway.queue(GatewayOutcome.decline("card_declined"))
    shop.go(FIVE_MINUTES_LATER)
    kept = shop.sub(sub_id)
    assert kept.price.id == shop.basic.id
    assert kept.pending_update is None
    assert kept.status is SubscriptionStatus.ACTIVE
    assert kept.failed_payments == 0
    assert shop.invoices(sub_id)[-1].status is InvoiceStatus.VOID
    shop.go(at(2, 1))
    assert shop.invoices(sub_id)[-1].total == usd(1000)


def test_a_held_change_never_charged_expires_and_its_invoice_is_voided() -> None:
    shop = Shop()
    sub_id = held_upgrade(shop, GatewayOutcome.timeout())
    shop.billing.gateway.queue(GatewayOutcome.timeout())  # the resend fails the same way
    shop.go(FIVE_MINUTES_LATER)
    assert shop.sub(sub_id).pending_update is not None
    # At the expiry, run_due resends once more (timing out again), then asks the gateway,
    # which never charged: the change is dropped.
    shop.billing.gateway.queue(GatewayOutcome.timeout())
    summary = shop.go(at(1, 17, 11))
    assert summary.pending_updates_ended == 1
    kept = shop.sub(sub_id)
    assert kept.price.id == shop.basic.id
    assert kept.pending_update is None
    proration = shop.invoices(sub_id)[-1]
    assert proration.status is InvoiceStatus.VOID
    [payment] = shop.billing.list_payments(invoice_id=proration.id)
    assert payment.status is PaymentStatus.FAILED
    assert [c.amount for c in shop.billing.gateway.charges] == [usd(1000)]
    shop.billing.change_subscription(sub_id, price_id=shop.pro.id)  # free to change again


# -- the gateway link --------------------------------------------------------------------


def test_a_paid_first_subscription_stores_the_gateway_link_with_its_payment() -> None:
    shop = CountingShop(dispatch_immediately=False)  # delivering events opens its own
    opened = shop.opened
    sub = shop.subscribe()
    # One unit of work writes the subscription, one records the payment and the link.
    assert shop.opened == opened + 2
    assert sub.status is SubscriptionStatus.ACTIVE
    assert shop.billing.get_customer(shop.ada.id).gateway_customer_id is not None


def test_a_trial_links_the_customer_to_the_gateway_although_nothing_is_charged() -> None:
    shop = Shop()
    sub = shop.subscribe(trial_days=14)
    assert sub.status is SubscriptionStatus.TRIALING
    assert shop.billing.get_customer(shop.ada.id).gateway_customer_id is not None
    assert shop.billing.gateway.charges == []


def test_a_first_charge_that_times_out_still_keeps_the_gateway_link() -> None:
    shop = Shop()
    shop.billing.gateway.queue(GatewayOutcome.timeout())
    sub = shop.subscribe()
    assert sub.status is SubscriptionStatus.INCOMPLETE  # the charge is pending
    linked = shop.billing.get_customer(shop.ada.id).gateway_customer_id
    assert linked is not None
    shop.subscribe(shop.pro)
    assert shop.billing.get_customer(shop.ada.id).gateway_customer_id == linked


class _UnreachableForCustomers(FakeGateway):
    """A gateway that cannot create customers, but charges (it makes them as it charges)."""

    def ensure_customer(self, customer: Customer) -> str:
        raise GatewayUnavailable("the gateway's customer API is down")


class _LinkedMeanwhile(FakeGateway):
    """A gateway during whose customer call another request links the customer first."""

    def __init__(self) -> None:
        super().__init__()
        self.link_first: Callable[[str], None] = lambda customer_id: None

    def ensure_customer(self, customer: Customer) -> str:
        self.link_first(customer.id)
        return super().ensure_customer(customer)


@pytest.mark.memory_only  # scripts its own gateway
def test_a_first_charge_goes_through_when_the_gateway_cannot_create_the_customer() -> None:
    shop = Shop(gateway=_UnreachableForCustomers())
    sub = shop.subscribe()
    assert sub.status is SubscriptionStatus.ACTIVE
    assert shop.billing.get_customer(shop.ada.id).gateway_customer_id is None
    assert len(shop.billing.gateway.charges) == 1


@pytest.mark.memory_only  # scripts its own gateway and writes to the memory store
def test_a_gateway_link_stored_by_another_request_first_is_kept() -> None:
    gateway = _LinkedMeanwhile()
    shop = Shop(gateway=gateway)

    def link_first(customer_id: str) -> None:
        with MemoryUnitOfWork(shop.billing.store) as uow:
            customer = uow.customers.get(customer_id)
            uow.customers.update(attrs.evolve(customer, gateway_customer_id="cus_theirs"))
            uow.commit()

    gateway.link_first = link_first
    shop.subscribe()
    assert shop.billing.get_customer(shop.ada.id).gateway_customer_id == "cus_theirs"
