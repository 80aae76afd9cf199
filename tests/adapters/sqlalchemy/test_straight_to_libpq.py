"""Statements sent to libpq straight (``_raw._Session``) behave as psycopg's cursor would.

They skip psycopg's cursor only inside a transaction already begun; they are prepared at
their second use under names of their own, which psycopg's rollback must not deallocate;
an error raises as the cursor's would, after every result came back; nothing is sent
when a value cannot be adapted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, timedelta, timezone
from types import SimpleNamespace

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import pq
from psycopg.waiting import Ready, Wait
from sqlalchemy.engine import Connection, Engine

from lumenquest_adapters.sqlalchemy import (
    SqlAlchemyUnitOfWork,
    _engine,
    _raw,
    create_engine_for,
    metadata,
    upgrade,
)
from lumenquest_adapters.sqlalchemy._engine import json_loads
from lumenquest_adapters.testing import samples as s
from tests.adapters.sqlalchemy.databases import postgres_engine, postgres_schema

_TABLE = sa.Table(
    "items",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.Integer, unique=True),
)
_INSERT = "INSERT INTO items (id) VALUES (%s)"
_COUNT = "SELECT count(*) FROM items WHERE id >= %s"


@pytest.fixture
def engine(postgres_empty: Engine) -> Engine:
    """An engine with one table of integer ids."""
    with postgres_empty.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE items (id integer PRIMARY KEY, code integer UNIQUE)"
        )
    return postgres_empty


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction begun on the server (as a unit of work's, after BEGIN)."""
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
        yield connection


def _count(connection: Connection) -> int:
    return int(_raw.fetch_values(connection, _COUNT, [0])[0][0])


def _prepared(connection: Connection) -> list[str]:
    rows = connection.exec_driver_sql(
        "SELECT statement FROM pg_prepared_statements WHERE name LIKE '\\_lq\\_%%'"
        " ORDER BY prepare_time"
    )
    return [row[0] for row in rows]


def test_libpq_numbers_are_psycopgs() -> None:
    """The module's copies of libpq's numbers (it loads without psycopg) are psycopg's."""
    assert _raw._IDLE == pq.TransactionStatus.IDLE
    assert _raw._INTRANS == pq.TransactionStatus.INTRANS
    assert _raw._PIPELINE_OFF == pq.PipelineStatus.OFF
    assert _raw._COMMAND_OK == pq.ExecStatus.COMMAND_OK
    assert _raw._FATAL_ERROR == pq.ExecStatus.FATAL_ERROR
    assert _raw._PIPELINE_SYNC == pq.ExecStatus.PIPELINE_SYNC
    assert _raw._TEXT == pq.Format.TEXT
    assert _raw._BINARY == pq.Format.BINARY
    assert (_raw._WAIT_R, _raw._WAIT_RW, _raw._READY_R) == (Wait.R, Wait.RW, Ready.R)


def test_outside_a_transaction_statements_go_through_psycopg_which_begins_one(
    engine: Engine,
) -> None:
    """Sent straight before any BEGIN, an insert would commit at the pipeline's sync."""
    with engine.connect() as connection:
        connection.begin()  # SQLAlchemy's, which sends nothing
        assert _raw._session(connection) is None
        _raw.execute(connection, _INSERT, [1])
        assert _raw._session(connection) is not None  # psycopg began the transaction
        connection.rollback()
        assert _count(connection) == 0


def test_a_statement_is_prepared_at_its_second_use_and_outlives_a_rollback(
    connection: Connection,
) -> None:
    """psycopg prepares nothing of its own on our engines, so its rollback deallocates nothing."""
    assert connection.connection.driver_connection.prepare_threshold is None
    _count(connection)
    assert _prepared(connection) == []
    _count(connection)
    assert _prepared(connection) == ["SELECT count(*) FROM items WHERE id >= $1"]
    connection.rollback()
    connection.exec_driver_sql("SELECT 1")
    assert _count(connection) == 0  # by its name
    assert _prepared(connection) == ["SELECT count(*) FROM items WHERE id >= $1"]


