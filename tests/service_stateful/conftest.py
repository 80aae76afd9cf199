"""The databases the state machine also runs on (tests/service/stores.py)."""

from tests.service.stores import postgres_backend, sqlite_backend  # noqa: F401 - fixtures
