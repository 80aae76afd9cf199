"""SaaS metrics as pure functions: MRR, ARR, MRR movements, churn, retention, ARPA, LTV, CAC.

Definitions follow ChartMogul and Baremetrics. Conventions used throughout:

* Money stays exact: ``Money`` or int minor units, rounded half to even once, at the end.
* Every ratio is a :class:`~decimal.Decimal` with exactly :data:`RATE_PLACES` (4) decimal
  places, rounded half to even from the exact rational: ``Decimal("0.0525")`` is 5.25 %.
* A ratio or an average whose denominator is zero is ``None``, never an exception.
* Snapshots come in as arguments (the subscriptions as they were at a date), so every
  function here is pure; the application service supplies historical snapshots.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Final, overload

import attrs

from lumenquest_core.catalog import Price, UsageType
from lumenquest_core.errors import CurrencyMismatch, ValidationError
from lumenquest_core.money import Money, _money, currency_exponent, round_half_even
from lumenquest_core.periods import Interval, Period
from lumenquest_core.subscriptions import Subscription, SubscriptionStatus

__all__ = [
    "RATE_PLACES",
    "TRIAL_CONVERTED_STATUSES",
    "HistoryPoint",
    "MetricsReport",
    "Movement",
    "MovementTotal",
    "MrrMovements",
    "MrrSnapshots",
    "TrialOutcome",
    "arpa",
    "arr",
    "cac",
    "classify_movement",
    "customer_churn_rate",
    "customer_mrr",
    "gross_revenue_churn_rate",
    "ltv",
    "metrics_report",
    "movement_totals",
    "movements_from_totals",
    "mrr",
    "mrr_movements",
    "net_revenue_churn_rate",
    "net_revenue_retention",
    "plan_conversion_rates",
    "report_from_history",
    "report_from_movements",
    "report_from_snapshots",
    "snapshot_movements",
    "subscription_mrr",
    "trial_conversion_rate",
]

RATE_PLACES: Final[int] = 4
"""Decimal places of every rate this module returns (rounded half to even)."""

_RATE_SCALE: Final[int] = 10**RATE_PLACES
_MONTHS_PER_YEAR: Final[int] = 12

# Past-due subscriptions still count: the customer is expected to pay, and ChartMogul
# keeps them in MRR until dunning ends them (unpaid or canceled).
# Bound once: each ``Enum.X`` costs a metaclass hook in Python 3.11; every renewal's
# change row asks for its subscription's MRR.
_METERED = UsageType.METERED
_MONTH = Interval.MONTH
_PAYING_STATUSES: Final[frozenset[SubscriptionStatus]] = frozenset(
    {SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE}
)

TrialOutcome = tuple[str, bool]
"""How one trial ended: ``(plan_id, converted_to_paid)``."""


# --------------------------------------------------------------------------- helpers


def _count(value: object, name: str) -> int:
    # bool is an int subclass; True customers is a bug, never a count.
    if type(value) is not int or value < 0:
        raise ValidationError(
            f"{name} must be a non-negative int, not {value!r}", details={name: repr(value)}
        )
    return value


def _part_of(part: int, whole: int, part_name: str, whole_name: str) -> None:
    if part > whole:
        raise ValidationError(
            f"{part_name} ({part}) cannot exceed {whole_name} ({whole})",
            details={part_name: part, whole_name: whole},
        )


def _rate(numerator: int, denominator: int) -> Decimal:
    # Round the exact rational in integer arithmetic, then build the Decimal from a string
    # so that no Decimal context precision or rounding mode can interfere.
    scaled = round_half_even(numerator * _RATE_SCALE, denominator)
    return Decimal(f"{scaled}E-{RATE_PLACES}")


def _ratio(numerator: int, denominator: int) -> Decimal | None:
    return None if denominator == 0 else _rate(numerator, denominator)


def _divide(amount: Money, divisor: int) -> Money | None:
    return None if divisor == 0 else Money(round_half_even(amount.amount, divisor), amount.currency)


def _check_money(value: object, name: str) -> Money:
    if not isinstance(value, Money):
        raise ValidationError(f"{name} must be Money, not {type(value).__name__}")
    return value


def _decimal(value: object, name: str) -> Decimal:
    # Floats are refused for the same reason as in Money: 0.1 is not a tenth.
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValidationError(
            f"{name} must be a finite Decimal, not {value!r}", details={name: repr(value)}
        )
    return value


# --------------------------------------------------------------------------- MRR and ARR


# The last (price, quantity) subscription_mrr priced, with its cycle amount: a billing run
# records the MRR of every subscription it renews, and those renewed together mostly share
# both (the same Price object, immutable). One entry, replaced whole (thread-safe).
_last_amount: tuple[Price, int, Money] | None = None


def subscription_mrr(sub: Subscription) -> Money:
    """Return what ``sub`` contributes to MRR, in its currency.

    Only ACTIVE and PAST_DUE subscriptions count; every other status is 0. The cycle
    amount, less an active recurring discount (a once-only coupon is not recurring
    revenue), is normalised to one month (yearly ÷ 12, weekly × 52/12, daily × 365/12,
    divided by the cycle count) and rounded half to even once. Metered prices count 0:
    usage billed in arrears is not committed revenue.
    """
    global _last_amount  # noqa: PLW0603 - a one-entry memo, replaced whole
    price = sub.price
    if sub.status not in _PAYING_STATUSES or price.usage_type is _METERED:
        return Money.zero(price.currency)
    quantity = sub.quantity
    last = _last_amount
    if last is not None and last[0] is price and last[1] == quantity:
        cycle_amount = last[2]
    else:
        cycle_amount = price.amount_for(quantity)
        _last_amount = (price, quantity, cycle_amount)
    discount = sub.discount
    if discount is not None and discount.recurring and discount.active:
        # The same rounding an invoice uses, so MRR matches what is actually billed.
        cycle_amount = cycle_amount - discount.coupon.amount_off_of(cycle_amount)
    # amount ÷ (p/q) months is amount·q/p: integer arithmetic, no Fraction built per call.
    cycle = price.cycle
    if cycle.count == 1 and cycle.interval is _MONTH:
        return cycle_amount  # a month's amount is its MRR: nothing to normalise or round
    months = cycle.months
    monthly = round_half_even(cycle_amount.amount * months.denominator, months.numerator)
    return _money(monthly, price.currency)  # an int in the price's valid currency


@overload
def mrr(subscriptions: Iterable[Subscription], currency: None = None) -> dict[str, Money]: ...
@overload
def mrr(subscriptions: Iterable[Subscription], currency: str) -> Money: ...
def mrr(
    subscriptions: Iterable[Subscription], currency: str | None = None
) -> dict[str, Money] | Money:
    """Return MRR per currency, or the MRR in ``currency`` alone when it is given.

    Currencies are never summed together. The per-currency dict has a key for every
    currency any subscription bills in, even when its MRR is zero.
    """
    if currency is not None:
        currency_exponent(currency)
        total = sum(subscription_mrr(s).amount for s in subscriptions if s.currency == currency)
        return Money(total, currency)
    totals: dict[str, int] = {}
    for sub in subscriptions:
        totals[sub.currency] = totals.get(sub.currency, 0) + subscription_mrr(sub).amount
    return {code: Money(amount, code) for code, amount in totals.items()}


@overload
def arr(subscriptions: Iterable[Subscription], currency: None = None) -> dict[str, Money]: ...
@overload
def arr(subscriptions: Iterable[Subscription], currency: str) -> Money: ...
def arr(
    subscriptions: Iterable[Subscription], currency: str | None = None
) -> dict[str, Money] | Money:
    """Return ARR (12 × MRR) per currency, or in ``currency`` alone when it is given."""
    if currency is not None:
        return mrr(subscriptions, currency) * _MONTHS_PER_YEAR
    return {code: m * _MONTHS_PER_YEAR for code, m in mrr(subscriptions).items()}


def customer_mrr(subscriptions: Iterable[Subscription]) -> dict[str, dict[str, int]]:
    """Return each paying customer's MRR in minor units, keyed by currency then customer id.

    Customers whose MRR is zero are left out (``mrr_movements`` reads a missing customer
    as 0), so ``len(customer_mrr(subs)["USD"])`` is the number of paying USD customers.
    ``customer_mrr(subs)[currency]`` is the snapshot ``mrr_movements`` takes.
    """
    snapshot: dict[str, dict[str, int]] = {}
    for sub in subscriptions:
        amount = subscription_mrr(sub).amount
        if amount:
            per_customer = snapshot.setdefault(sub.currency, {})
            per_customer[sub.customer_id] = per_customer.get(sub.customer_id, 0) + amount
    return snapshot


# --------------------------------------------------------------------------- movements


@attrs.frozen
class MrrMovements:
    """How MRR in one currency moved between two dates, by kind, with the customer counts.

    Amounts are non-negative magnitudes (contraction and churn are subtracted), and
    construction checks the identities
    ``end = start + new + expansion + reactivation − contraction − churned`` and
    ``end_customers = start_customers + new + reactivated − churned``.
    """

    currency: str
    start: Money
    new: Money
    expansion: Money
    contraction: Money
    churned: Money
    reactivation: Money
    end: Money
    start_customers: int
    end_customers: int
    new_customers: int
    expansion_customers: int
    contraction_customers: int
    churned_customers: int
    reactivated_customers: int

    def __attrs_post_init__(self) -> None:
        self.check()

    @property
    def net_new(self) -> Money:
        """Net new MRR: ``end − start``."""
        return self.end - self.start

    def check(self) -> None:
        """Raise ``ValidationError`` unless the movements add up exactly."""
        currency_exponent(self.currency)
        for name in ("start", "new", "expansion", "contraction", "churned", "reactivation", "end"):
            amount = _check_money(getattr(self, name), name)
            if amount.currency != self.currency:
                raise CurrencyMismatch(
                    f"movements are in {self.currency} but {name} is in {amount.currency}",
                    details={"currencies": [self.currency, amount.currency]},
                )
            if amount.amount < 0:
                raise ValidationError(f"{name} must not be negative", details={name: str(amount)})
        for name in (
            "start_customers",
            "end_customers",
            "new_customers",
            "expansion_customers",
            "contraction_customers",
            "churned_customers",
            "reactivated_customers",
        ):
            _count(getattr(self, name), name)
        expected = (self.start + self.new + self.expansion + self.reactivation) - (
            self.contraction + self.churned
        )
        if expected != self.end:
            raise ValidationError(
                "MRR movements do not add up: end != start + new + expansion + reactivation"
                " - contraction - churned",
                details={"end": str(self.end), "expected": str(expected)},
            )
        expected_customers = (
            self.start_customers
            + self.new_customers
            + self.reactivated_customers
            - self.churned_customers
        )
        if expected_customers != self.end_customers:
            raise ValidationError(
                "customer counts do not add up: end != start + new + reactivated - churned",
                details={"end": self.end_customers, "expected": expected_customers},
            )


def _snapshot(values: Mapping[str, int], name: str) -> Mapping[str, int]:
    for customer_id, amount in values.items():
        if type(amount) is not int or amount < 0:
            raise ValidationError(
                f"{name} MRR of {customer_id!r} must be a non-negative int of minor units,"
                f" not {amount!r}",
                details={"customer_id": customer_id, "amount": repr(amount)},
            )
    return values


class Movement(enum.StrEnum):
    """How one customer's MRR moved between two dates."""

    NEW = "new"
    REACTIVATION = "reactivation"
    EXPANSION = "expansion"
    CONTRACTION = "contraction"
    CHURNED = "churned"
    KEPT = "kept"


