"""The ``lumenquest`` command: database migrations for now (``lumenquest db upgrade``).

The database is ``--url`` or ``LUMENQUEST_DATABASE_URL`` (the embedded SQLite file when
neither is set). Exit codes: 0 done, 1 lumenquest refused (the message says why), 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lumenquest_core.errors import LumenquestError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lumenquest", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="database migrations")
    db_commands = db.add_subparsers(dest="action", required=True)
    for action, default, text in (
        ("upgrade", "head", "migrate up to REVISION (default: the newest)"),
        ("downgrade", "base", "migrate down to REVISION (default: base, no table left)"),
        ("current", None, "print the database's revision and the newest shipped"),
    ):
        sub = db_commands.add_parser(action, help=text)
        sub.add_argument("--url", help="database URL (default: LUMENQUEST_DATABASE_URL)")
        if default is not None:
            sub.add_argument("--revision", default=default)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    options = _parser().parse_args(argv)
    try:
        return _db(options)
    except LumenquestError as exc:
        print(f"lumenquest: {exc.message}", file=sys.stderr)
        return 1


def _db(options: argparse.Namespace) -> int:
    # Imported here so that `lumenquest --help` works without the database extra.
    from lumenquest_adapters.config import load_settings  # noqa: PLC0415
    from lumenquest_adapters.sqlalchemy import (  # noqa: PLC0415
        current_revision,
        downgrade,
        head_revision,
        upgrade,
    )

    url = options.url or load_settings().database_url.get_secret_value()
    if options.action == "upgrade":
        upgrade(url, options.revision)
    elif options.action == "downgrade":
        downgrade(url, options.revision)
    print(f"database at {current_revision(url) or 'base'}; newest shipped {head_revision()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
