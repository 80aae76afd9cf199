"""Test-wide settings: one Hypothesis profile for CI, no timing-based deadlines."""

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.services import POSTGRES_URL, REDIS_URL, need

# Deadlines are timing assertions; speed is measured in benchmarks/ instead.
settings.register_profile("default", deadline=None, max_examples=200)
settings.register_profile(
    "ci", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL URL for adapter tests; skips (or fails in CI) when unreachable."""
    need("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis URL for adapter tests; skips (or fails in CI) when unreachable."""
    need("Redis", "127.0.0.1", 6379)
    return REDIS_URL
