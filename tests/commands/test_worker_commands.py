"""The data and site-worker commands as a user runs them (no worker is left running)."""

from __future__ import annotations

import json
import os

import pytest

from tests.core.test_data_files import rows
from tests.helpers import manage


@pytest.fixture(scope="module")
def partition(tmp_path_factory, cmapss_dir):
    out = tmp_path_factory.mktemp("partition") / "sites"
    result = manage(
        "partition_data", "--subset", "FD001", "--sites", "3", "--seed", "7", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout)


def test_partition_data_writes_one_folder_per_site_and_a_holdout(partition):
    out, printed = partition

    assert printed["engines"] == {"site-1": 30, "site-2": 30, "site-3": 30, "holdout": 10}
    assert sorted(p.name for p in out.iterdir()) == [
        "holdout",
        "partition.json",
        "site-1",
        "site-2",
        "site-3",
    ]


def test_a_site_worker_refuses_to_start_on_bad_data(tmp_path):
    (tmp_path / "train_FD001.txt").write_text(rows((1, 1), (1, 3)))

    result = manage(
        "site_worker",
        "--coordinator",
        "http://127.0.0.1:9",
        "--data-dir",
        str(tmp_path),
        env={"SITE_CREDENTIAL": "tfs_x"},
        timeout=60,
    )

    assert result.returncode == 1
    assert "the site's data is not usable" in result.stderr
    assert "line 2, column 3: skipped cycle" in result.stderr


def test_a_site_worker_needs_a_credential(tmp_path, partition):
    out, _ = partition
    env = {k: v for k, v in os.environ.items() if k != "SITE_CREDENTIAL"}

    result = manage(
        "site_worker",
        "--coordinator",
        "http://127.0.0.1:9",
        "--data-dir",
        str(out / "site-1"),
        env={**env, "SITE_CREDENTIAL": ""},
        timeout=60,
    )

    assert result.returncode == 1
    assert "no credential: set SITE_CREDENTIAL or pass --credential-file" in result.stderr


def test_a_site_worker_says_when_the_coordinator_is_unreachable(partition):
    out, _ = partition

    result = manage(
        "site_worker",
        "--coordinator",
        "http://127.0.0.1:9",
        "--data-dir",
        str(out / "site-1"),
        env={"SITE_CREDENTIAL": "tfs_x"},
        timeout=60,
    )

    assert result.returncode == 1
    assert "cannot introduce the site to the coordinator" in result.stderr
