"""Every storage port on SQLAlchemy 2 Core: PostgreSQL (psycopg 3) or an SQLite file.

::

    engine = create_engine_for("postgresql://billing@db/billing")  # or "sqlite:///billing.db"
    upgrade(engine)                                # the Alembic migrations shipped here
    store = SqlAlchemyStore(engine)
    with store.unit_of_work() as uow:              # one transaction, rolled back unless committed
        uow.customers.add(customer); uow.commit()

    billing = sqlalchemy_billing("sqlite:///billing.db")   # a ready Billing

PostgreSQL row-level security: migrate as the owner, connect as an application role
that row-level security binds, and say per unit of work whom it acts for::

    upgrade(owner_engine); create_app_role(owner_engine, "lumenquest_app")
    store = SqlAlchemyStore(create_engine_for("postgresql://lumenquest_app@db/billing"))
    uow_factory = store.acting_as(customer.id)        # or role="admin" / role="system"
    run = sqlalchemy_billing(store.engine, migrate=False, acting_as=Identity("system"))

Rows map explicitly to the core's frozen objects; constraints make double billing
impossible (one cycle invoice per subscription and period, one payment per idempotency
key, one outbox row per event); driver errors become the core's ``Conflict``,
``GatewayUnavailable`` (retryable) and ``ValidationError``.
"""

from lumenquest_adapters.sqlalchemy._engine import create_engine_for
from lumenquest_adapters.sqlalchemy._errors import translate
from lumenquest_adapters.sqlalchemy._migrate import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from lumenquest_adapters.sqlalchemy._roles import create_app_role
from lumenquest_adapters.sqlalchemy._schema import metadata
from lumenquest_adapters.sqlalchemy._uow import (
    Identity,
    SessionRole,
    SqlAlchemyIdempotencyStore,
    SqlAlchemyStore,
    SqlAlchemyUnitOfWork,
)
from lumenquest_adapters.sqlalchemy._wiring import SqlAlchemyBilling, sqlalchemy_billing

__all__ = [
    "Identity",
    "SessionRole",
    "SqlAlchemyBilling",
    "SqlAlchemyIdempotencyStore",
    "SqlAlchemyStore",
    "SqlAlchemyUnitOfWork",
    "alembic_config",
    "current_revision",
    "create_app_role",
    "create_engine_for",
    "downgrade",
    "head_revision",
    "metadata",
    "sqlalchemy_billing",
    "translate",
    "upgrade",
]
