"""Start the coordinator's Celery worker: ``python manage.py coordinator_worker``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from worker.celery import COORDINATOR_QUEUE
from worker.runtime import start_worker


class Command(BaseCommand):
    help = "Run the coordinator's Celery worker (orchestration and server-side work)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: Any, **options: Any) -> None:
        start_worker(
            queue=COORDINATOR_QUEUE,
            name="coordinator",
            concurrency=options["concurrency"],
            loglevel=options["loglevel"],
        )
