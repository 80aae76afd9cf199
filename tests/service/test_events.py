"""Every state change writes its outbox events, audit row and change row; dispatch emails once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumenquest_adapters.memory import RecordingEmailSender
from lumenquest_core import Billing, EventName, GatewayUnavailable, SubscriptionStatus, periods
from lumenquest_core.codec import money_json
from lumenquest_core.ports import DeliveryStatus, EmailDelivery, EmailMessage
from lumenquest_core.service import EMAIL_TEMPLATES
from tests.service.scenario import Shop, at

USER = "user:1"


def events_of(shop: Shop, subject_id: str) -> list[EventName]:
    return [m.event.name for m in shop.billing.list_outbox() if m.event.subject_id == subject_id]


def changes_of(shop: Shop, sub_id: str) -> list[dict[str, Any]]:
    exported = shop.billing.export_customer(shop.ada.id)
    return [c for c in exported["subscription_changes"] if c["subscription_id"] == sub_id]


STATE_CHANGES: dict[str, tuple[Callable[[Billing, str, Shop], object], str, EventName]] = {
    "upgrade": (
        lambda b, s, shop: b.change_subscription(s, price_id=shop.pro.id),
        "changed",
        EventName.SUBSCRIPTION_CHANGED,
    ),
    "downgrade": (
        lambda b, s, shop: b.change_subscription(s, quantity=0),
        "change_scheduled",
        EventName.CHANGE_SCHEDULED,
    ),
    "cancel_at_period_end": (
        lambda b, s, _: b.cancel(s, at_period_end=True),
        "cancel_scheduled",
        EventName.CANCELLATION_SCHEDULED,
    ),
    "cancel": (lambda b, s, _: b.cancel(s), "canceled", EventName.SUBSCRIPTION_CANCELED),
    "pause": (lambda b, s, _: b.pause(s), "paused", EventName.SUBSCRIPTION_PAUSED),
}


@pytest.mark.parametrize("name", sorted(STATE_CHANGES))
def test_a_state_change_writes_its_event_an_audit_row_and_a_change_row(name: str) -> None:
    operation, kind, event = STATE_CHANGES[name]
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 10))
    before = shop.sub(sub.id)
    operation(shop.billing.as_actor(USER), sub.id, shop)
    after = shop.sub(sub.id)
    assert event in events_of(shop, sub.id)
    [audit] = [a for a in shop.billing.audit_log(subject_id=sub.id) if a.actor == USER]
    assert audit.action == f"subscription.{kind}"
    assert audit.at == at(1, 10)
    assert audit.customer_id == shop.ada.id
    assert audit.before is not None
    assert audit.after is not None
    assert audit.before["status"] == before.status.value
    assert audit.after["status"] == after.status.value
    assert audit.before != audit.after
    [change] = [c for c in changes_of(shop, sub.id) if c["kind"] == kind]
    assert change["to_status"] == after.status.value
    assert change["at"] == at(1, 10).isoformat()


def test_reactivate_and_resume_are_audited_too() -> None:
    shop = Shop()
    sub = shop.subscribe()
    user = shop.billing.as_actor(USER)
    user.cancel(sub.id, at_period_end=True)
    user.reactivate(sub.id)
    user.pause(sub.id)
    user.resume(sub.id)
    actions = [a.action for a in shop.billing.audit_log(subject_id=sub.id) if a.actor == USER]
    assert actions == [
        "subscription.cancel_scheduled",
        "subscription.reactivated",
        "subscription.paused",
        "subscription.resumed",
    ]
    kinds = [c["kind"] for c in changes_of(shop, sub.id)]
    assert kinds[-4:] == ["cancel_scheduled", "reactivated", "paused", "resumed"]
    assert EventName.CANCELLATION_UNDONE in events_of(shop, sub.id)
    assert EventName.SUBSCRIPTION_RESUMED in events_of(shop, sub.id)


def test_the_billing_run_is_audited_as_the_system() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.go(at(2, 1))
    [renewal] = [
        a for a in shop.billing.audit_log(subject_id=sub.id) if a.action == "subscription.renewed"
    ]
    assert renewal.actor == "system"
    assert EventName.SUBSCRIPTION_RENEWED in events_of(shop, sub.id)
    invoice = shop.invoices(sub.id)[-1]
    assert events_of(shop, invoice.id) == [EventName.INVOICE_FINALIZED, EventName.INVOICE_PAID]


def test_a_renewals_events_carry_money_as_money_json_does_and_its_audit_the_same() -> None:
    """A renewal's event data holds money in money_json's shape; the payment's audit row
    carries the same facts as the payment's event."""
    shop = Shop()
    sub = shop.subscribe()
    shop.go(at(2, 1))
    invoice = shop.invoices(sub.id)[-1]
    [payment] = shop.billing.list_payments(invoice_id=invoice.id)
    data = {
        (m.event.name, m.event.subject_id): dict(m.event.data)
        for m in shop.billing.list_outbox()
        if m.event.subject_id in (invoice.id, payment.id)
    }
    finalized = data[EventName.INVOICE_FINALIZED, invoice.id]
    assert finalized["total"] == money_json(invoice.total)
    assert finalized["amount_due"] == money_json(invoice.amount_due)
    paid = data[EventName.INVOICE_PAID, invoice.id]
    assert paid["total"] == money_json(invoice.total)
    assert paid["amount_paid"] == money_json(invoice.amount_paid)
    assert paid["lines"] == [
        {"description": line.description, "amount": money_json(line.amount)}
        for line in invoice.lines
    ]
    succeeded = data[EventName.PAYMENT_SUCCEEDED, payment.id]
    assert succeeded == {"invoice_id": invoice.id, "amount": money_json(payment.amount)}
    # The payment's audit row carries the same facts as its event.
    [audit] = shop.billing.audit_log(subject_id=payment.id)
    assert (audit.action, audit.before, audit.after) == ("payment.succeeded", None, succeeded)


