"""Reach the real services the adapter tests need, or skip (fail under LUMENQUEST_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_URL = os.environ.get(
    "LUMENQUEST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LUMENQUEST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def required() -> bool:
    """Whether a missing service fails the test run instead of skipping (CI sets it)."""
    return os.environ.get("LUMENQUEST_REQUIRE_SERVICES") == "1"


def reachable(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def need(name: str, host: str, port: int) -> None:
    """Skip (or fail, when services are required) unless ``name`` listens at host:port."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if required():
        pytest.fail(f"{message}, and LUMENQUEST_REQUIRE_SERVICES=1 requires it")
    pytest.skip(f"{message}; start it or set LUMENQUEST_TEST_* URLs to run these tests")
