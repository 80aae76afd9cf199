"""PostgreSQL row-level security, proven against the real server through the app role.

One throwaway schema migrated to head and one throwaway application role (neither owner,
superuser nor BYPASSRLS) for the module, both dropped afterwards. Rows of customers A
and B (and rows of no customer) are written as ``system`` through the app role; then
every customer-owned table — found from the metadata, so a new one cannot be forgotten —
is read, updated, deleted and inserted into as A, as admin, as system and as nobody.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lumenquest_adapters.config import build_backend, load_settings
from lumenquest_adapters.memory import TestClock
from lumenquest_adapters.sqlalchemy import (
    Identity,
    SqlAlchemyBilling,
    SqlAlchemyStore,
    SqlAlchemyUnitOfWork,
    create_app_role,
    downgrade,
    metadata,
    sqlalchemy_billing,
    upgrade,
)
from lumenquest_core.errors import ConfigurationError, NotFound
from lumenquest_core.money import Money
from lumenquest_core.payments import AuditEntry
from lumenquest_core.periods import BillingCycle, Interval
from tests.adapters.sqlalchemy.databases import (
    history_json_kinds,
    postgres_engine,
    postgres_schema,
)

A, B = "cus_a", "cus_b"
NOW = datetime(2026, 3, 1, tzinfo=UTC)
CATALOG = {"plans", "prices", "coupons"}
# Tables that hold no customer data: open to the app role, no row-level security.
OPEN = {"idempotency_keys", "invoice_number_sequence"}


def _customer_owned() -> set[str]:
    """Tables whose rows belong to a customer: a customer_id, or a foreign key to such a table."""
    owned = {"customers"} | {t.name for t in metadata.tables.values() if "customer_id" in t.c}
    while True:
        more = {
            t.name
            for t in metadata.tables.values()
            if any(fk.column.table.name in owned for fk in t.foreign_keys)
        } - owned
        if not more:
            return owned
        owned |= more


CUSTOMER_OWNED = sorted(_customer_owned())


def _key_columns(table: sa.Table) -> list[sa.Column[Any]]:
    """The columns that name a row: the primary key, or the unique id beside a ``seq``."""
    if "seq" in table.c:
        return [next(c for c in table.c if c.unique)]
    return list(table.primary_key.columns)


def _rows(customer: str) -> dict[str, dict[str, Any]]:
    """One row of ``customer`` in every customer-owned table (ids suffixed by the customer)."""
    c = customer
    line = {
        "kind": "subscription",
        "description": "Pro",
        "amount": 1000,
        "currency": "USD",
        "quantity": 1,
        "discountable": True,
        "tax_rates": [],
    }
    money = {"currency": "USD", "created_at": NOW}
    return {
        "customers": {
            "id": c,
            "email": f"{c}@example.com",
            "name": c,
            "role": "user",
            "currency": "USD",
            "credit_balance": 0,
            "email_deliverable": True,
            "metadata": {},
            "created_at": NOW,
        },
        "subscriptions": {
            "id": f"sub_{c}",
            "customer_id": c,
            "price_id": "price_1",
            "price": {},
            "quantity": 1,
            "status": "active",
            "anchor": NOW,
            "current_period_start": NOW,
            "current_period_end": NOW + timedelta(days=31),
            "created_at": NOW,
            "cancel_at_period_end": False,
            "failed_payments": 0,
        },
        "invoices": {
            "id": f"in_{c}",
            "customer_id": c,
            "subscription_id": f"sub_{c}",
            "status": "draft",
            "billing_reason": "manual",
            "subtotal": 1000,
            "discount": 0,
            "tax": 0,
            "inclusive_tax": 0,
            "total": 1000,
            "credit_applied": 0,
            "amount_due": 1000,
            "amount_paid": 0,
            "amount_credited": 0,
            "amount_refunded": 0,
            **money,
        },
        "invoice_lines": {
            "invoice_id": f"in_{c}",
            "position": 0,
            "discount_amount": 0,
            "taxes": [],
            **line,
        },
        "pending_lines": {
            "id": f"pl_{c}",
            "customer_id": c,
            "subscription_id": f"sub_{c}",
            "created_at": NOW,
            **line,
        },
        "payments": {
            "id": f"pay_{c}",
            "invoice_id": f"in_{c}",
            "customer_id": c,
            "amount": 1000,
            "status": "succeeded",
            "idempotency_key": f"key_{c}",
            "attempt": 1,
            "failure_message": "",
            **money,
        },
        "refunds": {
            "id": f"re_{c}",
            "payment_id": f"pay_{c}",
            "invoice_id": f"in_{c}",
            "amount": 100,
            "reason": "",
            **money,
        },
        "credit_notes": {
            "id": f"cn_{c}",
            "number": f"CN-{c}",
            "invoice_id": f"in_{c}",
            "customer_id": c,
            "amount": 100,
            "reason": "",
            "outcome": "credit_balance",
            "memo": "",
            **money,
        },
        "usage_records": {
            "id": f"ur_{c}",
            "subscription_id": f"sub_{c}",
            "quantity": 5,
            "at": NOW,
        },
        "subscription_changes": {
            "id": f"sc_{c}",
            "subscription_id": f"sub_{c}",
            "customer_id": c,
            "kind": "created",
            "at": NOW,
            "to_status": "active",
            "to_price_id": "price_1",
            "to_quantity": 1,
            "mrr": 1000,
            "mrr_currency": "USD",
            "data": {},
        },
        **_maybe_customer_rows(c, c),
    }


def _maybe_customer_rows(suffix: str, customer: str | None) -> dict[str, dict[str, Any]]:
    """Rows of the tables where a row may belong to no customer."""
    return {
        "outbox": {
            "id": f"evt_{suffix}",
            "name": "subscription.created",
            "subject_id": f"sub_{suffix}",
            "customer_id": customer,
            "occurred_at": NOW,
            "data": {},
            "created_at": NOW,
            "attempts": 0,
        },
        "audit_logs": {
            "id": f"au_{suffix}",
            "actor": "system",
            "action": "subscription.created",
            "subject_type": "subscription",
            "subject_id": f"sub_{suffix}",
            "at": NOW,
            "customer_id": customer,
        },
        "analytics_events": {
            "id": f"ae_{suffix}",
            "name": "subscription.created",
            "customer_id": customer,
            "occurred_at": NOW,
            "properties": {},
        },
        "email_deliveries": {
            "message_id": f"msg_{suffix}",
            "event_id": f"evt_{suffix}",
            "template": "welcome",
            "recipient": f"{suffix}@example.com",
            "status": "sent",
            "created_at": NOW,
            "customer_id": customer,
        },
    }


CATALOG_ROWS: dict[str, dict[str, Any]] = {
    "plans": {
        "id": "plan_1",
        "name": "Pro",
        "features": [],
        "active": True,
        "description": "",
        "metadata": {},
    },
    "prices": {
        "id": "price_1",
        "plan_id": "plan_1",
        "currency": "USD",
        "interval": "month",
        "interval_count": 1,
        "scheme": "flat",
        "unit_amount": 1000,
        "tiers": [],
        "usage_type": "licensed",
        "trial_days": 0,
        "active": True,
        "nickname": "",
    },
    "coupons": {"id": "coupon_1", "name": "Ten", "percent_off": "10", "duration": "once"},
}


@dataclass
class Seeded:
    """The module's database: engines, the app role, and the key of every row per owner."""

    schema: str
    owner: Engine  # the migrations' connection (a superuser here)
    app: Engine  # the application role, row-level security binds it
    role: str
    rows: dict[str, dict[str | None, dict[str, Any]]]  # table -> owner -> row

    def key(self, table: str, owner: str | None) -> tuple[Any, ...]:
        row = self.rows[table][owner]
        return tuple(row[c.name] for c in _key_columns(metadata.tables[table]))

    def keys(self, table: str, *owners: str | None) -> set[tuple[Any, ...]]:
        return {self.key(table, o) for o in owners if o in self.rows[table]}

    def owners(self, table: str) -> list[str | None]:
        return list(self.rows[table])

    def session(self, identity: Identity | None) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.app, identity)