def classify_movement(m0: int, m1: int, *, returning: bool) -> Movement | None:
    """Return how a customer's MRR moved from ``m0`` to ``m1``; ``None`` if it stayed 0.

    0 → >0 is new, or a reactivation when ``returning`` (the customer paid before the
    start); >0 → 0 is churned; a rise is expansion, a fall contraction, no change kept.
    A store that aggregates in SQL classifies with the same rules, in the same order.
    """
    if m0 == m1:
        return Movement.KEPT if m0 else None
    if m0 == 0:
        return Movement.REACTIVATION if returning else Movement.NEW
    if m1 == 0:
        return Movement.CHURNED
    return Movement.EXPANSION if m1 > m0 else Movement.CONTRACTION


@attrs.frozen
class MovementTotal:
    """The customers of one movement kind: how many, and their MRR summed at the start and end."""

    customers: int = 0
    start: int = 0
    end: int = 0


_NO_CUSTOMERS: Final[MovementTotal] = MovementTotal()
_PAYING_AT_START: Final[frozenset[Movement]] = frozenset(
    {Movement.EXPANSION, Movement.CONTRACTION, Movement.CHURNED, Movement.KEPT}
)
_PAYING_AT_END: Final[frozenset[Movement]] = frozenset(
    {Movement.NEW, Movement.REACTIVATION, Movement.EXPANSION, Movement.CONTRACTION, Movement.KEPT}
)