def test_statements_deallocated_behind_its_back_are_prepared_anew(
    connection: Connection,
) -> None:
    _count(connection)
    _count(connection)
    connection.exec_driver_sql("DEALLOCATE ALL")
    with pytest.raises(sa.exc.DBAPIError, match="does not exist"):
        _count(connection)
    connection.rollback()
    connection.exec_driver_sql("SELECT 1")
    assert _count(connection) == 0
    assert _prepared(connection) == ["SELECT count(*) FROM items WHERE id >= $1"]


def test_the_same_statement_new_twice_in_one_pipeline_is_prepared_once(
    connection: Connection,
) -> None:
    _raw.execute(connection, _INSERT, [1])  # seen once: prepared at the next use
    with _raw.pipeline(connection) as queue:
        queue.executemany(_INSERT, [[2], [3], [4]])
    assert _prepared(connection) == ["INSERT INTO items (id) VALUES ($1)"]
    assert _count(connection) == 4


def test_a_failed_parse_forgets_the_name_it_was_to_have(engine: Engine) -> None:
    with engine.connect() as connection:
        for _ in range(2):
            connection.exec_driver_sql("SELECT 1")
            with pytest.raises(sa.exc.ProgrammingError, match="missing"):
                _raw.execute(connection, "SELECT * FROM missing WHERE id = %s", [1])
            connection.rollback()
        session = _raw._session(connection) or _raw._Session(
            connection.connection.driver_connection
        )
        assert session.names == {}


def test_an_error_raises_the_failing_statements_own_after_every_result(
    connection: Connection,
) -> None:
    """Not the "pipeline aborted" of the statements after it; the connection stays sound."""
    with pytest.raises(psycopg.errors.UniqueViolation), _raw.pipeline(connection) as queue:
        queue.executemany(_INSERT, [[1], [1], [2]])
    driver = connection.connection.driver_connection
    assert driver.pgconn.pipeline_status == pq.PipelineStatus.OFF
    assert driver.info.transaction_status == pq.TransactionStatus.INERROR
    connection.rollback()
    connection.exec_driver_sql("SELECT 1")
    assert _count(connection) == 0


def test_a_value_the_driver_cannot_adapt_sends_nothing(connection: Connection) -> None:
    """Every value is dumped before the first statement goes: the transaction stays sound."""
    queue: _raw.Statements
    with pytest.raises(psycopg.ProgrammingError), _raw.pipeline(connection) as queue:  # noqa: PT012
        queue.execute(_INSERT, [1])
        queue.execute(_INSERT, [object()])
    assert _count(connection) == 0


def test_a_wrong_number_of_parameters_raises_before_sending(connection: Connection) -> None:
    with pytest.raises(sa.exc.ProgrammingError, match="1 placeholders but 2"):
        _raw.execute(connection, _INSERT, [1, 2])
    assert _count(connection) == 0


def test_only_s_placeholders_go_straight_to_libpq() -> None:
    assert _raw._converted("SELECT %s, %s::int[]", "utf-8") == (b"SELECT $1, $2::int[]", 2)
    with pytest.raises(ValueError, match="placeholders"):
        _raw._converted("SELECT '100%' || %s", "utf-8")


def test_update_row_counts_rows_and_keeps_the_transaction_after_a_broken_rule(
    connection: Connection,
) -> None:
    _raw.execute(connection, "INSERT INTO items (id, code) VALUES (%s, %s)", [1, 10])
    _raw.execute(connection, _INSERT, [2])
    assert _raw.update_row(connection, _TABLE, "id", {"id": 1, "code": 11}, savepoint=True) == 1
    assert _raw.update_row(connection, _TABLE, "id", {"id": 3, "code": 12}, savepoint=False) == 0
    with pytest.raises(sa.exc.IntegrityError):
        _raw.update_row(connection, _TABLE, "id", {"id": 2, "code": 11}, savepoint=True)
    assert _count(connection) == 2  # rolled back to the savepoint only


def test_engines_turn_psycopgs_preparing_off_unless_told(postgres_url: str) -> None:
    with postgres_schema(postgres_url) as schema:
        told = postgres_engine(postgres_url, schema)
        engine = create_engine_for(
            postgres_url,
            connect_args={"options": f"-csearch_path={schema}", "prepare_threshold": 5},
        )
        try:
            with told.connect() as default, engine.connect() as connection:
                assert default.connection.driver_connection.prepare_threshold is None
                assert connection.connection.driver_connection.prepare_threshold == 5
                connection.exec_driver_sql("SELECT 1")
                session = _raw._session(connection)
                assert session is not None
                assert not session.prepares  # psycopg's rollback would deallocate ours
        finally:
            told.dispose()
            engine.dispose()