@pytest.fixture(scope="module")
def db(postgres_url: str) -> Iterator[Seeded]:
    role = f"lq_app_{uuid.uuid4().hex[:10]}"
    with postgres_schema(postgres_url) as schema:
        owner = postgres_engine(postgres_url, schema)
        app: Engine | None = None
        try:
            upgrade(owner)
            create_app_role(owner, role)
            app_url = sa.make_url(postgres_url).set(username=role).render_as_string(False)
            app = postgres_engine(app_url, schema)
            rows: dict[str, dict[str | None, dict[str, Any]]] = {}
            for owner_id in (A, B):
                for table, row in _rows(owner_id).items():
                    rows.setdefault(table, {})[owner_id] = row
            for table, row in _maybe_customer_rows("none", None).items():
                rows[table][None] = row
            seeded = Seeded(schema=schema, owner=owner, app=app, role=role, rows=rows)
            with seeded.session(Identity("system")) as uow:
                connection = uow.connection()
                for sa_table in metadata.sorted_tables:
                    if sa_table.name in CATALOG_ROWS:
                        connection.execute(sa_table.insert().values(CATALOG_ROWS[sa_table.name]))
                    for row in rows.get(sa_table.name, {}).values():
                        connection.execute(sa_table.insert().values(row))
                uow.commit()
            yield seeded
        finally:
            if app is not None:
                app.dispose()
            with owner.begin() as connection:
                exists = sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r")
                if connection.execute(exists, {"r": role}).first() is not None:
                    connection.exec_driver_sql(f'DROP OWNED BY "{role}"')
                    connection.exec_driver_sql(f'DROP ROLE "{role}"')
            owner.dispose()