def test_as_actor_does_not_change_the_original_billing() -> None:
    shop = Shop()
    assert shop.billing.as_actor(USER).actor == USER
    assert shop.billing.actor == "system"


def test_the_audit_log_keeps_personal_data_out_of_customer_updates() -> None:
    shop = Shop()
    shop.billing.update_customer(shop.ada.id, name="Augusta Ada King")
    [row] = [
        a for a in shop.billing.audit_log(subject_id=shop.ada.id) if a.action == "customer.updated"
    ]
    assert row.after == {"fields": ["name"]}


# -- dispatch -----------------------------------------------------------------------------


def test_dispatch_delivers_each_event_once_and_a_second_dispatch_sends_nothing() -> None:
    shop = Shop(dispatch_immediately=False)
    shop.subscribe()
    assert shop.billing.email.sent == []
    pending = shop.billing.list_outbox()
    assert all(m.delivered_at is None for m in pending)
    assert shop.billing.dispatch_events() == len(pending)
    assert all(m.delivered_at is not None for m in shop.billing.list_outbox())
    assert {e.id for e in shop.billing.list_analytics_events()} == {m.id for m in pending}
    templates = shop.billing.email.templates()
    assert templates.count("welcome") == 1
    assert templates.count("invoice_paid") == 1
    assert shop.billing.dispatch_events() == 0
    assert shop.billing.email.templates() == templates


def test_dispatch_with_a_small_limit_delivers_everything() -> None:
    shop = Shop(dispatch_immediately=False)
    shop.subscribe()
    count = len(shop.billing.list_outbox())
    assert shop.billing.dispatch_events(limit=2) == count
    assert all(m.delivered_at is not None for m in shop.billing.list_outbox())


