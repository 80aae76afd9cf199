"""Settings from ``LUMENQUEST_*`` environment variables, and the one function that wires them.

Unset means the embedded default: a SQLite file in the working directory, the memory
cache, rate limiter and lock, the fake payment gateway and console email. Setting
``LUMENQUEST_DATABASE_URL``, ``LUMENQUEST_REDIS_URL``, ``LUMENQUEST_STRIPE_API_KEY`` or
``LUMENQUEST_SENDGRID_API_KEY`` swaps in the real adapter. A bad or partial configuration
fails at start with a ``ConfigurationError`` naming the variables it read; secrets are
``SecretStr`` and never appear in a repr or a log line.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import attrs
import pydantic
from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from lumenquest_adapters.memory import (
    ConsoleEmailSender,
    FakeGateway,
    MemoryCache,
    MemoryIdempotencyStore,
    MemoryLock,
    MemoryRateLimiter,
    SystemClock,
)
from lumenquest_core.dunning import DunningPolicy, FinalAction
from lumenquest_core.errors import ConfigurationError
from lumenquest_core.ports import (
    Cache,
    Clock,
    EmailSender,
    IdempotencyStore,
    Lock,
    PaymentGateway,
    RateLimiter,
    UnitOfWork,
)
from lumenquest_core.service import Billing

__all__ = ["Backend", "Settings", "build_backend", "load_settings"]

ENV_PREFIX = "LUMENQUEST_"
DEFAULT_DATABASE_URL = "sqlite:///lumenquest.sqlite3"


class Settings(BaseSettings):
    """Every setting lumenquest reads, each from ``LUMENQUEST_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    # Row-level security (PostgreSQL): who every transaction acts as when the URL's role
    # is bound by the policies; "system" for a billing run, "admin" for a back office.
    database_acting_as: Literal["system", "admin"] | None = None
    # False behind a pooler that cannot keep prepared statements (PgBouncer in
    # transaction mode before 1.21): PostgreSQL then prepares nothing.
    database_prepared_statements: bool = True
    migrate: bool = True
    redis_url: SecretStr | None = None
    redis_prefix: str = "lumenquest:"
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    sendgrid_api_key: SecretStr | None = None
    sendgrid_from_email: str | None = None
    sendgrid_templates: dict[str, str] = pydantic.Field(default_factory=dict)
    sendgrid_host: str | None = None
    sendgrid_sandbox: bool = False
    sendgrid_webhook_public_key: SecretStr | None = None
    invoice_prefix: str = "LQ"
    dunning_retry_days: list[int] = pydantic.Field(default_factory=lambda: [3, 5, 7])
    dunning_final_action: FinalAction = FinalAction.CANCEL

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        """Refuse half-configured services, naming the variables that are missing."""
        if self.stripe_api_key is not None and self.stripe_webhook_secret is None:
            raise ValueError(
                "LUMENQUEST_STRIPE_API_KEY is set but LUMENQUEST_STRIPE_WEBHOOK_SECRET is not:"
                " Stripe webhooks could not be verified"
            )
        if self.sendgrid_api_key is not None:
            missing = [
                name
                for name, value in (
                    ("LUMENQUEST_SENDGRID_FROM_EMAIL", self.sendgrid_from_email),
                    ("LUMENQUEST_SENDGRID_TEMPLATES", self.sendgrid_templates),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"LUMENQUEST_SENDGRID_API_KEY is set but {' and '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not"
                )
        if any(days < 1 for days in self.dunning_retry_days):
            raise ValueError("LUMENQUEST_DUNNING_RETRY_DAYS must be positive numbers of days")
        return self


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment (``overrides`` win), or raise ConfigurationError."""
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            names = [f"{ENV_PREFIX}{str(part).upper()}" for part in error["loc"] if part]
            where = ", ".join(names) or "settings"
            # Never echo the input: it may be a secret.
            problems.append(f"{where}: {error['msg']}")
        raise ConfigurationError(
            "lumenquest is not configured correctly: " + "; ".join(problems),
            details={"variables": sorted({p.split(":")[0] for p in problems})},
        ) from None
    except SettingsError as exc:
        # Raised before validation when a complex value (JSON) cannot be parsed.
        field = str(exc).split('"')[1] if '"' in str(exc) else "settings"
        variable = f"{ENV_PREFIX}{field.upper()}"
        raise ConfigurationError(
            f"lumenquest is not configured correctly: {variable} is not valid JSON",
            details={"variables": [variable]},
        ) from None


@attrs.frozen
class Backend:
    """Everything a host needs: the ``Billing`` and the ports an HTTP layer uses beside it."""

    billing: Billing
    rate_limiter: RateLimiter
    idempotency: IdempotencyStore
    lock: Lock
    settings: Settings
    # What close() releases: the database's connection pool, when build_backend made it.
    closers: tuple[Callable[[], None], ...] = ()

    def close(self) -> None:
        """Release the connections this backend opened (its database pool)."""
        for close in self.closers:
            close()


def build_backend(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    unit_of_work: Callable[[], UnitOfWork] | None = None,
    gateway: PaymentGateway | None = None,
    email: EmailSender | None = None,
    cache: Cache | None = None,
    rate_limiter: RateLimiter | None = None,
    idempotency: IdempotencyStore | None = None,
    lock: Lock | None = None,
    **billing_options: Any,
) -> Backend:
    """Build ``Billing`` and its companions from settings; any port given here wins."""
    settings = settings or load_settings()
    clock = clock or SystemClock()
    closers: list[Callable[[], None]] = []
    if unit_of_work is None:
        unit_of_work, dispose, server = _database(settings)
        closers.append(dispose)
        # A database server works while Python does: run_due settles a batch meanwhile.
        billing_options.setdefault("overlap_settlement", server)
    if (cache is None or rate_limiter is None or idempotency is None or lock is None) and (
        settings.redis_url is not None
    ):
        from lumenquest_adapters.redis import (  # noqa: PLC0415 - only when Redis is configured
            RedisCache,
            RedisIdempotencyStore,
            RedisLock,
            RedisRateLimiter,
        )

        url, prefix = settings.redis_url.get_secret_value(), settings.redis_prefix
        cache = cache or RedisCache.from_url(url, prefix=prefix)
        rate_limiter = rate_limiter or RedisRateLimiter.from_url(url, prefix=prefix)
        idempotency = idempotency or RedisIdempotencyStore.from_url(url, prefix=prefix)
        lock = lock or RedisLock.from_url(url, prefix=prefix)
    lock = lock or MemoryLock()
    billing = Billing(
        unit_of_work=unit_of_work,
        lock=lock,
        clock=clock,
        gateway=gateway or _gateway(settings),
        email=email or _email(settings),
        cache=cache or MemoryCache(clock),
        invoice_prefix=settings.invoice_prefix,
        dunning=DunningPolicy(
            retry_delays=tuple(timedelta(days=d) for d in settings.dunning_retry_days),
            final_action=settings.dunning_final_action,
        ),
        **billing_options,
    )
    return Backend(
        billing=billing,
        rate_limiter=rate_limiter or MemoryRateLimiter(clock),
        idempotency=idempotency or MemoryIdempotencyStore(),
        lock=lock,
        settings=settings,
        closers=tuple(closers),
    )


def _database(settings: Settings) -> tuple[Callable[[], UnitOfWork], Callable[[], None], bool]:
    """Return the database's unit-of-work factory, its disposer, and whether it is a server."""
    from lumenquest_adapters.sqlalchemy import (  # noqa: PLC0415 - SQLAlchemy is an extra
        Identity,
        SqlAlchemyStore,
        create_engine_for,
        upgrade,
    )

    try:
        engine = create_engine_for(
            settings.database_url.get_secret_value(),
            prepared_statements=settings.database_prepared_statements,
        )
    except Exception as exc:  # the driver's own error names no variable
        raise ConfigurationError(
            f"LUMENQUEST_DATABASE_URL is not a usable database URL ({type(exc).__name__})"
        ) from exc
    if settings.migrate:
        upgrade(engine)
    acting_as = settings.database_acting_as
    store = SqlAlchemyStore(engine, None if acting_as is None else Identity(acting_as))
    return store.unit_of_work, engine.dispose, engine.dialect.name != "sqlite"


def _gateway(settings: Settings) -> PaymentGateway:
    if settings.stripe_api_key is None:
        return FakeGateway()
    from lumenquest_adapters.stripe import StripeGateway  # noqa: PLC0415 - an extra

    return StripeGateway.from_api_key(
        settings.stripe_api_key.get_secret_value(), api_base=settings.stripe_api_base
    )


def _email(settings: Settings) -> EmailSender:
    if settings.sendgrid_api_key is None:
        return ConsoleEmailSender()
    from lumenquest_adapters.sendgrid import SendGridEmailSender  # noqa: PLC0415 - an extra

    assert settings.sendgrid_from_email is not None  # the validator made sure
    return SendGridEmailSender.from_api_key(
        settings.sendgrid_api_key.get_secret_value(),
        from_email=settings.sendgrid_from_email,
        templates=settings.sendgrid_templates,
        host=settings.sendgrid_host,
        sandbox=settings.sendgrid_sandbox,
    )
