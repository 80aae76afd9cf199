"""Units of work in batch mode, to run the storage contract suite again under it.

``UnitOfWork.prepare_batch`` may hold writes back until a read needs them or until
commit; every contract must still hold, but for where a broken constraint raises.
"""

from collections.abc import Callable
from types import TracebackType
from typing import Any

from lumenquest_core.ports import UnitOfWork


class _Batched:
    """A unit of work's context manager that enters it in batch mode."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    def __enter__(self) -> UnitOfWork:
        entered = self._uow.__enter__()
        entered.prepare_batch()
        return entered

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._uow.__exit__(exc_type, exc, traceback)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._uow, name)


def batched(factory: Callable[[], UnitOfWork]) -> Callable[[], Any]:
    """Return a factory of the same units of work, each entered in batch mode."""
    return lambda: _Batched(factory())
