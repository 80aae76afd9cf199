"""A seeded month-by-month simulation of a subscription business on the in-memory billing.

``simulate(customers=200, months=12, seed=7)`` drives a real :class:`Billing` (the memory
adapters, a ``TestClock`` and a ``FakeGateway`` told to decline some cards) through a
realistic mix: trials that convert or lapse, direct sign-ups, upgrades (immediate, with
proration), downgrades (at period end), cancellations now or at period end, cards that
fail at renewal and recover through dunning (or do not, and churn), and churned
customers who come back. Nothing is invented for the report: every figure comes from
``Billing.metrics`` and the audit log of the same store, so the final MRR is the
library's own. The same seed gives the same result, to the cent.

``write_chart(result, path)`` draws it with matplotlib (PNG or SVG by the extension).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from lumenquest_adapters.memory import GatewayOutcome, InMemoryBilling, in_memory_billing
from lumenquest_core.catalog import Price
from lumenquest_core.errors import ValidationError
from lumenquest_core.metrics import MetricsReport
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval, add_cycles
from lumenquest_core.subscriptions import Subscription, SubscriptionStatus

__all__ = [
    "CHART_FORMATS",
    "DEFAULT_START",
    "MonthResult",
    "SimulationResult",
    "simulate",
    "write_chart",
]

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
CHART_FORMATS = ("png", "svg")
CURRENCY = "USD"
MAX_CUSTOMERS = 100_000
MAX_MONTHS = 120

_MONTHLY = BillingCycle(Interval.MONTH)
_YEARLY = BillingCycle(Interval.YEAR)
_DECLINE = GatewayOutcome.decline("insufficient_funds", "Your card has insufficient funds.")

# The mix. Probabilities are per customer and month unless said otherwise; they are
# round numbers in the range SaaS benchmarks publish for small B2B products.
_TIERS = (("Starter", 1900), ("Pro", 4900), ("Business", 9900))  # monthly, in cents
_TIER_WEIGHTS = (50, 35, 15)
_YEARLY_PRO = 49_000  # Pro paid yearly: two months free
_YEARLY_SHARE = 0.10
_EARLY_SHARE = 0.30  # customers already there in the first month
_TRIAL_SHARE = 0.55
_TRIAL_DAYS = 14
_TRIAL_CONVERSION = 0.62
_FIRST_CHARGE_DECLINE = 0.03  # a direct sign-up whose first charge fails (incomplete)
_UPGRADE = 0.05
_DOWNGRADE = 0.03
_CANCEL = 0.035
_CARD_FAILURE = 0.04
_RECOVERY = 0.65  # a failing card is fixed before dunning gives up
_COMEBACK = 0.25  # a customer who cancelled subscribes again some months later


@attrs.frozen
class MonthResult:
    """One simulated month: MRR at its end, how MRR moved, churn, and what happened."""

    index: int
    start: datetime
    end: datetime
    mrr: Money
    start_mrr: Money
    new: Money
    expansion: Money
    contraction: Money
    churned: Money
    reactivation: Money
    customers: int
    new_customers: int
    churned_customers: int
    reactivated_customers: int
    customer_churn_rate: Decimal | None
    gross_revenue_churn_rate: Decimal | None
    net_revenue_retention: Decimal | None
    activity: dict[str, int] = attrs.field(factory=dict, hash=False)

    @property
    def label(self) -> str:
        """Return the month as ``YYYY-MM`` (of its start)."""
        return f"{self.start:%Y-%m}"

    def to_dict(self) -> dict[str, Any]:
        """Return the month as JSON-ready data (amounts in minor units)."""

        def rate(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        return {
            "month": self.label,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "mrr": self.mrr.amount,
            "start_mrr": self.start_mrr.amount,
            "movements": {
                "new": self.new.amount,
                "expansion": self.expansion.amount,
                "contraction": self.contraction.amount,
                "churned": self.churned.amount,
                "reactivation": self.reactivation.amount,
            },
            "customers": self.customers,
            "new_customers": self.new_customers,
            "churned_customers": self.churned_customers,
            "reactivated_customers": self.reactivated_customers,
            "customer_churn_rate": rate(self.customer_churn_rate),
            "gross_revenue_churn_rate": rate(self.gross_revenue_churn_rate),
            "net_revenue_retention": rate(self.net_revenue_retention),
            "activity": dict(self.activity),
        }


@attrs.frozen
class SimulationResult:
    """The months of one run, the parameters that made it, and the billing it ran on."""

    seed: int
    customers: int
    start: datetime
    end: datetime
    months: tuple[MonthResult, ...]
    currency: str
    billing: InMemoryBilling = attrs.field(eq=False, repr=False)

    @property
    def final_mrr(self) -> Money:
        """Return the MRR at the end of the last month."""
        return self.months[-1].mrr

    def to_dict(self) -> dict[str, Any]:
        """Return the run as JSON-ready data: amounts in minor units of ``currency``."""
        return {
            "seed": self.seed,
            "customers": self.customers,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "currency": self.currency,
            "final_mrr": self.final_mrr.amount,
            "months": [month.to_dict() for month in self.months],
        }


@attrs.define
class _Customer:
    """What the simulation remembers of one customer between its actions."""

    index: int
    id: str
    tier: int  # index into _TIERS; -1 for the yearly price
    will_recover: bool
    subscription_id: str | None = None


class _Run:
    """One simulation: a billing, a random source, and a queue of timed actions."""

    def __init__(self, customers: int, months: int, seed: int, start: datetime) -> None:
        self.random = random.Random(seed)
        self.boundaries = [add_cycles(start, _MONTHLY, k) for k in range(months + 1)]
        self.billing = in_memory_billing(now=start)
        self.customer_count = customers
        self.customers: list[_Customer] = []
        self.queue: list[tuple[datetime, int, str, int]] = []
        self._sequence = 0
        plan = self.billing.create_plan(name="Lumen", features=["reports", "exports"])
        self.prices: list[Price] = [
            self.billing.create_price(
                plan_id=plan.id, unit_amount=Money(amount, CURRENCY), cycle=_MONTHLY, nickname=name
            )
            for name, amount in _TIERS
        ]
        self.yearly = self.billing.create_price(
            plan_id=plan.id,
            unit_amount=Money(_YEARLY_PRO, CURRENCY),
            cycle=_YEARLY,
            nickname="Pro yearly",
        )
        self.handlers: dict[str, Callable[[_Customer], None]] = {
            "lapse": self._lapse,
            "upgrade": self._upgrade,
            "downgrade": self._downgrade,
            "cancel": self._cancel,
            "card_fails": self._card_fails,
            "comeback": self._comeback,
        }

    # -- scheduling -------------------------------------------------------------------

    def schedule(self, at: datetime, action: str, customer: int) -> None:
        """Queue ``action`` for ``customer`` at ``at``; ties keep the order of scheduling."""
        if at < self.boundaries[-1]:
            self._sequence += 1
            heapq.heappush(self.queue, (at, self._sequence, action, customer))

    def within(self, begin: datetime, end: datetime) -> datetime:
        """Return a random instant in ``[begin, end)``, on a whole minute."""
        minutes = max(1, int((end - begin).total_seconds() // 60))
        return begin + timedelta(minutes=self.random.randrange(minutes))

    def plan_signups(self) -> None:
        """Give every customer a sign-up time: some at the start, the rest spread out."""
        first, last = self.boundaries[0], self.boundaries[-1]
        times = sorted(
            self.within(first, self.boundaries[1] if self.random.random() < _EARLY_SHARE else last)
            for _ in range(self.customer_count)
        )
        # In time order, so that customer n is the n-th to sign up.
        for index, at in enumerate(times):
            self.schedule(at, "signup", index)

    def plan_month(self, begin: datetime, end: datetime) -> None:
        """Decide what each paying customer does this month, at a random time in it."""
        for index, customer in enumerate(self.customers):
            if customer.subscription_id is None:
                continue
            draw = self.random.random()
            for action, chance in (
                ("upgrade", _UPGRADE),
                ("downgrade", _DOWNGRADE),
                ("cancel", _CANCEL),
                ("card_fails", _CARD_FAILURE),
            ):
                if draw < chance:
                    self.schedule(self.within(begin, end), action, index)
                    break
                draw -= chance

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        """Play every action and every day's billing run up to the last boundary."""
        self.plan_signups()
        clock = self.billing.clock
        for month, (begin, end) in enumerate(itertools.pairwise(self.boundaries)):
            if month:  # in the first month everyone is new: sign-ups and trials only
                self.plan_month(begin, end)
            day = begin
            while day < end:
                # The daily billing run, as a host's cron would do it: renewals, trial
                # ends, dunning retries and scheduled changes happen on their own.
                clock.set(day)
                self.billing.run_due()
                next_day = min(day + timedelta(days=1), end)
                while self.queue and self.queue[0][0] < next_day:
                    at, _, action, index = heapq.heappop(self.queue)
                    clock.set(at)
                    self.billing.run_due()  # anything due earlier today comes first
                    if action == "signup":
                        self._signup_new(index)
                    else:
                        self.handlers[action](self.customers[index])
                day = next_day
        clock.set(self.boundaries[-1])
        self.billing.run_due()

    # -- the actions --------------------------------------------------------------------

    def _signup_new(self, index: int) -> None:
        assert index == len(self.customers), "sign-ups are scheduled in customer order"
        record = self.billing.create_customer(
            email=f"customer{index + 1}@example.com", name=f"Customer {index + 1}"
        )
        yearly = self.random.random() < _YEARLY_SHARE
        tier = -1 if yearly else self.random.choices(range(len(_TIERS)), _TIER_WEIGHTS)[0]
        customer = _Customer(
            index=index, id=record.id, tier=tier, will_recover=self.random.random() < _RECOVERY
        )
        self.customers.append(customer)
        self._signup(customer)

    def _price(self, customer: _Customer) -> Price:
        return self.yearly if customer.tier < 0 else self.prices[customer.tier]

    def _signup(self, customer: _Customer) -> None:
        now = self.billing.clock.now()
        trial = customer.tier >= 0 and self.random.random() < _TRIAL_SHARE
        if trial:
            if self.random.random() >= _TRIAL_CONVERSION:
                # Lapses: cancels some time before the trial ends.
                self.schedule(
                    self.within(now, now + timedelta(days=_TRIAL_DAYS)), "lapse", customer.index
                )
        elif self.random.random() < _FIRST_CHARGE_DECLINE:
            self.billing.gateway.queue_for(customer.id, _DECLINE)
        sub = self.billing.subscribe(
            customer_id=customer.id,
            price_id=self._price(customer).id,
            trial_days=_TRIAL_DAYS if trial else None,
        )
        customer.subscription_id = sub.id

    def _refresh(self, customer: _Customer) -> Subscription | None:
        """Return the customer's subscription, forgetting it once it has ended."""
        if customer.subscription_id is None:
            return None
        sub = self.billing.get_subscription(customer.subscription_id)
        if sub.status in (SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED):
            customer.subscription_id = None  # ended (by dunning, expiry or a cancel)
            return None
        return sub

    def _live(self, customer: _Customer, *statuses: SubscriptionStatus) -> bool:
        """Whether the customer's subscription is in one of ``statuses`` with nothing pending."""
        sub = self._refresh(customer)
        return sub is not None and (
            sub.status in statuses and not sub.cancel_at_period_end and sub.scheduled_change is None
        )

    def _lapse(self, customer: _Customer) -> None:
        if self._live(customer, SubscriptionStatus.TRIALING):
            assert customer.subscription_id is not None
            self.billing.cancel(customer.subscription_id)

    def _change(self, customer: _Customer, step: int) -> None:
        tier = customer.tier + step
        if customer.tier < 0 or not 0 <= tier < len(_TIERS):
            return  # yearly customers and the ends of the ladder stay where they are
        if self._live(customer, SubscriptionStatus.ACTIVE):
            assert customer.subscription_id is not None
            # The default policy: upgrades now with proration, downgrades at period end.
            self.billing.change_subscription(
                customer.subscription_id, price_id=self.prices[tier].id
            )
            customer.tier = tier

    def _upgrade(self, customer: _Customer) -> None:
        self._change(customer, +1)

    def _downgrade(self, customer: _Customer) -> None:
        self._change(customer, -1)

    def _cancel(self, customer: _Customer) -> None:
        if not self._live(customer, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE):
            return
        assert customer.subscription_id is not None
        at_period_end = self.random.random() < 0.5
        sub = self.billing.cancel(customer.subscription_id, at_period_end=at_period_end)
        if self.random.random() < _COMEBACK:
            later = add_cycles(sub.current_period.end, _MONTHLY, self.random.randint(1, 4))
            self.schedule(later, "comeback", customer.index)

    def _card_fails(self, customer: _Customer) -> None:
        # The next charges decline: one or two when the card gets fixed in time,
        # every attempt dunning makes when it does not.
        attempts = self.random.randint(1, 2) if customer.will_recover else 4
        self.billing.gateway.queue_for(customer.id, *([_DECLINE] * attempts))

    def _comeback(self, customer: _Customer) -> None:
        if self._refresh(customer) is None:  # not still (or again) subscribed
            self._signup(customer)


