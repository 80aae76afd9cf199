"""``sqlalchemy_billing``: a ready ``Billing`` on PostgreSQL or an SQLite file."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lumenquest_adapters.memory import (
    ConsoleEmailSender,
    FakeGateway,
    MemoryCache,
    SystemClock,
)
from lumenquest_adapters.sqlalchemy._engine import create_engine_for, is_sqlite
from lumenquest_adapters.sqlalchemy._migrate import upgrade
from lumenquest_adapters.sqlalchemy._uow import Identity, SqlAlchemyStore
from lumenquest_core.service import Billing

__all__ = ["SqlAlchemyBilling", "sqlalchemy_billing"]


class SqlAlchemyBilling(Billing):
    """A ``Billing`` on a database; ``store.engine`` is the engine it uses."""

    store: SqlAlchemyStore


def sqlalchemy_billing(
    url: str | sa.URL | Engine,
    *,
    migrate: bool = True,
    acting_as: Identity | None = None,
    **billing_options: Any,
) -> SqlAlchemyBilling:
    """Return a ``Billing`` on the database at ``url`` (or on an engine).

    The schema is migrated to the latest revision first unless ``migrate=False``. The
    clock is the real one, the gateway a ``FakeGateway`` and email goes to the console
    unless ``clock=``, ``gateway=``, ``email=`` say otherwise; any other ``Billing``
    keyword is passed on.

    ``acting_as`` is who every unit of work acts for under PostgreSQL's row-level
    security: ``Identity("system")`` for the billing run on the application role's
    engine (which cannot migrate: pass ``migrate=False`` and migrate as the owner).

    On PostgreSQL ``run_due`` settles a batch's payments in a second thread while it
    bills the next (``overlap_settlement``): a ``gateway=`` of your own must then be safe
    to call from two threads, or pass ``overlap_settlement=False``.
    """
    engine = url if isinstance(url, Engine) else create_engine_for(url)
    if migrate:
        upgrade(engine)
    store = SqlAlchemyStore(engine, acting_as)
    clock = billing_options.pop("clock", None) or SystemClock()
    options: dict[str, Any] = {
        "unit_of_work": store.unit_of_work,
        "clock": clock,
        "gateway": FakeGateway(),
        "email": ConsoleEmailSender(),
        "cache": MemoryCache(clock),
    }
    # On PostgreSQL the billing run records a batch's payments while it bills the next.
    options["overlap_settlement"] = not is_sqlite(engine)
    options.update(billing_options)
    billing = SqlAlchemyBilling(**options)
    billing.store = store
    return billing
