"""Domain events: the facts a change records, for the outbox, emails and analytics."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

__all__ = ["DomainEvent", "EventName"]


class EventName(enum.StrEnum):
    """Every kind of domain event; the value is the event's stable wire name."""

    SUBSCRIPTION_CREATED = "subscription.created"


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen
class DomainEvent:
    """Something that happened to ``subject_id`` at ``occurred_at``; ``data`` is JSON-ready."""

    name: EventName
    subject_id: str
    customer_id: str
    occurred_at: datetime
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, hash=False)