def simulate(
    *,
    customers: int = 200,
    months: int = 12,
    seed: int = 0,
    start: datetime = DEFAULT_START,
) -> SimulationResult:
    """Run the simulation and return each month's MRR, movements, churn and activity."""
    if isinstance(customers, bool) or not isinstance(customers, int):
        raise ValidationError("customers must be an int")
    if not 1 <= customers <= MAX_CUSTOMERS:
        raise ValidationError(f"customers must be from 1 to {MAX_CUSTOMERS}, not {customers}")
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= MAX_MONTHS:
        raise ValidationError(f"months must be an int from 1 to {MAX_MONTHS}, not {months!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValidationError("seed must be an int")
    if start.tzinfo is None:
        raise ValidationError("start must be timezone-aware")
    run = _Run(customers, months, seed, start.astimezone(UTC))
    run.run()
    activity = _activity(run.billing, run.boundaries)
    results = []
    for index, (begin, end) in enumerate(itertools.pairwise(run.boundaries)):
        report = run.billing.metrics(start=begin, end=end, currency=CURRENCY)
        results.append(_month(index + 1, report, activity[index]))
    return SimulationResult(
        seed=seed,
        customers=customers,
        start=run.boundaries[0],
        end=run.boundaries[-1],
        months=tuple(results),
        currency=CURRENCY,
        billing=run.billing,
    )


def _month(index: int, report: MetricsReport, activity: dict[str, int]) -> MonthResult:
    moves = report.movements
    return MonthResult(
        index=index,
        start=report.period.start,
        end=report.period.end,
        mrr=report.mrr,
        start_mrr=moves.start,
        new=moves.new,
        expansion=moves.expansion,
        contraction=moves.contraction,
        churned=moves.churned,
        reactivation=moves.reactivation,
        customers=moves.end_customers,
        new_customers=moves.new_customers,
        churned_customers=moves.churned_customers,
        reactivated_customers=moves.reactivated_customers,
        customer_churn_rate=report.customer_churn_rate,
        gross_revenue_churn_rate=report.gross_revenue_churn_rate,
        net_revenue_retention=report.net_revenue_retention,
        activity=activity,
    )


# What the audit log's subscription actions count as, by the status they led to.
_ACTIVITY_KEYS = (
    "signups",
    "trials",
    "conversions",
    "upgrades",
    "downgrades",
    "cancellations",
    "failed_payments",
    "recoveries",
)


def _activity(billing: InMemoryBilling, boundaries: Sequence[datetime]) -> list[dict[str, int]]:
    """Count, per month, what happened, from the audit log (the library's own record)."""
    monthly = {price.id: _monthly_rank(price) for price in billing.list_prices()}
    counts = [Counter[str]() for _ in boundaries[1:]]
    ends = list(boundaries[1:])
    for entry in billing.audit_log():
        if entry.subject_type != "subscription" or entry.at < boundaries[0]:
            continue
        month = bisect.bisect_right(ends, entry.at)
        if month >= len(counts):
            continue
        key = _activity_key(
            entry.action.removeprefix("subscription."),
            entry.before or {},
            entry.after or {},
            monthly,
        )
        if key is not None:
            counts[month][key] += 1
    return [{key: count[key] for key in _ACTIVITY_KEYS} for count in counts]


def _monthly_rank(price: Price) -> int:
    """Return one unit of ``price`` normalised to a month, in minor units (for ranking)."""
    amount = price.amount_for(1).amount
    return amount // 12 if price.cycle.interval is Interval.YEAR else amount


def _activity_key(
    action: str, before: Mapping[str, Any], after: Mapping[str, Any], monthly: Mapping[str, int]
) -> str | None:
    if action == "created":
        return "trials" if after.get("status") == "trialing" else "signups"
    if action == "trial_ended":
        return "conversions" if after.get("status") == "active" else None
    if action in ("changed", "renewed"):
        # A renewal carries the changes scheduled for the period end (downgrades).
        old, new = monthly.get(before.get("price_id", "")), monthly.get(after.get("price_id", ""))
        if old is None or new is None or old == new:
            return None
        return "upgrades" if new > old else "downgrades"
    if action == "canceled":
        return "cancellations"
    if action == "payment_failed":
        return "failed_payments"
    if action == "payment_succeeded" and before.get("status") == "past_due":
        return "recoveries"
    return None


def write_chart(result: SimulationResult, path: str | Path) -> Path:
    """Draw MRR stacked by movement and the churn rates to ``path`` (.png or .svg)."""
    target = Path(path)
    kind = target.suffix.lower().lstrip(".")
    if kind not in CHART_FORMATS:
        raise ValidationError(
            f"the chart is written as PNG or SVG (.png or .svg), not {target.suffix or 'no extension'!r}"
        )
    # The object-oriented API with no pyplot: no global backend state, no GUI, thread-safe.
    from matplotlib import rcParams  # noqa: PLC0415 - heavy; only when a chart is asked for
    from matplotlib.figure import Figure  # noqa: PLC0415

    rcParams["svg.hashsalt"] = "lumenquest"  # the same SVG bytes for the same seed

    def major(money: Money) -> float:
        return float(money.to_decimal())  # floats for the axes only, never for money

    def percent(rate: Decimal | None) -> float:
        # No customers at the start: no rate, a gap in the line rather than a false 0 %.
        return math.nan if rate is None else float(rate * 100)

    months = result.months
    labels = [month.label for month in months]
    x = list(range(len(months)))
    retained = [major(m.start_mrr - m.churned - m.contraction) for m in months]
    layers = [
        ("retained", retained, "#9aa5b1"),
        ("new", [major(m.new) for m in months], "#2e7d32"),
        ("expansion", [major(m.expansion) for m in months], "#66bb6a"),
        ("reactivation", [major(m.reactivation) for m in months], "#26a69a"),
    ]
    losses = [
        ("contraction", [-major(m.contraction) for m in months], "#ffb74d"),
        ("churned", [-major(m.churned) for m in months], "#e53935"),
    ]

    figure = Figure(figsize=(10, 7), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    base = [0.0] * len(months)
    for name, values, colour in layers:
        top.bar(x, values, bottom=base, label=name, color=colour, width=0.8)
        base = [b + v for b, v in zip(base, values, strict=True)]
    below = [0.0] * len(months)
    for name, values, colour in losses:
        top.bar(x, values, bottom=below, label=name, color=colour, width=0.8)
        below = [b + v for b, v in zip(below, values, strict=True)]
    top.plot(x, [major(m.mrr) for m in months], color="#1a237e", marker="o", label="MRR")
    top.axhline(0, color="#333333", linewidth=0.8)
    top.set_ylabel(f"MRR ({result.currency})")
    top.set_title(f"Simulated MRR by movement: {result.customers} customers, seed {result.seed}")
    top.legend(loc="upper left", ncols=4, fontsize="small")
    top.grid(axis="y", alpha=0.3)

    bottom.plot(
        x, [percent(m.customer_churn_rate) for m in months], marker="o", label="customer churn"
    )
    bottom.plot(
        x,
        [percent(m.gross_revenue_churn_rate) for m in months],
        marker="s",
        label="gross revenue churn",
    )
    bottom.set_ylabel("churn (%)")
    bottom.set_xticks(x, labels, rotation=45, ha="right")
    bottom.legend(loc="upper left", fontsize="small")
    bottom.grid(axis="y", alpha=0.3)

    target.parent.mkdir(parents=True, exist_ok=True)
    # No creation date in the file, so that the same seed writes the same bytes.
    metadata: dict[str, str | None] = {"Date": None} if kind == "svg" else {"Software": None}
    figure.savefig(target, format=kind, metadata=metadata)
    return target