def movement_totals(
    start: Mapping[str, int], end: Mapping[str, int], *, previously_active: Collection[str] = ()
) -> dict[Movement, MovementTotal]:
    """Return, per movement kind, the customers classified so and their summed MRR.

    ``start`` and ``end`` are per-customer MRR in minor units (missing = 0);
    ``previously_active`` holds the customers who paid at some time before the start.
    """
    before = _snapshot(start, "start")
    after = _snapshot(end, "end")
    # A set, so that membership stays O(1) whatever collection the caller passes.
    returning = frozenset(previously_active)
    tallies: dict[Movement, list[int]] = {}
    for customer_id in before.keys() | after.keys():
        m0 = before.get(customer_id, 0)
        m1 = after.get(customer_id, 0)
        kind = classify_movement(m0, m1, returning=customer_id in returning)
        if kind is not None:
            tally = tallies.setdefault(kind, [0, 0, 0])
            tally[0] += 1
            tally[1] += m0
            tally[2] += m1
    return {kind: MovementTotal(*tally) for kind, tally in tallies.items()}


def movements_from_totals(
    totals: Mapping[Movement, MovementTotal], *, currency: str
) -> MrrMovements:
    """Build the movements of one currency from per-kind totals (a missing kind is none).

    New and reactivation count their end MRR, churn its start MRR, expansion and
    contraction the difference; start and end MRR and customers sum over the kinds.
    """
    currency_exponent(currency)

    def kind(k: Movement) -> MovementTotal:
        return totals.get(k, _NO_CUSTOMERS)

    expansion, contraction = kind(Movement.EXPANSION), kind(Movement.CONTRACTION)
    return MrrMovements(
        currency=currency,
        start=Money(sum(t.start for t in totals.values()), currency),
        new=Money(kind(Movement.NEW).end, currency),
        expansion=Money(expansion.end - expansion.start, currency),
        contraction=Money(contraction.start - contraction.end, currency),
        churned=Money(kind(Movement.CHURNED).start, currency),
        reactivation=Money(kind(Movement.REACTIVATION).end, currency),
        end=Money(sum(t.end for t in totals.values()), currency),
        start_customers=sum(t.customers for k, t in totals.items() if k in _PAYING_AT_START),
        end_customers=sum(t.customers for k, t in totals.items() if k in _PAYING_AT_END),
        new_customers=kind(Movement.NEW).customers,
        expansion_customers=expansion.customers,
        contraction_customers=contraction.customers,
        churned_customers=kind(Movement.CHURNED).customers,
        reactivated_customers=kind(Movement.REACTIVATION).customers,
    )


