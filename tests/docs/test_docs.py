"""The documentation site builds with ``--strict`` and every Python sample in it runs.

Each page's ```python blocks run in order in one namespace, in a scratch directory, so a
page reads as one session. A block that must not run (it needs a package the docs do
not install, or a service) is preceded by the line ``<!-- docs: no-run -->``; the test
checks that the marker is used rarely.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import lumenquest_adapters
import lumenquest_core
from lumenquest_adapters.config import Settings
from lumenquest_core import errors

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NO_RUN = "<!-- docs: no-run -->"
# Rarely: every sample that can run, runs. The three are the Django example's files, which
# need a configured Django project: tests/examples/test_django_example.py runs them.
MAX_NO_RUN = 3

# ```python, ```py, or ```{.python} (the attribute form keeps formatters off a snippet).
_FENCE = re.compile(
    r"^(?P<marker>[^\n]*)\n```(?:python|py|\{\s*\.python[^}]*\})\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)


def python_blocks(page: Path) -> list[tuple[int, str, bool]]:
    """Return (line, code, runs) for each Python block of a page."""
    text = "\n" + page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start("code"))
        found.append((line, match["code"], match["marker"].strip() != NO_RUN))
    return found


@contextlib.contextmanager
def scratch_session(path: Path) -> Iterator[None]:
    """Run in ``path`` with no LUMENQUEST_* variable; restore the directory and environment."""
    before, environment = Path.cwd(), os.environ.copy()
    # The samples read LUMENQUEST_* like any host (and some set them): the test's own
    # settings must not leak in, and theirs must not leak out to later tests.
    for name in [n for n in os.environ if n.startswith("LUMENQUEST_")]:
        del os.environ[name]
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
        os.environ.clear()
        os.environ.update(environment)


PAGES_WITH_CODE = [p for p in pages() if any(runs for _, _, runs in python_blocks(p))]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_python_samples_of_a_page_run_in_order(page: Path, tmp_path: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    with scratch_session(tmp_path), contextlib.redirect_stdout(io.StringIO()):
        for line, code, runs in python_blocks(page):
            if not runs:
                continue
            # Padding keeps the line numbers of a failing sample those of the page.
            exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
            ran += 1
    assert ran == sum(runs for _, _, runs in python_blocks(page))


def test_the_no_run_marker_is_used_rarely() -> None:
    skipped = [(p.name, line) for p in pages() for line, _, runs in python_blocks(p) if not runs]
    assert len(skipped) <= MAX_NO_RUN, skipped
    total = sum(len(python_blocks(p)) for p in pages())
    assert total >= 20, "the docs lost their samples"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    missing = [
        f"LUMENQUEST_{name.upper()}"
        for name in Settings.model_fields
        if f"`LUMENQUEST_{name.upper()}`" not in text
    ]
    assert not missing


def test_every_error_code_is_documented() -> None:
    text = (DOCS / "reference" / "errors.md").read_text(encoding="utf-8")
    codes = {
        getattr(errors, name).code
        for name in errors.__all__
        if isinstance(getattr(errors, name), type)
    }
    assert len(codes) == len(errors.__all__)
    missing = sorted(code for code in codes if f"`{code}`" not in text)
    assert not missing


def test_the_site_builds_with_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # mkdocs-material's banner
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (site / "index.html").is_file()
    reference = (site / "reference" / "core" / "index.html").read_text(encoding="utf-8")
    # The API reference is generated from the docstrings, not written by hand.
    assert "Build Money from a major-unit decimal" in reference
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "run-due" in cli
    http = (site / "reference" / "http-api" / "index.html").read_text(encoding="utf-8")
    schema = site / "reference" / "openapi.json"
    if schema.exists():  # the example app was importable: its routes are listed
        paths = json.loads(schema.read_text(encoding="utf-8"))["paths"]
        assert paths
        assert all(f"<code>{path}</code>" in http for path in paths)
    else:  # it was not: the page says how to get the schema from a running app
        assert "/openapi.json" in http


def load_hook() -> Any:
    spec = importlib.util.spec_from_file_location("openapi_hook", DOCS / "hooks" / "openapi.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_the_example_app_the_http_page_keeps_its_sentence(tmp_path: Path) -> None:
    hook = load_hook()
    hook.on_config({"config_file_path": str(tmp_path / "mkdocs.yml")})  # no examples/ there
    page = SimpleNamespace(file=SimpleNamespace(src_uri=hook.PAGE))
    text = (DOCS / "reference" / "http-api.md").read_text(encoding="utf-8")
    assert hook.on_page_markdown(text, page) == text
    assert "/openapi.json" in text
    hook.on_post_build({"site_dir": str(tmp_path / "site")})
    assert not (tmp_path / "site").exists()


def test_the_route_table_lists_every_operation() -> None:
    hook = load_hook()
    schema = {
        "info": {"title": "API", "version": "1"},
        "paths": {
            "/health": {"get": {"summary": "Liveness"}},
            "/v1/plans/{id}": {"get": {"summary": "One plan"}, "delete": {"summary": "a|b"}},
        },
    }
    table = hook._table(schema)
    assert "| `GET` | `/health` | Liveness |" in table
    assert "| `DELETE` | `/v1/plans/{id}` | a\\|b |" in table


def public_modules() -> list[str]:
    """Return every public module of both packages the reference must cover."""
    names = [
        info.name
        for info in pkgutil.iter_modules(lumenquest_core.__path__, "lumenquest_core.")
        if not info.name.rsplit(".", 1)[1].startswith("_")
    ]
    names += [
        info.name
        for info in pkgutil.iter_modules(lumenquest_adapters.__path__, "lumenquest_adapters.")
        if not info.name.rsplit(".", 1)[1].startswith("_")
    ]
    return [*names, "lumenquest_adapters.testing.samples"]


def test_the_api_reference_covers_every_public_module() -> None:
    reference = "".join(
        (DOCS / "reference" / page).read_text(encoding="utf-8")
        for page in ("core.md", "adapters.md", "errors.md")
    )
    missing = [name for name in public_modules() if f"::: {name}\n" not in reference]
    assert not missing
