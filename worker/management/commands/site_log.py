"""``python manage.py site_log --state-dir PATH``: every message this site's worker sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from worker.peers import PeerBook
from worker.site_runtime import read_outbox, what_was_sent


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
        parser.add_argument(
            "--peers",
            action="store_true",
            help="instead: the fingerprints of this site's identity key and of its peers' "
            "in each secure round, to compare with their owners over the phone",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["peers"]:
            self._peers(options)
            return
        for entry in read_outbox(options["state_dir"]):
            if options["json"]:
                self.stdout.write(json.dumps(entry))
            elif "refused" in entry:
                self.stdout.write(
                    f"{entry['at']} REFUSED {entry['path']:<32} nothing sent: {entry['refused']}"
                )
            else:
                where = (
                    f" {entry['federation']}, {entry['kind']} round {entry['round']}:"
                    if "round" in entry
                    else ""
                )
                self.stdout.write(
                    f"{entry['at']} {entry['method']:<4} {entry['path']:<32} "
                    f"HTTP {entry['status']} {entry['bytes']:>8} bytes{where} "
                    f"{what_was_sent(entry)}"
                )

    def _peers(self, options: dict[str, Any]) -> None:
        entries = PeerBook(options["state_dir"]).entries()
        if not entries:
            self.stdout.write("No secure round yet: no peer's key to show.")
        for entry in entries:
            if options["json"]:
                self.stdout.write(json.dumps(entry))
                continue
            self.stdout.write(
                f"{entry['at']} {entry['federation']}, {entry['round']}: this site "
                f"(site {entry['site']}) {entry['own']}"
            )
            for peer, print_ in entry["peers"].items():
                self.stdout.write(f"    site {peer:>4}  {print_}")
            for warning in entry["changed"]:
                self.stdout.write(f"    WARNING {warning}")
