"""The PostgreSQL role the application connects as: row-level security binds it.

Migrations run as the schema's owner (or a superuser); the application connects as a
role that owns nothing, is neither superuser nor BYPASSRLS, and holds only what it
needs: USAGE on the schema, SELECT/INSERT/UPDATE/DELETE on lumenquest's tables and
USAGE/SELECT on their sequences. ``alembic_version`` is not granted.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lumenquest_adapters.sqlalchemy._schema import metadata
from lumenquest_core.errors import ConfigurationError

__all__ = ["create_app_role"]

_ROLE = sa.text(
    "SELECT rolsuper, rolbypassrls,"
    " EXISTS (SELECT 1 FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
    " WHERE c.relowner = pg_roles.oid AND n.nspname = :schema) AS owns"
    " FROM pg_roles WHERE rolname = :name"
)
_SCHEMA = sa.text(
    "SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
    " WHERE c.oid = to_regclass('customers')"
)
_SERIAL_SEQUENCE = sa.text(
    "SELECT pg_get_serial_sequence(format('%I.%I', CAST(:schema AS text),"
    " CAST(:table AS text)), CAST(:column AS text))"
)
_FORMAT = sa.text(
    "SELECT format(CAST(:template AS text), CAST(:name AS text), CAST(:schema AS text),"
    " CAST(:password AS text))"
)


def _execute(connection: Connection, template: str, **values: str | None) -> None:
    """Run a utility statement built server-side by ``format`` (``%I``, ``%L`` quoting)."""
    arguments = {"name": None, "schema": None, "password": None, **values}
    statement = connection.execute(_FORMAT, {"template": template, **arguments}).scalar_one()
    # The statement is complete: no parameters, so a '%' or ':' in it means nothing.
    connection.exec_driver_sql(statement, execution_options={"no_parameters": True})


def create_app_role(engine: Engine, name: str, password: str | None = None) -> None:
    """Create (or bring up to date) the login role the application connects as.

    Run it as the owner or a superuser, after every ``upgrade`` (a new table needs its
    grants); it is idempotent. An existing role that is a superuser, BYPASSRLS or owns
    lumenquest's tables raises ``ConfigurationError``: row-level security would not bind it.
    ``password=None`` leaves the password as it is (or unset).
    """
    if engine.dialect.name != "postgresql":
        raise ConfigurationError("an application role is a PostgreSQL matter")
    with engine.begin() as connection:
        schema = connection.execute(_SCHEMA).scalar()
        if schema is None:
            raise ConfigurationError("migrate the schema (upgrade) before creating the role")
        # Roles are per cluster: serialise concurrent creators of the same one.
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(name))))
        existing = connection.execute(_ROLE, {"name": name, "schema": schema}).first()
        if existing is None:
            _execute(
                connection,
                "CREATE ROLE %1$I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
                name=name,
            )
        elif existing.rolsuper or existing.rolbypassrls or existing.owns:
            raise ConfigurationError(
                f"role {name!r} is a superuser, BYPASSRLS or an owner: row-level security"
                " would not bind it",
                details={"role": name},
            )
        if password is not None:
            _execute(connection, "ALTER ROLE %1$I PASSWORD %3$L", name=name, password=password)
        _execute(connection, "GRANT USAGE ON SCHEMA %2$I TO %1$I", name=name, schema=schema)
        for table in metadata.sorted_tables:
            _execute(
                connection,
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %2$I.{table.name} TO %1$I",
                name=name,
                schema=schema,
            )
            for column in table.primary_key.columns:
                sequence = connection.execute(
                    _SERIAL_SEQUENCE, {"schema": schema, "table": table.name, "column": column.name}
                ).scalar()
                if sequence is not None:
                    _execute(
                        connection,
                        f"GRANT USAGE, SELECT ON SEQUENCE {sequence} TO %1$I",
                        name=name,
                    )
