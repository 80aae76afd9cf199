"""Per-call cost of the pure core, beside larzsubscription's change_plan measured in the same run.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_core.py``). ``--smoke`` runs a
few iterations only, to prove the benchmark still works. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from lumenquest_core import (
    BillingCycle,
    Interval,
    InvoiceLine,
    LineKind,
    Money,
    Period,
    Price,
    TaxRate,
    add_cycles,
    build_invoice,
    invoicing,
    prorate,
    subscriptions,
)


def per_call_us(func: Callable[[], object], *, smoke: bool) -> float:
    """Best-of-5 microseconds per call."""
    timer = timeit.Timer(func)
    if smoke:
        return timer.timeit(number=20) / 20 * 1e6
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few iterations only")
    smoke = parser.parse_args().smoke

    monthly = BillingCycle(Interval.MONTH)
    start = datetime(2026, 1, 31, tzinfo=UTC)
    period = Period(start, add_cycles(start, monthly, 1))
    portion = Period(start + timedelta(days=10, hours=3), period.end)
    amount = Money(4999, "USD")
    basic = Price("price_basic", "plan", "USD", monthly, unit_amount=Money(1000, "USD"))
    pro = Price("price_pro", "plan", "USD", monthly, unit_amount=Money(2000, "USD"))
    created = subscriptions.start(
        subscription_id="sub_1", customer_id="cus_1", price=basic, at=start
    )
    sub = subscriptions.payment_succeeded(created.subscription, start).subscription
    due = sub.current_period.end
    vat = TaxRate("vat", "VAT", Decimal(20))
    lines = [
        InvoiceLine(
            kind=LineKind.ONE_OFF,
            description=f"item {i}",
            amount=Money(1000 + i, "USD"),
            tax_rates=(vat,),
        )
        for i in range(5)
    ]

    def renewal_with_invoice() -> None:
        transition = subscriptions.renew(sub, due)
        draft = build_invoice(
            invoice_id="in_1",
            customer_id="cus_1",
            currency="USD",
            lines=transition.lines,
            at=due,
            subscription_id=sub.id,
            billing_reason=invoicing.BillingReason.SUBSCRIPTION_CYCLE,
            period=transition.subscription.current_period,
        )
        invoicing.finalize(draft, number="LQ-000001", at=due)

    figures = {
        "prorate_us": per_call_us(lambda: prorate(amount, period, portion), smoke=smoke),
        "add_cycles_us": per_call_us(lambda: add_cycles(start, monthly, 7), smoke=smoke),
        "renew_transition_us": per_call_us(lambda: subscriptions.renew(sub, due), smoke=smoke),
        "renewal_with_invoice_us": per_call_us(renewal_with_invoice, smoke=smoke),
        "invoice_5_lines_us": per_call_us(
            lambda: build_invoice(
                invoice_id="in_2", customer_id="cus_1", currency="USD", lines=lines, at=start
            ),
            smoke=smoke,
        ),
        "change_lines_us": per_call_us(
            lambda: subscriptions.change(sub, price=pro, at=start + timedelta(days=14)), smoke=smoke
        ),
    }
    figures.update(baseline(smoke=smoke))
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:8.2f}")
    print(json.dumps({name: round(value, 3) for name, value in figures.items()}))


def baseline(*, smoke: bool) -> dict[str, float]:
    """larzsubscription, the nearest Python peer, doing the same kinds of work."""
    try:
        import larzsubscription  # noqa: PLC0415 - optional, only for the baseline
    except ImportError:  # pragma: no cover - the bench extra is not installed
        return {}
    start = datetime(2026, 1, 31)  # noqa: DTZ001 - larzsubscription uses naive datetimes
    basic = larzsubscription.Plan("basic", "10.00")
    pro = larzsubscription.Plan("pro", "20.00")
    sub = larzsubscription.Subscription(basic, start=start)
    plans = [pro, basic]
    when = start + timedelta(days=14)

    def change_plan() -> None:
        plans.reverse()
        sub.change_plan(plans[0], now=when)
        sub.invoices.clear()  # keep its ledger from growing across iterations

    return {"larz_change_plan_us": per_call_us(change_plan, smoke=smoke)}


if __name__ == "__main__":
    main()
