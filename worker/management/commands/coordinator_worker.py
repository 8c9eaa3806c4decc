"""Start the coordinator's Celery worker: ``python manage.py coordinator_worker``."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from worker.celery import COORDINATOR_QUEUE
from worker.runtime import start_worker
from worker.tasks import ROLE_ENV


class Command(BaseCommand):
    help = "Run the coordinator's Celery worker (orchestration and server-side work)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: Any, **options: Any) -> None:
        # Marks this process as the coordinator: on start it resumes interrupted rounds.
        os.environ[ROLE_ENV] = "coordinator"
        start_worker(
            queue=COORDINATOR_QUEUE,
            name="coordinator",
            concurrency=options["concurrency"],
            loglevel=options["loglevel"],
        )
