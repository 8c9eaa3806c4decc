"""``manage.py rul_report`` end to end, in its quick mode (checks the plumbing, not accuracy)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from federation.core.engine.training import CHOICE_CONFIDENCE, CHOICES
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


def test_sites_keep_their_optimisers_unless_the_report_asks_afresh(report, tmp_path):
    out, _ = report
    fresh = manage(
        "rul_report",
        *("--subsets", "FD001", "--sites", "2", "--out", str(tmp_path)),
        *("--quick", "--no-progress", "--fresh-optimisers"),
        timeout=600,
    )

    assert fresh.returncode == 0, fresh.stderr
    kept = json.loads((out / "report.json").read_text())["config"]["training"]
    afresh = json.loads((tmp_path / "report.json").read_text())["config"]["training"]
    assert kept["site_optimiser"] is True and afresh["site_optimiser"] is False


def test_by_subset_needs_two_subsets(tmp_path):
    result = manage(
        "rul_report", "--subsets", "FD001", "--scheme", "by-subset", "--out", str(tmp_path)
    )

    assert result.returncode == 1
    assert "needs at least two --subsets" in result.stderr


def test_the_default_report_has_no_privacy_rows(report):
    out, stdout = report

    data = json.loads((out / "report.json").read_text())

    assert "privacy" not in data["config"]
    assert not [s for s in data["results"]["FD001"] if "dp" in s]
    assert "DP" not in (out / "report.md").read_text() and "DP" not in stdout


@pytest.fixture(scope="module")
def private_report(tmp_path_factory, cmapss_dir):
    out = tmp_path_factory.mktemp("private-report")
    result = manage(
        *("rul_report", "--subsets", "FD001", "--sites", "2", "--out", str(out)),
        *("--quick", "--no-progress", "--dp-epsilon", "8", "1", "--dp-clip", "0.5"),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_each_target_epsilon_adds_a_federated_setup_within_its_budget(private_report):
    out, stdout = private_report

    results = json.loads((out / "report.json").read_text())["results"]["FD001"]

    for epsilon in (8, 1):
        (run,) = results[f"federated-dp-eps{epsilon}"]["runs"]
        dp = run["privacy"]
        assert dp["epsilon"] == epsilon and dp["clip"] == 0.5 and dp["delta"] == 1e-5
        assert dp["rounds"] == 2  # the quick preset's 2 rounds of its one ensemble member
        assert epsilon * 0.99 <= dp["epsilon_spent"] <= epsilon
    less, more = (results[f"federated-dp-eps{e}"]["runs"][0]["privacy"] for e in (8, 1))
    assert more["noise_multiplier"] > less["noise_multiplier"]
    assert (out / "predictions" / "federated-dp-eps1_FD001.csv").exists()
    assert (out / "models" / "federated-dp-eps8_FD001.rulmodel").exists()
    assert "| FD001 | federated (DP, eps=8) |" in stdout
    assert "| FD001 | federated (DP, eps=1) | 1 | 1e-05 | 0.5 |" in stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dp-epsilon", "0"], "target epsilon must be > 0"),
        (["--dp-epsilon", "8", "--dp-delta", "2"], "delta must be between 0 and 1"),
        (["--dp-epsilon", "8", "--dp-clip", "0"], "clipping bound must be > 0"),
    ],
)
def test_privacy_settings_that_cannot_work_are_refused_before_training(tmp_path, flags, message):
    result = manage("rul_report", "--subsets", "FD001", "--out", str(tmp_path), "--quick", *flags)

    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize("private_head", [False, True], ids=["fine-tuned", "private-head"])
def test_with_personalisation_the_report_has_a_row_per_site_on_its_own_test_set(
    tmp_path, cmapss_dir, private_head
):
    result = manage(
        "rul_report",
        "--subsets",
        "FD001",
        "--sites",
        "3",
        "--out",
        str(tmp_path),
        "--quick",
        "--no-progress",
        "--personal-epochs",
        "1",
        *(["--private-head"] if private_head else []),
        timeout=600,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    personal = report["personalisation"]
    assert sorted(personal) == ["site-1", "site-2", "site-3"]
    for (row,) in personal.values():
        assert row["subset"] == "FD001" and row["choice"] in CHOICES
        assert row["chosen"] == row[row["choice"]]
        trained = [c for c in CHOICES if c != "ditto"]  # no Ditto model without --ditto
        sure = [c for c in trained[1:] if row[f"{c}_confidence"] >= CHOICE_CONFIDENCE]
        if row["choice"] == "global":  # none beat the federation's model with confidence
            assert not sure
        else:  # the best of those that did
            assert row[f"{row['choice']}_val"] == min(row[f"{c}_val"] for c in sure)
    for site in personal:  # each candidate's predictions, to study without retraining
        with np.load(tmp_path / "candidates" / f"seed-0_{site}_FD001.npz") as saved:
            tested = [k.removeprefix("test_") for k in saved.files if k.startswith("test_")]
            assert set(tested) == {*trained, "truth"}
            assert len(saved["val_truth"]) == len(saved["val_units"]) == len(saved["val_global"])
    table = (tmp_path / "report.md").read_text()
    assert "| site | subset | alone | global | personalised | mixture | chosen | choices |" in table
    assert "| site-1 | FD001 |" in table
    # With private heads the federation's model is a body without a head of its own: only
    # the sites' models (each with its head) are scored.
    assert ("federated" in report["results"]["FD001"]) is not private_head


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--private-head"], "--private-head needs --personal-epochs"),
        (["--ditto", "0.1"], "--ditto needs --personal-epochs"),
        (["--personal-epochs", "2", "--ditto", "0.1", "--private-head"], "not both"),
        (["--personal-epochs", "2", "--ditto", "-1"], "--ditto must be from 0"),
    ],
)
def test_personalisation_settings_that_cannot_work_are_refused(tmp_path, flags, message):
    result = manage("rul_report", "--out", str(tmp_path), *flags)

    assert result.returncode == 1
    assert message in result.stderr


def test_personalisation_and_dp_are_refused_together(tmp_path):
    result = manage(
        "rul_report", "--out", str(tmp_path), "--personal-epochs", "2", "--dp-epsilon", "8"
    )

    assert result.returncode == 1
    assert "use one or the other" in result.stderr