def mrr_movements(
    start: Mapping[str, int],
    end: Mapping[str, int],
    *,
    currency: str,
    previously_active: Collection[str] = (),
) -> MrrMovements:
    """Classify each customer's MRR change between two snapshots in one currency.

    Per customer, from ``m0`` (start, missing = 0) to ``m1`` (end): 0 → >0 is new, or a
    reactivation if the customer is in ``previously_active`` (paid at some time before
    the start); >0 → 0 is churned; a rise is expansion; a fall is contraction.
    """
    currency_exponent(currency)
    totals = movement_totals(start, end, previously_active=previously_active)
    return movements_from_totals(totals, currency=currency)


# --------------------------------------------------------------------------- rates


def customer_churn_rate(customers_at_start: int, churned_customers: int) -> Decimal | None:
    """Return churned customers ÷ customers at the start; ``None`` with no customers."""
    whole = _count(customers_at_start, "customers_at_start")
    part = _count(churned_customers, "churned_customers")
    _part_of(part, whole, "churned_customers", "customers_at_start")
    return _ratio(part, whole)


def gross_revenue_churn_rate(movements: MrrMovements) -> Decimal | None:
    """Return (churned + contraction) ÷ start MRR; ``None`` when start MRR is zero."""
    lost = movements.churned.amount + movements.contraction.amount
    return _ratio(lost, movements.start.amount)