def _where_keys(table: sa.Table, keys: set[tuple[Any, ...]]) -> sa.ColumnElement[bool]:
    return sa.tuple_(*_key_columns(table)).in_(sorted(keys))


def _visible(connection: Connection, table: sa.Table) -> set[tuple[Any, ...]]:
    columns = _key_columns(table)
    return {tuple(row) for row in connection.execute(sa.select(*columns))}


def _touch(table: sa.Table) -> sa.Update:
    """An UPDATE that changes nothing but counts every row it may write."""
    column = _key_columns(table)[0]
    return sa.update(table).values({column.name: column})


def _copy(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    """The row with fresh values in every unique column, so only the policies may refuse it."""
    unique = {c.name for c in _key_columns(table)} | {c.name for c in table.c if c.unique}
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            unique |= {c.name for c in constraint.columns}
    copy = dict(row)
    for name in unique - {"seq"}:
        value = copy[name]
        # Parents stay: a line of B's invoice is still B's.
        if name in {c.parent.name for c in table.foreign_keys}:
            continue
        copy[name] = value + 100 if isinstance(value, int) else f"{value}_copy"
    return copy


# -- the role and the policies exist -----------------------------------------------------


def test_the_app_role_is_neither_owner_nor_superuser_nor_bypassrls(db: Seeded) -> None:
    with db.owner.connect() as connection:
        role = connection.execute(
            sa.text(
                "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = :r"
            ),
            {"r": db.role},
        ).one()
        owned = connection.execute(
            sa.text(
                "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles"
                " WHERE rolname = :r)"
            ),
            {"r": db.role},
        ).scalar_one()
    assert tuple(role) == (False, False, False)
    assert owned == 0
    with db.app.connect() as connection:
        assert connection.execute(sa.text("SELECT current_user")).scalar_one() == db.role


def test_every_table_is_customer_owned_catalog_or_named_open(db: Seeded) -> None:
    """A new table fails here until it is classified (and, if it holds customer data, secured)."""
    assert set(CUSTOMER_OWNED) | CATALOG | OPEN == set(metadata.tables)
    assert not set(CUSTOMER_OWNED) & (CATALOG | OPEN)
    with db.owner.connect() as connection:
        secured = {
            name: (enabled, forced)
            for name, enabled, forced in connection.execute(
                sa.text(
                    "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
                    " WHERE relkind = 'r' AND relnamespace ="
                    " (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
                )
            )
        }
        policies: dict[str, set[str]] = {}
        for table, policy in connection.execute(
            sa.text(
                "SELECT tablename, policyname FROM pg_policies WHERE schemaname = current_schema()"
            )
        ):
            policies.setdefault(table, set()).add(policy)
    for table in CUSTOMER_OWNED:
        assert secured[table] == (True, True), table
        assert policies.get(table) == {"lumenquest_own_rows", "lumenquest_staff"}, table
        # The behavioural tests below need rows of both customers in it.
        assert {A, B} <= set(db.rows.get(table, {})), f"seed rows of A and B into {table}"
    for table in CATALOG:
        assert secured[table] == (True, True), table
        assert policies.get(table) == {"lumenquest_read", "lumenquest_staff"}, table
    for table in OPEN:
        assert secured[table] == (False, False), table


def test_create_app_role_is_idempotent_and_refuses_a_role_that_bypasses(db: Seeded) -> None:
    create_app_role(db.owner, db.role)
    create_app_role(db.owner, db.role, password="s3cr%t:'x")
    superuser = f"lq_su_{uuid.uuid4().hex[:10]}"
    with db.owner.begin() as connection:
        connection.exec_driver_sql(f'CREATE ROLE "{superuser}" SUPERUSER')
    try:
        with pytest.raises(ConfigurationError):
            create_app_role(db.owner, superuser)
    finally:
        with db.owner.begin() as connection:
            connection.exec_driver_sql(f'DROP ROLE "{superuser}"')


# -- every customer-owned table ------------------------------------------------------------


@pytest.mark.parametrize("name", CUSTOMER_OWNED)
def test_a_customer_reads_only_its_own_rows(db: Seeded, name: str) -> None:
    table = metadata.tables[name]
    with db.session(Identity("user", A)) as uow:
        assert _visible(uow.connection(), table) == db.keys(name, A)


@pytest.mark.parametrize("name", CUSTOMER_OWNED)
def test_a_customer_can_neither_update_nor_delete_anothers_rows(db: Seeded, name: str) -> None:
    table = metadata.tables[name]
    others = db.keys(name, *(o for o in db.owners(name) if o != A))
    with db.session(Identity("user", A)) as uow:
        connection = uow.connection()
        assert connection.execute(_touch(table).where(_where_keys(table, others))).rowcount == 0
        assert connection.execute(table.delete().where(_where_keys(table, others))).rowcount == 0
        # Its own rows it may write.
        assert connection.execute(_touch(table)).rowcount == 1
        uow.rollback()
    with db.session(Identity("admin")) as uow:
        assert _visible(uow.connection(), table) >= others


@pytest.mark.parametrize("name", CUSTOMER_OWNED)
def test_a_customer_cannot_insert_a_row_for_another(db: Seeded, name: str) -> None:
    table = metadata.tables[name]
    with db.session(Identity("user", A)) as uow:
        connection = uow.connection()
        refused = pytest.raises(sa.exc.ProgrammingError, match="row-level security policy")
        with refused, connection.begin_nested():
            connection.execute(table.insert().values(_copy(table, db.rows[name][B])))
        if name != "customers":  # a customer cannot create another customer, itself aside
            # The same row of its own goes in: only the policy refused the other.
            connection.execute(table.insert().values(_copy(table, db.rows[name][A])))
        uow.rollback()


@pytest.mark.parametrize("name", CUSTOMER_OWNED)
@pytest.mark.parametrize("role", ["admin", "system"])
def test_admin_and_system_see_every_row(db: Seeded, name: str, role: str) -> None:
    table = metadata.tables[name]
    identity = Identity("admin") if role == "admin" else Identity("system")
    with db.session(identity) as uow:
        assert _visible(uow.connection(), table) == db.keys(name, *db.owners(name))


@contextmanager
def _engine_of(db: Seeded, **options: Any) -> Iterator[Engine]:
    """An engine of the app role on the test's schema, with its own pool options; disposed."""
    engine = postgres_engine(db.app.url.render_as_string(hide_password=False), db.schema, **options)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", CUSTOMER_OWNED)
def test_a_session_with_nothing_set_sees_and_touches_nothing(db: Seeded, name: str) -> None:
    """Unset is NULL on a new connection and '' once a transaction has set and ended."""
    table = metadata.tables[name]
    with _engine_of(db, poolclass=sa.NullPool) as single, SqlAlchemyStore(single)() as uow:
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        connection = uow.connection()
        assert _settings(connection)[1:] == (None, None)  # never set on this connection
        assert _visible(connection, table) == set()
        assert connection.execute(_touch(table)).rowcount == 0
        assert connection.execute(table.delete()).rowcount == 0
        # A role without a customer (which stays NULL): nothing.
        connection.execute(sa.text("SELECT set_config('lumenquest.role', 'user', true)"))
        assert _settings(connection)[1:] == (None, "user")
        assert _visible(connection, table) == set()
        for customer, role in (("", ""), ("", "user"), (A, ""), (A, "nobody")):
            connection.execute(_SET, {"customer": customer, "role": role})
            assert _visible(connection, table) == set(), (customer, role)
            assert connection.execute(_touch(table)).rowcount == 0
        uow.commit()
        # Set once, then ended: now '' on this connection, and still nothing.
        assert _settings(connection)[1:] == ("", "")
        assert _visible(connection, table) == set()


_SET = sa.text(
    "SELECT set_config('lumenquest.customer_id', :customer, true),"
    " set_config('lumenquest.role', :role, true)"
)


# -- the catalog ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_the_catalog_is_read_by_all_and_written_by_admin_and_system_only(
    db: Seeded, name: str
) -> None:
    table = metadata.tables[name]
    key = {(CATALOG_ROWS[name]["id"],)}
    for identity in (None, Identity("user", A)):
        with db.session(identity) as uow:
            connection = uow.connection()
            assert _visible(connection, table) == key
            assert connection.execute(_touch(table)).rowcount == 0
            assert connection.execute(table.delete()).rowcount == 0
            with pytest.raises(sa.exc.ProgrammingError, match="row-level security policy"):
                connection.execute(table.insert().values(_copy(table, CATALOG_ROWS[name])))
    for role in ("admin", "system"):
        with db.session(Identity("admin") if role == "admin" else Identity("system")) as uow:
            connection = uow.connection()
            connection.execute(table.insert().values(_copy(table, CATALOG_ROWS[name])))
            assert connection.execute(_touch(table)).rowcount == 2
            uow.rollback()


