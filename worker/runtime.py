"""Starting Celery workers in this process, the same way for every role."""

from __future__ import annotations

import socket

from worker.celery import app


def start_worker(*, queue: str, name: str, concurrency: int, loglevel: str) -> None:
    """Run a worker that consumes only ``queue`` until it is told to stop (SIGTERM)."""
    app.worker_main(
        argv=[
            "worker",
            f"--queues={queue}",
            f"--hostname={name}@{socket.gethostname()}",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            # Workers find each other through the database and the API, not
            # through broker broadcasts, which the file-system broker makes slow.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
