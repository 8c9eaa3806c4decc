"""Start a site's worker: ``python manage.py site_worker --coordinator URL --data-dir PATH``.

The credential comes from ``SITE_CREDENTIAL`` or ``--credential-file``, never from
the command line (where other users of the machine could read it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from federation.core.private_files import private_folder
from turbofan.data.checks import describe_folder
from turbofan.data.files import DataFileError
from worker import site_runtime
from worker.celery import site_queue
from worker.console.state import write_site_file
from worker.keystore import Keystore
from worker.ledger import DEFAULT_DELTA
from worker.runtime import start_worker


class Command(BaseCommand):
    help = (
        "Check this site's data, introduce the site to the coordinator (counts only), then "
        "run the site's Celery worker: it pulls work from the coordinator's API, trains "
        "where the data is, and posts results. Every message sent is logged in "
        "<state-dir>/outbox.jsonl."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--coordinator", required=True, help="the coordinator's URL")
        parser.add_argument("--data-dir", type=Path, required=True)
        parser.add_argument(
            "--credential-file",
            type=Path,
            help=f"file holding the credential (else ${site_runtime.CREDENTIAL_ENV})",
        )
        parser.add_argument(
            "--state-dir",
            type=Path,
            help="where the outbound log and worker state go (default: var/sites/<site name>)",
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=5.0,
            help="seconds before a new pull of work starts after one ends (each pull long-polls "
            "the coordinator, answering every stage as it opens, for a minute)",
        )
        parser.add_argument(
            "--allow-plain",
            action="store_true",
            help="answer plain rounds, which send this site's input in the clear (for "
            "debugging; refused by default, whatever the coordinator asks)",
        )
        parser.add_argument(
            "--epsilon-cap",
            type=float,
            default=None,
            help="this site's own privacy cap: refuse a round that would take its privacy "
            "spend (as the site counts it, see its console) past this epsilon, and any "
            "training round without privacy noise; default: no cap of its own",
        )
        parser.add_argument(
            "--delta",
            type=float,
            default=DEFAULT_DELTA,
            help=f"the delta at which the site counts its epsilon (default {DEFAULT_DELTA:g})",
        )
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: Any, **options: Any) -> None:
        cap = options["epsilon_cap"]
        if cap is not None and not cap > 0:
            raise CommandError(f"--epsilon-cap must be > 0, got {cap:g}")
        if not 0 < options["delta"] < 1:
            raise CommandError(f"--delta must be between 0 and 1, got {options['delta']:g}")
        credential = self._credential(options["credential_file"])
        data_dir: Path = options["data_dir"].resolve()
        try:
            summary = describe_folder(data_dir)
        except DataFileError as error:
            raise CommandError(f"the site's data is not usable: {error}") from None
        # The site's name (and so its default state folder) comes from the coordinator:
        # the first request is logged in a scratch folder and moved over below.
        scratch = Path(tempfile.mkdtemp(prefix="site-intro-"))
        runtime = site_runtime.SiteRuntime(
            options["coordinator"], credential, data_dir, state_dir=scratch
        )
        try:
            _, site = runtime.request("GET", "/api/v1/site")
        except (site_runtime.CoordinatorRefused, site_runtime.CoordinatorUnreachable) as error:
            raise CommandError(f"cannot introduce the site to the coordinator: {error}") from None
        name = site["name"]
        state_dir = (options["state_dir"] or Path(settings.VAR_DIR) / "sites" / name).resolve()
        runtime.state_dir = state_dir
        private_folder(state_dir)  # the keystore and the outbox are the site's alone
        for expired in Keystore(state_dir).prune():
            self.stdout.write(f"site {name}: secrets of unfinished round {expired} removed")
        with (state_dir / site_runtime.OUTBOX).open("a") as outbox:
            outbox.write((scratch / site_runtime.OUTBOX).read_text())
        shutil.rmtree(scratch, ignore_errors=True)
        counts = {k: summary[k] for k in ("train_rows", "train_engines", "subsets")}
        runtime.request("PUT", "/api/v1/site/data", counts)
        self.stdout.write(f"site {name}: data checked and reported: {counts}")
        runtime.register_identity()  # secure rounds: the key its round keys are signed with
        write_site_file(
            state_dir,
            name=name,
            coordinator=options["coordinator"],
            data_dir=data_dir,
            epsilon_cap=cap,
            delta=options["delta"],
        )
        self.stdout.write(
            f"site {name}: its console (served here, never by the coordinator): "
            f"{sys.executable} manage.py site_console --state-dir {state_dir}"
        )
        # Tasks run in child processes of this one: they find their configuration here.
        os.environ.update(
            {
                site_runtime.COORDINATOR_ENV: options["coordinator"],
                site_runtime.CREDENTIAL_ENV: credential,
                site_runtime.DATA_DIR_ENV: str(data_dir),
                site_runtime.STATE_DIR_ENV: str(state_dir),
                site_runtime.ALLOW_PLAIN_ENV: "1" if options["allow_plain"] else "0",
                site_runtime.EPSILON_CAP_ENV: "" if cap is None else repr(cap),
                site_runtime.DELTA_ENV: repr(options["delta"]),
            }
        )
        interval = options["poll_interval"]
        start_worker(
            queue=site_queue(name),
            name=name,
            # One poll at a time: two would fetch and train the same work twice.
            concurrency=1,
            loglevel=options["loglevel"],
            # A poll that waited longer than one interval is stale: the next one replaces it.
            beat_schedule={
                "pull-work": {
                    "task": "site.poll",
                    "schedule": interval,
                    "options": {"queue": site_queue(name), "expires": interval},
                }
            },
            state_dir=state_dir,
        )

    def _credential(self, path: Path | None) -> str:
        if path is not None:
            try:
                return path.read_text().strip()
            except OSError as error:
                raise CommandError(f"cannot read the credential file: {error}") from None
        credential = os.environ.get(site_runtime.CREDENTIAL_ENV, "").strip()
        if not credential:
            raise CommandError(
                f"no credential: set {site_runtime.CREDENTIAL_ENV} or pass --credential-file "
                "(the federation admin's approval shows it once)"
            )
        return credential
