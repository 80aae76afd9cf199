"""Every scenario runs on each store: memory, a fresh SQLite file and a PostgreSQL schema.

The autouse ``backend`` fixture makes ``Shop()`` build its billing on the store of the
test's parameter (``test_x[memory]``, ``test_x[sqlite]``, ``test_x[postgres]``). A test
marked ``memory_only`` runs on memory alone: it builds its billing without ``Shop``, or
looks at the memory store itself. Run one store with ``-k memory`` (or sqlite, postgres).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.stores import (  # noqa: F401 - fixtures
    BACKENDS,
    Backend,
    backend_named,
    postgres_backend,
    sqlite_backend,
    using,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "memory_only: a tests/service test that runs on the memory store alone"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        memory_only = metafunc.definition.get_closest_marker("memory_only") is not None
        names = ("memory",) if memory_only else BACKENDS
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The store every ``Shop()`` of the test builds its billing on."""
    chosen = backend_named(request, request.param)
    built = chosen.built
    with using(chosen):
        yield chosen
    if chosen.name != "memory" and chosen.built == built:
        pytest.fail(
            f"{request.node.nodeid} built no billing on {chosen.name}: it ran on memory"
            " under another name; build it with Shop() or mark it memory_only"
        )
