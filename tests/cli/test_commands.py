"""The ``lumenquest`` commands through typer's runner: results, JSON, errors and exit codes."""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from lumenquest_adapters import cli
from lumenquest_adapters.cli import EXIT_REFUSED, EXIT_USAGE, build_app
from lumenquest_adapters.sqlalchemy import sqlalchemy_billing
from lumenquest_core.errors import GatewayUnavailable
from lumenquest_core.service import RunSummary
from tests.adapters.sqlalchemy.databases import postgres_schema
from tests.cli.support import due_database

runner = CliRunner()

# Nothing listens on port 1: connecting is refused at once, no timeout to wait for.
UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/test"


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    """Run the command line in-process and return typer's result."""
    return runner.invoke(build_app(), list(args), env=env)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'billing.sqlite3'}"


def test_run_due_renews_what_is_due_and_says_so_in_json(url: str) -> None:
    due_database(url, 5)
    result = invoke("run-due", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["renewals"] == 5
    assert summary["payments_succeeded"] == 5
    assert summary["workers"] == 1
    # The console email sender's lines went to stderr: stdout is only the JSON.
    assert "email invoice_paid to user0@example.com" in result.stderr
    again = json.loads(invoke("run-due", "--url", url, "--json").stdout)
    assert again["renewals"] == 0


def test_run_due_prints_a_summary_table(url: str) -> None:
    due_database(url, 2)
    result = invoke("run-due", "--url", url)
    assert result.exit_code == 0, result.output
    rows = {
        tuple(cell.strip() for cell in line.strip("│ ").split("│"))
        for line in result.stdout.splitlines()
        if line.startswith("│")
    }
    assert ("renewals", "2") in rows
    assert ("workers", "1") in rows


def test_run_due_respects_the_limit(url: str) -> None:
    due_database(url, 4)
    first = json.loads(invoke("run-due", "--url", url, "--limit", "3", "--json").stdout)
    assert first["renewals"] == 3
    rest = json.loads(invoke("run-due", "--url", url, "--json").stdout)
    assert rest["renewals"] == 1


def test_workers_share_a_run_on_postgres_and_bill_each_subscription_once(
    postgres_url: str,
) -> None:
    with postgres_schema(postgres_url) as schema:
        url = f"{postgres_url}?options=-csearch_path%3D{schema}"
        customers = due_database(url, 12)
        result = invoke("run-due", "--url", url, "--workers", "2", "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert (summary["workers"], summary["renewals"]) == (2, 12)
        billing = sqlalchemy_billing(url, migrate=False)
        try:
            for customer in customers:
                invoices = billing.list_invoices(customer_id=customer)
                assert [i.billing_reason.value for i in invoices] == [
                    "subscription_create",
                    "subscription_cycle",
                ]
        finally:
            billing.store.engine.dispose()


def test_workers_on_sqlite_renew_everything_once(url: str) -> None:
    due_database(url, 6)
    result = invoke("run-due", "--url", url, "--workers", "2", "--limit", "50", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["renewals"] == 6
    assert json.loads(invoke("run-due", "--url", url, "--json").stdout)["renewals"] == 0


def test_metrics_after_a_renewal(url: str) -> None:
    due_database(url, 3)
    invoke("run-due", "--url", url)
    result = invoke("metrics", "--url", url, "--json", "--from", "2000-01-01")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mrr"] == {"amount": 3000, "currency": "USD"}
    assert report["movements"]["new_customers"] == 3
    table = invoke("metrics", "--url", url, "--from", "2000-01-01")
    assert "MRR USD 30.00   ARR USD 360.00" in table.stdout
    assert "churned" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "yesterday"], "not an ISO 8601 date"),
        (["--from", "2026-02-01", "--to", "2026-01-01"], "--from must be before --to"),
    ],
)
def test_bad_metrics_ranges_are_usage_errors(url: str, args: list[str], message: str) -> None:
    result = invoke("metrics", "--url", url, *args)
    assert result.exit_code == EXIT_USAGE
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_an_unknown_currency_is_refused_in_one_line(url: str) -> None:
    result = invoke("metrics", "--url", url, "--currency", "XXQ")
    assert result.exit_code == EXIT_REFUSED
    assert result.stderr.startswith("lumenquest: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_export_customer_prints_the_gdpr_export(url: str) -> None:
    [customer, _] = due_database(url, 2)
    result = invoke("export-customer", customer, "--url", url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["customer"]["id"] == customer
    assert data["customer"]["email"] == "user0@example.com"
    assert len(data["invoices"]) == 1


def test_export_customer_writes_a_file(url: str, tmp_path: Path) -> None:
    [customer] = due_database(url, 1)
    target = tmp_path / "export.json"
    result = invoke("export-customer", customer, "--url", url, "-o", str(target))
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["customer"]["id"] == customer


def test_an_unknown_customer_is_refused_with_its_code_in_json(url: str) -> None:
    result = invoke("export-customer", "cus_nobody", "--url", url, "--json")
    assert result.exit_code == EXIT_REFUSED
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "NOT_FOUND"
    assert "cus_nobody" in error["message"]


def test_an_unreachable_database_is_one_line_and_exit_1() -> None:
    result = invoke("run-due", "--url", UNREACHABLE_POSTGRES)
    assert result.exit_code == EXIT_REFUSED
    assert result.stderr.startswith("lumenquest: a service could not be reached")
    assert "Connection refused" in result.stderr or "connection" in result.stderr.lower()
    assert "Traceback" not in result.output


def test_an_unknown_revision_is_a_migration_error(url: str) -> None:
    result = invoke("db", "upgrade", "--url", url, "--revision", "nosuch", "--json")
    assert result.exit_code == EXIT_REFUSED
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "MIGRATION_ERROR"
    assert "nosuch" in error["message"]


def test_bad_configuration_names_the_variable(tmp_path: Path) -> None:
    env = {"LUMENQUEST_STRIPE_API_KEY": "sk_test_123"}  # without its webhook secret
    result = invoke("run-due", "--url", f"sqlite:///{tmp_path / 'x.db'}", env=env)
    assert result.exit_code == EXIT_REFUSED
    assert "LUMENQUEST_STRIPE_WEBHOOK_SECRET" in result.stderr
    assert "sk_test_123" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["db", "sideways"],
        ["run-due", "--workers", "0"],
        ["run-due", "--limit", "many"],
        ["simulate", "--customers", "0"],
        ["simulate", "--chart", "mrr.pdf"],
        ["frobnicate"],
    ],
)
def test_bad_usage_exits_with_2(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == EXIT_USAGE
    assert "Traceback" not in result.output


def test_main_returns_the_exit_code_instead_of_exiting() -> None:
    assert cli.main(["frobnicate"]) == EXIT_USAGE
    assert cli.main(["--version"]) == 0


def test_help_documents_the_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for code in ("0  done", "1  refused", "2  bad usage"):
        assert code in result.stdout


# -- serve --------------------------------------------------------------------------------


@pytest.fixture
def clean_example_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Forget any ``asgi_app`` imported before, and the one a test imports."""

    def forget() -> None:
        for name in [m for m in sys.modules if m == "asgi_app" or m.startswith("asgi_app.")]:
            del sys.modules[name]

    forget()
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    forget()


@pytest.mark.usefixtures("clean_example_modules")
def test_serve_without_the_example_app_says_where_it_looked(tmp_path: Path) -> None:
    result = invoke("serve", "--app-dir", str(tmp_path))
    assert result.exit_code == EXIT_REFUSED
    assert "the example app was not found" in result.stderr
    assert str(tmp_path) in result.stderr


@pytest.mark.usefixtures("clean_example_modules")
def test_serve_without_create_app_says_so(tmp_path: Path) -> None:
    (tmp_path / "asgi_app").mkdir()
    (tmp_path / "asgi_app" / "__init__.py").write_text("")
    result = invoke("serve", "--app-dir", str(tmp_path))
    assert result.exit_code == EXIT_REFUSED
    assert "has no main.py with create_app()" in result.stderr


@pytest.mark.usefixtures("clean_example_modules")
def test_serve_runs_create_app_with_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "asgi_app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text("def create_app():\n    return 'the app'\n")
    served: dict[str, Any] = {}

    def fake_run(app: object, *, host: str, port: int) -> None:
        served.update(app=app, host=host, port=port)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    result = invoke("serve", "--app-dir", str(tmp_path), "--port", "8123")
    assert result.exit_code == 0, result.output
    assert served == {"app": "the app", "host": "127.0.0.1", "port": 8123}


def test_run_due_leaves_the_start_up_heap_out_of_full_collections_while_it_runs(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    due_database(url, 2)
    frozen_during: list[int] = []
    real = cli._run_chunks

    def run_chunks(*args: Any) -> None:
        frozen_during.append(gc.get_freeze_count())
        real(*args)

    monkeypatch.setattr(cli, "_run_chunks", run_chunks)
    result = invoke("run-due", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["renewals"] == 2
    assert len(frozen_during) == 1
    assert frozen_during[0] > 0  # the backend and the modules, at least
    assert gc.get_freeze_count() == 0  # and given back to the collector afterwards


def run_due_failing_once(committed: int | None, asked: list[int]) -> Any:
    """A run_due whose first call commits ``committed`` renewals (all it was asked: None),
    then loses its connection; later calls do all they are asked."""

    def run_due(*, limit: int, summary: RunSummary) -> RunSummary:
        asked.append(limit)
        first = len(asked) == 1
        done = committed if first and committed is not None else limit
        summary.subscriptions += done
        summary.renewals += done
        if first:
            raise GatewayUnavailable("the database connection was lost")
        return summary

    return run_due


def test_a_retried_run_due_reports_what_every_attempt_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "_RETRY_PAUSE_SECONDS", 0.0)
    asked: list[int] = []
    summary = cli._retrying(run_due_failing_once(3, asked), 10)
    assert asked == [10, 7]  # the retry asks only for what is left
    assert (summary.subscriptions, summary.renewals) == (10, 10)


def test_a_run_due_that_fails_after_its_last_batch_is_not_called_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "_RETRY_PAUSE_SECONDS", 0.0)
    asked: list[int] = []
    assert cli._retrying(run_due_failing_once(None, asked), 4).subscriptions == 4
    assert asked == [4]
