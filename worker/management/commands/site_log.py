"""``python manage.py site_log --state-dir PATH``: every message this site's worker sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from worker.site_runtime import read_outbox


class Command(BaseCommand):
    help = "Print the site's outbound log: every message its worker sent to the coordinator."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--state-dir",
            type=Path,
            required=True,
            help="the site worker's --state-dir (default var/sites/<name>)",
        )
        parser.add_argument("--json", action="store_true", help="one JSON object per line")

    def handle(self, *args: Any, **options: Any) -> None:
        for entry in read_outbox(options["state_dir"]):
            if options["json"]:
                self.stdout.write(json.dumps(entry))
            elif "refused" in entry:
                self.stdout.write(
                    f"{entry['at']} REFUSED {entry['path']:<32} nothing sent: {entry['refused']}"
                )
            else:
                self.stdout.write(
                    f"{entry['at']} {entry['method']:<4} {entry['path']:<32} "
                    f"HTTP {entry['status']} "
                    f"{entry['bytes']:>8} bytes keys={','.join(entry['keys'])} {entry['summary']}"
                )
