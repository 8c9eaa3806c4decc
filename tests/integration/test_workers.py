"""The coordinator's worker as its own process, on the configured broker."""

from __future__ import annotations

import os

from tests.stack import Stack
from worker.celery import COORDINATOR_QUEUE
from worker.tasks import coordinator_health


def test_the_coordinator_worker_answers_from_its_own_process(tmp_path):
    with Stack(tmp_path) as stack:
        stack.start("coordinator", "coordinator_worker")

        reply = coordinator_health.apply_async(queue=COORDINATOR_QUEUE).get(timeout=90)

    assert reply["pid"] != os.getpid()
    assert reply["database"] in {"sqlite", "postgresql"}
