"""Hypothesis strategies for lumenquest's value objects, shared by every test module."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from lumenquest_core.catalog import Price, PricingScheme, Tier
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval, Period

CURRENCIES = ("USD", "EUR", "JPY", "BHD")

instants = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds with timezones=
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
).map(lambda d: d.replace(microsecond=0))

currencies = st.sampled_from(CURRENCIES)
amounts = st.integers(min_value=-(10**12), max_value=10**12)
positive_amounts = st.integers(min_value=1, max_value=10**10)
cycles = st.builds(
    BillingCycle,
    interval=st.sampled_from(list(Interval)),
    count=st.integers(min_value=1, max_value=12),
)


def money(
    currency: str = "USD", min_value: int = -(10**12), max_value: int = 10**12
) -> st.SearchStrategy[Money]:
    """Money in ``currency`` with amounts in the given range."""
    return st.integers(min_value=min_value, max_value=max_value).map(lambda a: Money(a, currency))


@st.composite
def periods(draw: st.DrawFn, min_seconds: int = 1, max_days: int = 800) -> Period:
    """A period of at least ``min_seconds`` and at most ``max_days``."""
    start = draw(instants)
    seconds = draw(st.integers(min_value=min_seconds, max_value=max_days * 86400))
    return Period(start, start + timedelta(seconds=seconds))


@st.composite
def instants_in(draw: st.DrawFn, period: Period) -> datetime:
    """An instant inside ``period`` (whole seconds)."""
    seconds = int(period.duration.total_seconds())
    return period.start + timedelta(seconds=draw(st.integers(min_value=0, max_value=seconds - 1)))


@st.composite
def prices(
    draw: st.DrawFn,
    currency: str = "USD",
    cycle: BillingCycle | None = None,
    price_id: str | None = None,
) -> Price:
    """A licensed price of any scheme in ``currency``."""
    scheme = draw(st.sampled_from(list(PricingScheme)))
    chosen_cycle = cycle if cycle is not None else draw(cycles)
    pid = price_id or draw(st.text("abcdef0123456789", min_size=6, max_size=6)).join(("price_", ""))
    unit = money(currency, 0, 10**7)
    if scheme in (PricingScheme.FLAT, PricingScheme.PER_UNIT):
        return Price(pid, "plan_x", currency, chosen_cycle, scheme, unit_amount=draw(unit))
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=1000), min_size=1, max_size=4)))
    tiers = [Tier(b, draw(unit), draw(st.none() | unit)) for b in bounds]
    tiers.append(Tier(None, draw(unit), draw(st.none() | unit)))
    return Price(pid, "plan_x", currency, chosen_cycle, scheme, tiers=tiers)


# --- invoicing: lines, tax rates and coupons ---------------------------------------------

# Imported here, not at the top, so this section can be appended without touching the rest.
from lumenquest_core.coupons import Coupon, CouponDuration  # noqa: E402
from lumenquest_core.lines import InvoiceLine, LineKind, TaxRate  # noqa: E402


@st.composite
def tax_rates(draw: st.DrawFn, inclusive: bool | None = None) -> TaxRate:
    """A tax rate of 0–30 % with up to three decimal places (8.875 % included)."""
    percentage = draw(st.decimals(min_value=0, max_value=30, places=3))
    chosen = draw(st.booleans()) if inclusive is None else inclusive
    return TaxRate(draw(st.sampled_from(["vat", "gst", "city"])), "Tax", percentage, chosen)


@st.composite
def invoice_lines(
    draw: st.DrawFn, currency: str = "USD", min_amount: int = -(10**8), max_amount: int = 10**8
) -> InvoiceLine:
    """An invoice line of any kind, positive or negative, maybe with its own tax rates."""
    inclusive = draw(st.booleans())
    return InvoiceLine(
        kind=draw(st.sampled_from(list(LineKind))),
        description="line",
        amount=draw(money(currency, min_amount, max_amount)),
        quantity=draw(st.integers(min_value=0, max_value=100)),
        discountable=draw(st.booleans()),
        tax_rates=draw(st.lists(tax_rates(inclusive), max_size=2)),
    )


@st.composite
def coupons(draw: st.DrawFn, currency: str = "USD") -> Coupon:
    """A percent or amount-off coupon of any duration in ``currency``."""
    duration = draw(st.sampled_from(list(CouponDuration)))
    cycles_ = draw(st.integers(1, 12)) if duration is CouponDuration.REPEATING else None
    if draw(st.booleans()):
        percent = draw(st.decimals(min_value="0.01", max_value=100, places=2))
        return Coupon("coupon", percent_off=percent, duration=duration, duration_in_cycles=cycles_)
    amount = draw(money(currency, 1, 10**8))
    return Coupon("coupon", amount_off=amount, duration=duration, duration_in_cycles=cycles_)