class FlakyEmail(RecordingEmailSender):
    """Fails the ``fail_on``-th send, as a provider outage would, and works afterwards."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.attempts = 0
        self.fail_on = fail_on

    def send(self, message: EmailMessage) -> str:
        self.attempts += 1
        if self.attempts == self.fail_on:
            raise GatewayUnavailable("the email provider is down")
        return super().send(message)


def test_a_dispatch_that_fails_half_way_is_redone_without_duplicate_emails() -> None:
    """At least once: the events are delivered again, but each email goes out once."""
    email = FlakyEmail(fail_on=2)
    shop = Shop(dispatch_immediately=False, email=email)
    shop.subscribe()
    with pytest.raises(GatewayUnavailable):
        shop.billing.dispatch_events()
    assert shop.billing.email.templates() == ["welcome"]
    assert any(m.delivered_at is None for m in shop.billing.list_outbox())
    shop.billing.dispatch_events()
    templates = shop.billing.email.templates()
    assert sorted(templates) == sorted(set(templates))
    assert set(templates) == {"welcome", "invoice_paid"}
    assert all(m.delivered_at is not None for m in shop.billing.list_outbox())
    analytics = [e.id for e in shop.billing.list_analytics_events()]
    assert len(analytics) == len(set(analytics)) == len(shop.billing.list_outbox())


def test_emails_follow_the_lifecycle() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.billing.change_subscription(sub.id, price_id=shop.pro.id)
    shop.billing.cancel(sub.id)
    assert shop.billing.email.templates() == [
        "welcome",
        "invoice_paid",
        "subscription_changed",
        "subscription_canceled",
        "invoice_paid",  # the upgrade's prorations, billed when the subscription ends
    ]
    assert all(m.to == "ada@example.com" for m in shop.billing.email.sent)


def test_an_invoice_paid_email_lists_the_lines() -> None:
    shop = Shop()
    shop.subscribe()
    [paid] = shop.emails("invoice_paid")
    assert [line["amount"]["amount"] for line in paid["lines"]] == [1000]


def test_a_bounced_address_gets_no_more_email() -> None:
    shop = Shop()
    [welcome] = shop.billing.email.sent
    shop.billing.record_email_event(welcome.message_id, "bounce")
    sub = shop.subscribe()
    assert shop.billing.email.templates() == ["welcome"]
    assert shop.sub(sub.id).status is SubscriptionStatus.ACTIVE


def test_an_email_outage_does_not_fail_a_committed_subscribe() -> None:
    """The subscription is made and paid; its emails wait in the outbox for the next dispatch."""
    shop = Shop(email=FlakyEmail(fail_on=2))
    sub = shop.subscribe()
    assert sub.status is SubscriptionStatus.ACTIVE
    assert len(shop.billing.gateway.charges) == 1
    assert any(m.delivered_at is None for m in shop.billing.list_outbox())
    shop.billing.dispatch_events()
    assert set(shop.billing.email.templates()) == {"welcome", "invoice_paid"}
    assert all(m.delivered_at is not None for m in shop.billing.list_outbox())


def test_an_email_outage_does_not_fail_the_billing_run() -> None:
    email = FlakyEmail(fail_on=0)
    shop = Shop(email=email)
    sub = shop.subscribe()
    email.fail_on = email.attempts + 1
    summary = shop.go(at(2, 1))
    assert summary.renewals == 1
    assert summary.payments_succeeded == 1
    assert len(shop.invoices(sub.id)) == 2
    shop.billing.dispatch_events()
    assert shop.billing.email.templates().count("invoice_paid") == 2


def test_a_round_whose_emails_were_already_recorded_sends_none() -> None:
    """At least once: emails another dispatcher recorded are not sent again; events still are."""
    shop = Shop(dispatch_immediately=False)
    shop.subscribe()
    pending = shop.billing.list_outbox()
    recorded = [
        EmailDelivery(
            message_id=f"{m.id}.{template}",
            event_id=m.id,
            template=template,
            to="ada@example.com",
            status=DeliveryStatus.SENT,
            created_at=m.created_at,
            customer_id=m.event.customer_id,
        )
        for m in pending
        if (template := EMAIL_TEMPLATES.get(m.event.name)) is not None
    ]
    assert recorded
    with shop.billing._uow() as uow:  # what the other dispatcher left before it stopped
        uow.email_deliveries.add_new(recorded)
        uow.commit()
    assert shop.billing.dispatch_events() == len(pending)
    assert shop.billing.email.sent == []
    assert all(m.delivered_at is not None for m in shop.billing.list_outbox())


@pytest.mark.memory_only  # a pure helper: no store involved
@given(
    instant=st.datetimes(
        # hypothesis takes naive bounds and adds the zones itself
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_audit_instants_print_as_isoformat_whatever_was_printed_before(
    instant: datetime,
) -> None:
    # The audit snapshot remembers printed UTC instants; an equal instant in another
    # zone must still print with its own offset.
    utc = instant.astimezone(UTC)
    assert periods.iso_text(utc) == utc.isoformat()
    assert periods.iso_text(instant) == instant.isoformat()