# -- the identity lives as long as the transaction -----------------------------------------


# An identity with quotes and SQL in it: it must arrive as this text and nothing more.
_ODD = "cus_o'brien\\'); SELECT set_config('lumenquest.role', 'system', true); --"


def _settings(connection: Connection) -> tuple[Any, ...]:
    return tuple(
        connection.execute(
            sa.text(
                "SELECT pg_backend_pid(), current_setting('lumenquest.customer_id', true),"
                " current_setting('lumenquest.role', true)"
            )
        ).one()
    )


def test_the_identity_does_not_survive_its_transaction(db: Seeded) -> None:
    with _engine_of(db, pool_size=1, max_overflow=0) as single:
        customers = metadata.tables["customers"]
        store = SqlAlchemyStore(single)
        for end in ("commit", "rollback"):
            with store.acting_as(A)() as uow:
                assert isinstance(uow, SqlAlchemyUnitOfWork)
                pid, customer, role = _settings(uow.connection())
                assert (customer, role) == (A, "user")
                getattr(uow, end)()
                # The unit of work's next transaction acts for A again.
                assert _settings(uow.connection())[1:] == (A, "user")
                assert _visible(uow.connection(), customers) == {(A,)}
            with store.unit_of_work() as bare:
                assert isinstance(bare, SqlAlchemyUnitOfWork)
                again, customer, role = _settings(bare.connection())
                assert again == pid  # the same pooled connection
                assert customer in (None, "")
                assert role in (None, "")
                assert _visible(bare.connection(), customers) == set()


