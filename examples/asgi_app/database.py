"""The database: billing's unit of work acting for the request's user, and the app's auth tables.

Row-level security: every unit of work ``Billing`` opens acts for the identity in a
context variable. The request middleware sets it to an anonymous user (who sees no
customer row) before any route runs; the auth dependencies raise it to the signed-in
customer, or to ``admin`` on admin routes. Only code that says so explicitly
(:func:`acting`) works as ``system``: registration, login, webhooks, the billing run.
So a route that forgets a check still cannot read another customer's rows on
PostgreSQL; on SQLite the identity changes nothing.

The app's own data (password hashes, refresh-token families) lives in two tables the
app creates beside lumenquest's; they hold no billing data and are not under RLS,
because login must find a user before anyone is signed in.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lumenquest_adapters.sqlalchemy import (
    Identity,
    SqlAlchemyUnitOfWork,
    create_app_role,
    create_engine_for,
    upgrade,
)
from lumenquest_core.errors import ConfigurationError
from lumenquest_core.ports import UnitOfWork

__all__ = [
    "ANONYMOUS",
    "ADMIN",
    "SYSTEM",
    "AuthStore",
    "Credential",
    "Database",
    "RefreshOutcome",
    "acting",
    "current_identity",
    "set_identity",
    "token_digest",
]

SYSTEM = Identity("system")
ADMIN = Identity("admin")
# A user that is no customer: under RLS it sees the catalog and nothing else.
ANONYMOUS = Identity("user", "anonymous")

_identity: ContextVar[Identity] = ContextVar("lumenquest_identity", default=SYSTEM)


def current_identity() -> Identity:
    """Return who the current unit of work acts for."""
    return _identity.get()


def set_identity(identity: Identity) -> None:
    """Make the rest of this request (or task) act for ``identity``."""
    _identity.set(identity)


@contextmanager
def acting(identity: Identity) -> Iterator[None]:
    """Act for ``identity`` inside the block only."""
    token = _identity.set(identity)
    try:
        yield
    finally:
        _identity.reset(token)


metadata = sa.MetaData()

credentials = sa.Table(
    "app_credentials",
    metadata,
    sa.Column("customer_id", sa.String(64), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

refresh_tokens = sa.Table(
    "app_refresh_tokens",
    metadata,
    # Only the SHA-256 of a token is stored: a leaked table cannot be replayed.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("family_id", sa.String(64), nullable=False, index=True),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)


def token_digest(token: str) -> str:
    """Return the stored form of a refresh token."""
    return hashlib.sha256(token.encode()).hexdigest()


@attrs.frozen
class Credential:
    """A user's sign-in data."""

    customer_id: str
    email: str
    password_hash: str


@attrs.frozen
class RefreshOutcome:
    """What presenting a refresh token did: ``ok``, ``unknown``, ``expired``, ``revoked`` or ``reused``."""

    status: str
    customer_id: str | None = None
    family_id: str | None = None


