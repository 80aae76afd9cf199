"""Apply the Alembic migrations shipped in this package, from Python (no alembic.ini)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy._engine import create_engine_for

__all__ = ["alembic_config", "current_revision", "downgrade", "head_revision", "upgrade"]

SCRIPT_LOCATION = Path(__file__).parent / "migrations"

_ACT_AS_SYSTEM = sa.text("SELECT set_config('lumenquest.role', 'system', true)")


def alembic_config() -> Config:
    """Return an Alembic configuration pointing at the shipped migrations."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


def _run(engine_or_url: Engine | str | sa.URL, action: str, revision: str) -> None:
    owned = not isinstance(engine_or_url, Engine)
    engine = (
        engine_or_url if isinstance(engine_or_url, Engine) else create_engine_for(engine_or_url)
    )
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Row-level security binds the owner too (FORCE): migrations act as system.
                connection.execute(_ACT_AS_SYSTEM)
            config = alembic_config()
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)
    finally:
        if owned:
            engine.dispose()


def upgrade(engine_or_url: Engine | str | sa.URL, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (the latest by default), in one transaction."""
    _run(engine_or_url, "upgrade", revision)


def downgrade(engine_or_url: Engine | str | sa.URL, revision: str = "base") -> None:
    """Migrate the database down to ``revision`` (``base``: no lumenquest table left)."""
    _run(engine_or_url, "downgrade", revision)


def current_revision(engine_or_url: Engine | str | sa.URL) -> str | None:
    """Return the database's migration revision, or None for an empty database."""
    owned = not isinstance(engine_or_url, Engine)
    engine = (
        engine_or_url if isinstance(engine_or_url, Engine) else create_engine_for(engine_or_url)
    )
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if owned:
            engine.dispose()


def head_revision() -> str:
    """Return the newest revision this package ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # the package ships at least one migration
    return head
