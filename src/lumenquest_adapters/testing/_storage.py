"""The contract every ``UnitOfWork`` and its repositories must meet."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import attrs
import pytest

from lumenquest_adapters.testing.samples import (
    T0,
    analytics_event,
    audit_entry,
    coupon,
    credit_note,
    customer,
    email_delivery,
    idempotency_record,
    invoice,
    outbox_message,
    payment,
    pending_line,
    plan,
    price,
    refund,
    subscription,
    subscription_change,
    usage_record,
)
from lumenquest_core.errors import Conflict, NotFound, ValidationError
from lumenquest_core.invoicing import BillingReason, InvoiceStatus
from lumenquest_core.money import Money
from lumenquest_core.payments import PaymentStatus
from lumenquest_core.periods import Period
from lumenquest_core.ports import HistoryWriter, UnitOfWork, message_fields
from lumenquest_core.subscriptions import SubscriptionStatus

__all__ = ["UnitOfWorkContract"]

UowFactory = Callable[[], UnitOfWork]
Action = Callable[[UnitOfWork], object]

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def _commit(factory: UowFactory, *actions: Action) -> None:
    with factory() as uow:
        for action in actions:
            action(uow)
        uow.commit()


def _ids(rows: Any) -> list[str]:
    return [row.id for row in rows]


def _fields(record: Any) -> tuple[Any, ...]:
    """Return an attrs record's fields in their order, as ``add_history`` takes them."""
    return tuple(getattr(record, field.name) for field in attrs.fields(type(record)))


def _conflict(uow: UnitOfWork, write: Action) -> Conflict:
    """Run a write that must break a constraint: it raises at once or, in batch mode, by commit."""
    with pytest.raises(Conflict) as raised:
        _write_and_commit(uow, write)
    return raised.value


def _write_and_commit(uow: UnitOfWork, write: Action) -> None:
    write(uow)
    uow.commit()


# Every repository's "add" of a sample, for the constraints they all share.
_ADDS: dict[str, Action] = {
    "customer": lambda u: u.customers.add(customer("x_1")),
    "plan": lambda u: u.plans.add(plan("x_1")),
    "price": lambda u: u.prices.add(price("x_1")),
    "coupon": lambda u: u.coupons.add(coupon("x_1")),
    "subscription": lambda u: u.subscriptions.add(subscription("x_1")),
    "invoice": lambda u: u.invoices.add(invoice("x_1", reason=BillingReason.MANUAL)),
    "pending line": lambda u: u.invoices.add_pending_line(pending_line("x_1")),
    "payment": lambda u: u.payments.add(payment("x_1", idempotency_key=None)),
    "refund": lambda u: u.payments.add_refund(refund("x_1")),
    "credit note": lambda u: u.credit_notes.add(credit_note("x_1")),
    "usage record": lambda u: u.usage.add(usage_record("x_1")),
    "outbox message": lambda u: u.outbox.add(outbox_message("x_1")),
    "audit entry": lambda u: u.audit_log.add(audit_entry("x_1")),
    "subscription change": lambda u: u.subscription_changes.add(subscription_change("x_1")),
    "analytics event": lambda u: u.analytics.add(analytics_event("x_1")),
    "email delivery": lambda u: u.email_deliveries.add(email_delivery("x_1")),
}

_GETS: dict[str, Action] = {
    "customer": lambda u: u.customers.get("missing_1"),
    "plan": lambda u: u.plans.get("missing_1"),
    "price": lambda u: u.prices.get("missing_1"),
    "coupon": lambda u: u.coupons.get("missing_1"),
    "subscription": lambda u: u.subscriptions.get("missing_1"),
    "invoice": lambda u: u.invoices.get("missing_1"),
    "payment": lambda u: u.payments.get("missing_1"),
    "email delivery": lambda u: u.email_deliveries.get("missing_1"),
}

_UPDATES: dict[str, Action] = {
    "customer": lambda u: u.customers.update(customer("missing_1")),
    "plan": lambda u: u.plans.update(plan("missing_1")),
    "price": lambda u: u.prices.update(price("missing_1")),
    "subscription": lambda u: u.subscriptions.update(subscription("missing_1")),
    "invoice": lambda u: u.invoices.update(invoice("missing_1")),
    "payment": lambda u: u.payments.update(payment("missing_1")),
    "email delivery": lambda u: u.email_deliveries.update(email_delivery("missing_1")),
}


