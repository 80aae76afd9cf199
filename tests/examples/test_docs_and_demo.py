"""The README's code runs as written, and so does the demo behind ``make run``."""

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def python_blocks(path: Path) -> list[str]:
    """Return the ```python blocks of a Markdown file."""
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def test_the_readme_examples_run_in_order():
    namespace: dict[str, object] = {}
    blocks = python_blocks(ROOT / "README.md")
    assert blocks, "the README lost its examples"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["sub"].status.value == "active"  # type: ignore[attr-defined]


def test_the_demo_prints_the_stripe_proration_and_the_renewal(capsys: pytest.CaptureFixture[str]):
    runpy.run_path(str(ROOT / "examples" / "demo.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "Unused time on Basic" in out
    assert "USD -5.00" in out
    assert "Remaining time on Pro" in out
    assert "MRR USD 20.00" in out
