"""The facade's own contract: its settings, customers, list limits, and repeated calls with a key."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from lumenquest_adapters.memory import (
    FakeGateway,
    GatewayOutcome,
    MemoryCache,
    MemoryStore,
    MemoryUnitOfWork,
    RecordingEmailSender,
    TestClock,
)
from lumenquest_core import (
    Billing,
    BillingCycle,
    Conflict,
    EventName,
    GatewayUnavailable,
    IdempotencyConflict,
    Interval,
    InvalidTransition,
    LineKind,
    Role,
    SubscriptionStatus,
    ValidationError,
)
from lumenquest_core.ports import UnitOfWork
from lumenquest_core.service import RunSummary
from tests.service.scenario import (
    NEW_YEAR,
    Shop,
    amounts,
    assert_renewals_settled,
    at,
    footprint,
    usd,
)


def billing_with_defaults(**options: object) -> Billing:
    """Return a Billing on memory adapters with every setting left at its default."""
    store = MemoryStore()
    clock = TestClock(NEW_YEAR)
    return Billing(
        unit_of_work=lambda: MemoryUnitOfWork(store),
        clock=clock,
        gateway=FakeGateway(),
        email=RecordingEmailSender(),
        cache=MemoryCache(clock),
        **options,  # type: ignore[arg-type]
    )


def events_of(shop: Shop, subject_id: str) -> list[EventName]:
    return [m.event.name for m in shop.billing.list_outbox() if m.event.subject_id == subject_id]


# -- settings -----------------------------------------------------------------------------


@pytest.mark.memory_only  # builds its own memory billing
def test_by_default_ids_are_random_and_prefixed_by_kind() -> None:
    billing = billing_with_defaults()
    first = billing.create_customer(email="ada@example.com")
    second = billing.create_customer(email="bob@example.com")
    assert re.fullmatch(r"cus_[0-9a-f]{32}", first.id)
    assert first.id != second.id


@pytest.mark.memory_only  # builds its own memory billing
@pytest.mark.parametrize("prefix", ["", "lq", "LQ-", "TOOLONGPREFIX1", "LQ 1"])
def test_a_bad_invoice_prefix_fails_at_construction(prefix: str) -> None:
    with pytest.raises(ValidationError, match="prefix"):
        billing_with_defaults(invoice_prefix=prefix)


def test_invoices_are_numbered_with_the_configured_prefix() -> None:
    shop = Shop(invoice_prefix="ACME")
    shop.subscribe()
    [invoice] = shop.invoices()
    assert invoice.number is not None
    assert invoice.number.startswith("ACME")


@pytest.mark.memory_only  # builds its own memory billing
@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_size_below_one_fails_at_construction(batch_size: int) -> None:
    with pytest.raises(ValidationError, match="batch_size"):
        billing_with_defaults(batch_size=batch_size)


def test_a_billing_run_of_no_subscriptions_is_refused() -> None:
    shop = Shop()
    shop.subscribe()
    with pytest.raises(ValidationError, match="limit"):
        shop.billing.run_due(limit=0)


# -- customers ----------------------------------------------------------------------------


def test_a_customer_is_found_by_email_whatever_its_case() -> None:
    shop = Shop()
    assert shop.billing.find_customer_by_email("  ADA@Example.com") == shop.ada
    assert shop.billing.find_customer_by_email("nobody@example.com") is None
    with pytest.raises(ValidationError):
        shop.billing.find_customer_by_email("not an email")


def test_customers_are_listed_page_by_page_in_id_order() -> None:
    shop = Shop()
    ids = [shop.ada.id] + [shop.customer(f"user{n}@example.com") for n in range(4)]
    pages: list[list[str]] = []
    after = None
    while page := shop.billing.list_customers(limit=2, after=after):
        pages.append([c.id for c in page])
        after = page[-1].id
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [i for page in pages for i in page] == sorted(ids)


def test_a_customer_can_change_email_and_is_found_by_the_new_one_only() -> None:
    shop = Shop()
    updated = shop.billing.update_customer(shop.ada.id, email=" Ada@Analytical.ENGINE ")
    assert updated.email == "ada@analytical.engine"
    assert shop.billing.find_customer_by_email("ada@analytical.engine") == updated
    assert shop.billing.find_customer_by_email("ada@example.com") is None
    [event] = [
        m.event for m in shop.billing.list_outbox() if m.event.name is EventName.CUSTOMER_UPDATED
    ]
    assert event.data == {"fields": ["email"]}


def test_a_customer_may_keep_its_own_email_but_not_take_anothers() -> None:
    shop = Shop()
    bob = shop.customer("bob@example.com", "Bob")
    assert shop.billing.update_customer(shop.ada.id, email="ADA@example.com").email == (
        "ada@example.com"
    )
    before = footprint(shop.billing)
    with pytest.raises(Conflict) as raised:
        shop.billing.update_customer(bob, email="Ada@Example.com")
    assert raised.value.details == {"field": "email"}
    assert footprint(shop.billing) == before


def test_a_customer_can_be_made_an_admin_and_given_metadata() -> None:
    shop = Shop()
    updated = shop.billing.update_customer(
        shop.ada.id, role="admin", metadata={"crm_id": "42"}, name="Augusta Ada King"
    )
    assert updated.role is Role.ADMIN
    assert dict(updated.metadata) == {"crm_id": "42"}
    stored = shop.billing.get_customer(shop.ada.id)
    assert (stored.role, stored.name, stored.email) == (
        Role.ADMIN,
        "Augusta Ada King",
        "ada@example.com",
    )


def test_a_repeated_customer_update_with_its_key_is_applied_once() -> None:
    shop = Shop()
    first = shop.billing.update_customer(shop.ada.id, name="Ada", idempotency_key="u1")
    again = shop.billing.update_customer(shop.ada.id, name="Ada", idempotency_key="u1")
    assert again == first
    assert events_of(shop, shop.ada.id).count(EventName.CUSTOMER_UPDATED) == 1
    with pytest.raises(IdempotencyConflict):
        shop.billing.update_customer(shop.ada.id, name="Ada K", idempotency_key="u1")


# -- list limits ----------------------------------------------------------------------------

LISTS: dict[str, Callable[[Shop, object], object]] = {
    "customers": lambda shop, limit: shop.billing.list_customers(limit=limit),  # type: ignore[arg-type]
    "subscriptions": lambda shop, limit: shop.billing.list_subscriptions(limit=limit),  # type: ignore[arg-type]
    "invoices": lambda shop, limit: shop.billing.list_invoices(limit=limit),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("limit", [0, -5, 1001, True, 2.0, "10"])
@pytest.mark.parametrize("name", sorted(LISTS))
def test_a_list_limit_must_be_an_int_from_1_to_1000(name: str, limit: object) -> None:
    shop = Shop()
    with pytest.raises(ValidationError) as raised:
        LISTS[name](shop, limit)
    assert raised.value.details == {"limit": repr(limit)}


@pytest.mark.parametrize("name", sorted(LISTS))
def test_a_list_limit_of_1000_is_allowed(name: str) -> None:
    shop = Shop()
    shop.subscribe()
    assert len(LISTS[name](shop, 1000)) == 1  # type: ignore[arg-type]


# -- subscription calls repeated with their key -------------------------------------------------


def test_a_repeated_cancel_with_its_key_cancels_and_bills_once() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.clock.set(at(1, 16))
    first = shop.billing.cancel(sub.id, prorate=True, idempotency_key="bye")
    again = shop.billing.cancel(sub.id, prorate=True, idempotency_key="bye")
    assert again == first
    assert first.status is SubscriptionStatus.CANCELED
    assert len(shop.invoices(sub.id)) == 2  # the first period and the one proration credit
    assert events_of(shop, sub.id).count(EventName.SUBSCRIPTION_CANCELED) == 1


def test_repeated_pause_and_resume_with_their_keys_act_once() -> None:
    shop = Shop()
    sub = shop.subscribe()
    paused = shop.billing.pause(sub.id, idempotency_key="pause")
    assert shop.billing.pause(sub.id, idempotency_key="pause") == paused
    resumed = shop.billing.resume(sub.id, idempotency_key="resume")
    assert shop.billing.resume(sub.id, idempotency_key="resume") == resumed
    assert resumed.status is SubscriptionStatus.ACTIVE
    assert events_of(shop, sub.id).count(EventName.SUBSCRIPTION_PAUSED) == 1
    assert events_of(shop, sub.id).count(EventName.SUBSCRIPTION_RESUMED) == 1
    with pytest.raises(IdempotencyConflict):
        shop.billing.pause(sub.id, resumes_at=at(3, 1), idempotency_key="pause")


def test_a_repeated_reactivation_with_its_key_returns_the_first_result() -> None:
    shop = Shop()
    sub = shop.subscribe()
    shop.billing.cancel(sub.id, at_period_end=True)
    first = shop.billing.reactivate(sub.id, idempotency_key="stay")
    assert not first.cancel_at_period_end
    assert shop.billing.reactivate(sub.id, idempotency_key="stay") == first
    with pytest.raises(InvalidTransition):
        shop.billing.reactivate(sub.id)  # without the key it is a second, refused, call


# -- usage and previews ---------------------------------------------------------------------


def test_usage_cannot_be_recorded_on_a_canceled_subscription() -> None:
    shop = Shop()
    metered = shop.price(10, usage_type="metered", nickname="API calls")
    sub = shop.subscribe(metered)
    shop.clock.set(at(1, 10))
    shop.billing.record_usage(sub.id, quantity=30)
    shop.billing.cancel(sub.id)
    [final] = shop.invoices(sub.id)  # metered: billed in arrears, at the cancellation
    assert amounts(final, LineKind.USAGE) == [300]
    with pytest.raises(InvalidTransition) as raised:
        shop.billing.record_usage(sub.id, quantity=5)
    assert raised.value.details == {"status": "canceled", "operation": "record_usage"}


def test_the_preview_of_a_downgrade_shows_the_next_renewal_at_the_new_price() -> None:
    shop = Shop()
    sub = shop.subscribe(shop.pro)
    shop.clock.set(at(1, 10))
    preview = shop.billing.preview_change(sub.id, price_id=shop.basic.id)
    assert amounts(preview) == [1000]
    [line] = preview.lines
    assert line.period is not None
    assert (line.period.start, line.period.end) == (at(2, 1), at(3, 1))
    assert shop.sub(sub.id).price.id == shop.pro.id  # nothing written
    shop.billing.change_subscription(sub.id, price_id=shop.basic.id)
    shop.go(at(2, 1))
    renewal = shop.invoices(sub.id)[-1]
    assert amounts(renewal) == amounts(preview)
    assert renewal.total == preview.total == usd(1000)


# -- run_due's summary --------------------------------------------------------------------


class _CommitFails:
    """A memory unit of work whose commit fails, as a connection lost mid-run would."""

    def __init__(self, inner: MemoryUnitOfWork) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def __enter__(self) -> _CommitFails:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)  # type: ignore[arg-type]

    def commit(self) -> None:
        raise GatewayUnavailable("the database connection was lost")


def _due_monthly(billing: Billing, count: int) -> None:
    plan = billing.create_plan(name="Pro")
    price = billing.create_price(
        plan_id=plan.id, unit_amount=usd(1000), cycle=BillingCycle(Interval.MONTH)
    )
    for i in range(count):
        customer = billing.create_customer(email=f"user{i}@example.com")
        billing.subscribe(customer_id=customer.id, price_id=price.id)


@pytest.mark.memory_only  # fails one commit of its own memory store
def test_a_run_that_fails_mid_way_leaves_the_committed_batches_counts_in_the_given_summary() -> (
    None
):
    store = MemoryStore()
    clock = TestClock(NEW_YEAR)
    units = 0

    def unit_of_work() -> UnitOfWork:
        nonlocal units
        units += 1
        inner = MemoryUnitOfWork(store)
        return _CommitFails(inner) if failing and units == fail_at else inner  # type: ignore[return-value]

    failing, fail_at = False, 0
    billing = Billing(
        unit_of_work=unit_of_work,
        clock=clock,
        gateway=FakeGateway(),
        email=RecordingEmailSender(),
        cache=MemoryCache(clock),
        batch_size=2,
        dispatch_immediately=False,
    )
    _due_monthly(billing, 5)
    clock.set(at(2, 1, 1))
    # Units of work of the run: pending payments, then per batch its claim and its
    # settlement. The third claim (subscriptions 5) fails at commit.
    failing, units, fail_at = True, 0, 6
    summary = RunSummary()
    with pytest.raises(GatewayUnavailable):
        billing.run_due(limit=10, summary=summary)
    assert (summary.subscriptions, summary.renewals, summary.invoices) == (4, 4, 4)
    assert summary.payments_succeeded == 4
    failing = False
    again = billing.run_due(limit=10, summary=summary)
    assert again is summary
    assert (summary.subscriptions, summary.renewals, summary.payments_succeeded) == (5, 5, 5)
    assert billing.run_due(limit=10).subscriptions == 0  # nothing was left, nothing twice


def test_a_run_in_batches_renews_charges_and_counts_each_subscription_once() -> None:
    shop = Shop(batch_size=2)
    customers = [shop.customer(f"user{i}@example.com") for i in range(5)]
    for customer in customers:
        shop.subscribe(customer_id=customer)
    declined = customers[1::2]  # one in the first batch, one in the second
    for customer in declined:
        shop.billing.gateway.queue_for(customer, GatewayOutcome.decline("insufficient_funds"))
    summary = shop.go(at(2, 1, 1))
    assert (summary.subscriptions, summary.renewals, summary.invoices) == (5, 5, 5)
    assert (summary.payments_succeeded, summary.payments_failed) == (3, 2)
    assert summary.payments_pending == 0
    assert_renewals_settled(shop, customers, declined)
    assert shop.go(at(2, 1, 2)).renewals == 0