def test_an_identity_begins_its_transaction_in_one_statement_and_verbatim(db: Seeded) -> None:
    """BEGIN and the identity go as one query, a customer id with quotes quoted as itself."""
    with (
        _engine_of(db, poolclass=sa.NullPool) as single,
        SqlAlchemyStore(single).acting_as(_ODD)() as uow,
    ):
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        connection = uow.connection()
        driver = connection.connection.driver_connection
        assert driver is not None
        # The query that began the transaction set the identity and left it open.
        assert driver.info.transaction_status.name == "INTRANS"
        assert _settings(connection)[1:] == (_ODD, "user")
        assert _visible(connection, metadata.tables["customers"]) == set()


def _round_trips(connection: Connection) -> list[str]:
    """Record each exchange with the server on this connection (psycopg's ``wait``)."""
    driver = connection.connection.driver_connection
    assert driver is not None
    seen: list[str] = []
    wait = driver.wait

    def counted(gen: Any, *args: Any, **kw: Any) -> Any:
        seen.append(getattr(gen, "__name__", "exchange"))
        return wait(gen, *args, **kw)

    driver.wait = counted  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("first", ["own", "anothers"])
def test_a_first_read_goes_with_begin_and_the_identity_in_one_round_trip(
    db: Seeded, first: str
) -> None:
    """The unit of work's own first read carries BEGIN and the identity: it sees as A only."""
    with (
        _engine_of(db, pool_size=1, max_overflow=0) as single,
        SqlAlchemyStore(single).acting_as(A)() as uow,
    ):
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        trips = _round_trips(uow._begun())
        if first == "own":
            assert uow.customers.get(A).id == A
        else:
            with pytest.raises(NotFound):
                uow.customers.get(B)
        assert len(trips) == 1
        driver = uow._begun().connection.driver_connection
        assert driver is not None
        assert driver.info.transaction_status.name == "INTRANS"
        assert _settings(uow.connection())[1:] == (A, "user")