class AuthStore:
    """Credentials and refresh-token families in the app's own tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_credential(self, credential: Credential, at: datetime) -> None:
        """Store a new user's credential."""
        with self.engine.begin() as connection:
            connection.execute(
                credentials.insert().values(
                    customer_id=credential.customer_id,
                    email=credential.email,
                    password_hash=credential.password_hash,
                    created_at=at,
                )
            )

    def credential_by_email(self, email: str) -> Credential | None:
        """Return the credential for a normalised email, if any."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(credentials).where(credentials.c.email == email)
            ).first()
        return None if row is None else Credential(row.customer_id, row.email, row.password_hash)

    def update_credential(
        self, customer_id: str, *, email: str | None = None, password_hash: str | None = None
    ) -> None:
        """Change a credential's email or password hash."""
        values = {k: v for k, v in {"email": email, "password_hash": password_hash}.items() if v}
        if not values:
            return
        with self.engine.begin() as connection:
            connection.execute(
                credentials.update()
                .where(credentials.c.customer_id == customer_id)
                .values(**values)
            )

    def delete_user(self, customer_id: str, at: datetime) -> None:
        """Remove a user's credential and revoke every refresh token it holds."""
        with self.engine.begin() as connection:
            connection.execute(credentials.delete().where(credentials.c.customer_id == customer_id))
            connection.execute(
                refresh_tokens.update()
                .where(refresh_tokens.c.customer_id == customer_id)
                .where(refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )

    def add_refresh_token(
        self, token: str, *, family_id: str, customer_id: str, at: datetime, expires_at: datetime
    ) -> None:
        """Store a refresh token (hashed) in its family."""
        with self.engine.begin() as connection:
            connection.execute(
                refresh_tokens.insert().values(
                    token_hash=token_digest(token),
                    family_id=family_id,
                    customer_id=customer_id,
                    issued_at=at,
                    expires_at=expires_at,
                )
            )

    def use_refresh_token(self, token: str, at: datetime) -> RefreshOutcome:
        """Spend a refresh token once; presenting a spent one revokes its whole family."""
        digest = token_digest(token)
        t = refresh_tokens.c
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(refresh_tokens).where(t.token_hash == digest)
            ).first()
            if row is None:
                return RefreshOutcome("unknown")
            if row.revoked_at is not None:
                return RefreshOutcome("revoked", row.customer_id, row.family_id)
            if _aware(row.expires_at) <= at:
                return RefreshOutcome("expired", row.customer_id, row.family_id)
            # A compare-and-set: of two concurrent refreshes with one token, one wins.
            spent = connection.execute(
                refresh_tokens.update()
                .where(t.token_hash == digest, t.used_at.is_(None))
                .values(used_at=at)
            ).rowcount
            if spent != 1:
                # Someone already used it: the token leaked, so nobody keeps the family.
                connection.execute(
                    refresh_tokens.update()
                    .where(t.family_id == row.family_id, t.revoked_at.is_(None))
                    .values(revoked_at=at)
                )
                return RefreshOutcome("reused", row.customer_id, row.family_id)
        return RefreshOutcome("ok", row.customer_id, row.family_id)

    def revoke_family_of(self, token: str, at: datetime) -> str | None:
        """Revoke the family a refresh token belongs to; return its customer id, if known."""
        t = refresh_tokens.c
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(t.family_id, t.customer_id).where(t.token_hash == token_digest(token))
            ).first()
            if row is None:
                return None
            connection.execute(
                refresh_tokens.update()
                .where(t.family_id == row.family_id, t.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        return str(row.customer_id)


def _aware(value: datetime) -> datetime:
    # SQLite gives naive datetimes back; they were written in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Database:
    """The engines: the serving one (RLS binds it) and the owner that migrates."""

    def __init__(
        self,
        url: str,
        *,
        owner_url: str | None = None,
        migrate: bool = True,
        pool_size: int = 5,
        pre_ping: bool = False,
    ) -> None:
        try:
            # Every request thread may hold a connection: a pool smaller than that opens
            # (and closes) a connection per request beyond it, a server process each time.
            self.engine = create_engine_for(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping
            )
        except ConfigurationError:
            raise
        except Exception as exc:  # a driver's own error names no variable
            raise ConfigurationError(
                f"LUMENQUEST_DATABASE_URL is not a usable database URL ({type(exc).__name__})"
            ) from exc
        self.postgresql = self.engine.dialect.name == "postgresql"
        self.owner_engine = create_engine_for(owner_url) if owner_url else None
        if migrate:
            self._migrate()
        self.auth = AuthStore(self.engine)

    def _migrate(self) -> None:
        owner = self.owner_engine or self.engine
        upgrade(owner)
        metadata.create_all(owner)
        if self.owner_engine is not None and self.postgresql:
            role = self.engine.url.username
            if not role:
                raise ConfigurationError("LUMENQUEST_DATABASE_URL must name the role to serve as")
            create_app_role(self.owner_engine, role)
            with self.owner_engine.begin() as connection:
                for table in metadata.sorted_tables:
                    connection.exec_driver_sql(
                        f'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {table.name} TO "{role}"'
                    )

    def unit_of_work(self) -> UnitOfWork:
        """Return a unit of work acting for the current identity (the Billing factory)."""
        return SqlAlchemyUnitOfWork(self.engine, _identity.get())

    def unit_of_work_factory(self) -> Callable[[], UnitOfWork]:
        """Return the factory ``Billing`` is built with."""
        return self.unit_of_work

    def ping(self) -> float:
        """Run ``SELECT 1`` and return how long it took, in milliseconds."""
        started = time.perf_counter()
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return (time.perf_counter() - started) * 1000

    def row_level_security(self) -> str:
        """Say whether RLS binds the serving role: ``enforced``, ``bypassed`` or ``n/a``."""
        if not self.postgresql:
            return "n/a"
        query = sa.text(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        with self.engine.connect() as connection:
            bypass = connection.execute(query).scalar()
        return "bypassed" if bypass else "enforced"

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self.owner_engine is not None:
            self.owner_engine.dispose()
