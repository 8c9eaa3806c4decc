"""Start a site's Celery worker: ``python manage.py site_worker --site NAME --data-dir PATH``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from turbofan.data.checks import describe_folder
from turbofan.data.files import DataFileError
from worker.celery import site_queue
from worker.runtime import start_worker
from worker.tasks import SITE_DATA_DIR_ENV, SITE_NAME_ENV


class Command(BaseCommand):
    help = (
        "Validate this site's data folder, then run the site's Celery worker on its own "
        "queue. The data stays in the folder; only counts are ever reported."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--site", required=True, help="the site's name, e.g. site-1")
        parser.add_argument("--data-dir", type=Path, required=True)
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: Any, **options: Any) -> None:
        data_dir: Path = options["data_dir"].resolve()
        try:
            summary = describe_folder(data_dir)
        except DataFileError as error:
            raise CommandError(f"the site's data is not usable: {error}") from None
        self.stdout.write(f"site {options['site']}: data checked: {json.dumps(summary)}")
        # Tasks run in child processes of this one: they find their site here.
        os.environ[SITE_NAME_ENV] = options["site"]
        os.environ[SITE_DATA_DIR_ENV] = str(data_dir)
        start_worker(
            queue=site_queue(options["site"]),
            name=options["site"],
            concurrency=options["concurrency"],
            loglevel=options["loglevel"],
        )
