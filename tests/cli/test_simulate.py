"""The simulation: deterministic for a seed, consistent with Billing.metrics, charted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lumenquest_adapters.cli import build_app
from lumenquest_adapters.simulation import SimulationResult, simulate, write_chart
from lumenquest_core import Money, Subscription, ValidationError, mrr

runner = CliRunner()


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return simulate(customers=120, months=8, seed=11)


def all_subscriptions(result: SimulationResult) -> list[Subscription]:
    found: list[Subscription] = []
    while page := result.billing.list_subscriptions(
        limit=1000, after=found[-1].id if found else None
    ):
        found += page
    return found


def test_the_same_seed_gives_the_same_run(result: SimulationResult) -> None:
    again = simulate(customers=120, months=8, seed=11)
    assert again.to_dict() == result.to_dict()
    assert [c.amount for c in again.billing.gateway.charges] == [
        c.amount for c in result.billing.gateway.charges
    ]


def test_another_seed_gives_another_run(result: SimulationResult) -> None:
    assert simulate(customers=120, months=8, seed=12).to_dict() != result.to_dict()


def test_the_final_mrr_is_billing_metrics_on_the_same_store(result: SimulationResult) -> None:
    last = result.months[-1]
    report = result.billing.metrics(start=last.start, end=last.end)
    assert result.final_mrr == report.mrr
    # And an independent count: the subscriptions as they stand, normalised one by one.
    assert mrr(all_subscriptions(result), "USD") == result.final_mrr
    assert result.final_mrr > Money(0, "USD")


def test_each_month_starts_where_the_last_ended_and_its_movements_add_up(
    result: SimulationResult,
) -> None:
    assert result.months[0].start_mrr == Money(0, "USD")
    for before, after in zip(result.months, result.months[1:], strict=False):
        assert after.start_mrr == before.mrr
        assert after.start == before.end
    for month in result.months:
        assert month.mrr == (
            month.start_mrr
            + month.new
            + month.expansion
            + month.reactivation
            - month.contraction
            - month.churned
        )


def test_the_mix_has_every_kind_of_event(result: SimulationResult) -> None:
    totals: dict[str, int] = {}
    for month in result.months:
        for key, count in month.activity.items():
            totals[key] = totals.get(key, 0) + count
    for key in (
        "signups",
        "trials",
        "conversions",
        "upgrades",
        "downgrades",
        "cancellations",
        "failed_payments",
        "recoveries",
    ):
        assert totals[key] > 0, key
    assert sum(m.churned.amount for m in result.months) > 0
    assert sum(m.expansion.amount for m in result.months) > 0
    assert sum(m.contraction.amount for m in result.months) > 0
    assert sum(m.new_customers for m in result.months) <= 120


def test_a_failed_payment_reached_the_gateway_as_a_decline(result: SimulationResult) -> None:
    statuses = {charge.status.value for charge in result.billing.gateway.charges}
    assert statuses == {"succeeded", "declined"}


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_the_chart_is_written_in_the_format_its_name_says(
    result: SimulationResult, tmp_path: Path, suffix: str
) -> None:
    path = write_chart(result, tmp_path / f"mrr{suffix}")
    data = path.read_bytes()
    assert len(data) > 1000
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert b"<svg" in data[:2000]
        assert b"Simulated MRR by movement" in data or b"MRR" in data


def test_the_same_seed_draws_the_same_svg(result: SimulationResult, tmp_path: Path) -> None:
    first = write_chart(result, tmp_path / "a.svg").read_bytes()
    second = write_chart(simulate(customers=120, months=8, seed=11), tmp_path / "b.svg")
    assert second.read_bytes() == first


def test_a_chart_of_another_kind_is_refused(result: SimulationResult, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="PNG or SVG"):
        write_chart(result, tmp_path / "mrr.pdf")


@pytest.mark.parametrize(
    "arguments", [{"customers": 0}, {"months": 0}, {"months": 121}, {"customers": True}]
)
def test_bad_parameters_are_refused(arguments: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        simulate(**arguments)


def test_the_command_prints_a_table_and_writes_the_chart(tmp_path: Path) -> None:
    chart = tmp_path / "charts" / "mrr.png"
    outcome = runner.invoke(
        build_app(),
        ["simulate", "--customers", "30", "--months", "3", "--seed", "4", "--chart", str(chart)],
    )
    assert outcome.exit_code == 0, outcome.output
    expected = simulate(customers=30, months=3, seed=4)
    assert f"final MRR {expected.final_mrr}" in outcome.stdout
    for month in expected.months:
        assert month.label in outcome.stdout
    assert chart.stat().st_size > 0


def test_the_command_runs_as_a_real_process_with_json(tmp_path: Path) -> None:
    chart = tmp_path / "mrr.svg"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lumenquest_adapters.cli",
            "simulate",
            "--customers",
            "40",
            "--months",
            "4",
            "--seed",
            "9",
            "--chart",
            str(chart),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    expected = simulate(customers=40, months=4, seed=9)
    assert data["final_mrr"] == expected.final_mrr.amount
    assert [m["mrr"] for m in data["months"]] == [m.mrr.amount for m in expected.months]
    assert data["chart"] == str(chart)
    assert chart.stat().st_size > 0


def test_a_bad_option_in_a_real_process_exits_2_without_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lumenquest_adapters.cli", "simulate", "--months", "zero"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "--months" in done.stderr


def test_a_missing_plotting_library_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    outcome = runner.invoke(
        build_app(),
        ["simulate", "--customers", "5", "--months", "1", "--chart", str(tmp_path / "c.png")],
    )
    assert outcome.exit_code == 1
    assert "pip install 'lumenquest[cli]'" in outcome.stderr
    assert "Traceback" not in outcome.output
