"""Column types and DDL helpers shared by the schema and its migrations.

Migrations import only from this module, and what is here never changes meaning: a new
need gets a new helper, so an old migration replays exactly as it first ran.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["ID", "JSONType", "Timestamp", "UTCDateTime", "is_currency", "one_of", "seq_type"]


class UTCDateTime(sa.TypeDecorator[datetime]):
    """``timestamptz`` that always hands back aware UTC datetimes (SQLite stores naive UTC)."""

    impl = sa.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store the instant in UTC; SQLite keeps it naive, so its text sorts by time."""
        if value is None:
            return None
        if value.tzinfo is not UTC:  # most instants are UTC already: nothing to convert
            if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
                raise ValueError(f"naive datetime {value.isoformat()} cannot be stored")
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the instant as an aware UTC datetime."""
        if value is None or value.tzinfo is UTC:
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def Timestamp() -> UTCDateTime:  # noqa: N802 - reads as a type in table definitions
    """Return the column type of every instant."""
    return UTCDateTime()


def JSONType() -> sa.types.TypeEngine[Any]:  # noqa: N802 - reads as a type in table definitions
    """Return JSON (JSONB on PostgreSQL); Python None is SQL NULL."""
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def ID() -> sa.String:  # noqa: N802 - reads as a type in table definitions
    """Return the column type of ids."""
    return sa.String(255)


def seq_type() -> sa.types.TypeEngine[int]:
    """Return the type of an insertion-order key: BIGSERIAL, or SQLite's INTEGER rowid."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class is_currency(FunctionElement[bool]):  # noqa: N801 - an SQL function name
    """``is_currency(column)``: the value is three upper-case ASCII letters."""

    type = sa.Boolean()
    name = "is_currency"
    inherit_cache = True


@compiles(is_currency, "postgresql")
def _is_currency_postgresql(element: is_currency, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)} ~ '^[A-Z]{{3}}$')"


@compiles(is_currency)
def _is_currency_default(element: is_currency, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite: GLOB is case-sensitive and matches single characters by class.
    return f"({compiler.process(element.clauses, **kw)} GLOB '[A-Z][A-Z][A-Z]')"


def one_of(column: str, values: type[enum.Enum] | tuple[str, ...]) -> str:
    """Return the CHECK text ``column IN (...)`` for an enum's values."""
    names = tuple(v.value for v in values) if isinstance(values, type) else values
    quoted = ", ".join("'" + str(v).replace("'", "''") + "'" for v in names)
    return f"{column} IN ({quoted})"
