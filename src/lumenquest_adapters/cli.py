"""The ``lumenquest`` command: migrations, the billing run, metrics, exports, the example app, a simulation.

Configuration comes from ``LUMENQUEST_*`` environment variables (see
``lumenquest_adapters.config.Settings``); ``--url`` overrides ``LUMENQUEST_DATABASE_URL``.
Every command that prints data takes ``--json`` for scripts.

Exit codes:

* ``0``: done.
* ``1``: lumenquest refused (the message says why: not found, invalid state, bad
  configuration…) or a service (database, Redis, gateway) could not be reached.
* ``2``: bad usage: an unknown command or option, or an option's value is invalid.

Errors go to stderr as one line (``lumenquest: …``), or as a JSON object
``{"error": {"code", "message", "details"}}`` with ``--json``; never as a traceback.
"""

# No ``from __future__ import annotations``: typer reads the option declarations of the
# commands built inside build_app(), whose annotations must be real objects there.

import contextlib
import gc
import json
import multiprocessing
import queue as queues
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import attrs

from lumenquest_core.errors import LumenquestError

if TYPE_CHECKING:
    import typer
    from rich.console import Console

    from lumenquest_adapters.config import Backend
    from lumenquest_core.metrics import MetricsReport
    from lumenquest_core.service import RunSummary

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "build_app", "load_example_app", "main"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

# Exceptions from these libraries mean a service could not be reached or refused us;
# they are reported as one line, not as a traceback (matched by module so that none of
# them has to be imported here).
_SERVICE_LIBRARIES = ("sqlalchemy", "psycopg", "alembic", "redis", "stripe", "sendgrid")
# Which extra installs a missing optional library (the adapters import them lazily).
_EXTRAS = {
    "sqlalchemy": "sqlite",
    "alembic": "sqlite",
    "psycopg": "postgres",
    "stripe": "stripe",
    "sendgrid": "sendgrid",
    "redis": "redis",
    "fastapi": "asgi",
    "uvicorn": "asgi",
    "matplotlib": "cli",
    "pydantic_settings": "cli",
}
_RUN_DUE_CHUNK = 500  # subscriptions per run_due call: one progress step
_RETRIES = 4  # a retryable failure of run_due is tried again this many times
_RETRY_PAUSE_SECONDS = 0.2  # doubled each time


_HELP = """Subscription billing from the command line.

Configuration comes from LUMENQUEST_* environment variables; --url overrides
LUMENQUEST_DATABASE_URL. Commands that print data take --json for scripts; errors go
to stderr as one line (a JSON object with --json).

\b
Exit codes:
  0  done
  1  refused by lumenquest (the message says why) or a service could not be reached
  2  bad usage: unknown command or option, or an invalid value
"""