def test_each_identity_begins_with_its_own_settings_on_one_connection(engine: Engine) -> None:
    """The BEGIN commands a connection keeps are per identity: none leaks into another's."""
    with engine.connect() as connection:
        for customer in ("cus_1", "cus_2", "cus_1", "it's"):
            connection.begin()
            _raw.begin_with(
                connection, {"lumenquest.customer_id": customer, "lumenquest.role": "user"}
            )
            setting = "SELECT current_setting('lumenquest.customer_id')"
            assert connection.exec_driver_sql(setting).scalar() == customer
            connection.rollback()


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, null, "é"]}', "3", '"x"'])
def test_json_values_read_are_what_json_loads_gives(text: str) -> None:
    """From the driver's bytes (psycopg's JSON loader) or from SQLite's str alike."""
    expected = json.loads(text)
    for given in (text, text.encode(), bytearray(text.encode())):
        assert json_loads(given) == expected
        assert type(json_loads(given)) is type(expected)


def test_postgresql_json_goes_through_the_engines_loader(
    connection: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []
    decode = _engine._decode_json
    monkeypatch.setattr(_engine, "_decode_json", lambda text: seen.append(text) or decode(text))
    rows = _raw.fetch_values(connection, "SELECT %s::jsonb", ['{"é": 1}'])
    assert rows == [({"é": 1},)]
    assert seen == ['{"é": 1}']


def test_an_engine_made_without_prepared_statements_prepares_none(postgres_url: str) -> None:
    """For a pooler that cannot keep them: the statements go unnamed, however often sent."""
    with postgres_schema(postgres_url) as schema:
        engine = postgres_engine(postgres_url, schema, prepared_statements=False)
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql("CREATE TABLE items (id integer PRIMARY KEY)")
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
                for _ in range(3):
                    assert _count(connection) == 0
                assert _prepared(connection) == []
                unnamed = connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_prepared_statements"
                ).scalar()
                assert unnamed == 0
        finally:
            engine.dispose()


