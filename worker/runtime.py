"""Starting Celery workers in this process, the same way for every role."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from celery.signals import after_setup_logger

from worker.celery import app


def start_worker(
    *,
    queue: str,
    name: str,
    concurrency: int,
    loglevel: str,
    beat_schedule: dict[str, dict[str, object]] | None = None,
    state_dir: Path | None = None,
) -> None:
    """Run a worker that consumes only ``queue`` until it is told to stop (SIGTERM).

    With ``beat_schedule`` the worker also runs Celery beat in-process for it (a
    site's periodic pull of work), keeping beat's state in ``state_dir``.
    """
    argv = [
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
    if beat_schedule:
        if loglevel.upper() != "DEBUG":
            # A periodic pull would log three lines every few seconds (sent, received,
            # succeeded): the console keeps the site's own status lines instead.
            after_setup_logger.connect(_quiet_periodic_lines, weak=False)
        app.conf.beat_schedule = beat_schedule
        assert state_dir is not None
        state_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={state_dir / 'beat-schedule'}"]
    app.worker_main(argv=argv)


# Celery's loggers that speak once per periodic task.
PERIODIC_LOGGERS = ("celery.beat", "celery.app.trace", "celery.worker.strategy")


def _quiet_periodic_lines(**_: object) -> None:
    for name in PERIODIC_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
