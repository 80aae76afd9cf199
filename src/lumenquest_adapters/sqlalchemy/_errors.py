"""Driver errors translated into the core's, at the adapter boundary.

=====================================================  ====================================
SQLAlchemy / driver error                              lumenquest error
=====================================================  ====================================
``IntegrityError`` (unique, foreign key, check)        ``Conflict`` naming the constraint
``OperationalError``, ``InterfaceError``, or any       ``GatewayUnavailable`` (retryable):
error that invalidated the connection                  lost connection, lock timeout,
                                                       serialization failure, deadlock
``DataError`` (a value out of the column's range)      ``ValidationError``
=====================================================  ====================================

Anything else (a ``ProgrammingError``, say) is a bug and propagates unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from lumenquest_core.errors import Conflict, GatewayUnavailable, LumenquestError, ValidationError

__all__ = ["Describe", "DescribeRow", "constraint_name", "described", "translate", "translated"]

Describe = Callable[[str | None], Conflict | None]
"""Given the broken constraint's name, return the Conflict to raise (None: the generic one)."""


class DescribeRow:
    """What makes a row's :data:`Describe` from its values, when a constraint broke.

    One serves every row of a table: a queued write holds it and its row, and the
    Describe is made only if the write breaks a rule. A billing run queues thirteen
    writes a renewal; not making a Describe for each (with the queueing inlined) took
    run_due over 2,000 renewals from 4,661M to 4,594M instructions.
    """

    __slots__ = ()

    def of(self, values: dict[str, Any]) -> Describe:
        """Return the Describe of the row of ``values``."""
        raise NotImplementedError


def described(describe: Describe | DescribeRow | None, values: dict[str, Any]) -> Describe | None:
    """Return ``describe`` for the row of ``values``: made from it if it describes any row."""
    return describe.of(values) if isinstance(describe, DescribeRow) else describe


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>.+)$")


def constraint_name(error: sa_exc.IntegrityError, metadata: sa.MetaData) -> str | None:
    """Return the name of the constraint an IntegrityError broke, when it can be told."""
    diag = getattr(error.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if isinstance(name, str):
        return name  # PostgreSQL names it
    match = _SQLITE_UNIQUE.search(str(error.orig))
    if match is None:
        return None
    # SQLite names the columns ("invoices.subscription_id, invoices.period_start").
    qualified = [c.strip() for c in match["columns"].split(",")]
    table_name = qualified[0].split(".")[0]
    columns = {c.split(".", 1)[1] for c in qualified}
    table = metadata.tables.get(table_name)
    if table is None:
        return None
    for index in table.indexes:
        if index.unique and {c.name for c in index.columns} == columns:
            return str(index.name)
    for constraint in table.constraints:
        if (
            isinstance(constraint, sa.UniqueConstraint | sa.PrimaryKeyConstraint)
            and {c.name for c in constraint.columns} == columns
        ):
            return None if constraint.name is None else str(constraint.name)
    return None


def translate(
    error: sa_exc.DBAPIError, metadata: sa.MetaData, describe: Describe | None = None
) -> LumenquestError | None:
    """Return the core error for a driver error, or None if it is a bug to propagate."""
    if isinstance(error, sa_exc.IntegrityError):
        name = constraint_name(error, metadata)
        conflict = describe(name) if describe is not None else None
        if conflict is not None:
            return conflict
        return Conflict(
            f"the change breaks the database constraint {name or 'of the table'}",
            details={"constraint": name, "reason": _first_line(error.orig)},
        )
    if error.connection_invalidated or isinstance(
        error, sa_exc.OperationalError | sa_exc.InterfaceError
    ):
        return GatewayUnavailable(
            "the database is unavailable or the transaction could not complete; retry",
            details={"service": "database", "reason": _first_line(error.orig)},
        )
    if isinstance(error, sa_exc.DataError):
        return ValidationError(
            "a value does not fit its database column", details={"reason": _first_line(error.orig)}
        )
    return None


class translated:  # noqa: N801 - a context manager, named as the function it replaced
    """Raise the core's error, ``from`` the driver's, for what happens in the block.

    A class, not a ``@contextmanager`` generator: a paid subscribe enters a dozen, and
    each generator-based one cost ~70 bytecodes more than these two methods.
    """

    __slots__ = ("describe", "metadata")

    def __init__(self, metadata: sa.MetaData, describe: Describe | None = None) -> None:
        self.metadata = metadata
        self.describe = describe

    def __enter__(self) -> None:
        """Enter the block."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Raise the core's error for a driver error; leave any other exception alone."""
        if isinstance(error, sa_exc.DBAPIError):
            mapped = translate(error, self.metadata, self.describe)
            if mapped is not None:
                raise mapped from error


def _first_line(value: Any) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
