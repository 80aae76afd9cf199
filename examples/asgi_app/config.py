"""The HTTP layer's own settings, from ``LUMENQUEST_*`` variables beside the library's."""

from __future__ import annotations

import secrets
from typing import Literal

import pydantic
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from lumenquest_core.errors import ConfigurationError

__all__ = ["AppSettings", "load_app_settings"]


class AppSettings(BaseSettings):
    """What the example app reads on top of ``lumenquest_adapters.config.Settings``."""

    # Same prefix as the library: one family of variables; each class ignores the other's.
    model_config = SettingsConfigDict(env_prefix="LUMENQUEST_", extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"
    jwt_secret: SecretStr | None = None
    access_token_seconds: int = pydantic.Field(default=3600, ge=60)
    refresh_token_days: int = pydantic.Field(default=30, ge=1)
    # None: a few local front-end origins in development, none (CORS off) in production.
    cors_origins: list[str] | None = None
    # HSTS is only meaningful (and only safe to send) when clients reach us over TLS.
    behind_tls: bool = False
    rate_limit_enabled: bool = True
    rate_limit_auth: int = pydantic.Field(default=5, ge=1)
    rate_limit_api: int = pydantic.Field(default=100, ge=1)
    rate_limit_admin: int = pydantic.Field(default=200, ge=1)
    rate_limit_window_seconds: int = pydantic.Field(default=60, ge=1)
    # PostgreSQL row-level security: migrate as this owner, serve as DATABASE_URL's role.
    owner_database_url: SecretStr | None = None
    # Route bodies (and outbox deliveries) run in at most this many threads at once; more
    # requests wait their turn in order. A few keep the database busy while another runs
    # Python; past that, each thread adds interpreter-lock handoffs (context switches,
    # system time) and tail latency. bench_api on a quiet 2-core machine: a trial
    # subscribe peaks at 3-4 threads (1: 221 requests/s, 2: 267, 3: 374, 4: 349-395,
    # 8: 292-388), a paid one at 2-4 (1: 122, 2: 151-175, 4: 137-151, 8: 138-148).
    worker_threads: int = pydantic.Field(default=4, ge=1, le=200)
    # Connections kept open to the database (None: one per worker thread, plus two), so
    # that no request opens (and closes) its own.
    database_pool_size: int | None = pydantic.Field(default=None, ge=1, le=200)
    # Test each pooled connection with a round trip before every transaction. Off: that
    # is a round trip per unit of work; after a database restart the request that meets a
    # dead connection gets a 503 (retryable) and SQLAlchemy replaces the whole pool.
    database_pre_ping: bool = False
    # argon2id cost; the defaults are argon2-cffi's (RFC 9106 low-memory profile).
    argon2_time_cost: int = pydantic.Field(default=3, ge=1)
    argon2_memory_kib: int = pydantic.Field(default=65536, ge=8)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def signing_key(self) -> str:
        """Return the JWT signing key (a random one per process in development)."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return _DEVELOPMENT_KEY

    def pool_size(self) -> int:
        """Return the database connection pool's size in force."""
        return self.database_pool_size or self.worker_threads + 2

    def allowed_origins(self) -> list[str]:
        """Return the CORS origins in force."""
        if self.cors_origins is not None:
            return self.cors_origins
        if self.environment == "production":
            return []
        return ["http://localhost:3000", "http://127.0.0.1:3000"]


# Tokens signed with it die with the process: fine for development, refused in production.
_DEVELOPMENT_KEY = secrets.token_urlsafe(48)


def load_app_settings(**overrides: object) -> AppSettings:
    """Read the app's settings from the environment, or raise ConfigurationError."""
    try:
        settings = AppSettings(**overrides)  # type: ignore[arg-type]
    except pydantic.ValidationError as exc:
        names = sorted({f"LUMENQUEST_{str(e['loc'][0]).upper()}" for e in exc.errors() if e["loc"]})
        raise ConfigurationError(
            f"the example app is not configured correctly: {', '.join(names)}",
            details={"variables": names},
        ) from None
    if settings.environment == "production" and settings.jwt_secret is None:
        raise ConfigurationError(
            "LUMENQUEST_JWT_SECRET must be set in production",
            details={"variables": ["LUMENQUEST_JWT_SECRET"]},
        )
    if settings.jwt_secret is not None and len(settings.jwt_secret.get_secret_value()) < 32:
        raise ConfigurationError(
            "LUMENQUEST_JWT_SECRET must be at least 32 characters",
            details={"variables": ["LUMENQUEST_JWT_SECRET"]},
        )
    return settings
