"""``manage.py check_data``: JSON on success, a located message and exit 1 on failure."""

from __future__ import annotations

import json

from tests.core.test_data_files import rows
from tests.helpers import manage


def test_it_prints_a_json_summary_of_a_good_file(cmapss_dir):
    result = manage("check_data", str(cmapss_dir / "train_FD001.txt"))

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kind"] == "train" and summary["subset"] == "FD001"
    assert (summary["rows"], summary["units"]) == (20631, 100)
    assert summary["cycles"] == {"min": 128, "max": 362}


def test_it_checks_a_test_file_and_its_rul_file_together(cmapss_dir):
    result = manage(
        "check_data", str(cmapss_dir / "test_FD002.txt"), str(cmapss_dir / "RUL_FD002.txt")
    )

    assert result.returncode == 0, result.stderr
    test, rul = json.loads(result.stdout)
    assert (test["kind"], test["units"]) == ("test", 259)
    assert (rul["kind"], rul["units"]) == ("rul", 259)


def test_a_rul_file_that_does_not_match_its_test_file_fails(cmapss_dir, write):
    short_rul = write("RUL_FD001.txt", "".join(f"{n} \n" for n in range(99)))

    result = manage("check_data", str(cmapss_dir / "test_FD001.txt"), str(short_rul))

    assert result.returncode == 1
    assert "has 99 RUL values but the test file has 100 units" in result.stderr


def test_a_bad_file_exits_1_with_the_message_and_no_traceback(write):
    path = write("train_FD001.txt", rows((1, 1), (1, 1)))

    result = manage("check_data", str(path))

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"error: {path}, line 2, column 3: duplicate cycle 1 of unit 1: expected cycle 2"
    )
    assert "Traceback" not in result.stderr


def test_the_kind_flag_overrides_the_name(write):
    path = write("engines.txt", rows((1, 1), (1, 2), (2, 1)))

    result = manage("check_data", "--kind", "test", str(path))

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kind"] == "test"


def test_an_engine_file_with_an_unhelpful_name_asks_for_the_kind(write):
    path = write("engines.txt", rows((1, 1)))

    result = manage("check_data", str(path))

    assert result.returncode == 1
    assert "cannot tell a training file from a test file" in result.stderr
    assert "--kind" in result.stderr


def test_a_one_column_file_is_taken_for_a_rul_file(write):
    result = manage("check_data", str(write("truth.txt", "5 \n7 \n")))

    assert json.loads(result.stdout)["kind"] == "rul"