class UnitOfWorkContract:
    """What every ``UnitOfWork`` adapter must do; subclass it and implement ``make_uow_factory``.

    Each test gets a fresh, empty store from the ``uow_factory`` fixture; override the
    fixture itself (same name) if the store needs tearing down after the test.
    """

    def make_uow_factory(self) -> UowFactory:
        """Return a factory of units of work over a fresh, empty store."""
        raise NotImplementedError

    @pytest.fixture
    def uow_factory(self) -> UowFactory:
        return self.make_uow_factory()

    # -- transactions ------------------------------------------------------------------

    def test_committed_changes_are_kept(self, uow_factory: UowFactory) -> None:
        _commit(uow_factory, lambda u: u.customers.add(customer("cus_1")))
        with uow_factory() as uow:
            assert uow.customers.get("cus_1") == customer("cus_1")

    def test_changes_not_committed_are_discarded(self, uow_factory: UowFactory) -> None:
        with uow_factory() as uow:
            uow.customers.add(customer("cus_1"))
        with uow_factory() as uow, pytest.raises(NotFound):
            uow.customers.get("cus_1")

    def test_changes_are_discarded_when_the_block_raises(self, uow_factory: UowFactory) -> None:
        class Boom(Exception):
            pass

        def fail_after_adding() -> None:
            with uow_factory() as uow:
                uow.customers.add(customer("cus_1"))
                raise Boom

        with pytest.raises(Boom):
            fail_after_adding()
        with uow_factory() as uow:
            assert uow.customers.find_by_email("cus_1@example.com") is None

    def test_rollback_discards_only_what_came_after_the_last_commit(
        self, uow_factory: UowFactory
    ) -> None:
        with uow_factory() as uow:
            uow.customers.add(customer("cus_1"))
            uow.commit()
            uow.customers.add(customer("cus_2"))
            uow.rollback()
            uow.customers.add(customer("cus_3"))
            uow.commit()
        with uow_factory() as uow:
            assert _ids(uow.customers.list()) == ["cus_1", "cus_3"]

    def test_a_unit_of_work_reads_its_own_uncommitted_writes(self, uow_factory: UowFactory) -> None:
        _commit(uow_factory, lambda u: u.customers.add(customer("cus_1")))
        with uow_factory() as uow:
            renamed = attrs.evolve(customer("cus_1"), name="Grace")
            uow.customers.update(renamed)
            uow.customers.add(customer("cus_2"))
            assert uow.customers.get("cus_1").name == "Grace"
            assert uow.customers.find_by_email("cus_2@example.com") == customer("cus_2")
            assert _ids(uow.customers.list()) == ["cus_1", "cus_2"]

    def test_uncommitted_writes_are_invisible_to_another_unit_of_work(
        self, uow_factory: UowFactory
    ) -> None:
        with uow_factory() as writer:
            writer.customers.add(customer("cus_1"))
            with uow_factory() as reader:
                assert reader.customers.find_by_email("cus_1@example.com") is None

    # -- batch mode (prepare_batch) ----------------------------------------------------

    def test_prepared_rows_read_as_stored_and_unknown_ids_are_no_error(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.customers.add(customer("cus_1")),
            lambda u: u.subscriptions.add(subscription("sub_1")),
            lambda u: u.invoices.add(invoice("in_1")),
            lambda u: u.payments.add(payment("pay_1")),
        )
        with uow_factory() as uow:
            uow.prepare_batch(
                customers=["cus_1", "cus_9"],
                subscriptions=["sub_1", "sub_9"],
                invoices=["in_1", "in_9"],
                payments_for_update=["pay_1", "pay_9"],
                pending_lines_of=["sub_1", "sub_9"],
            )
            assert uow.customers.get("cus_1") == customer("cus_1")
            assert uow.subscriptions.get("sub_1") == subscription("sub_1")
            assert uow.invoices.get("in_1") == invoice("in_1")
            assert uow.payments.get_for_update("pay_1") == payment("pay_1")
            with pytest.raises(NotFound):
                uow.customers.get("cus_9")
            with pytest.raises(NotFound):
                uow.payments.get_for_update("pay_9")

    def test_a_known_invoice_is_what_a_batch_reads_only_while_it_is_stored_as_known(
        self, uow_factory: UowFactory
    ) -> None:
        open_ = InvoiceStatus.OPEN
        _commit(
            uow_factory,
            lambda u: u.invoices.add(invoice("in_1", status=open_)),
            lambda u: u.invoices.add(invoice("in_2", status=open_, period_start=T0 + DAY)),
        )
        voided = attrs.evolve(
            invoice("in_2", status=open_, period_start=T0 + DAY), status=InvoiceStatus.VOID
        )
        _commit(uow_factory, lambda u: u.invoices.update(voided))
        with uow_factory() as uow:
            # Both known as open: in_1 still is, in_2 was voided since.
            uow.prepare_batch(
                invoices=["in_1", "in_2"],
                known_invoices=[
                    invoice("in_1", status=open_),
                    invoice("in_2", status=open_, period_start=T0 + DAY),
                ],
            )
            assert uow.invoices.get("in_1") == invoice("in_1", status=open_)
            assert uow.invoices.get("in_2") == voided

    def test_a_batch_reads_its_own_writes_and_keeps_them_on_commit(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(uow_factory, lambda u: u.invoices.add(invoice("in_1")))
        paid = attrs.evolve(
            invoice("in_1"), status=InvoiceStatus.PAID, amount_paid=Money(1000, "USD")
        )
        with uow_factory() as uow:
            uow.prepare_batch(invoices=["in_1"], pending_lines_of=["sub_1"])
            uow.invoices.update(paid)
            uow.customers.add(customer("cus_1"))
            uow.invoices.add_pending_line(pending_line("pl_1"))
            assert uow.invoices.get("in_1") == paid
            assert _ids(uow.invoices.list(status=InvoiceStatus.PAID)) == ["in_1"]
            assert uow.customers.find_by_email("cus_1@example.com") == customer("cus_1")
            assert _ids(uow.invoices.take_pending_lines("sub_1")) == ["pl_1"]
            uow.commit()
        with uow_factory() as uow:
            assert uow.invoices.get("in_1") == paid
            assert uow.customers.get("cus_1") == customer("cus_1")
            assert uow.invoices.take_pending_lines("sub_1") == []

    def test_a_broken_constraint_in_a_batch_keeps_nothing(self, uow_factory: UowFactory) -> None:
        _commit(uow_factory, lambda u: u.payments.add(payment("pay_1", idempotency_key="k")))
        with uow_factory() as uow:
            uow.prepare_batch()
            uow.customers.add(customer("cus_1"))
            raised = _conflict(uow, lambda u: u.payments.add(payment("pay_2", idempotency_key="k")))
            assert raised.details["idempotency_key"] == "k"
        with uow_factory() as uow:
            assert uow.customers.find_by_email("cus_1@example.com") is None
            assert _ids(uow.payments.list()) == ["pay_1"]

    def test_invoice_numbers_taken_in_a_batch_stay_gapless(self, uow_factory: UowFactory) -> None:
        with uow_factory() as uow:
            uow.prepare_batch()
            assert [uow.invoices.next_number() for _ in range(3)] == [1, 2, 3]
        with uow_factory() as uow:
            uow.prepare_batch()
            assert [uow.invoices.next_number() for _ in range(3)] == [1, 2, 3]
            uow.commit()
        with uow_factory() as uow:
            assert uow.invoices.next_number() == 4

    # -- constraints shared by every repository ---------------------------------------

    @pytest.mark.parametrize("kind", sorted(_ADDS))
    def test_adding_an_id_twice_raises_conflict(self, uow_factory: UowFactory, kind: str) -> None:
        _commit(uow_factory, _ADDS[kind])
        with uow_factory() as uow:
            raised = _conflict(uow, _ADDS[kind])
        assert raised.code == "CONFLICT"

    @pytest.mark.parametrize("kind", sorted(_ADDS))
    def test_adding_an_id_twice_in_one_unit_of_work_raises_conflict(
        self, uow_factory: UowFactory, kind: str
    ) -> None:
        with uow_factory() as uow:
            _ADDS[kind](uow)
            _conflict(uow, _ADDS[kind])

    @pytest.mark.parametrize("kind", sorted(_GETS))
    def test_getting_a_missing_id_raises_not_found_naming_it(
        self, uow_factory: UowFactory, kind: str
    ) -> None:
        with uow_factory() as uow, pytest.raises(NotFound) as raised:
            _GETS[kind](uow)
        assert raised.value.code == "NOT_FOUND"
        assert "missing_1" in raised.value.message

    @pytest.mark.parametrize("kind", sorted(_UPDATES))
    def test_updating_a_missing_id_raises_not_found(
        self, uow_factory: UowFactory, kind: str
    ) -> None:
        with uow_factory() as uow, pytest.raises(NotFound):
            _UPDATES[kind](uow)

    # -- customers ---------------------------------------------------------------------

    def test_a_second_customer_with_the_same_email_raises_conflict(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(uow_factory, lambda u: u.customers.add(customer("cus_1", email="a@example.com")))
        with uow_factory() as uow:
            _conflict(uow, lambda u: u.customers.add(customer("cus_2", email="A@Example.com")))

    def test_changing_email_to_a_taken_one_raises_conflict(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.customers.add(customer("cus_1", email="a@example.com")),
            lambda u: u.customers.add(customer("cus_2", email="b@example.com")),
        )
        with uow_factory() as uow:
            _conflict(uow, lambda u: u.customers.update(customer("cus_2", email="a@example.com")))

    def test_a_changed_email_frees_the_old_one(self, uow_factory: UowFactory) -> None:
        _commit(uow_factory, lambda u: u.customers.add(customer("cus_1", email="a@example.com")))
        _commit(
            uow_factory,
            lambda u: u.customers.update(customer("cus_1", email="new@example.com")),
            lambda u: u.customers.add(customer("cus_2", email="a@example.com")),
        )
        with uow_factory() as uow:
            found = uow.customers.find_by_email("a@example.com")
            assert found is not None
            assert found.id == "cus_2"
            moved = uow.customers.find_by_email("new@example.com")
            assert moved is not None
            assert moved.id == "cus_1"

    def test_customers_are_listed_by_id_after_the_cursor_up_to_the_limit(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(uow_factory, *(_add_customer(i) for i in ("cus_c", "cus_a", "cus_e")))
        with uow_factory() as uow:
            uow.customers.add(customer("cus_b"))
            uow.customers.add(customer("cus_d"))
            assert _ids(uow.customers.list()) == ["cus_a", "cus_b", "cus_c", "cus_d", "cus_e"]
            assert _ids(uow.customers.list(after="cus_b", limit=2)) == ["cus_c", "cus_d"]
            assert _ids(uow.customers.list(after="cus_e")) == []
            assert _ids(uow.customers.list(limit=1)) == ["cus_a"]

    # -- catalog -----------------------------------------------------------------------

    def test_plans_are_listed_by_id_and_filtered_by_active(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.plans.add(plan("plan_b")),
            lambda u: u.plans.add(plan("plan_a", active=False)),
            lambda u: u.plans.add(plan("plan_c")),
        )
        with uow_factory() as uow:
            assert _ids(uow.plans.list()) == ["plan_a", "plan_b", "plan_c"]
            assert _ids(uow.plans.list(active_only=True)) == ["plan_b", "plan_c"]
            uow.plans.update(plan("plan_b", active=False))
            assert _ids(uow.plans.list(active_only=True)) == ["plan_c"]

    def test_prices_are_listed_by_id_per_plan_and_filtered_by_active(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.prices.add(price("price_c", plan_id="plan_1")),
            lambda u: u.prices.add(price("price_a", plan_id="plan_1", active=False)),
            lambda u: u.prices.add(price("price_b", plan_id="plan_2")),
        )
        with uow_factory() as uow:
            assert _ids(uow.prices.list()) == ["price_a", "price_b", "price_c"]
            assert _ids(uow.prices.list(plan_id="plan_1")) == ["price_a", "price_c"]
            assert _ids(uow.prices.list(plan_id="plan_1", active_only=True)) == ["price_c"]
            assert _ids(uow.prices.list(plan_id="plan_3")) == []

    def test_coupons_are_listed_by_id(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.coupons.add(coupon("co_b")),
            lambda u: u.coupons.add(coupon("co_a")),
        )
        with uow_factory() as uow:
            assert _ids(uow.coupons.list()) == ["co_a", "co_b"]
            assert uow.coupons.get("co_b") == coupon("co_b")

    # -- subscriptions -----------------------------------------------------------------

    def test_subscriptions_are_listed_by_id_filtered_by_customer_and_status(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.subscriptions.add(subscription("sub_c", customer_id="cus_1")),
            lambda u: u.subscriptions.add(subscription("sub_a", customer_id="cus_2")),
            lambda u: u.subscriptions.add(subscription("sub_b", customer_id="cus_1", due=None)),
        )
        with uow_factory() as uow:
            assert _ids(uow.subscriptions.list()) == ["sub_a", "sub_b", "sub_c"]
            assert _ids(uow.subscriptions.list(customer_id="cus_1")) == ["sub_b", "sub_c"]
            canceled = uow.subscriptions.list(status=SubscriptionStatus.CANCELED)
            assert _ids(canceled) == ["sub_b"]
            assert _ids(uow.subscriptions.list(after="sub_a", limit=1)) == ["sub_b"]
            assert _ids(uow.subscriptions.list(customer_id="cus_1", after="sub_b")) == ["sub_c"]

    def test_claim_due_returns_due_subscriptions_earliest_first_up_to_the_limit(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.subscriptions.add(subscription("sub_1", due=T0 + 3 * HOUR)),
            lambda u: u.subscriptions.add(subscription("sub_2", due=T0 + 1 * HOUR)),
            lambda u: u.subscriptions.add(subscription("sub_3", due=T0 + 2 * HOUR)),
            lambda u: u.subscriptions.add(subscription("sub_4", due=T0 + 9 * HOUR)),
            lambda u: u.subscriptions.add(subscription("sub_5", due=None)),
        )
        with uow_factory() as uow:
            assert _ids(uow.subscriptions.claim_due(T0 + 3 * HOUR, limit=10)) == [
                "sub_2",
                "sub_3",
                "sub_1",
            ]
            assert _ids(uow.subscriptions.claim_due(T0 + 3 * HOUR, limit=2)) == ["sub_2", "sub_3"]
            assert _ids(uow.subscriptions.claim_due(T0, limit=10)) == []

    def test_claim_due_follows_committed_updates(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.subscriptions.add(subscription("sub_1", due=T0 + HOUR)),
            lambda u: u.subscriptions.add(subscription("sub_2", due=T0 + 5 * DAY)),
        )
        _commit(
            uow_factory,
            lambda u: u.subscriptions.update(subscription("sub_1", due=T0 + 9 * DAY)),
            lambda u: u.subscriptions.update(subscription("sub_2", due=T0 + HOUR)),
        )
        with uow_factory() as uow:
            assert _ids(uow.subscriptions.claim_due(T0 + DAY, limit=10)) == ["sub_2"]

    def test_claim_due_sees_the_unit_of_works_own_changes(self, uow_factory: UowFactory) -> None:
        _commit(uow_factory, lambda u: u.subscriptions.add(subscription("sub_1", due=T0 + HOUR)))
        with uow_factory() as uow:
            uow.subscriptions.update(subscription("sub_1", due=None))
            uow.subscriptions.add(subscription("sub_2", due=T0 + 2 * HOUR))
            assert _ids(uow.subscriptions.claim_due(T0 + DAY, limit=10)) == ["sub_2"]

    def test_a_rolled_back_change_leaves_the_subscription_due(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(uow_factory, lambda u: u.subscriptions.add(subscription("sub_1", due=T0 + HOUR)))
        with uow_factory() as uow:
            uow.subscriptions.update(subscription("sub_1", due=None))
        with uow_factory() as uow:
            assert _ids(uow.subscriptions.claim_due(T0 + DAY, limit=10)) == ["sub_1"]

    def test_concurrent_claims_never_share_a_subscription(self, uow_factory: UowFactory) -> None:
        expected = [f"sub_{i:02}" for i in range(24)]
        _commit(
            uow_factory,
            *(_add_subscription(sid, T0 + i * HOUR) for i, sid in enumerate(expected)),
        )
        claims: list[str] = []
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def work() -> None:
            try:
                start.wait()
                while True:
                    with uow_factory() as uow:
                        batch = uow.subscriptions.claim_due(T0 + 2 * DAY, limit=3)
                        for sub in batch:
                            # Done: no work is due for it any more.
                            uow.subscriptions.update(
                                attrs.evolve(sub, status=SubscriptionStatus.CANCELED, ended_at=T0)
                            )
                        uow.commit()
                    if not batch:
                        return
                    claims.extend(sub.id for sub in batch)
            except BaseException as error:  # reported by the main thread
                errors.append(error)

        workers = [threading.Thread(target=work) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        assert sorted(claims) == expected  # each exactly once

    # -- invoices ----------------------------------------------------------------------

    def test_a_second_cycle_invoice_for_the_same_period_raises_conflict(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(uow_factory, lambda u: u.invoices.add(invoice("in_1", subscription_id="sub_1")))
        with uow_factory() as uow:
            raised = _conflict(
                uow, lambda u: u.invoices.add(invoice("in_2", subscription_id="sub_1"))
            )
        assert raised.details["subscription_id"] == "sub_1"

    def test_other_invoices_for_the_same_period_are_allowed(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.invoices.add(invoice("in_1", subscription_id="sub_1")),
            lambda u: u.invoices.add(
                invoice("in_2", subscription_id="sub_1", reason=BillingReason.SUBSCRIPTION_UPDATE)
            ),
            lambda u: u.invoices.add(invoice("in_3", subscription_id="sub_2")),
            lambda u: u.invoices.add(
                invoice("in_4", subscription_id="sub_1", period_start=T0 + DAY)
            ),
        )
        with uow_factory() as uow:
            assert len(uow.invoices.list()) == 4

    def test_invoices_are_listed_in_creation_order_after_the_cursor(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(uow_factory, _add_invoice("in_c", 0), _add_invoice("in_a", 1))
        _commit(uow_factory, _add_invoice("in_e", 2))
        with uow_factory() as uow:
            uow.invoices.add(invoice("in_b", subscription_id="sub_x", period_start=T0))
            assert _ids(uow.invoices.list()) == ["in_c", "in_a", "in_e", "in_b"]
            assert _ids(uow.invoices.list(after="in_a", limit=1)) == ["in_e"]
            assert _ids(uow.invoices.list(after="in_e")) == ["in_b"]
            assert _ids(uow.invoices.list(limit=2)) == ["in_c", "in_a"]

    def test_invoices_are_filtered_by_customer_subscription_and_status(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.invoices.add(invoice("in_1", customer_id="cus_1", subscription_id="s1")),
            lambda u: u.invoices.add(invoice("in_2", customer_id="cus_2", subscription_id="s2")),
            lambda u: u.invoices.add(
                invoice(
                    "in_3",
                    customer_id="cus_1",
                    subscription_id="s1",
                    period_start=T0 + DAY,
                    status=InvoiceStatus.OPEN,
                )
            ),
        )
        with uow_factory() as uow:
            assert _ids(uow.invoices.list(customer_id="cus_1")) == ["in_1", "in_3"]
            assert _ids(uow.invoices.list(subscription_id="s2")) == ["in_2"]
            opened = uow.invoices.list(subscription_id="s1", status=InvoiceStatus.OPEN)
            assert _ids(opened) == ["in_3"]
            assert _ids(uow.invoices.list(customer_id="cus_1", after="in_1")) == ["in_3"]
            uow.invoices.update(invoice("in_1", customer_id="cus_1", subscription_id="s1"))
            assert _ids(uow.invoices.list(customer_id="cus_1")) == ["in_1", "in_3"]

    def test_invoice_numbers_start_at_one_without_gaps(self, uow_factory: UowFactory) -> None:
        with uow_factory() as uow:
            assert [uow.invoices.next_number(), uow.invoices.next_number()] == [1, 2]
            uow.commit()
        with uow_factory() as uow:
            assert uow.invoices.next_number() == 3

    def test_a_rolled_back_invoice_number_is_reused(self, uow_factory: UowFactory) -> None:
        with uow_factory() as uow:
            assert uow.invoices.next_number() == 1
        with uow_factory() as uow:
            assert uow.invoices.next_number() == 1
            uow.commit()
        with uow_factory() as uow:
            assert uow.invoices.next_number() == 2

    def test_pending_lines_are_taken_once_oldest_first(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.invoices.add_pending_line(pending_line("pl_b", created_at=T0)),
            lambda u: u.invoices.add_pending_line(pending_line("pl_a", created_at=T0 + HOUR)),
            lambda u: u.invoices.add_pending_line(pending_line("pl_x", subscription_id="sub_2")),
        )
        with uow_factory() as uow:
            uow.invoices.add_pending_line(pending_line("pl_c", created_at=T0 + DAY))
            assert _ids(uow.invoices.take_pending_lines("sub_1")) == ["pl_b", "pl_a", "pl_c"]
            assert _ids(uow.invoices.take_pending_lines("sub_1")) == []
            uow.commit()
        with uow_factory() as uow:
            assert _ids(uow.invoices.take_pending_lines("sub_1")) == []
            assert _ids(uow.invoices.take_pending_lines("sub_2")) == ["pl_x"]

    def test_taking_pending_lines_is_rolled_back(self, uow_factory: UowFactory) -> None:
        _commit(uow_factory, lambda u: u.invoices.add_pending_line(pending_line("pl_1")))
        with uow_factory() as uow:
            assert _ids(uow.invoices.take_pending_lines("sub_1")) == ["pl_1"]
        with uow_factory() as uow:
            assert _ids(uow.invoices.take_pending_lines("sub_1")) == ["pl_1"]

    # -- payments, refunds, credit notes -----------------------------------------------

    def test_a_reused_payment_idempotency_key_raises_conflict(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(uow_factory, lambda u: u.payments.add(payment("pay_1", idempotency_key="k")))
        with uow_factory() as uow:
            raised = _conflict(uow, lambda u: u.payments.add(payment("pay_2", idempotency_key="k")))
        assert raised.details["idempotency_key"] == "k"

    def test_a_payment_is_found_by_idempotency_key_or_gateway_reference(
        self, uow_factory: UowFactory
    ) -> None:
        paid = attrs.evolve(payment("pay_1", idempotency_key="in_1:1"), gateway_reference="ch_9")
        _commit(uow_factory, lambda u: u.payments.add(paid))
        with uow_factory() as uow:
            assert uow.payments.find(idempotency_key="in_1:1") == paid
            assert uow.payments.find(gateway_reference="ch_9") == paid
            assert uow.payments.find(idempotency_key="in_2:1") is None
            assert uow.payments.find() is None

    def test_a_payment_read_for_update_is_the_stored_one(self, uow_factory: UowFactory) -> None:
        _commit(uow_factory, lambda u: u.payments.add(payment("pay_1")))
        with uow_factory() as uow:
            assert uow.payments.get_for_update("pay_1") == uow.payments.get("pay_1")
            with pytest.raises(NotFound):
                uow.payments.get_for_update("pay_404")

    def test_payments_are_listed_in_creation_order_by_invoice_and_customer(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.payments.add(payment("pay_b", invoice_id="in_1", customer_id="cus_1")),
            lambda u: u.payments.add(payment("pay_a", invoice_id="in_2", customer_id="cus_1")),
            lambda u: u.payments.add(payment("pay_c", invoice_id="in_1", customer_id="cus_1")),
            lambda u: u.payments.add(payment("pay_d", invoice_id="in_3", customer_id="cus_2")),
        )
        with uow_factory() as uow:
            assert _ids(uow.payments.list(invoice_id="in_1")) == ["pay_b", "pay_c"]
            assert _ids(uow.payments.list(customer_id="cus_1")) == ["pay_b", "pay_a", "pay_c"]
            assert _ids(uow.payments.list()) == ["pay_b", "pay_a", "pay_c", "pay_d"]

    def test_payments_refunds_and_credit_notes_are_paged_after_the_cursor(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.payments.add(payment("pay_b", customer_id="cus_1")),
            lambda u: u.payments.add(payment("pay_a", customer_id="cus_2")),
            lambda u: u.payments.add(payment("pay_c", customer_id="cus_1")),
            lambda u: u.payments.add_refund(refund("re_b", payment_id="pay_1")),
            lambda u: u.payments.add_refund(refund("re_a", payment_id="pay_1")),
            lambda u: u.credit_notes.add(credit_note("cn_b")),
            lambda u: u.credit_notes.add(credit_note("cn_a")),
        )
        _commit(uow_factory, lambda u: u.payments.add(payment("pay_d", customer_id="cus_1")))
        with uow_factory() as uow:
            payments = uow.payments
            assert _ids(payments.list(limit=2)) == ["pay_b", "pay_a"]
            assert _ids(payments.list(limit=2, after="pay_a")) == ["pay_c", "pay_d"]
            assert _ids(payments.list(customer_id="cus_1", after="pay_b")) == ["pay_c", "pay_d"]
            assert _ids(payments.list(customer_id="cus_1", after="pay_c", limit=1)) == ["pay_d"]
            assert _ids(payments.list(after="pay_d")) == []
            assert _ids(payments.list(limit=0)) == []
            assert _ids(payments.refunds(payment_id="pay_1", after="re_b")) == ["re_a"]
            assert _ids(payments.refunds(limit=1)) == ["re_b"]
            assert _ids(uow.credit_notes.list(after="cn_b")) == ["cn_a"]
            assert _ids(uow.credit_notes.list(limit=1)) == ["cn_b"]
            for unknown in (
                lambda: payments.list(after="pay_404"),
                lambda: payments.refunds(after="re_404"),
                lambda: uow.credit_notes.list(after="cn_404"),
                lambda: uow.usage.list("sub_1", after="u_404"),
            ):
                with pytest.raises(NotFound):
                    unknown()
            with pytest.raises(ValidationError):
                payments.list(limit=-1)

    def test_pending_payments_are_the_oldest_before_the_cutoff(
        self, uow_factory: UowFactory
    ) -> None:
        succeeded = PaymentStatus.SUCCEEDED
        _commit(
            uow_factory,
            lambda u: u.payments.add(payment("pay_1", created_at=T0 + 2 * HOUR)),
            lambda u: u.payments.add(payment("pay_2", created_at=T0 + HOUR)),
            lambda u: u.payments.add(payment("pay_3", created_at=T0, status=succeeded)),
            lambda u: u.payments.add(payment("pay_4", created_at=T0 + 3 * HOUR)),
            lambda u: u.payments.add(payment("pay_5", created_at=T0 + 90 * timedelta(minutes=1))),
        )
        with uow_factory() as uow:
            cutoff = T0 + 3 * HOUR
            assert _ids(uow.payments.pending(created_before=cutoff, limit=10)) == [
                "pay_2",
                "pay_5",
                "pay_1",
            ]
            assert _ids(uow.payments.pending(created_before=cutoff, limit=1)) == ["pay_2"]
            uow.payments.update(payment("pay_2", created_at=T0 + HOUR, status=succeeded))
            assert _ids(uow.payments.pending(created_before=cutoff, limit=1)) == ["pay_5"]

    def test_refunds_are_listed_by_payment_and_by_invoice(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.payments.add_refund(refund("re_b", payment_id="pay_1", invoice_id="in_1")),
            lambda u: u.payments.add_refund(refund("re_a", payment_id="pay_2", invoice_id="in_1")),
            lambda u: u.payments.add_refund(refund("re_c", payment_id="pay_1", invoice_id="in_1")),
        )
        with uow_factory() as uow:
            assert _ids(uow.payments.refunds(payment_id="pay_1")) == ["re_b", "re_c"]
            assert _ids(uow.payments.refunds(invoice_id="in_1")) == ["re_b", "re_a", "re_c"]
            assert _ids(uow.payments.refunds(payment_id="pay_9")) == []

    def test_credit_notes_are_listed_by_invoice_and_customer(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.credit_notes.add(credit_note("cn_b", invoice_id="in_1")),
            lambda u: u.credit_notes.add(credit_note("cn_a", invoice_id="in_2")),
            lambda u: u.credit_notes.add(credit_note("cn_c", customer_id="cus_2")),
        )
        with uow_factory() as uow:
            assert _ids(uow.credit_notes.list(invoice_id="in_1")) == ["cn_b", "cn_c"]
            assert _ids(uow.credit_notes.list(customer_id="cus_1")) == ["cn_b", "cn_a"]
            assert _ids(uow.credit_notes.list()) == ["cn_b", "cn_a", "cn_c"]

    # -- usage -------------------------------------------------------------------------

    def test_usage_total_counts_the_half_open_period(self, uow_factory: UowFactory) -> None:
        period = Period(T0, T0 + DAY)
        _commit(
            uow_factory,
            lambda u: u.usage.add(usage_record("u_1", quantity=2, at=T0)),
            lambda u: u.usage.add(usage_record("u_2", quantity=3, at=T0 + DAY - HOUR)),
            lambda u: u.usage.add(usage_record("u_3", quantity=100, at=T0 + DAY)),
            lambda u: u.usage.add(usage_record("u_4", quantity=100, at=T0 - HOUR)),
            lambda u: u.usage.add(usage_record("u_5", quantity=100, subscription_id="sub_2")),
        )
        with uow_factory() as uow:
            assert uow.usage.total("sub_1", period) == 5
            assert uow.usage.total("sub_9", period) == 0

    def test_usage_records_are_listed_by_time(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.usage.add(usage_record("u_1", at=T0 + HOUR)),
            lambda u: u.usage.add(usage_record("u_2", at=T0)),
            lambda u: u.usage.add(usage_record("u_3", subscription_id="sub_2")),
        )
        with uow_factory() as uow:
            assert _ids(uow.usage.list("sub_1")) == ["u_2", "u_1"]

    def test_usage_records_are_paged_in_time_order_after_the_cursor(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.usage.add(usage_record("u_1", at=T0 + HOUR)),
            lambda u: u.usage.add(usage_record("u_2", at=T0)),
            lambda u: u.usage.add(usage_record("u_3", at=T0 + HOUR)),
            lambda u: u.usage.add(usage_record("u_4", at=T0 + DAY)),
            lambda u: u.usage.add(usage_record("u_5", at=T0, subscription_id="sub_2")),
        )
        with uow_factory() as uow:
            assert _ids(uow.usage.list("sub_1", limit=2)) == ["u_2", "u_1"]
            # Recorded earlier in time, listed after: the cursor follows the order, not the id.
            assert _ids(uow.usage.list("sub_1", after="u_1")) == ["u_3", "u_4"]
            assert _ids(uow.usage.list("sub_1", after="u_3", limit=5)) == ["u_4"]

    # -- outbox, audit, history, analytics, emails -------------------------------------

    def test_pending_outbox_messages_are_oldest_first_up_to_the_limit(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            *(_add_message(f"evt_{i}", T0 + i * HOUR) for i in range(1, 5)),
        )
        with uow_factory() as uow:
            assert _ids(uow.outbox.pending(limit=2)) == ["evt_1", "evt_2"]
            uow.outbox.mark_delivered(["evt_1", "evt_3"], T0 + DAY)
            uow.commit()
        with uow_factory() as uow:
            assert _ids(uow.outbox.pending(limit=10)) == ["evt_2", "evt_4"]
            delivered = {m.id: m.delivered_at for m in uow.outbox.list()}
            assert delivered == {
                "evt_1": T0 + DAY,
                "evt_2": None,
                "evt_3": T0 + DAY,
                "evt_4": None,
            }

    def test_outbox_messages_are_listed_per_customer(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.outbox.add(outbox_message("evt_1", customer_id="cus_1")),
            lambda u: u.outbox.add(outbox_message("evt_2", customer_id="cus_2")),
            lambda u: u.outbox.add(outbox_message("evt_3", customer_id="cus_1")),
        )
        with uow_factory() as uow:
            assert _ids(uow.outbox.list(customer_id="cus_1")) == ["evt_1", "evt_3"]

    def test_audit_entries_are_listed_oldest_first_by_subject_or_customer(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.audit_log.add(audit_entry("a_1", subject_id="sub_1", at=T0)),
            lambda u: u.audit_log.add(audit_entry("a_2", subject_id="sub_2", at=T0 + HOUR)),
            lambda u: u.audit_log.add(
                audit_entry("a_3", subject_id="sub_1", customer_id="cus_2", at=T0 + DAY)
            ),
        )
        with uow_factory() as uow:
            assert _ids(uow.audit_log.list(subject_id="sub_1")) == ["a_1", "a_3"]
            assert _ids(uow.audit_log.list(customer_id="cus_1")) == ["a_1", "a_2"]
            assert _ids(uow.audit_log.list()) == ["a_1", "a_2", "a_3"]

    def test_subscription_changes_are_listed_by_time_up_to_and_including_until(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.subscription_changes.add(subscription_change("c_1", at=T0 + DAY)),
            lambda u: u.subscription_changes.add(subscription_change("c_2", at=T0)),
            lambda u: u.subscription_changes.add(subscription_change("c_3", at=T0 + 2 * DAY)),
            lambda u: u.subscription_changes.add(
                subscription_change("c_4", subscription_id="sub_2", customer_id="cus_2", at=T0)
            ),
        )
        with uow_factory() as uow:
            changes = uow.subscription_changes
            assert _ids(changes.list(subscription_id="sub_1")) == ["c_2", "c_1", "c_3"]
            assert _ids(changes.list(until=T0 + DAY)) == ["c_2", "c_4", "c_1"]
            assert _ids(changes.list(customer_id="cus_2")) == ["c_4"]

    def test_history_written_in_one_call_reads_back_as_the_repositories_store_it(
        self, uow_factory: UowFactory
    ) -> None:
        """``add_history`` (optional, see ``HistoryWriter``) stores what ``add`` would."""
        with uow_factory() as uow:
            if not hasattr(uow, "add_history"):
                pytest.skip("this unit of work writes history through its repositories only")
        first, second = outbox_message("evt_1"), outbox_message("evt_2", customer_id="cus_2")
        entry = audit_entry("aud_1", at=T0 + HOUR)
        change = subscription_change("chg_1", at=T0 + DAY)

        def write(uow: UnitOfWork) -> None:
            cast(HistoryWriter, uow).add_history(
                T0,
                [
                    message_fields(first.id, first.event),
                    # Data may come as a plain dict too (fresh: nothing else changes it).
                    (*message_fields(second.id, second.event)[:5], dict(second.event.data)),
                ],
                _fields(entry),
                _fields(change),
            )

        _commit(uow_factory, write)
        with uow_factory() as uow:
            assert list(uow.outbox.list()) == [first, second]
            assert list(uow.audit_log.list()) == [entry]
            assert list(uow.subscription_changes.list()) == [change]

    # -- metrics aggregates over the subscription history -----------------------------

    def test_mrr_snapshots_sum_each_subscriptions_last_change_at_the_start_and_the_end(
        self, uow_factory: UowFactory
    ) -> None:
        start, end = T0 + 10 * DAY, T0 + 20 * DAY
        _commit(
            uow_factory,
            # Added out of time order: the later change first.
            _add_change("c_1b", "sub_1", "cus_1", T0 + 15 * DAY, 3000),
            _add_change("c_1a", "sub_1", "cus_1", T0, 1000),
            _add_change("c_2", "sub_2", "cus_1", T0 + 5 * DAY, 500),
            # At the start exactly, and canceled at the end exactly.
            _add_change("c_3a", "sub_3", "cus_2", start, 2000),
            _add_change("c_3b", "sub_3", "cus_2", end, 0, to_status="canceled"),
            # Paid, left, came back on another subscription: a reactivation.
            _add_change("c_4a", "sub_4", "cus_3", T0, 700),
            _add_change("c_4b", "sub_4", "cus_3", T0 + 2 * DAY, 0, to_status="canceled"),
            _add_change("c_5", "sub_5", "cus_3", T0 + 12 * DAY, 900),
            _add_change("c_6", "sub_6", "cus_4", T0 + 12 * DAY, 400),
            _add_change("c_7", "sub_7", "cus_5", T0, 5000, currency="EUR"),
            # Two changes at the same instant: the one added last holds.
            _add_change("c_8a", "sub_8", "cus_6", T0 + 3 * DAY, 100),
            _add_change("c_8b", "sub_8", "cus_6", T0 + 3 * DAY, 200),
            _add_change("c_8c", "sub_8", "cus_6", end + DAY, 0, to_status="canceled"),
            _add_change("c_9", "sub_9", "cus_7", T0, 0, to_status="trialing"),
            # Paid before the start, nothing since: not back, so not reactivated.
            _add_change("c_10a", "sub_10", "cus_8", T0, 300),
            _add_change("c_10b", "sub_10", "cus_8", T0 + DAY, 0, to_status="canceled"),
        )
        with uow_factory() as uow:
            usd_mrr = uow.subscription_changes.mrr_snapshots(Period(start, end), "USD")
            eur_mrr = uow.subscription_changes.mrr_snapshots(Period(start, end), "EUR")
            none = uow.subscription_changes.mrr_snapshots(Period(T0 - 2 * DAY, T0 - DAY), "USD")
        assert dict(usd_mrr.start) == {"cus_1": 1500, "cus_2": 2000, "cus_6": 200}
        assert dict(usd_mrr.end) == {"cus_1": 3500, "cus_3": 900, "cus_4": 400, "cus_6": 200}
        assert usd_mrr.reactivated == frozenset({"cus_3"})
        assert (dict(eur_mrr.start), dict(eur_mrr.end)) == ({"cus_5": 5000}, {"cus_5": 5000})
        assert eur_mrr.reactivated == frozenset()
        assert (dict(none.start), dict(none.end), none.reactivated) == ({}, {}, frozenset())

    def test_mrr_movements_total_each_kind_of_customer_move_over_the_period(
        self, uow_factory: UowFactory
    ) -> None:
        start, end = T0 + 10 * DAY, T0 + 20 * DAY
        _commit(
            uow_factory,
            # Expansion, with a second subscription starting at the end exactly.
            _add_change("m_1a", "sub_1", "cus_1", T0, 1000),
            _add_change("m_1b", "sub_1", "cus_1", T0 + 15 * DAY, 3000),
            _add_change("m_9", "sub_9", "cus_1", end, 250),
            _add_change("m_2a", "sub_2", "cus_2", T0, 2000),  # contraction
            _add_change("m_2b", "sub_2", "cus_2", T0 + 12 * DAY, 500),
            _add_change("m_3a", "sub_3", "cus_3", T0, 700),  # churned
            _add_change("m_3b", "sub_3", "cus_3", T0 + 12 * DAY, 0, to_status="canceled"),
            _add_change("m_4", "sub_4", "cus_4", T0 + 12 * DAY, 400),  # new
            # Paid, left before the start, back on another subscription: a reactivation.
            _add_change("m_5a", "sub_5", "cus_5", T0, 300),
            _add_change("m_5b", "sub_5", "cus_5", T0 + 2 * DAY, 0, to_status="canceled"),
            _add_change("m_6", "sub_6", "cus_5", T0 + 15 * DAY, 900),
            # Kept, through a renewal at the same MRR.
            _add_change("m_7a", "sub_7", "cus_6", T0, 600),
            _add_change("m_7b", "sub_7", "cus_6", T0 + 11 * DAY, 600),
            # Paid only inside the period: no move.
            _add_change("m_8a", "sub_8", "cus_7", T0 + 11 * DAY, 100),
            _add_change("m_8b", "sub_8", "cus_7", T0 + 13 * DAY, 0, to_status="canceled"),
            _add_change("m_10", "sub_10", "cus_8", T0, 5000, currency="EUR"),
        )
        with uow_factory() as uow:
            usd = uow.subscription_changes.mrr_movements(Period(start, end), "USD")
            eur = uow.subscription_changes.mrr_movements(Period(start, end), "EUR")
            none = uow.subscription_changes.mrr_movements(Period(T0 - 2 * DAY, T0 - DAY), "USD")
        amounts = (usd.start, usd.new, usd.expansion, usd.contraction, usd.churned)
        assert [m.amount for m in amounts] == [4300, 400, 2250, 1500, 700]
        assert (usd.reactivation.amount, usd.end.amount, usd.currency) == (900, 5650, "USD")
        assert (usd.start_customers, usd.end_customers) == (4, 5)
        assert (
            usd.new_customers,
            usd.expansion_customers,
            usd.contraction_customers,
            usd.churned_customers,
            usd.reactivated_customers,
        ) == (1, 1, 1, 1, 1)
        assert (eur.start.amount, eur.end.amount, eur.start_customers, eur.end_customers) == (
            5000,
            5000,
            1,
            1,
        )
        assert (none.start.amount, none.end.amount, none.end_customers) == (0, 0, 0)

    def test_trial_outcomes_are_the_changes_leaving_trialing_in_the_half_open_period(
        self, uow_factory: UowFactory
    ) -> None:
        start, end = T0 + 10 * DAY, T0 + 20 * DAY
        mid = T0 + 15 * DAY

        def trial_end(
            change_id: str, at: Any, to_status: str, plan_id: str = "plan_a", currency: str = "USD"
        ) -> Action:
            sub_id = f"sub_{change_id}"
            return _add_change(
                change_id,
                sub_id,
                "cus_1",
                at,
                0,
                currency=currency,
                from_status="trialing",
                to_status=to_status,
                plan_id=plan_id,
            )

        _commit(
            uow_factory,
            trial_end("t_1", start, "active"),
            trial_end("t_2", mid, "canceled"),
            trial_end("t_3", mid, "past_due", plan_id="plan_b"),
            trial_end("t_4", mid, "incomplete_expired", plan_id="plan_b"),
            trial_end("t_5", mid, "incomplete", plan_id="plan_b"),
            trial_end("t_6", mid, "paused"),
            trial_end("t_7", end, "active"),
            trial_end("t_8", start - DAY, "active"),
            trial_end("t_9", mid, "trialing"),
            trial_end("t_10", mid, "active", currency="EUR"),
            trial_end("t_11", mid, "active", plan_id=""),
            _add_change("t_12", "sub_t_12", "cus_1", mid, 0, to_status="canceled"),
        )
        with uow_factory() as uow:
            outcomes = uow.subscription_changes.trial_outcomes(Period(start, end), "USD")
            eur = uow.subscription_changes.trial_outcomes(Period(start, end), "EUR")
        assert sorted(outcomes) == sorted(
            [
                ("plan_a", True),
                ("plan_a", False),
                ("plan_b", True),
                ("plan_b", False),
                ("plan_b", True),
                ("plan_a", False),
                ("", True),
            ]
        )
        assert list(eur) == [("plan_a", True)]

    def test_analytics_events_are_listed_by_time_from_since(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.analytics.add(analytics_event("e_1", at=T0 + DAY)),
            lambda u: u.analytics.add(analytics_event("e_2", at=T0)),
            lambda u: u.analytics.add(analytics_event("e_3", customer_id=None, at=T0 + HOUR)),
        )
        with uow_factory() as uow:
            assert _ids(uow.analytics.list()) == ["e_2", "e_3", "e_1"]
            assert _ids(uow.analytics.list(customer_id="cus_1")) == ["e_2", "e_1"]
            assert _ids(uow.analytics.list(since=T0 + HOUR)) == ["e_3", "e_1"]

    def test_add_new_stores_only_analytics_events_not_stored_yet(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(uow_factory, lambda u: u.analytics.add(analytics_event("e_1", at=T0 + DAY)))
        with uow_factory() as uow:
            uow.analytics.add(analytics_event("e_2", at=T0))
            uow.analytics.add_new(
                [
                    analytics_event("e_1", customer_id=None, at=T0),  # stored: skipped
                    analytics_event("e_2", customer_id=None),  # this unit's own: skipped
                    analytics_event("e_3", at=T0 + HOUR),
                    analytics_event("e_3", customer_id=None),  # twice in one call: once
                ]
            )
            uow.analytics.add_new([])
            uow.commit()
        with uow_factory() as uow:
            assert _ids(uow.analytics.list()) == ["e_2", "e_3", "e_1"]
            assert _ids(uow.analytics.list(customer_id="cus_1")) == ["e_2", "e_3", "e_1"]
        with uow_factory() as uow:
            uow.analytics.add_new([analytics_event("e_4")])  # not committed: discarded
        with uow_factory() as uow:
            assert len(uow.analytics.list()) == 3

    def test_add_new_stores_only_emails_not_sent_yet_and_sent_names_them(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory, lambda u: u.email_deliveries.add(email_delivery("m_1", event_id="evt_1"))
        )
        with uow_factory() as uow:
            uow.email_deliveries.add_new(
                [
                    email_delivery("m_9", event_id="evt_1"),  # its email was sent: skipped
                    email_delivery("m_2", event_id="evt_1", template="receipt"),
                    email_delivery("m_1", event_id="evt_2"),  # a stored message id: skipped
                    email_delivery("m_3", event_id="evt_3"),
                    email_delivery("m_4", event_id="evt_3"),  # twice in one call: the first
                ]
            )
            uow.email_deliveries.add_new([])
            asked = {
                ("evt_1", "welcome"),
                ("evt_1", "receipt"),
                ("evt_2", "welcome"),
                ("evt_3", "welcome"),
            }
            sent = {("evt_1", "welcome"), ("evt_1", "receipt"), ("evt_3", "welcome")}
            assert uow.email_deliveries.sent(asked) == sent  # its own writes included
            assert uow.email_deliveries.sent(set()) == set()
            uow.commit()
        with uow_factory() as uow:
            assert uow.email_deliveries.sent(asked) == sent
            listed = uow.email_deliveries.list(customer_id="cus_1")
            assert [d.message_id for d in listed] == ["m_1", "m_2", "m_3"]

    def test_an_events_email_is_sent_once_per_template(self, uow_factory: UowFactory) -> None:
        _commit(
            uow_factory,
            lambda u: u.email_deliveries.add(email_delivery("m_1", event_id="evt_1")),
            lambda u: u.email_deliveries.add(
                email_delivery("m_2", event_id="evt_1", template="receipt")
            ),
        )
        with uow_factory() as uow:
            _conflict(
                uow, lambda u: u.email_deliveries.add(email_delivery("m_3", event_id="evt_1"))
            )
            found = uow.email_deliveries.find("evt_1", "receipt")
            assert found is not None
            assert found.message_id == "m_2"
            assert uow.email_deliveries.find("evt_2", "welcome") is None

    def test_email_deliveries_are_updated_and_listed_per_customer(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(
            uow_factory,
            lambda u: u.email_deliveries.add(email_delivery("m_1", event_id="evt_1")),
            lambda u: u.email_deliveries.add(
                email_delivery("m_2", event_id="evt_2", customer_id="cus_2")
            ),
            lambda u: u.email_deliveries.add(email_delivery("m_3", event_id="evt_3")),
        )
        with uow_factory() as uow:
            bounced = attrs.evolve(uow.email_deliveries.get("m_1"), to="x@example.com")
            uow.email_deliveries.update(bounced)
            uow.commit()
        with uow_factory() as uow:
            assert uow.email_deliveries.get("m_1").to == "x@example.com"
            listed = uow.email_deliveries.list(customer_id="cus_1")
            assert [d.message_id for d in listed] == ["m_1", "m_3"]

    # -- idempotency records -----------------------------------------------------------

    def test_an_idempotency_record_is_found_until_it_expires(self, uow_factory: UowFactory) -> None:
        record = idempotency_record("k1", ttl=DAY)
        _commit(uow_factory, lambda u: u.idempotency.put(record))
        with uow_factory() as uow:
            assert uow.idempotency.get("k1", T0 + DAY - HOUR) == record
            assert uow.idempotency.get("k1", T0 + DAY) is None
            assert uow.idempotency.get("k2", T0) is None

    def test_an_unexpired_idempotency_key_cannot_be_put_twice(
        self, uow_factory: UowFactory
    ) -> None:
        _commit(uow_factory, lambda u: u.idempotency.put(idempotency_record("k1")))
        with uow_factory() as uow:
            _conflict(
                uow, lambda u: u.idempotency.put(idempotency_record("k1", created_at=T0 + HOUR))
            )

    def test_an_expired_idempotency_key_can_be_put_again(self, uow_factory: UowFactory) -> None:
        _commit(uow_factory, lambda u: u.idempotency.put(idempotency_record("k1", ttl=HOUR)))
        again = idempotency_record("k1", created_at=T0 + DAY, fingerprint="f2")
        _commit(uow_factory, lambda u: u.idempotency.put(again))
        with uow_factory() as uow:
            assert uow.idempotency.get("k1", T0 + DAY) == again

    def test_an_idempotency_record_is_rolled_back_with_its_change(
        self, uow_factory: UowFactory
    ) -> None:
        with uow_factory() as uow:
            uow.idempotency.put(idempotency_record("k1"))
        with uow_factory() as uow:
            assert uow.idempotency.get("k1", T0) is None


def _add_change(
    change_id: str,
    subscription_id: str,
    customer_id: str,
    at: Any,
    mrr: int,
    *,
    currency: str = "USD",
    from_status: str | None = None,
    to_status: str = "active",
    plan_id: str = "",
) -> Action:
    change = attrs.evolve(
        subscription_change(change_id, subscription_id=subscription_id, customer_id=customer_id),
        at=at,
        mrr=Money(mrr, currency),
        from_status=from_status,
        to_status=to_status,
        plan_id=plan_id,
    )
    return lambda u: u.subscription_changes.add(change)


def _add_customer(customer_id: str) -> Action:
    return lambda u: u.customers.add(customer(customer_id))


def _add_subscription(subscription_id: str, due: Any) -> Action:
    return lambda u: u.subscriptions.add(subscription(subscription_id, due=due))


def _add_invoice(invoice_id: str, days: int) -> Action:
    return lambda u: u.invoices.add(invoice(invoice_id, period_start=T0 + days * DAY))


def _add_message(message_id: str, at: Any) -> Action:
    return lambda u: u.outbox.add(outbox_message(message_id, created_at=at))
