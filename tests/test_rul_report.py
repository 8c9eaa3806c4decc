"""``manage.py rul_report`` end to end, in its quick mode (checks the plumbing, not accuracy)."""

from __future__ import annotations

import csv
import json

import pytest

from tests.helpers import manage


@pytest.fixture(scope="module")
def report(tmp_path_factory, cmapss_dir):
    out = tmp_path_factory.mktemp("report")
    result = manage(
        "rul_report",
        "--subsets",
        "FD001",
        "--sites",
        "2",
        "--out",
        str(out),
        "--quick",
        "--no-progress",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_it_scores_all_four_setups_in_both_label_variants(report):
    out, _ = report

    results = json.loads((out / "report.json").read_text())["results"]["FD001"]

    assert {"centralised", "local:site-1", "local:site-2", "local", "federated", "baseline"} <= set(
        results
    )
    for setup in ("centralised", "federated", "baseline"):
        (run,) = results[setup]["runs"]
        assert set(run) >= {"literature", "strict", "seconds", "seed"}
        assert run["literature"]["true_rul_cap"] == 125


def test_it_writes_one_prediction_per_test_engine_for_every_setup(report):
    out, _ = report

    for setup in ("centralised", "local-site-1", "local-site-2", "federated", "baseline"):
        with (out / "predictions" / f"{setup}_FD001.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == ["unit", "predicted_rul"]
        assert [int(r["unit"]) for r in rows] == list(range(1, 101))


def test_it_writes_a_markdown_table_and_prints_it(report):
    out, stdout = report

    table = (out / "report.md").read_text()

    assert "| FD001 | federated |" in table and "| FD001 | each site alone (mean) |" in table
    assert "| FD001 | centralised |" in stdout


def test_it_keeps_the_trained_models_for_predict(report, cmapss_dir):
    out, _ = report

    result = manage(
        "predict",
        "--model",
        str(out / "models" / "federated_FD001.rulmodel"),
        "--test-file",
        str(cmapss_dir / "test_FD001.txt"),
    )

    assert result.returncode == 0 and len(result.stdout.splitlines()) == 101


def test_by_subset_needs_two_subsets(tmp_path):
    result = manage(
        "rul_report", "--subsets", "FD001", "--scheme", "by-subset", "--out", str(tmp_path)
    )

    assert result.returncode == 1
    assert "needs at least two --subsets" in result.stderr
