"""``manage.py site_console --state-dir PATH``: the site's own console, served by the site.

It serves the console's pages alone (not the coordinator's) on the loopback address,
from the site's state and data folders, and prints the address that signs its owner in.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.servers.basehttp import run

from worker.console import app
from worker.console.state import ConsoleError, console_secret

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 8700


class Command(BaseCommand):
    help = (
        "Serve this site's console on 127.0.0.1: its engines in service with predicted RUL "
        "and a maintenance plan, what joining is worth on its own engines, what left the "
        "site, its peers' key fingerprints and its privacy budget."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--state-dir", type=Path, required=True, help="the site worker's --state-dir"
        )
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="the site's data folder (default: the one its worker last ran with)",
        )
        parser.add_argument("--host", default="127.0.0.1", choices=LOOPBACK)
        parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")

    def handle(self, *args: Any, **options: Any) -> None:
        state_dir: Path = options["state_dir"].resolve()
        if not state_dir.is_dir():
            raise CommandError(
                f"{state_dir} is not a folder: give the --state-dir the site worker runs with"
            )
        try:
            state = app.configure(state_dir, options["data_dir"])
        except ConsoleError as error:
            raise CommandError(str(error)) from None
        if not state.data_dir.is_dir():
            raise CommandError(f"the site's data folder {state.data_dir} does not exist")
        # This process serves the console alone, to this machine alone.
        settings.ROOT_URLCONF = "worker.console.urls"
        settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
        # Plain HTTP on the loopback address, even where the coordinator's settings say
        # production: no TLS redirect, no HSTS, cookies that HTTP carries.
        settings.SECURE_SSL_REDIRECT = False
        settings.SECURE_HSTS_SECONDS = 0
        settings.CSRF_COOKIE_SECURE = False
        settings.SESSION_COOKIE_SECURE = False
        # It serves no static files: its pages carry their own style.
        warnings.filterwarnings("ignore", message="No directory at")
        host = options["host"]
        secret = console_secret(state_dir)

        def bound(port: str) -> None:
            shown = f"[{host}]" if ":" in host else host
            self.stdout.write(
                f"Console of site {state.name}: http://{shown}:{port}/?key={secret}", ending="\n"
            )
            self.stdout.flush()

        try:
            run(
                host,
                options["port"],
                WSGIHandler(),
                ipv6=":" in host,
                threading=True,
                on_bind=bound,
            )
        except OSError as error:
            raise CommandError(
                f"cannot serve on {host}:{options['port']}: {error.strerror} (pick another --port)"
            ) from None
        except KeyboardInterrupt:
            pass