def test_a_deferred_identity_is_quoted_verbatim(db: Seeded) -> None:
    """A customer id with quotes, sent ahead of the first read, is that id and nothing more."""
    with (
        _engine_of(db, poolclass=sa.NullPool) as single,
        SqlAlchemyStore(single).acting_as(_ODD)() as uow,
    ):
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        with pytest.raises(NotFound):
            uow.customers.get(A)  # the first statement: the identity went with it
        assert _settings(uow.connection())[1:] == (_ODD, "user")


@pytest.mark.parametrize("end", ["commit", "rollback", "exit"])
def test_an_identity_never_sent_is_not_sent_for_the_next_transaction(db: Seeded, end: str) -> None:
    """A transaction begun as A that ran nothing leaves nothing for the connection's next one."""
    with _engine_of(db, pool_size=1, max_overflow=0) as single:
        store = SqlAlchemyStore(single)
        with store.acting_as(A)() as uow:
            assert isinstance(uow, SqlAlchemyUnitOfWork)
            uow._begun()  # begun, its BEGIN and identity waiting for a first statement
            if end != "exit":
                getattr(uow, end)()
                # The same unit of work's next transaction acts for A again.
                assert uow.customers.get(A).id == A
                getattr(uow, end)()
                uow._begun()
        with store.unit_of_work() as bare:
            assert isinstance(bare, SqlAlchemyUnitOfWork)
            with pytest.raises(NotFound):
                bare.customers.get(A)  # first statement: no identity, so no row
            assert _settings(bare.connection())[1:] in ((None, None), ("", ""))
        with store.acting_as(B)() as other, pytest.raises(NotFound):
            other.customers.get(A)


def test_an_identity_needs_a_known_role_and_a_user_its_customer() -> None:
    with pytest.raises(ValueError, match="customer_id"):
        Identity("user")
    with pytest.raises(ValueError, match="role"):
        Identity("root")  # type: ignore[arg-type]


# -- the facade through the app role ---------------------------------------------------------