def test_write_rows_copies_what_write_row_would_in_blocks(postgres_empty: Engine) -> None:
    """Rows formatted in blocks by write_rows are stored as copy.write_row stores them."""
    rows = [
        (n, None if n % 7 == 0 else f"tab\there\nnew \\ line {n} " + "x" * 50) for n in range(2000)
    ]
    with postgres_empty.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE notes (id integer PRIMARY KEY, body text)")
        connection.exec_driver_sql("CREATE TABLE notes_by_row (id integer PRIMARY KEY, body text)")
        cursor = _raw.kept_cursor(connection)
        with cursor.copy("COPY notes (id, body) FROM STDIN") as copy:
            _raw.write_rows(copy, iter(rows))
        with cursor.copy("COPY notes_by_row (id, body) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        stored = connection.exec_driver_sql("SELECT id, body FROM notes ORDER BY id").all()
        by_row = connection.exec_driver_sql("SELECT id, body FROM notes_by_row ORDER BY id").all()
    assert sum(len(str(body)) for _, body in rows) > 2 * _raw._COPY_BLOCK  # several blocks
    assert [tuple(row) for row in stored] == rows
    assert stored == by_row


def test_write_rows_falls_back_to_write_row_without_psycopgs_formatter(
    postgres_empty: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A psycopg without the private row formatter gets its rows through copy.write_row."""
    monkeypatch.setitem(sys.modules, "psycopg._copy_base", None)  # importing it fails
    rows = [(1, "a"), (2, None), (3, "tab\there")]
    with postgres_empty.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE notes (id integer PRIMARY KEY, body text)")
        cursor = _raw.kept_cursor(connection)
        with cursor.copy("COPY notes (id, body) FROM STDIN") as copy:
            _raw.write_rows(copy, iter(rows))
        stored = connection.exec_driver_sql("SELECT id, body FROM notes ORDER BY id").all()
    assert [tuple(row) for row in stored] == rows


def test_rows_read_in_binary_are_the_values_read_as_text(
    postgres_empty: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit of work's reads ask for binary rows; each column type loads as from text."""
    upgrade(postgres_empty)
    with SqlAlchemyUnitOfWork(postgres_empty) as uow:  # a row in every table of each type
        uow.customers.add(s.customer("cus_1"))
        uow.plans.add(s.plan("plan_1"))
        uow.prices.add(s.price("price_1"))
        uow.coupons.add(s.coupon("co_1"))
        uow.subscriptions.add(s.subscription("sub_1"))
        uow.invoices.add(s.invoice("in_1"))
        uow.payments.add(s.payment("pay_1"))
        uow.credit_notes.add(s.credit_note("cn_1"))
        uow.usage.add(s.usage_record("use_1"))
        uow.outbox.add(s.outbox_message("evt_1"))
        uow.audit_log.add(s.audit_entry("aud_1"))
        uow.subscription_changes.add(s.subscription_change("chg_1"))
        uow.analytics.add(s.analytics_event("ana_1"))
        uow.email_deliveries.add(s.email_delivery("evt_1.welcome"))
        uow.idempotency.put(s.idempotency_record("key_1"))
        uow.commit()
    formats: list[bool] = []
    real = _raw._run_one

    def run_one(*args: object, binary: bool = False) -> object:
        formats.append(binary)
        return real(*args, binary=binary)  # type: ignore[arg-type]

    def as_text(*args: object, binary: bool = False) -> object:
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_raw, "_run_one", run_one)
    read = 0
    for table in metadata.sorted_tables:
        with postgres_empty.connect() as connection:
            connection.exec_driver_sql("SELECT 1")  # in a transaction: straight to libpq
            binary = _raw.select_where(connection, table, {})
            monkeypatch.setattr(_raw, "_run_one", as_text)
            text = _raw.select_where(connection, table, {})
            monkeypatch.setattr(_raw, "_run_one", run_one)
        assert binary == text, table.name
        for binary_row, text_row in zip(binary, text, strict=True):
            assert [type(v) for v in binary_row.values()] == [type(v) for v in text_row.values()]
        read += len(binary)
    assert formats
    assert all(formats)
    assert read >= len(metadata.sorted_tables) - 2  # pending lines and refunds stay empty


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["cus_1"],
        ["cus_1", "sub_2", ""],
        ['a "q"', "b"],
        ["back\\slash", "x"],
        ["{x},y", "NULL"],
    ],
)
def test_strings_joined_as_array_elements_are_each_quoted_as_alone(values: list[str]) -> None:
    """Joined at once when nothing needs escaping, they are the elements _quoted writes."""
    assert _raw._quoted_joined(values) == ",".join(map(_raw._quoted, values))


def test_a_value_not_a_string_among_array_elements_raises_as_alone() -> None:
    with pytest.raises(AttributeError):
        _raw._quoted_joined(["cus_1", 2])  # type: ignore[list-item]


def test_instants_come_back_in_utc_whatever_zone_a_result_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A result in UTC keeps its instants as they are; one in another zone has them converted."""
    table = metadata.tables["payments"]
    instants = _raw._instants_at(table)
    assert [table.c[i].name for i in instants] == ["created_at", "settled_at"]
    zone = timezone(timedelta(hours=2))
    dialect = create_engine_for("postgresql://nobody@127.0.0.1:1/none").dialect  # no connection
    for at in (s.T0, s.T0.astimezone(zone)):
        fetched = []
        for created, settled in ((None, None), (at, None), (at, at + timedelta(days=1))):
            row: list[object] = [f"v{i}" for i in range(len(table.c))]
            row[instants[0]], row[instants[1]] = created, settled
            fetched.append(tuple(row))
        result = (fetched, (0,) * len(table.c))
        monkeypatch.setattr(_raw, "_fetched", lambda *_, result=result: result)
        rows = _raw._fetch(SimpleNamespace(dialect=dialect), table, "", ())  # type: ignore[arg-type]
        assert [(r["created_at"], r["settled_at"]) for r in rows] == [
            (None, None),
            (s.T0, None),
            (s.T0, s.T0 + timedelta(days=1)),
        ]
        read = rows[1]["created_at"]
        assert read.tzinfo is UTC
        assert (read is at) == (at.tzinfo is UTC)  # kept as it is when already UTC
