"""Real worker processes on the configured broker (Redis in CI, file system locally)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from tests.helpers import ROOT, manage
from tests.test_data_files import rows
from worker.celery import COORDINATOR_QUEUE, site_queue
from worker.tasks import coordinator_health, site_describe_data

pytestmark = pytest.mark.integration


@pytest.fixture
def start():
    """Start management commands as background processes; stop them after the test."""
    processes: list[subprocess.Popen[str]] = []

    def _start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        return process

    yield _start
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


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


def test_a_site_worker_reports_counts_of_its_own_data_and_nothing_else(start, partition):
    out, _ = partition
    site = f"test-{uuid.uuid4().hex[:8]}"
    start("site_worker", "--site", site, "--data-dir", str(out / "site-2"))

    reply = site_describe_data.apply_async(queue=site_queue(site)).get(timeout=90)

    assert reply["ok"] is True and reply["site"] == site
    assert (reply["train_engines"], reply["subsets"]) == (30, ["FD001"])
    assert reply["files"] == [
        {
            "path": "train_FD001.txt",
            "subset": "FD001",
            "kind": "train",
            "rows": reply["train_rows"],
            "units": 30,
            "cycles": reply["files"][0]["cycles"],
        }
    ]
    assert str(out) not in json.dumps(reply)  # the site's folder stays private


def test_a_site_worker_refuses_to_start_on_bad_data(tmp_path):
    (tmp_path / "train_FD001.txt").write_text(rows((1, 1), (1, 3)))

    result = manage("site_worker", "--site", "bad", "--data-dir", str(tmp_path), timeout=60)

    assert result.returncode == 1
    assert "the site's data is not usable" in result.stderr
    assert "line 2, column 3: skipped cycle" in result.stderr


def test_the_coordinator_worker_answers_from_its_own_process(start):
    start("coordinator_worker")

    reply = coordinator_health.apply_async(queue=COORDINATOR_QUEUE).get(timeout=90)

    assert reply["pid"] != os.getpid()
    assert reply["database"] in {"sqlite", "postgresql"}
