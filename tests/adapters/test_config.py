"""Configuration: unset means the embedded default; bad settings fail at start, naming variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumenquest_adapters.config import build_backend, load_settings
from lumenquest_adapters.memory import ConsoleEmailSender, FakeGateway, MemoryRateLimiter
from lumenquest_adapters.redis import RedisCache, RedisRateLimiter
from lumenquest_adapters.sendgrid import SendGridEmailSender
from lumenquest_adapters.stripe import StripeGateway
from lumenquest_core import ConfigurationError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no LUMENQUEST_* variable, in an empty working directory."""
    import os  # noqa: PLC0415

    for name in list(os.environ):
        if name.startswith("LUMENQUEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_unset_means_sqlite_in_the_working_directory_fake_gateway_and_console_email(
    tmp_path: Path,
) -> None:
    backend = build_backend()
    customer = backend.billing.create_customer(email="ada@example.com")
    assert backend.billing.get_customer(customer.id).email == "ada@example.com"
    assert (tmp_path / "lumenquest.sqlite3").exists()
    assert isinstance(backend.billing.gateway, FakeGateway)
    assert isinstance(backend.billing.email, ConsoleEmailSender)
    assert isinstance(backend.rate_limiter, MemoryRateLimiter)


def test_environment_variables_choose_the_adapters(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("LUMENQUEST_REDIS_URL", redis_url)
    monkeypatch.setenv("LUMENQUEST_STRIPE_API_KEY", "sk_test_123")
    monkeypatch.setenv("LUMENQUEST_STRIPE_WEBHOOK_SECRET", "whsec_123")
    monkeypatch.setenv("LUMENQUEST_SENDGRID_API_KEY", "SG.key")
    monkeypatch.setenv("LUMENQUEST_SENDGRID_FROM_EMAIL", "billing@example.com")
    monkeypatch.setenv("LUMENQUEST_SENDGRID_TEMPLATES", '{"welcome": "d-1"}')
    monkeypatch.setenv("LUMENQUEST_DUNNING_RETRY_DAYS", "[1, 2]")
    backend = build_backend()
    assert isinstance(backend.billing.cache, RedisCache)
    assert isinstance(backend.rate_limiter, RedisRateLimiter)
    assert isinstance(backend.billing.gateway, StripeGateway)
    assert isinstance(backend.billing.email, SendGridEmailSender)
    assert backend.settings.sendgrid_templates == {"welcome": "d-1"}


def test_a_stripe_key_without_a_webhook_secret_names_both_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LUMENQUEST_STRIPE_API_KEY", "sk_live_very_secret")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert "LUMENQUEST_STRIPE_API_KEY" in message
    assert "LUMENQUEST_STRIPE_WEBHOOK_SECRET" in message
    assert "sk_live_very_secret" not in message


def test_a_sendgrid_key_without_sender_and_templates_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LUMENQUEST_SENDGRID_API_KEY", "SG.secret")
    with pytest.raises(ConfigurationError, match="LUMENQUEST_SENDGRID_FROM_EMAIL and"):
        load_settings()


def test_a_malformed_value_names_its_variable_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LUMENQUEST_DUNNING_RETRY_DAYS", "soon")
    with pytest.raises(ConfigurationError, match="LUMENQUEST_DUNNING_RETRY_DAYS") as info:
        load_settings()
    assert "soon" not in str(info.value)


def test_an_unusable_database_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMENQUEST_DATABASE_URL", "nosuchdriver://user:pw@host/db")
    with pytest.raises(ConfigurationError, match="LUMENQUEST_DATABASE_URL") as info:
        build_backend()
    assert "pw" not in str(info.value)


def test_secrets_never_appear_in_the_settings_repr() -> None:
    settings = load_settings(
        stripe_api_key="sk_live_abc",
        stripe_webhook_secret="whsec_def",
        database_url="postgresql://app:hunter2@db/billing",
    )
    shown = repr(settings) + str(settings)
    for secret in ("sk_live_abc", "whsec_def", "hunter2"):
        assert secret not in shown


def test_prepared_statements_can_be_turned_off_for_a_pooler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lumenquest_adapters.sqlalchemy as sql  # noqa: PLC0415

    made: list[dict[str, object]] = []
    real = sql.create_engine_for

    def recording(url: str, **options: object) -> object:
        made.append(options)
        return real(url, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(sql, "create_engine_for", recording)
    build_backend()
    monkeypatch.setenv("LUMENQUEST_DATABASE_PREPARED_STATEMENTS", "false")
    build_backend()
    assert [options["prepared_statements"] for options in made] == [True, False]


def test_a_database_server_settles_a_batch_while_the_run_bills_the_next(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    """PostgreSQL turns overlap_settlement on; the SQLite file, and an option given, do not."""
    assert build_backend().billing._overlap_settlement is False
    monkeypatch.setenv("LUMENQUEST_DATABASE_URL", postgres_url)
    monkeypatch.setenv("LUMENQUEST_MIGRATE", "false")  # the engine is made, never used
    assert build_backend().billing._overlap_settlement is True
    assert build_backend(overlap_settlement=False).billing._overlap_settlement is False