def net_revenue_churn_rate(movements: MrrMovements) -> Decimal | None:
    """Return (churned + contraction − expansion − reactivation) ÷ start MRR; may be negative.

    ``None`` when start MRR is zero.
    """
    m = movements
    net_lost = m.churned.amount + m.contraction.amount - m.expansion.amount - m.reactivation.amount
    return _ratio(net_lost, m.start.amount)


def net_revenue_retention(movements: MrrMovements) -> Decimal | None:
    """Return (start + expansion − contraction − churned) ÷ start MRR; ``None`` if start is 0.

    New and reactivated revenue are left out: NRR measures the customers already paying.
    When reactivation is zero, ``nrr == 1 − net_revenue_churn_rate`` exactly, even after
    rounding (half-to-even rounding commutes with ``1 − x`` at a fixed number of places).
    """
    m = movements
    kept = m.start.amount + m.expansion.amount - m.contraction.amount - m.churned.amount
    return _ratio(kept, m.start.amount)


def arpa(mrr: Money, active_customers: int) -> Money | None:
    """Return average revenue per account, MRR ÷ paying customers; ``None`` with none."""
    return _divide(_check_money(mrr, "mrr"), _count(active_customers, "active_customers"))


def ltv(
    arpa: Money | None,
    customer_churn_rate: Decimal | None,
    gross_margin: Decimal = Decimal(1),
) -> Money | None:
    """Return customer lifetime value, ARPA × gross margin ÷ customer churn rate.

    The churn rate must be for the same span as ARPA, normally a month. ``None`` when
    ARPA is ``None`` or the churn rate is ``None`` or zero (an unbounded lifetime).
    """
    margin = _decimal(gross_margin, "gross_margin")
    if not 0 <= margin <= 1:
        raise ValidationError(f"gross_margin must be in [0, 1], not {margin}")
    if arpa is None or customer_churn_rate is None:
        return None
    amount = _check_money(arpa, "arpa")
    churn = _decimal(customer_churn_rate, "customer_churn_rate")
    if churn < 0:
        raise ValidationError(f"customer_churn_rate must not be negative, not {churn}")
    if churn == 0:
        return None
    # Fraction(Decimal) is exact, so the only rounding is the final one to minor units.
    value = Fraction(amount.amount) * Fraction(margin) / Fraction(churn)
    return Money(round_half_even(value.numerator, value.denominator), amount.currency)


def cac(spend: Money, new_customers: int) -> Money | None:
    """Return customer acquisition cost, spend ÷ new customers; ``None`` with none."""
    return _divide(_check_money(spend, "spend"), _count(new_customers, "new_customers"))


def trial_conversion_rate(trials_ended: int, trials_converted: int) -> Decimal | None:
    """Return converted trials ÷ ended trials; ``None`` when no trial ended."""
    whole = _count(trials_ended, "trials_ended")
    part = _count(trials_converted, "trials_converted")
    _part_of(part, whole, "trials_converted", "trials_ended")
    return _ratio(part, whole)


def plan_conversion_rates(outcomes: Iterable[TrialOutcome]) -> dict[str, Decimal]:
    """Return, per plan, the share of its ended trials that converted to paid on that plan.

    Only plans with at least one outcome appear, so no rate is ``None``.
    """
    ended: dict[str, int] = {}
    converted: dict[str, int] = {}
    for plan_id, did_convert in outcomes:
        if type(did_convert) is not bool:
            raise ValidationError(
                f"a trial outcome is (plan_id, converted: bool), not ({plan_id!r}, {did_convert!r})"
            )
        ended[plan_id] = ended.get(plan_id, 0) + 1
        converted[plan_id] = converted.get(plan_id, 0) + did_convert
    return {plan_id: _rate(converted[plan_id], n) for plan_id, n in ended.items()}


