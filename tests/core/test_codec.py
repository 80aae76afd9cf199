"""The codec: domain objects as JSON-ready data, and the catalog back from it (the cache's format)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from lumenquest_core.catalog import Plan, Price, PricingScheme, Tier, UsageType
from lumenquest_core.codec import plan_from_dict, price_from_dict, to_jsonable
from lumenquest_core.customers import Role
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval, Period

JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)


def through_json(value: Any) -> Any:
    """Return ``value`` as it comes back from a JSON store such as the cache."""
    return json.loads(json.dumps(to_jsonable(value)))


def test_a_graduated_tiered_price_survives_a_round_trip_through_json() -> None:
    price = Price(
        "price_t",
        "plan_a",
        "EUR",
        BillingCycle(Interval.MONTH, 3),
        scheme=PricingScheme.TIERED_GRADUATED,
        tiers=(
            Tier(10, Money(500, "EUR"), Money(1000, "EUR")),
            Tier(None, Money(300, "EUR")),
        ),
        usage_type=UsageType.METERED,
        trial_days=14,
        active=False,
        nickname="Quarterly seats",
    )
    back = price_from_dict(through_json(price))
    assert back == price
    assert back.amount_for(12) == price.amount_for(12) == Money(1000 + 10 * 500 + 2 * 300, "EUR")


def test_a_per_unit_price_survives_a_round_trip_through_json() -> None:
    price = Price(
        "price_u", "plan_a", "USD", BillingCycle(Interval.YEAR), unit_amount=Money(9900, "USD")
    )
    assert price_from_dict(through_json(price)) == price


def test_a_plan_survives_a_round_trip_through_json_with_its_features_and_metadata() -> None:
    plan = Plan(
        "plan_a",
        "Analytics",
        features=("reports", "exports"),
        active=False,
        description="For teams",
        metadata={"tier": "gold", "seats": 5},
    )
    back = plan_from_dict(through_json(plan))
    assert back == plan
    assert back.features == ("reports", "exports")
    assert dict(back.metadata) == {"tier": "gold", "seats": 5}
    assert back.grants("exports")


def test_money_periods_cycles_and_instants_have_a_plain_json_form() -> None:
    period = Period(JAN_1, JAN_1 + timedelta(days=31))
    assert to_jsonable(Money(1234, "USD")) == {"amount": 1234, "currency": "USD"}
    assert to_jsonable(period) == {
        "start": "2026-01-01T00:00:00+00:00",
        "end": "2026-02-01T00:00:00+00:00",
    }
    assert to_jsonable(BillingCycle(Interval.WEEK, 2)) == {"interval": "week", "count": 2}
    paris = timezone(timedelta(hours=1))
    assert to_jsonable(datetime(2026, 1, 1, 1, tzinfo=paris)) == "2026-01-01T01:00:00+01:00"


def test_decimals_become_exact_strings_and_enums_their_values() -> None:
    assert to_jsonable(Decimal("19.99")) == "19.99"
    assert to_jsonable(Decimal("0.1")) == "0.1"  # never the float 0.1000000000000000055…
    assert to_jsonable(Role.ADMIN) == "admin"
    assert to_jsonable(Interval.MONTH) == "month"


def test_containers_are_converted_all_the_way_down() -> None:
    data = {
        1: (Money(1, "USD"), Decimal("2.5")),
        "tags": frozenset({Role.USER}),
        "flags": {True},
        "nested": {"when": JAN_1},
    }
    assert to_jsonable(data) == {
        "1": [{"amount": 1, "currency": "USD"}, "2.5"],
        "tags": ["user"],
        "flags": [True],
        "nested": {"when": "2026-01-01T00:00:00+00:00"},
    }
    json.dumps(to_jsonable(data))  # and it really is JSON-ready


def test_plain_json_values_pass_through_unchanged() -> None:
    for value in (None, True, 3, 2.5, "text"):
        assert to_jsonable(value) == value
