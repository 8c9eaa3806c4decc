"""Run the whole product locally: ``python manage.py demo [--headless] [--rounds N]``."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from federation.errors import FederationError
from federation.models import Federation
from federation.services.federations import federation_start
from turbofan.data.files import DataFileError
from turbofan.data.source import DataSourceError
from worker.demo import (
    DEMO_ADMIN,
    DEMO_TREES,
    Demo,
    DemoConfig,
    DemoError,
    demo_admin_password,
    prepare_sites,
    setup_federation,
)


class Command(BaseCommand):
    help = (
        "Migrate, prepare demo sites from C-MAPSS engines, start the web app, the "
        "coordinator worker and one site worker per site, run a federation for --rounds "
        "rounds printing the global model's RMSE per round, and print the URL. With "
        "--headless, stop everything and exit once the federation is done."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--headless",
            action="store_true",
            help="exit when the federation is done (for CI and scripts)",
        )
        parser.add_argument("--rounds", type=int, default=10, help="the network's rounds")
        parser.add_argument(
            "--model",
            choices=("network", "trees", "hybrid"),
            default="network",
            help="what the federation trains (see federation create --model)",
        )
        parser.add_argument(
            "--trees",
            type=int,
            default=DEMO_TREES,
            help=f"with --model trees or hybrid, the most trees (default {DEMO_TREES})",
        )
        parser.add_argument("--sites", type=int, default=4, help="number of demo sites")
        parser.add_argument(
            "--subset", default="FD001", choices=["FD001", "FD002", "FD003", "FD004"]
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of the engine split")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--deadline", type=int, default=120, help="seconds a round waits for its sites"
        )
        parser.add_argument(
            "--plain",
            action="store_true",
            help="plain aggregation, for debugging: the coordinator sees every site's update",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=180.0,
            help="seconds to wait for every process to start",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = DemoConfig(
            subset=options["subset"],
            sites=options["sites"],
            seed=options["seed"],
            host=options["host"],
            port=options["port"],
            rounds=options["rounds"],
            model=options["model"],
            trees=options["trees"],
            deadline=options["deadline"],
            timeout=options["timeout"],
            secure=not options["plain"],
        )
        say = self.stdout.write
        say("Migrating the database ...")
        call_command("migrate", interactive=False, verbosity=0)
        try:
            say(f"Preparing {config.sites} demo sites from {config.subset} ...")
            site_dirs = prepare_sites(config)
        except (DataSourceError, DataFileError, ValueError) as error:
            raise CommandError(str(error)) from None
        try:
            federation, credentials = setup_federation(config, site_dirs)
        except FederationError as error:
            raise CommandError(f"{error} (--sites)") from None
        demo = Demo(config, say)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            demo.start(site_dirs, credentials)
            say(
                f"Starting the web app, the coordinator and {config.sites} site workers "
                f"(logs in {demo.logs}) ..."
            )
            demo.wait_until_ready(federation)
            say(self.style.SUCCESS(f"The federation is up at {config.url}"))
            say(
                "Each site's own console (served by the site, with its fleet in service, "
                "its plan and what joining is worth; open the address, it signs you in):"
            )
            for site, address in demo.consoles(site_dirs).items():
                say(f"  {site}: {address}")
            password, kept = demo_admin_password()
            say(
                f"Sign in at {config.url}accounts/login/ as {DEMO_ADMIN} with password "
                f"{password} (kept in {kept}) to approve sites that ask to join"
            )
            federation_start(federation=federation)
            say(f"Running '{federation.name}', {config.plan}: {federation.privacy_label}")
            federation = demo.follow(federation, stop)
            if federation.status == Federation.Status.FAILED:
                raise DemoError(f"the federation stopped: {federation.reason}")
            # The Tycoon replays every run-to-failure engine of the subset, each predicted
            # by fold models that never saw it, trained as this federation trains.
            say("Building the Turbofan Tycoon's prediction pack (cross-fitted) ...")
            call_command(
                "tycoon_pack", crossfit=True, subset=config.subset, federation=federation.name
            )
            say(self.style.SUCCESS(f"Done: {config.plan}. Browse {config.url}"))
            if not options["headless"]:
                say("Press Ctrl-C to stop.")
                while not stop.is_set():
                    time.sleep(0.5)
        except DemoError as error:
            raise CommandError(str(error)) from None
        except KeyboardInterrupt:
            pass
        finally:
            say("Stopping ...")
            demo.stop()