# --------------------------------------------------------------------------- report


def _frozen_rates(value: Mapping[str, Decimal]) -> Mapping[str, Decimal]:
    return MappingProxyType(dict(value))


def _frozen_amounts(value: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(value))


def _frozen_ids(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class MetricsReport:
    """Every metric of one currency over ``period``; ``None`` marks a zero denominator."""

    period: Period
    currency: str
    mrr: Money
    arr: Money
    movements: MrrMovements
    customer_churn_rate: Decimal | None
    gross_revenue_churn_rate: Decimal | None
    net_revenue_churn_rate: Decimal | None
    net_revenue_retention: Decimal | None
    arpa: Money | None
    ltv: Money | None
    cac: Money | None
    trial_conversion_rate: Decimal | None
    plan_conversion_rates: Mapping[str, Decimal] = attrs.field(converter=_frozen_rates, hash=False)


def metrics_report(
    *,
    period: Period,
    currency: str,
    start_subscriptions: Iterable[Subscription],
    end_subscriptions: Iterable[Subscription],
    previously_active: Collection[str] = (),
    marketing_spend: Money | None = None,
    trial_outcomes: Iterable[TrialOutcome] = (),
    gross_margin: Decimal = Decimal(1),
) -> MetricsReport:
    """Build the metrics of one currency over ``period`` from two subscription snapshots.

    ``start_subscriptions`` and ``end_subscriptions`` are the subscriptions as they were
    at ``period.start`` and ``period.end``; those in other currencies are ignored.
    ``previously_active`` holds the customers who paid at some time before the start
    (their return is a reactivation). CAC divides ``marketing_spend`` (``None``: no CAC)
    by new customers only. ``trial_outcomes`` are the trials that ended in the period.
    LTV uses the period's customer churn, so it is a monthly LTV for a one-month period.
    """
    currency_exponent(currency)
    if (
        marketing_spend is not None
        and _check_money(marketing_spend, "marketing_spend").currency != currency
    ):
        raise CurrencyMismatch(
            f"the report is in {currency} but marketing_spend is in {marketing_spend.currency}",
            details={"currencies": [currency, marketing_spend.currency]},
        )
    return report_from_snapshots(
        period=period,
        currency=currency,
        start=customer_mrr(start_subscriptions).get(currency, {}),
        end=customer_mrr(end_subscriptions).get(currency, {}),
        previously_active=previously_active,
        marketing_spend=marketing_spend,
        trial_outcomes=trial_outcomes,
        gross_margin=gross_margin,
    )


def report_from_snapshots(
    *,
    period: Period,
    currency: str,
    start: Mapping[str, int],
    end: Mapping[str, int],
    previously_active: Collection[str] = (),
    marketing_spend: Money | None = None,
    trial_outcomes: Iterable[TrialOutcome] = (),
    gross_margin: Decimal = Decimal(1),
) -> MetricsReport:
    """Build the metrics of one currency from per-customer MRR at the start and the end."""
    return report_from_movements(
        period=period,
        movements=mrr_movements(start, end, currency=currency, previously_active=previously_active),
        marketing_spend=marketing_spend,
        trial_outcomes=trial_outcomes,
        gross_margin=gross_margin,
    )


def report_from_movements(
    *,
    period: Period,
    movements: MrrMovements,
    marketing_spend: Money | None = None,
    trial_outcomes: Iterable[TrialOutcome] = (),
    gross_margin: Decimal = Decimal(1),
) -> MetricsReport:
    """Build the metrics of ``movements``' currency over ``period`` from its MRR movements."""
    churn = customer_churn_rate(movements.start_customers, movements.churned_customers)
    average = arpa(movements.end, movements.end_customers)
    outcomes = tuple(trial_outcomes)
    return MetricsReport(
        period=period,
        currency=movements.currency,
        mrr=movements.end,
        arr=movements.end * _MONTHS_PER_YEAR,
        movements=movements,
        customer_churn_rate=churn,
        gross_revenue_churn_rate=gross_revenue_churn_rate(movements),
        net_revenue_churn_rate=net_revenue_churn_rate(movements),
        net_revenue_retention=net_revenue_retention(movements),
        arpa=average,
        ltv=ltv(average, churn, gross_margin),
        cac=None if marketing_spend is None else cac(marketing_spend, movements.new_customers),
        trial_conversion_rate=trial_conversion_rate(
            len(outcomes), sum(1 for _, converted in outcomes if converted)
        ),
        plan_conversion_rates=plan_conversion_rates(outcomes),
    )


# --------------------------------------------------------------------------- history


_TRIALING = SubscriptionStatus.TRIALING.value
TRIAL_CONVERTED_STATUSES: Final[frozenset[str]] = frozenset(
    {
        SubscriptionStatus.ACTIVE.value,
        SubscriptionStatus.PAST_DUE.value,
        SubscriptionStatus.INCOMPLETE.value,
    }
)
"""The statuses a subscription leaving ``trialing`` may go to for its trial to count as converted."""
_CONVERTED = TRIAL_CONVERTED_STATUSES


@attrs.frozen
class MrrSnapshots:
    """Per-customer MRR in one currency (minor units) at a period's start and end.

    Customers with no MRR are left out of ``start`` and ``end``; ``reactivated`` holds the
    customers paying at the end but not at the start who had paid at or before the start.
    These are the arguments :func:`report_from_snapshots` takes.
    """

    start: Mapping[str, int] = attrs.field(converter=_frozen_amounts, hash=False)
    end: Mapping[str, int] = attrs.field(converter=_frozen_amounts, hash=False)
    reactivated: frozenset[str] = attrs.field(converter=_frozen_ids)


def snapshot_movements(snapshots: MrrSnapshots, currency: str) -> MrrMovements:
    """Return the MRR movements in ``currency`` between the snapshots' start and end.

    The aggregate a store's ``mrr_movements`` returns: a store that cannot aggregate
    where its data lives builds the snapshots and calls this.
    """
    return mrr_movements(
        snapshots.start, snapshots.end, currency=currency, previously_active=snapshots.reactivated
    )


@attrs.frozen
class HistoryPoint:
    """A subscription's MRR from ``at`` on, and the status move that happened then."""

    subscription_id: str
    customer_id: str
    at: datetime
    mrr: Money
    from_status: str | None
    to_status: str
    plan_id: str = ""


def report_from_history(
    points: Iterable[HistoryPoint],
    *,
    period: Period,
    currency: str,
    marketing_spend: Money | None = None,
    gross_margin: Decimal | None = None,
) -> MetricsReport:
    """Build the metrics of one currency over ``period`` from subscription history, oldest first.

    A subscription's MRR at an instant is the MRR of its last history point at or before
    it; a customer who had MRR before the start, none at the start and some at the end
    is a reactivation; a trial counts when its subscription leaves ``trialing`` in the
    period, converted unless it was canceled or expired.
    """
    currency_exponent(currency)
    at_start: dict[str, HistoryPoint] = {}
    at_end: dict[str, HistoryPoint] = {}
    paid_before: set[str] = set()
    outcomes: list[TrialOutcome] = []
    for point in sorted(points, key=lambda p: p.at):
        if point.mrr.currency != currency:
            continue
        if point.at <= period.start:
            at_start[point.subscription_id] = point
            if point.mrr.amount > 0:
                paid_before.add(point.customer_id)
        if point.at <= period.end:
            at_end[point.subscription_id] = point
            if (
                period.start <= point.at < period.end
                and point.from_status == _TRIALING
                and point.to_status != _TRIALING
            ):
                outcomes.append((point.plan_id, point.to_status in _CONVERTED))
    start = _per_customer(at_start.values())
    return report_from_snapshots(
        period=period,
        currency=currency,
        start=start,
        end=_per_customer(at_end.values()),
        previously_active=paid_before - start.keys(),
        marketing_spend=marketing_spend,
        trial_outcomes=outcomes,
        gross_margin=Decimal(1) if gross_margin is None else gross_margin,
    )


def _per_customer(points: Iterable[HistoryPoint]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for point in points:
        if point.mrr.amount > 0:
            totals[point.customer_id] = totals.get(point.customer_id, 0) + point.mrr.amount
    return totals
