"""mkdocs hook: the HTTP API page lists the example app's routes, from its OpenAPI.

When ``examples/asgi_app`` can be imported at build time, ``reference/http-api.md``
gets a table of every route (method, path, summary) in place of the
``<!-- openapi -->`` marker, and the site gets ``reference/openapi.json``. When it
cannot (not there, or its dependencies missing), the page keeps its sentence saying
how to get the schema from a running app. Either way the build does not fail: the app
is an example, and the library's reference must build without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.openapi")

MARKER = "<!-- openapi -->"
PAGE = "reference/http-api.md"
METHODS = ("get", "post", "put", "patch", "delete")

# The schema of this build, set by on_config (hooks are plain modules: no instance).
_build: dict[str, dict[str, Any] | None] = {"schema": None}


def _load_schema(root: Path) -> dict[str, Any] | None:
    examples = root / "examples"
    if not (examples / "asgi_app" / "main.py").is_file():
        return None
    added = str(examples) not in sys.path
    if added:
        sys.path.insert(0, str(examples))
    saved = os.environ.get("LUMENQUEST_DATABASE_URL")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            # Building the app may open its database: a scratch file, never the cwd's.
            os.environ["LUMENQUEST_DATABASE_URL"] = f"sqlite:///{scratch}/openapi.sqlite3"
            from asgi_app.main import create_app  # noqa: PLC0415 - found only at build time

            app = create_app()
            schema: dict[str, Any] = app.openapi()
            with contextlib.suppress(Exception):
                app.state.backend.billing.store.engine.dispose()
            return schema
    except Exception as exc:  # the example is being built: any failure means "not now"
        log.info("HTTP API page without routes: the example app did not load (%s)", exc)
        return None
    finally:
        if saved is None:
            os.environ.pop("LUMENQUEST_DATABASE_URL", None)
        else:
            os.environ["LUMENQUEST_DATABASE_URL"] = saved
        if added:
            sys.path.remove(str(examples))


def on_config(config: Any) -> Any:
    """Load the example app's schema once per build."""
    _build["schema"] = _load_schema(Path(config["config_file_path"]).parent)
    return config


def _table(schema: dict[str, Any]) -> str:
    rows = ["| method | path | summary |", "| --- | --- | --- |"]
    for path, operations in sorted(schema.get("paths", {}).items()):
        for method in METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            summary = str(operation.get("summary", "")).replace("|", "\\|")
            rows.append(f"| `{method.upper()}` | `{path}` | {summary} |")
    title = schema.get("info", {}).get("title", "the example app")
    version = schema.get("info", {}).get("version", "")
    return (
        f"Generated at build time from {title} {version}. The whole schema is "
        # Raw HTML: the file is written after the build, so mkdocs must not check it.
        '<a href="../openapi.json">openapi.json</a>.\n\n' + "\n".join(rows)
    )


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Put the route table in place of the marker on the HTTP API page."""
    schema = _build["schema"]
    if page.file.src_uri != PAGE or schema is None:
        return markdown
    return markdown.replace(MARKER, _table(schema))


def on_post_build(config: Any) -> None:
    """Write the schema beside the page."""
    schema = _build["schema"]
    if schema is None:
        return
    target = Path(config["site_dir"]) / "reference" / "openapi.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(schema, indent=2), encoding="utf-8")
