"""Validate C-MAPSS files: ``python manage.py check_data PATH... [--kind train|test|rul]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from turbofan.data.checks import check_files
from turbofan.data.files import KINDS, DataFileError


class Command(BaseCommand):
    help = (
        "Validate C-MAPSS train, test or RUL files. Prints a JSON summary (an object for "
        "one file, a list for several) and exits 0; on the first bad file prints where "
        "and what is wrong and exits 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument(
            "--kind",
            choices=KINDS,
            help="kind of every file; by default taken from the name (train_*, test_*, RUL_*)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summaries = check_files(options["paths"], options["kind"])
        except DataFileError as error:
            self.stderr.write(f"error: {error}")
            raise SystemExit(1) from None
        result = summaries[0] if len(summaries) == 1 else summaries
        self.stdout.write(json.dumps(result, indent=2))