def test_billing_through_the_app_role_as_system_and_as_a_customer(db: Seeded) -> None:
    clock = TestClock(NOW)

    def billing(identity: Identity) -> SqlAlchemyBilling:
        return sqlalchemy_billing(db.app, migrate=False, acting_as=identity, clock=clock)

    system = billing(Identity("system"))
    plan = system.create_plan(name="Team", features=[])
    price = system.create_price(
        plan_id=plan.id, unit_amount=Money(2000, "USD"), cycle=BillingCycle(Interval.MONTH)
    )
    ada = system.create_customer(email=f"ada-{uuid.uuid4().hex[:6]}@example.com", name="Ada")
    bob = system.create_customer(email=f"bob-{uuid.uuid4().hex[:6]}@example.com", name="Bob")
    bobs = system.subscribe(customer_id=bob.id, price_id=price.id)

    as_ada = billing(Identity("user", ada.id))
    mine = as_ada.subscribe(customer_id=ada.id, price_id=price.id, idempotency_key=uuid.uuid4().hex)
    assert as_ada.get_subscription(mine.id).customer_id == ada.id
    assert [i.customer_id for i in as_ada.list_invoices(customer_id=ada.id)] == [ada.id]
    with pytest.raises(NotFound):
        as_ada.get_subscription(bobs.id)
    assert as_ada.list_invoices(customer_id=bob.id) == []

    clock.set(NOW + timedelta(days=31, hours=1))
    system.run_due()
    assert len(billing(Identity("admin")).list_invoices(customer_id=bob.id)) == 2
    assert len(as_ada.list_invoices(customer_id=ada.id)) == 2
    # The run's batch queued its history rows with their data as JSON text; the app
    # role's statements (COPY is refused under row-level security) stored objects.
    assert history_json_kinds(db.owner) == {"object"}


def test_a_large_batch_of_history_rows_through_the_app_role_stores_json_objects(
    db: Seeded,
) -> None:
    # More rows than a batch pipelines: they go as SQLAlchemy's INSERT (COPY is refused
    # under row-level security), which gets the data queued as JSON text decoded again.
    store = SqlAlchemyStore(db.app, Identity("system"))
    at = datetime(2026, 3, 1, tzinfo=UTC)
    with store.unit_of_work() as uow:
        uow.prepare_batch()
        for n in range(150):
            uow.audit_log.add(
                AuditEntry(
                    id=f"aud_large_{n}_{uuid.uuid4().hex[:6]}",
                    actor="system",
                    action="tested",
                    subject_type="subscription",
                    subject_id=f"sub_{n}",
                    at=at,
                    after={"n": n, "nested": {"ok": True}},
                )
            )
        uow.commit()
    assert history_json_kinds(db.owner) == {"object"}
    with db.owner.connect() as connection:
        nested = connection.exec_driver_sql(
            "SELECT after->'nested'->>'ok' FROM audit_logs WHERE action = 'tested'"
        ).scalars()
        assert set(nested) == {"true"}


def test_downgrade_drops_the_policies_and_upgrade_restores_them(postgres_empty: Engine) -> None:
    count = sa.text(
        "SELECT (SELECT count(*) FROM pg_policies WHERE schemaname = current_schema()),"
        " (SELECT count(*) FROM pg_class WHERE relrowsecurity AND relnamespace ="
        " (SELECT oid FROM pg_namespace WHERE nspname = current_schema()))"
    )
    upgrade(postgres_empty)
    with postgres_empty.connect() as connection:
        secured = tuple(connection.execute(count).one())
    assert secured == (2 * len(CUSTOMER_OWNED) + 2 * len(CATALOG), len(CUSTOMER_OWNED) + 3)
    downgrade(postgres_empty, "0001")
    with postgres_empty.connect() as connection:
        assert tuple(connection.execute(count).one()) == (0, 0)
    upgrade(postgres_empty)
    with postgres_empty.connect() as connection:
        assert tuple(connection.execute(count).one()) == secured


@pytest.mark.parametrize(("acting_as", "sees"), [(None, set()), ("system", {A, B})])
def test_build_backend_acts_as_the_configured_identity(
    db: Seeded, postgres_url: str, acting_as: str | None, sees: set[str]
) -> None:
    # The application role with nothing set sees no customer; as the billing run, all.
    url = (
        sa.make_url(postgres_url)
        .set(username=db.role)
        .update_query_dict({"options": f"-csearch_path={db.schema}"})
    )
    settings = load_settings(
        database_url=url.render_as_string(hide_password=False),
        database_acting_as=acting_as,
        migrate=False,
    )
    backend = build_backend(settings)
    try:
        assert {c.id for c in backend.billing.list_customers()} & {A, B} == sees
        if acting_as is None:
            assert backend.billing.list_customers() == []
    finally:
        backend.close()
