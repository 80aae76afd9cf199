"""Alembic environment: runs on the connection that ``upgrade``/``downgrade`` hand over."""

from __future__ import annotations

from alembic import context

from lumenquest_adapters.sqlalchemy._schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only lumenquest's own functions run these
    raise RuntimeError(
        "run lumenquest's migrations with lumenquest_adapters.sqlalchemy.upgrade(url)"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
