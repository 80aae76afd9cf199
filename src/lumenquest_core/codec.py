"""JSON-ready dictionaries for every domain object, and back for the cached catalog."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from lumenquest_core.catalog import Plan, Price, PricingScheme, Tier, UsageType
from lumenquest_core.money import Money
from lumenquest_core.periods import BillingCycle, Interval, Period

__all__ = ["money_json", "plan_from_dict", "price_from_dict", "to_jsonable"]


_PLAIN = frozenset({str, int, bool, float})


def to_jsonable(value: Any) -> Any:
    """Return ``value`` as JSON-ready data: Money as {amount, currency}, instants as ISO 8601."""
    # Fast paths for what audit rows and event data are mostly made of (exact types only:
    # a StrEnum is a str subclass and still goes through the enum branch below).
    kind = type(value)
    if kind in _PLAIN or value is None:
        return value
    if kind is dict:
        return _jsonable_dict(value)
    if kind is Money or isinstance(value, Money):
        return money_json(value)
    if isinstance(value, Period):
        return {"start": value.start.isoformat(), "end": value.end.isoformat()}
    if isinstance(value, BillingCycle):
        return {"interval": value.interval.value, "count": value.count}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if attrs.has(type(value)):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


def money_json(money: Money) -> dict[str, Any]:
    """Return Money as JSON data: ``{"amount": 1000, "currency": "USD"}``."""
    return {"amount": money.amount, "currency": money.currency}


def _jsonable_dict(value: dict[Any, Any]) -> dict[str, Any]:
    # Plain values are copied without a call per value: audit rows and event data are
    # mostly strings and integers, and a renewal builds a dozen of these dictionaries.
    result: dict[str, Any] = {}
    for key, item in value.items():
        result[key if type(key) is str else str(key)] = (
            item if type(item) in _PLAIN or item is None else to_jsonable(item)
        )
    return result


def _money(data: Mapping[str, Any] | None) -> Money | None:
    return None if data is None else Money(data["amount"], data["currency"])


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    """Rebuild a Plan from :func:`to_jsonable` output."""
    return Plan(
        id=data["id"],
        name=data["name"],
        features=tuple(data["features"]),
        active=data["active"],
        description=data["description"],
        metadata=data["metadata"],
    )


def price_from_dict(data: Mapping[str, Any]) -> Price:
    """Rebuild a Price from :func:`to_jsonable` output."""
    cycle = data["cycle"]
    return Price(
        id=data["id"],
        plan_id=data["plan_id"],
        currency=data["currency"],
        cycle=BillingCycle(Interval(cycle["interval"]), cycle["count"]),
        scheme=PricingScheme(data["scheme"]),
        unit_amount=_money(data["unit_amount"]),
        tiers=tuple(
            Tier(t["up_to"], Money(**t["unit_amount"]), _money(t["flat_amount"]))
            for t in data["tiers"]
        ),
        usage_type=UsageType(data["usage_type"]),
        trial_days=data["trial_days"],
        active=data["active"],
        nickname=data["nickname"],
    )
