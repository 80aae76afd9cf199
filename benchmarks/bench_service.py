"""``Billing.run_due`` over N due monthly subscriptions on the memory adapters.

Run: ``.venv/bin/python benchmarks/bench_service.py`` (10,000 subscriptions) or with
``--subscriptions N``; ``--smoke`` uses 200, to prove the benchmark still works;
``--profile`` adds the top cProfile costs of one more run; ``--callgrind`` runs one run_due
alone (see :func:`callgrind_run`), to count its instructions (``--spread`` for the run of
subscriptions with their own anchors). The subscriptions all start at one instant, so
they fall due together, as calendar-aligned ones do; ``run_due_own_anchors_subs_per_s`` is
the same run over subscriptions started 100 ms apart, each with its own anchor and due
instant. Each run_due figure is the best of ``--repeat`` runs (5), each on a store of its
own, with the median beside it: another process on the machine only ever adds time, so the
fastest run is the closest to the code's own speed (``timeit``'s reasoning) and the median
shows how far the machine strayed. Beside the figures, measured in the same process the
same number of times: the pure core doing the same renewals (``renew`` + ``build_invoice``
+ ``finalize`` per subscription, no storage, no payment), the floor run_due stands on;
the garbage collector's share of run_due; and ``dispatch_events`` delivering the run's
events afterwards (run_due itself leaves them in the outbox: ``dispatch_immediately=False``,
as a host with its own dispatcher runs it). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import json
import pstats
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from _collector import CollectorTime
from lumenquest_adapters.memory import InMemoryBilling, in_memory_billing
from lumenquest_core import BillingCycle, Interval, Money, Subscription, invoicing, subscriptions
from lumenquest_core.invoicing import BillingReason

START = datetime(2026, 1, 1, tzinfo=UTC)
RUN_AT = datetime(2026, 2, 1, 0, 30, tzinfo=UTC)  # past every first period's end
SPREAD = timedelta(milliseconds=100)  # between starts, when spread (10,000 in 17 minutes)


def setup(n: int, *, spread: bool = False) -> tuple[InMemoryBilling, float]:
    """Return a billing with ``n`` active monthly subscriptions (one customer each).

    All begin at START, due together as calendar-aligned ones are; ``spread``: each
    begins 100 ms after the one before, so each has its own anchor and due instant.
    """
    began = time.perf_counter()
    # Notification emails go out through dispatch_events, timed on its own below.
    billing = in_memory_billing(now=START, dispatch_immediately=False)
    plan = billing.create_plan(name="Pro", features=["reports"])
    price = billing.create_price(
        plan_id=plan.id, unit_amount=Money(1000, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    for i in range(n):
        if spread:
            billing.clock.set(START + i * SPREAD)
        customer = billing.create_customer(email=f"user{i}@example.com", name=f"User {i}")
        billing.subscribe(customer_id=customer.id, price_id=price.id)
    billing.clock.set(RUN_AT)
    return billing, time.perf_counter() - began


def time_run_due(billing: InMemoryBilling, n: int) -> tuple[float, float]:
    """Return (seconds, peak MiB) of one run_due that must renew all ``n`` subscriptions."""
    gc.collect()
    tracemalloc.start()
    began = time.perf_counter()
    summary = billing.run_due(limit=max(n, 1))
    seconds = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert summary.renewals == n, summary
    assert summary.payments_succeeded == n, summary
    return seconds, peak / 2**20


def time_run_due_untraced(n: int, *, spread: bool = False) -> tuple[float, float, float, int]:
    """Return seconds of run_due, of the collector within it, and of dispatching its events.

    Without tracemalloc, which slows allocation; the collector's share is summed from
    ``gc.callbacks``, and the events are delivered afterwards by ``dispatch_events``.
    """
    billing, _ = setup(n, spread=spread)
    billing.dispatch_events(limit=10 * n + 100)  # the setup's own welcome emails
    gc.collect()
    with CollectorTime() as collector:
        began = time.perf_counter()
        summary = billing.run_due(limit=max(n, 1))
        seconds = time.perf_counter() - began
    assert summary.renewals == n, summary
    began = time.perf_counter()
    delivered = billing.dispatch_events(limit=10 * n + 100)
    dispatch_seconds = time.perf_counter() - began
    return seconds, collector.seconds, dispatch_seconds, delivered


def time_core_only(subs: list[Subscription]) -> float:
    """Return the seconds the pure core takes to renew and invoice ``subs``."""
    due = subs[0].current_period.end
    gc.collect()
    began = time.perf_counter()
    for number, sub in enumerate(subs, start=1):
        transition = subscriptions.renew(sub, due)
        draft = invoicing.build_invoice(
            invoice_id=f"in_{number}",
            customer_id=sub.customer_id,
            currency=sub.currency,
            lines=transition.lines,
            at=due,
            subscription_id=sub.id,
            billing_reason=BillingReason.SUBSCRIPTION_CYCLE,
            period=transition.subscription.current_period,
            discount=sub.discount,
        )
        invoicing.finalize(draft, number=invoicing.format_invoice_number("LQ", number), at=due)
    return time.perf_counter() - began


def profile(n: int, top: int = 10) -> str:
    """Return the ``top`` cumulative-free (own time) costs of one run_due over ``n``."""
    billing, _ = setup(n)
    profiler = cProfile.Profile()
    profiler.enable()
    billing.run_due(limit=max(n, 1))
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def callgrind_run(n: int, *, spread: bool = False) -> None:
    """Run one run_due over ``n`` inside ``functools.reduce``, the marker callgrind toggles on.

    ``valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce
    .venv/bin/python benchmarks/bench_service.py --callgrind --subscriptions 3000`` counts
    the instructions of run_due alone (setup excluded): repeatable on a busy machine,
    where wall-clock figures are not.
    """
    billing, _ = setup(n, spread=spread)
    billing.dispatch_events(limit=10 * n + 100)  # as the untraced run: welcome emails out
    gc.collect()
    summary = functools.reduce(lambda _, __: billing.run_due(limit=max(n, 1)), [0], None)
    assert summary is not None
    assert summary.renewals == n, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=10_000, help="how many are due")
    parser.add_argument("--smoke", action="store_true", help="200 subscriptions only")
    parser.add_argument("--profile", action="store_true", help="print the top 10 costs")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; the best counts")
    parser.add_argument(
        "--callgrind", action="store_true", help="only one run_due, for callgrind to count"
    )
    parser.add_argument(
        "--spread", action="store_true", help="with --callgrind: each its own anchor"
    )
    args = parser.parse_args()
    n = 200 if args.smoke else args.subscriptions
    if n < 1:
        parser.error("--subscriptions must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.callgrind:
        callgrind_run(n, spread=args.spread)
        return

    billing, setup_s = setup(n)
    subs = billing.list_subscriptions(limit=1000)
    while len(subs) < n:
        subs += billing.list_subscriptions(limit=1000, after=subs[-1].id)
    assert all(s.status.value == "active" for s in subs)
    traced_s, peak_mib = time_run_due(billing, n)
    # Each untraced run builds its own store: this one must not stay alive beside it, or
    # every full collection would walk both.
    del billing
    aligned: list[tuple[float, float, float, int]] = []
    spread: list[float] = []
    core: list[float] = []
    for _ in range(args.repeat):
        gc.collect()
        aligned.append(time_run_due_untraced(n))
        gc.collect()
        spread.append(time_run_due_untraced(n, spread=True)[0])
        core.append(time_core_only(subs))
    run_s, gc_s, _, delivered = min(aligned)  # the fastest run, with its own parts

    figures = {
        "run_due_subs_per_s": n / run_s,
        "run_due_median_subs_per_s": n / statistics.median(run[0] for run in aligned),
        "run_due_seconds": run_s,
        # The same run where no two subscriptions share an anchor (each due at its own
        # instant): what is shared per due instant or per renewal period then is not.
        "run_due_own_anchors_subs_per_s": n / min(spread),
        "run_due_own_anchors_median_subs_per_s": n / statistics.median(spread),
        "gc_share_of_run_due_pct": 100 * gc_s / run_s,
        "dispatch_events_per_s": delivered / min(run[2] for run in aligned),
        "events_per_subscription": delivered / n,
        "run_due_traced_seconds": traced_s,
        "peak_memory_mib": peak_mib,
        "core_only_subs_per_s": n / min(core),
        "core_only_median_subs_per_s": n / statistics.median(core),
        "setup_seconds": setup_s,
        "subscriptions": n,
        "runs": args.repeat,
    }
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:12.2f}")
    if args.profile:
        print(profile(n))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
