"""The ``lumenquest db`` command migrates a database and says where it stands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lumenquest_adapters.cli import main
from lumenquest_adapters.sqlalchemy import current_revision, head_revision


def test_upgrade_then_downgrade_then_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'billing.sqlite3'}"
    assert main(["db", "upgrade", "--url", url]) == 0
    assert current_revision(url) == head_revision()
    assert main(["db", "downgrade", "--url", url, "--revision", "base"]) == 0
    assert current_revision(url) is None
    assert main(["db", "current", "--url", url]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"database at base; newest shipped {head_revision()}"
    )


def test_the_database_url_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'env.sqlite3'}"
    monkeypatch.setenv("LUMENQUEST_DATABASE_URL", url)
    assert main(["db", "upgrade"]) == 0
    assert current_revision(url) == head_revision()


def test_an_unusable_url_is_a_clear_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["db", "upgrade", "--url", "nosuchdb://somewhere"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lumenquest: ")
    assert "Traceback" not in err


def test_bad_arguments_exit_with_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "sideways"]) == 2
    assert "No such command 'sideways'" in capsys.readouterr().err


def test_the_command_runs_as_a_real_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'process.sqlite3'}"
    done = subprocess.run(
        [sys.executable, "-m", "lumenquest_adapters.cli", "db", "upgrade", "--url", url],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"database at {head_revision()}; newest shipped {head_revision()}"