class _Refused(Exception):
    """A failure to report in one line with exit code 1 (code, message, details)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


# -- entry points -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        import typer  # noqa: PLC0415 - the cli extra is optional for the library
    except ImportError:
        print(
            "lumenquest: the command line needs the cli extra: pip install 'lumenquest[cli]'",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    command = typer.main.get_command(build_app())
    try:
        command.main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name="lumenquest",
            standalone_mode=True,
        )
    except SystemExit as exit_:
        code = exit_.code
        if code is None:
            return EXIT_OK
        return code if isinstance(code, int) else EXIT_REFUSED
    return EXIT_OK


def build_app() -> "typer.Typer":
    """Return the typer application (for ``typer.testing.CliRunner`` and for embedding)."""
    import typer  # noqa: PLC0415 - see main()

    app = typer.Typer(
        name="lumenquest",
        help=_HELP,
        no_args_is_help=True,
        add_completion=False,
        # A traceback with locals could show a database URL with its password.
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    db = typer.Typer(help="Database migrations (Alembic, shipped in the package).")
    app.add_typer(db, name="db", no_args_is_help=True)

    url_option = Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Database URL (default: LUMENQUEST_DATABASE_URL, else the SQLite file).",
            show_default=False,
        ),
    ]
    json_option = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

    def version(value: bool) -> None:
        if value:
            from importlib.metadata import version as installed  # noqa: PLC0415

            print(f"lumenquest {installed('lumenquest')}")
            raise typer.Exit()

    @app.callback()
    def _root(
        show_version: Annotated[
            bool,
            typer.Option(
                "--version", callback=version, is_eager=True, help="Print the version and exit."
            ),
        ] = False,
    ) -> None:
        pass

    @db.command("upgrade")
    def db_upgrade(
        url: url_option = None,
        revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
        as_json: json_option = False,
    ) -> None:
        """Migrate up to REVISION (default: the newest)."""
        _run(as_json, lambda out: _db(out, "upgrade", url, revision, as_json))

    @db.command("downgrade")
    def db_downgrade(
        url: url_option = None,
        revision: Annotated[
            str, typer.Option(help="Target revision (base: no lumenquest table left).")
        ] = "base",
        as_json: json_option = False,
    ) -> None:
        """Migrate down to REVISION (default: base)."""
        _run(as_json, lambda out: _db(out, "downgrade", url, revision, as_json))

    @db.command("current")
    def db_current(url: url_option = None, as_json: json_option = False) -> None:
        """Print the database's revision and the newest shipped."""
        _run(as_json, lambda out: _db(out, "current", url, None, as_json))

    @app.command("run-due")
    def run_due(
        limit: Annotated[
            int, typer.Option(min=1, help="Most subscriptions to process in all.")
        ] = 10_000,
        workers: Annotated[
            int,
            typer.Option(
                min=1, max=64, help="Processes sharing the run (each calls Billing.run_due)."
            ),
        ] = 1,
        url: url_option = None,
        as_json: json_option = False,
    ) -> None:
        """Do the time-driven work due now: renewals, trial ends, dunning, scheduled changes."""
        _run(as_json, lambda out: _run_due(out, url, limit, workers, as_json))

    @app.command("metrics")
    def metrics_command(
        start: Annotated[
            str | None,
            typer.Option(
                "--from",
                help="Start, ISO 8601 date or datetime, UTC if no zone (default: 30 days before --to).",
                show_default=False,
            ),
        ] = None,
        end: Annotated[
            str | None,
            typer.Option("--to", help="End, ISO 8601 (default: now).", show_default=False),
        ] = None,
        currency: Annotated[str, typer.Option(help="ISO 4217 currency.")] = "USD",
        url: url_option = None,
        as_json: json_option = False,
    ) -> None:
        """Print MRR, ARR, MRR movements and churn between two instants."""
        to = _instant(end, "--to") if end is not None else datetime.now(UTC)
        since = _instant(start, "--from") if start is not None else to - timedelta(days=30)
        if since >= to:
            raise typer.BadParameter("--from must be before --to", param_hint="'--from'")
        _run(as_json, lambda out: _metrics(out, url, since, to, currency.upper(), as_json))

    @app.command("export-customer")
    def export_customer(
        customer_id: Annotated[str, typer.Argument(help="The customer's id.")],
        output: Annotated[
            Path | None,
            typer.Option("--output", "-o", help="Write to this file instead of stdout."),
        ] = None,
        url: url_option = None,
        as_json: json_option = False,
    ) -> None:
        """Print everything lumenquest holds about a customer (GDPR export), as JSON."""
        _run(as_json, lambda out: _export(out, url, customer_id, output))

    @app.command("serve")
    def serve(
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65_535, help="Port.")] = 8000,
        app_dir: Annotated[
            Path | None,
            typer.Option(
                help="Directory holding the asgi_app package (default: the repository's examples/).",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Run the example ASGI app (examples/asgi_app) with uvicorn."""
        _run(False, lambda _out: _serve(host, port, app_dir))

    @app.command("simulate")
    def simulate_command(
        customers: Annotated[
            int, typer.Option(min=1, max=100_000, help="How many customers sign up.")
        ] = 200,
        months: Annotated[int, typer.Option(min=1, max=120, help="How many months to run.")] = 12,
        seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same run.")] = 0,
        start: Annotated[
            str, typer.Option(help="First day, ISO 8601 (UTC if no zone).")
        ] = "2026-01-01",
        chart: Annotated[
            Path | None,
            typer.Option(
                help="Write a chart here (.png or .svg): MRR by movement, and churn.",
                show_default=False,
            ),
        ] = None,
        as_json: json_option = False,
    ) -> None:
        """Simulate a subscription business month by month on the in-memory billing."""
        if chart is not None and chart.suffix.lower() not in (".png", ".svg"):
            raise typer.BadParameter(
                f"the chart must end in .png or .svg, not {chart.name!r}", param_hint="'--chart'"
            )
        first = _instant(start, "--start")
        _run(as_json, lambda out: _simulate(out, customers, months, seed, first, chart, as_json))

    return app


# -- shared plumbing --------------------------------------------------------------------


def _run(as_json: bool, work: Callable[[TextIO], None]) -> None:
    """Run a command's work; report a refusal or an unreachable service in one line.

    The work prints its result to the stream it is given (stdout); anything else that
    prints meanwhile (the console email sender, say) goes to stderr, so that stdout holds
    only the result and ``--json`` output stays parseable.
    """
    import typer  # noqa: PLC0415

    out = sys.stdout
    try:
        with _refusals(), contextlib.redirect_stdout(sys.stderr):
            work(out)
    except _Refused as refused:
        if as_json:
            error = {"code": refused.code, "message": refused.message, "details": refused.details}
            print(json.dumps({"error": error}, default=str), file=sys.stderr)
        else:
            print(f"lumenquest: {refused.message}", file=sys.stderr)
        raise typer.Exit(EXIT_REFUSED) from None


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Turn lumenquest's errors and service failures into ``_Refused``; let bugs through."""
    try:
        yield
    except LumenquestError as exc:
        raise _Refused(exc.code, exc.message, exc.details) from None
    except (ConnectionError, TimeoutError) as exc:
        raise _Refused("SERVICE_UNAVAILABLE", f"a service could not be reached: {exc}") from None
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        raise _Refused(
            "MISSING_EXTRA",
            f"this needs {exc.name}, which is not installed: pip install 'lumenquest[{extra}]'",
        ) from None
    except Exception as exc:
        library = type(exc).__module__.split(".")[0]
        if library not in _SERVICE_LIBRARIES:
            raise  # a bug: its traceback is what a report needs
        raise _service_refusal(library, exc) from None


def _service_refusal(library: str, exc: Exception) -> _Refused:
    details = {"error": type(exc).__name__}
    if library == "alembic":  # an unknown revision, a broken migration history
        return _Refused("MIGRATION_ERROR", f"the migration failed: {_first_line(exc)}", details)
    # Connection trouble (refused, unknown host, bad credentials) is an OperationalError
    # or an InterfaceError in every driver and in SQLAlchemy.
    if type(exc).__name__ in ("OperationalError", "InterfaceError", "ConnectionError"):
        return _Refused(
            "SERVICE_UNAVAILABLE", f"a service could not be reached: {_first_line(exc)}", details
        )
    return _Refused("SERVICE_ERROR", f"{library} refused the request: {_first_line(exc)}", details)


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy wraps the driver's error and appends the SQL and a link; the driver's
    # own first line is the useful part.
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _instant(text: str, option: str) -> datetime:
    """Parse an ISO 8601 date or datetime; a naive one is taken as UTC."""
    import typer  # noqa: PLC0415

    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 date or datetime (e.g. 2026-01-31)",
            param_hint=f"'{option}'",
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _backend(url: str | None) -> "Backend":
    from lumenquest_adapters.config import build_backend, load_settings  # noqa: PLC0415

    settings = load_settings() if url is None else load_settings(database_url=url)
    return build_backend(settings)


def _database_url(url: str | None) -> str:
    from lumenquest_adapters.config import load_settings  # noqa: PLC0415

    return url or load_settings().database_url.get_secret_value()


def _console(stream: TextIO) -> "Console":
    from rich.console import Console  # noqa: PLC0415

    # A pipe or a log file has no width to ask; 80 columns would cut the tables short.
    width = None if stream.isatty() else 120
    return Console(file=stream, highlight=False, width=width)


def _print_json(out: TextIO, data: Any) -> None:
    print(json.dumps(data, indent=2, default=str), file=out)


# -- db ---------------------------------------------------------------------------------


def _db(out: TextIO, action: str, url: str | None, revision: str | None, as_json: bool) -> None:
    # Imported here so that the other commands work without the database extra.
    from lumenquest_adapters.sqlalchemy import (  # noqa: PLC0415
        current_revision,
        downgrade,
        head_revision,
        upgrade,
    )

    database = _database_url(url)
    if action == "upgrade":
        upgrade(database, revision or "head")
    elif action == "downgrade":
        downgrade(database, revision or "base")
    current, head = current_revision(database), head_revision()
    if as_json:
        _print_json(out, {"current": current, "head": head, "up_to_date": current == head})
    else:
        print(f"database at {current or 'base'}; newest shipped {head}", file=out)


# -- run-due ----------------------------------------------------------------------------


def _summary_counts(summary: "RunSummary") -> dict[str, int]:
    return {name: int(value) for name, value in attrs.asdict(summary).items()}


def _did_work(counts: dict[str, int]) -> bool:
    """Whether a run_due call changed anything (not only looked at waiting subscriptions)."""
    return any(v for k, v in counts.items() if k not in ("subscriptions", "events_dispatched"))


def _run_chunks(
    billing_run_due: Callable[..., "RunSummary"],
    limit: int,
    report: Callable[[dict[str, int]], None],
) -> None:
    """Call run_due in chunks until ``limit`` subscriptions are done or nothing is due."""
    done = 0
    while done < limit:
        chunk = min(_RUN_DUE_CHUNK, limit - done)
        counts = _summary_counts(_retrying(billing_run_due, chunk))
        report(counts)
        done += counts["subscriptions"]
        # Fewer than asked: nothing else is due. No work at all: only subscriptions
        # waiting on something outside (a pending payment) are left; stop, not spin.
        if counts["subscriptions"] < chunk or not _did_work(counts):
            break


def _retrying(run_due: Callable[..., "RunSummary"], limit: int) -> "RunSummary":
    """Call run_due again after a retryable failure (a busy database, a lost connection).

    run_due is safe to repeat: what one call committed is not done twice by the next.
    Two writers on one SQLite file, in particular, can be told "busy" at once. The
    summary keeps what every attempt committed, and a retry does only the rest.
    """
    from lumenquest_core.service import RunSummary  # noqa: PLC0415  # the CLI starts light

    summary = RunSummary()
    for attempt in range(_RETRIES):
        try:
            return run_due(limit=limit - summary.subscriptions, summary=summary)
        except LumenquestError as exc:
            if not exc.retryable:
                raise
            if summary.subscriptions >= limit:
                return summary  # the failure came after the last batch had committed
            time.sleep(_RETRY_PAUSE_SECONDS * 2**attempt)
    return run_due(limit=limit - summary.subscriptions, summary=summary)


@contextlib.contextmanager
def _start_up_frozen() -> Iterator[None]:
    """Keep what exists now out of the garbage collector's full passes until the block ends.

    A billing run keeps its batch alive while it works, so the collector's full passes
    come often, and each walks the whole heap: the modules, the SQL metadata and the
    backend made at start-up, which live as long as the process (the example app freezes
    them after its start-up too). Measured over 4,000 renewals on PostgreSQL: 521-533 ->
    438-466 us of CPU a renewal, 1,254-1,261 -> 1,355-1,369 renewals/s.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _worker(url: str | None, limit: int, messages: Any) -> None:
    """One process of ``run-due --workers N``: its own backend, its share of the limit."""
    try:
        # Console email lines go to stderr, as in the parent: stdout is for the result.
        with _refusals(), contextlib.redirect_stdout(sys.stderr):
            billing = _backend(url).billing
            with _start_up_frozen():
                _run_chunks(
                    billing.run_due, limit, lambda counts: messages.put(("progress", counts))
                )
        messages.put(("done", None))
    except _Refused as refused:
        messages.put(("error", {"code": refused.code, "message": refused.message}))
    except BaseException as exc:  # a bug; the parent reports it instead of waiting forever
        messages.put(("error", {"code": "INTERNAL_ERROR", "message": repr(exc)}))
        raise


def _run_due(out: TextIO, url: str | None, limit: int, workers: int, as_json: bool) -> None:
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = _console(sys.stderr)  # progress on stderr: stdout stays for the result
    totals: dict[str, int] = {}
    progress = Progress(
        SpinnerColumn(),
        TextColumn("billing run"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("subscriptions"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json or not console.is_terminal,
        transient=True,
    )

    def add(counts: dict[str, int]) -> None:
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value
        progress.update(task, completed=totals.get("subscriptions", 0))

    with progress:
        task = progress.add_task("run", total=limit)
        if workers == 1:
            billing = _backend(url).billing
            with _start_up_frozen():
                _run_chunks(billing.run_due, limit, add)
        else:
            _run_in_processes(url, limit, workers, add)
    if as_json:
        _print_json(out, {"workers": workers, **totals})
        return
    _show_summary(out, totals, workers)


def _run_in_processes(
    url: str | None, limit: int, workers: int, add: Callable[[dict[str, int]], None]
) -> None:
    # Spawned, not forked: the parent has threads (the progress display) and open
    # connections, neither of which survives a fork safely.
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    shares = [limit // workers + (1 if n < limit % workers else 0) for n in range(workers)]
    processes = [
        context.Process(target=_worker, args=(url, share, messages), daemon=True)
        for share in shares
        if share > 0
    ]
    for process in processes:
        process.start()
    finished, errors = 0, []
    try:
        while finished < len(processes):
            try:
                kind, payload = messages.get(timeout=1.0)
            except queues.Empty:
                if any(p.exitcode not in (None, 0) for p in processes):
                    errors.append({"code": "WORKER_DIED", "message": "a worker process died"})
                    break
                continue
            if kind == "progress":
                add(payload)
            else:
                finished += 1
                if kind == "error":
                    errors.append(payload)
    finally:
        for process in processes:
            process.join(timeout=30)
    if errors:
        first = errors[0]
        raise _Refused(
            first["code"],
            f"{len(errors)} of {len(processes)} workers failed: {first['message']}",
            {"errors": errors},
        )


def _show_summary(out: TextIO, totals: dict[str, int], workers: int) -> None:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="billing run", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("workers", str(workers))
    for name, value in totals.items():
        table.add_row(name.replace("_", " "), str(value))
    _console(out).print(table)


# -- metrics ----------------------------------------------------------------------------


def _rate(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _metrics(
    out: TextIO, url: str | None, start: datetime, end: datetime, currency: str, as_json: bool
) -> None:
    report = _backend(url).billing.metrics(start=start, end=end, currency=currency)
    if as_json:
        from lumenquest_core.codec import to_jsonable  # noqa: PLC0415

        _print_json(out, to_jsonable(report))
        return
    _show_metrics(out, report)


def _show_metrics(out: TextIO, report: "MetricsReport") -> None:
    from rich.table import Table  # noqa: PLC0415

    console = _console(out)
    moves = report.movements
    console.print(f"{report.period.start.isoformat()} → {report.period.end.isoformat()}")
    console.print(f"MRR {report.mrr}   ARR {report.arr}")
    table = Table(title="MRR movements", title_justify="left")
    table.add_column("movement")
    table.add_column(report.currency, justify="right")
    table.add_column("customers", justify="right")
    for name, amount, customers, sign in (
        ("start", moves.start, moves.start_customers, ""),
        ("new", moves.new, moves.new_customers, "+"),
        ("expansion", moves.expansion, moves.expansion_customers, "+"),
        ("reactivation", moves.reactivation, moves.reactivated_customers, "+"),
        ("contraction", moves.contraction, moves.contraction_customers, "−"),
        ("churned", moves.churned, moves.churned_customers, "−"),
        ("end", moves.end, moves.end_customers, "="),
    ):
        table.add_row(name, f"{sign}{amount.to_decimal()}", str(customers))
    console.print(table)
    churn = Table(title="churn and retention", title_justify="left")
    churn.add_column("metric")
    churn.add_column("value", justify="right")
    for name, value in (
        ("customer churn", _rate(report.customer_churn_rate)),
        ("gross revenue churn", _rate(report.gross_revenue_churn_rate)),
        ("net revenue churn", _rate(report.net_revenue_churn_rate)),
        ("net revenue retention", _rate(report.net_revenue_retention)),
        ("trial conversion", _rate(report.trial_conversion_rate)),
        ("ARPA", "n/a" if report.arpa is None else str(report.arpa)),
        ("LTV", "n/a" if report.ltv is None else str(report.ltv)),
    ):
        churn.add_row(name, value)
    console.print(churn)


# -- export-customer --------------------------------------------------------------------


def _export(out: TextIO, url: str | None, customer_id: str, output: Path | None) -> None:
    data = _backend(url).billing.export_customer(customer_id)
    text = json.dumps(data, indent=2, default=str)
    if output is None:
        print(text, file=out)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise _Refused("OUTPUT_ERROR", f"cannot write {output}: {exc.strerror}") from None
    print(f"exported customer {customer_id} to {output}", file=sys.stderr)


# -- serve ------------------------------------------------------------------------------


def _example_dirs(app_dir: Path | None) -> list[Path]:
    if app_dir is not None:
        return [app_dir]
    # A source checkout (editable install): <repo>/src/lumenquest_adapters/cli.py.
    return [Path(__file__).resolve().parents[2] / "examples", Path.cwd() / "examples"]


def load_example_app(app_dir: Path | None = None) -> Any:
    """Return ``create_app()`` of ``examples/asgi_app`` or raise a refusal saying where it looked."""
    dirs = [d for d in _example_dirs(app_dir) if (d / "asgi_app").is_dir()]
    if not dirs:
        looked = ", ".join(str(d) for d in _example_dirs(app_dir))
        raise _Refused(
            "EXAMPLE_APP_NOT_FOUND",
            f"the example app was not found (looked for asgi_app/ in {looked});"
            " run from a lumenquest checkout or pass --app-dir",
        )
    path = str(dirs[0])
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        from asgi_app.main import create_app  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if missing.split(".")[0] == "asgi_app" or "create_app" in str(exc):
            message = f"{path}/asgi_app has no main.py with create_app() ({exc})"
        else:
            message = (
                f"the example app in {path} needs {missing or 'a package'} that is not"
                " installed: pip install 'lumenquest[asgi]'"
            )
        raise _Refused("EXAMPLE_APP_NOT_FOUND", message) from None
    return create_app()


def _serve(host: str, port: int, app_dir: Path | None) -> None:
    # The server logs to stderr itself; it has no result for stdout.
    application = load_example_app(app_dir)
    import uvicorn  # noqa: PLC0415 - the asgi extra; missing, _refusals says so

    uvicorn.run(application, host=host, port=port)


# -- simulate ---------------------------------------------------------------------------


def _simulate(
    out: TextIO,
    customers: int,
    months: int,
    seed: int,
    start: datetime,
    chart: Path | None,
    as_json: bool,
) -> None:
    from lumenquest_adapters.simulation import simulate, write_chart  # noqa: PLC0415

    result = simulate(customers=customers, months=months, seed=seed, start=start)
    written = None if chart is None else write_chart(result, chart)
    if as_json:
        _print_json(out, {**result.to_dict(), "chart": None if written is None else str(written)})
        return
    from rich.table import Table  # noqa: PLC0415

    table = Table(
        title=f"simulation: {customers} customers, {months} months, seed {seed} ({result.currency})",
        title_justify="left",
    )
    for column in (
        "month",
        "MRR",
        "new",
        "expan.",
        "contr.",
        "churned",
        "react.",
        "cust.",
        "churn",
    ):
        table.add_column(column, justify="left" if column == "month" else "right")
    for month in result.months:
        table.add_row(
            month.label,
            str(month.mrr.to_decimal()),
            str(month.new.to_decimal()),
            str(month.expansion.to_decimal()),
            str(month.contraction.to_decimal()),
            str(month.churned.to_decimal()),
            str(month.reactivation.to_decimal()),
            str(month.customers),
            _rate(month.customer_churn_rate),
        )
    console = _console(out)
    console.print(table)
    console.print(f"final MRR {result.final_mrr} (Billing.metrics on the simulated store)")
    if written is not None:
        console.print(f"chart written to {written}")


if __name__ == "__main__":
    raise SystemExit(main())
