"""A ``PaymentGateway`` whose ledger lives in PostgreSQL, shared by every worker process.

The in-memory ``FakeGateway`` cannot be shared between processes; this one keeps its
ledger in tables of the test's own schema, so that any number of processes (and a
process killed half-way) see one ledger, as they would see Stripe:

* ``ledger_charges``: one row per charge, ``UNIQUE (idempotency_key)``. ``charge`` runs
  ``INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING …`` in a short
  transaction of its own, on a connection of its own (never the caller's unit of work):
  the first call with a key charges, every later one — from any process, even while the
  first is still committing (PostgreSQL makes it wait) — reads back the first answer,
  and the same key with another customer or amount raises ``IdempotencyConflict``.
* ``ledger_script``: queued decline codes (:meth:`LedgerGateway.script_decline`), taken
  in the charge's own transaction, so a replayed key never consumes one.
* ``ledger_refunds`` (unique idempotency key) and ``ledger_customers`` (one reference per
  customer), for the rest of the port.

A lost connection or an unknown commit outcome raises ``GatewayUnavailable``: the
caller keeps its payment pending and asks again with the same key, which is exactly
what makes that safe.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lumenquest_core.customers import Customer
from lumenquest_core.errors import (
    GatewayUnavailable,
    IdempotencyConflict,
    NotFound,
    ValidationError,
)
from lumenquest_core.money import Money
from lumenquest_core.payments import ChargeResult, ChargeStatus
from tests.adapters.sqlalchemy.databases import postgres_engine

__all__ = ["LedgerCharge", "LedgerGateway"]

_DDL = (
    """
    CREATE TABLE IF NOT EXISTS ledger_charges (
        seq bigserial PRIMARY KEY,
        idempotency_key text NOT NULL UNIQUE,
        reference text NOT NULL UNIQUE,
        customer_id text NOT NULL,
        amount bigint NOT NULL CHECK (amount > 0),
        currency char(3) NOT NULL,
        status text NOT NULL CHECK (status IN ('succeeded', 'declined')),
        decline_code text,
        message text NOT NULL DEFAULT '',
        description text NOT NULL DEFAULT '',
        invoice_id text,
        payment_id text,
        backend_pid integer NOT NULL DEFAULT pg_backend_pid(),
        created_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ledger_script (
        seq bigserial PRIMARY KEY,
        decline_code text NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ledger_refunds (
        seq bigserial PRIMARY KEY,
        idempotency_key text NOT NULL UNIQUE,
        reference text NOT NULL UNIQUE,
        charge_reference text NOT NULL REFERENCES ledger_charges (reference),
        amount bigint NOT NULL CHECK (amount > 0),
        currency char(3) NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ledger_customers (
        customer_id text PRIMARY KEY,
        reference text NOT NULL UNIQUE
    )
    """,
)

_CHARGE_COLUMNS = (
    "idempotency_key, reference, customer_id, amount, currency, status, decline_code, message"
)

_NEXT_DECLINE = sa.text(
    "DELETE FROM ledger_script WHERE seq = ("
    " SELECT seq FROM ledger_script ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
    ") RETURNING decline_code"
)

_INSERT_CHARGE = sa.text(
    "INSERT INTO ledger_charges"
    " (idempotency_key, reference, customer_id, amount, currency, status, decline_code,"
    "  message, description, invoice_id, payment_id)"
    " VALUES (:idempotency_key, :reference, :customer_id, :amount, :currency, :status,"
    "  :decline_code, :message, :description, :invoice_id, :payment_id)"
    f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_CHARGE_COLUMNS}"
)

_CHARGE_BY_KEY = sa.text(
    f"SELECT {_CHARGE_COLUMNS} FROM ledger_charges WHERE idempotency_key = :idempotency_key"
)


@attrs.frozen
class LedgerCharge:
    """One row of the ledger: a charge the gateway made, once per idempotency key."""

    idempotency_key: str
    reference: str
    customer_id: str
    amount: Money
    status: ChargeStatus
    decline_code: str | None
    message: str
    invoice_id: str | None = None
    payment_id: str | None = None

    @classmethod
    def from_row(cls, row: sa.RowMapping) -> LedgerCharge:
        """Read a ``ledger_charges`` row."""
        return cls(
            idempotency_key=row["idempotency_key"],
            reference=row["reference"],
            customer_id=row["customer_id"],
            amount=Money(int(row["amount"]), str(row["currency"])),
            status=ChargeStatus(row["status"]),
            decline_code=row["decline_code"],
            message=row["message"],
            invoice_id=row.get("invoice_id"),
            payment_id=row.get("payment_id"),
        )

    def result(self) -> ChargeResult:
        """Return the gateway's answer for this charge."""
        return ChargeResult(
            status=self.status,
            reference=self.reference,
            decline_code=self.decline_code,
            message=self.message,
        )


class LedgerGateway:
    """A ``PaymentGateway`` with its ledger in PostgreSQL: idempotent across processes.

    Build one per process from the URL and the schema (``LedgerGateway.create_tables``
    once, beforehand). Charges succeed unless a decline was scripted.
    """

    def __init__(self, postgres_url: str, schema: str) -> None:
        # A connection of its own, never the caller's: each call is a short transaction
        # that commits (or not) on its own, whatever the caller's unit of work does.
        self.engine: Engine = postgres_engine(postgres_url, schema, pool_size=1, max_overflow=4)

    @staticmethod
    def create_tables(engine: Engine) -> None:
        """Create the ledger's tables in the engine's schema (idempotent)."""
        with engine.begin() as connection:
            for statement in _DDL:
                connection.exec_driver_sql(statement)

    @staticmethod
    def truncate(engine: Engine) -> None:
        """Empty the ledger (between repetitions of a test)."""
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "TRUNCATE ledger_refunds, ledger_charges, ledger_script, ledger_customers"
            )

    def dispose(self) -> None:
        """Close the engine."""
        self.engine.dispose()

    def _run(self, operation: str, work: Any) -> Any:
        """Run ``work(connection)`` in a transaction; a lost connection is GatewayUnavailable."""
        try:
            with self.engine.begin() as connection:
                return work(connection)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            # The outcome may be unknown (a lost COMMIT): the caller retries with its key.
            raise GatewayUnavailable(
                f"ledger unreachable during {operation}", details={"operation": operation}
            ) from error

    # -- scripting ------------------------------------------------------------------

    def script_decline(self, decline_code: str) -> None:
        """Queue a decline for the next new charge, whoever the customer."""
        self._run(
            "script_decline",
            lambda c: c.execute(
                sa.text("INSERT INTO ledger_script (decline_code) VALUES (:code)"),
                {"code": decline_code},
            ),
        )

    # -- the port -------------------------------------------------------------------

    def ensure_customer(self, customer: Customer) -> str:
        """Return the customer's stable reference, creating it on first use."""

        def work(connection: Connection) -> str:
            connection.execute(
                sa.text(
                    "INSERT INTO ledger_customers (customer_id, reference)"
                    " VALUES (:id, :reference) ON CONFLICT (customer_id) DO NOTHING"
                ),
                {"id": customer.id, "reference": f"cus_ledger_{uuid.uuid4().hex}"},
            )
            return str(
                connection.execute(
                    sa.text("SELECT reference FROM ledger_customers WHERE customer_id = :id"),
                    {"id": customer.id},
                ).scalar_one()
            )

        result: str = self._run("ensure_customer", work)
        return result

    def charge(
        self,
        *,
        customer: Customer,
        amount: Money,
        idempotency_key: str,
        description: str,
        metadata: Mapping[str, str],
    ) -> ChargeResult:
        """Charge once per idempotency key, across every process sharing the ledger."""
        if amount.amount <= 0:
            raise ValidationError(
                f"a charge must be positive, not {amount}", details={"amount": str(amount)}
            )

        def work(connection: Connection) -> LedgerCharge:
            existing = connection.execute(
                _CHARGE_BY_KEY, {"idempotency_key": idempotency_key}
            ).mappings()
            row = existing.first()
            if row is None:
                # In a savepoint: if another process inserted the key since we looked
                # (the insert waited for its commit, then did nothing), the decline taken
                # here goes back to the queue and the first charge is the answer.
                savepoint = connection.begin_nested()
                decline = connection.execute(_NEXT_DECLINE).scalar()
                row = (
                    connection.execute(
                        _INSERT_CHARGE,
                        {
                            "idempotency_key": idempotency_key,
                            "reference": f"ch_ledger_{uuid.uuid4().hex}",
                            "customer_id": customer.id,
                            "amount": amount.amount,
                            "currency": amount.currency,
                            "status": (
                                ChargeStatus.SUCCEEDED if decline is None else ChargeStatus.DECLINED
                            ).value,
                            "decline_code": decline,
                            "message": "" if decline is None else "Your card was declined.",
                            "description": description,
                            "invoice_id": metadata.get("invoice_id"),
                            "payment_id": metadata.get("payment_id"),
                        },
                    )
                    .mappings()
                    .first()
                )
                if row is None:
                    savepoint.rollback()
                    row = (
                        connection.execute(_CHARGE_BY_KEY, {"idempotency_key": idempotency_key})
                        .mappings()
                        .one()
                    )
                else:
                    savepoint.commit()
            return LedgerCharge.from_row(row)

        first: LedgerCharge = self._run("charge", work)
        if first.customer_id != customer.id or first.amount != amount:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was used for another charge",
                details={"idempotency_key": idempotency_key},
            )
        return first.result()

    def find_charge(self, customer: Customer, idempotency_key: str) -> ChargeResult | None:
        """Return the ledger's answer for ``idempotency_key``, or None if it never charged."""

        def work(connection: Connection) -> LedgerCharge | None:
            row = (
                connection.execute(_CHARGE_BY_KEY, {"idempotency_key": idempotency_key})
                .mappings()
                .first()
            )
            return None if row is None else LedgerCharge.from_row(row)

        entry: LedgerCharge | None = self._run("find_charge", work)
        return None if entry is None or entry.customer_id != customer.id else entry.result()

    def refund(self, *, reference: str, amount: Money, idempotency_key: str) -> str:
        """Refund part of a successful charge once per key; more than is left raises."""

        def work(connection: Connection) -> str:
            first = (
                connection.execute(
                    sa.text(
                        "SELECT reference, charge_reference, amount, currency FROM ledger_refunds"
                        " WHERE idempotency_key = :key"
                    ),
                    {"key": idempotency_key},
                )
                .mappings()
                .first()
            )
            if first is not None:
                if first["charge_reference"] != reference or Money(
                    int(first["amount"]), str(first["currency"])
                ) != (amount):
                    raise IdempotencyConflict(
                        f"idempotency key {idempotency_key!r} was used for another refund",
                        details={"idempotency_key": idempotency_key},
                    )
                return str(first["reference"])
            charge = (
                connection.execute(
                    sa.text(
                        "SELECT amount, currency, status FROM ledger_charges"
                        " WHERE reference = :reference FOR UPDATE"
                    ),
                    {"reference": reference},
                )
                .mappings()
                .first()
            )
            if charge is None or charge["status"] != ChargeStatus.SUCCEEDED.value:
                raise NotFound(
                    f"no successful charge {reference!r} to refund",
                    details={"kind": "charge", "id": reference},
                )
            refunded = connection.execute(
                sa.text(
                    "SELECT coalesce(sum(amount), 0) FROM ledger_refunds"
                    " WHERE charge_reference = :reference"
                ),
                {"reference": reference},
            ).scalar_one()
            refundable = int(charge["amount"]) - int(refunded)
            if amount.currency != str(charge["currency"]) or not 0 < amount.amount <= refundable:
                raise ValidationError(
                    f"cannot refund {amount} of charge {reference}:"
                    f" {Money(refundable, str(charge['currency']))} is refundable",
                    details={"reference": reference, "refundable": refundable},
                )
            refund_reference = f"re_ledger_{uuid.uuid4().hex}"
            connection.execute(
                sa.text(
                    "INSERT INTO ledger_refunds"
                    " (idempotency_key, reference, charge_reference, amount, currency)"
                    " VALUES (:key, :reference, :charge, :amount, :currency)"
                ),
                {
                    "key": idempotency_key,
                    "reference": refund_reference,
                    "charge": reference,
                    "amount": amount.amount,
                    "currency": amount.currency,
                },
            )
            return refund_reference

        result: str = self._run("refund", work)
        return result

    # -- the ledger -----------------------------------------------------------------

    def charges(self) -> Sequence[LedgerCharge]:
        """Return every charge in the ledger, in the order they were made."""

        def work(connection: Connection) -> list[LedgerCharge]:
            rows = connection.execute(
                sa.text(
                    f"SELECT {_CHARGE_COLUMNS}, invoice_id, payment_id"
                    " FROM ledger_charges ORDER BY seq"
                )
            ).mappings()
            return [LedgerCharge.from_row(row) for row in rows]

        result: list[LedgerCharge] = self._run("charges", work)
        return result
