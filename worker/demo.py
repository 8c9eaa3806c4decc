"""The local demo: a coordinator, its web app and several demo sites on one machine.

Every role runs as its own process, started with the same management commands a
real deployment uses (``coordinator_worker``, ``site_worker``, gunicorn on the
WSGI app); only the data is prepared here, as a seeded partition of C-MAPSS
training engines, one folder per site.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q

from federation.core.private_files import private_folder, write_private
from federation.core.recipes import default_boosting
from federation.models import Federation, ModelVersion, Site
from federation.selectors.federations import round_timing
from federation.services import federations, sites
from turbofan.data.files import read_engine_file
from turbofan.data.partition import plan_iid, read_manifest, write_fleets, write_partition
from turbofan.data.source import find_data_dir
from worker.celery import COORDINATOR_QUEUE
from worker.console.state import console_secret
from worker.site_runtime import CREDENTIAL_ENV as SITE_CREDENTIAL_ENV
from worker.tasks import coordinator_health

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")
DEMO_FEDERATION = "Demo FD001 fleet"
DEMO_ADMIN = "demo-admin"
# After the last round each demo site adapts the model for this many epochs and chooses
# between it, the federation's and its own (its console shows the choice at work).
DEMO_PERSONAL_EPOCHS = 3
CONSOLE_PORT_OFFSET = 100  # site consoles listen from the pages' port + 100 up
# The demo admin's password, generated once and kept for local use (mode 0600).
ADMIN_PASSWORD_FILE = "demo-admin-password"


def demo_admin_password() -> tuple[str, Path]:
    """The demo admin's password and the file it is kept in (``var/``): generated on
    first use, the same for later demos on this machine."""
    path = Path(settings.VAR_DIR) / ADMIN_PASSWORD_FILE
    if path.is_file():
        return path.read_text().strip(), path
    password = secrets.token_urlsafe(12)
    write_private(path, password.encode())
    return password, path


GUNICORN_THREADS = 16


def web_command(bind: str, *, workers: int = 2, threads: int = 8) -> list[str]:
    """A gunicorn pool of the web app as the demo (and the API load benchmark) runs it:
    the pages on ``workers`` x ``threads``; run with ``SERVE=api``, the site API's own
    pool (1 worker: a site's long poll holds a thread while it waits, not a core)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--access-logfile",
        "-",
    ]


def api_command(bind: str) -> list[str]:
    return web_command(bind, workers=1, threads=GUNICORN_THREADS)


class DemoError(RuntimeError):
    """The demo could not start or finish; the message says which part and why."""


# The demo's trees stop at this many (the tuned default grows up to 300): every tree is a
# round per level, and the demo should finish in minutes.
DEMO_TREES = 100


@dataclass
class DemoConfig:
    subset: str = "FD001"
    sites: int = 4
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 8000
    rounds: int = 10
    model: str = "network"  # or "trees", "hybrid" (see federation create --model)
    trees: int = DEMO_TREES  # the most trees, with trees
    deadline: int = 120
    timeout: float = 180.0
    secure: bool = True
    root: Path = field(default_factory=lambda: Path(settings.VAR_DIR) / "demo")

    @property
    def plan(self) -> str:
        """What the federation trains, in words."""
        trees = f"boosted trees (at most {self.trees})"
        if self.model == "trees":
            return trees
        network = f"{self.rounds} rounds of a network"
        return network if self.model == "network" else f"{network}, then {trees}, blended"

    @property
    def url(self) -> str:
        """The pages."""
        return f"http://{self.host}:{self.port}/"

    @property
    def api_port(self) -> int:
        return self.port + 1

    @property
    def api_url(self) -> str:
        """The site API's own worker pool, which the sites talk to."""
        return f"http://{self.host}:{self.api_port}/"

    def console_port(self, index: int) -> int:
        """The port of the ``index``-th site's console (0-based)."""
        return self.port + CONSOLE_PORT_OFFSET + index

    def state_dir(self, site: str) -> Path:
        """Where a demo site's worker keeps its state (the site worker's default)."""
        return Path(settings.VAR_DIR) / "sites" / site


@dataclass
class Role:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def prepare_sites(config: DemoConfig) -> dict[str, Path]:
    """Partition the subset's training engines into one data folder per demo site, and
    deal its test engines out among them as each site's fleet in service.

    An existing partition made with the same subset, site count and seed is kept.
    """
    out = config.root / "sites"
    wanted = {"scheme": "iid", "seed": config.seed}
    folders: dict[str, Path] | None = None
    if out.exists():
        manifest = read_manifest(out)
        sites = manifest.get("sites", [])
        same = all(manifest.get(k) == v for k, v in wanted.items()) and len(sites) == config.sites
        if same and all(config.subset in s["engines"] for s in sites):
            folders = {s["name"]: out / s["name"] for s in sites}
    source = find_data_dir()
    if folders is None:
        units = read_engine_file(source / f"train_{config.subset}.txt")["unit"].to_numpy()
        plan = plan_iid(config.subset, units, config.sites, seed=config.seed)
        write_partition(plan, source, out, overwrite=True)
        folders = {share.name: out / share.name for share in plan.sites}
    write_fleets(source, config.subset, list(folders.values()), seed=config.seed)
    return folders


class Demo:
    """Starts, watches and stops the demo's processes."""

    def __init__(self, config: DemoConfig, say: Callable[[str], None]) -> None:
        self.config = config
        self.say = say
        self.roles: list[Role] = []
        self.logs = config.root / "logs"

    def start(self, site_dirs: dict[str, Path], credentials: dict[str, str]) -> None:
        self._check_port_free(len(site_dirs))
        self.logs.mkdir(parents=True, exist_ok=True)
        _purge_file_broker()
        host = self.config.host
        self._spawn(
            "web",
            web_command(f"{host}:{self.config.port}"),
            env={"SITE_API_URL": self.config.api_url},
        )
        self._spawn("api", api_command(f"{host}:{self.config.api_port}"), env={"SERVE": "api"})
        self._spawn("coordinator", [sys.executable, MANAGE, "coordinator_worker"])
        for site, folder in site_dirs.items():
            self._spawn(
                site,
                [
                    sys.executable,
                    MANAGE,
                    "site_worker",
                    "--coordinator",
                    self.config.api_url,
                    "--data-dir",
                    str(folder),
                    "--poll-interval",
                    "1",
                    # A plain demo federation is for debugging: its sites allow it.
                    *([] if self.config.secure else ["--allow-plain"]),
                ],
                env={SITE_CREDENTIAL_ENV: credentials[site]},
            )
        for index, (site, folder) in enumerate(site_dirs.items()):
            state = self.config.state_dir(site)
            private_folder(state)
            console_secret(state)  # made once here, before its console reads it
            self._spawn(
                f"console-{site}",
                [
                    sys.executable,
                    MANAGE,
                    "site_console",
                    "--state-dir",
                    str(state),
                    "--data-dir",
                    str(folder),
                    "--host",
                    host,
                    "--port",
                    str(self.config.console_port(index)),
                ],
            )

    def consoles(self, site_dirs: dict[str, Path]) -> dict[str, str]:
        """Each demo site's console address, with the key that signs its owner in."""
        return {
            site: f"http://{self.config.host}:{self.config.console_port(i)}/"
            f"?key={console_secret(self.config.state_dir(site))}"
            for i, site in enumerate(site_dirs)
        }

    def _check_port_free(self, sites: int) -> None:
        consoles = [self.config.console_port(i) for i in range(sites)]
        for port in (self.config.port, self.config.api_port, *consoles):
            with socket.socket() as probe:
                if probe.connect_ex((self.config.host, port)) == 0:
                    raise DemoError(
                        f"port {port} on {self.config.host} is in use: stop what runs there "
                        f"or pick another with --port (the pages use it, the site API the "
                        f"next one, the sites' consoles {CONSOLE_PORT_OFFSET} up)"
                    )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.logs / f"{name}.log"
        handle: IO[bytes] = log.open("wb")
        process = subprocess.Popen(
            argv,
            cwd=settings.BASE_DIR,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches the demo, which stops each role in order
        )
        self.roles.append(Role(name, process, log))

    def wait_until_ready(self, federation: Federation) -> None:
        """Wait for the web app, then for every site to introduce itself with its data
        and its identity key (secure rounds leave out a site without one)."""
        deadline = time.monotonic() + self.config.timeout
        self._wait_for_web(deadline)
        health = coordinator_health.apply_async(queue=COORDINATOR_QUEUE)
        while True:
            self._fail_if_any_died()
            waiting = (
                Site.objects.filter(memberships__federation=federation)
                .filter(Q(data_summary__isnull=True) | Q(identity_key=""))
                .count()
            )
            if not waiting and health.ready():
                health.get(propagate=True)
                health.forget()  # read once: no result left behind
                return
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{waiting} sites did not report their data within "
                    f"{self.config.timeout:.0f} s{self._log_hint()}"
                )
            time.sleep(0.3)

    def follow(self, federation: Federation, stop: threading.Event) -> Federation:
        """Print each round's result as it lands, until the federation ends.

        Gives up when a round stays open twice its deadline past the last progress.
        """
        shown: set[int] = set()
        dropped: set[int] = set()  # the rejected versions, said once
        patience = 2 * self.config.deadline + self.config.timeout
        last_progress = time.monotonic()
        while not stop.is_set():
            self._fail_if_any_died()
            federation.refresh_from_db()
            for version in federation.versions.filter(version__gt=0).order_by("version"):
                if version.version not in shown:
                    shown.add(version.version)
                    last_progress = time.monotonic()
                    self.say(format_version(version))
                if (
                    version.status == ModelVersion.Status.REJECTED
                    and version.version not in dropped
                ):
                    dropped.add(version.version)
                    self.say(f"version {version.version} rejected: {version.verdict}")
            if federation.status in (Federation.Status.FINISHED, Federation.Status.FAILED):
                return federation
            if time.monotonic() - last_progress > patience:
                raise DemoError(f"no progress for {patience:.0f} s{self._log_hint()}")
            time.sleep(0.5)
        raise DemoError("stopped before the federation finished")

    def _wait_for_web(self, deadline: float) -> None:
        for url in (self.config.url + "healthz", self.config.api_url + "healthz"):
            while not _answers(url):
                self._fail_if_any_died()
                if time.monotonic() > deadline:
                    raise DemoError(f"the web app did not answer at {url}{self._log_hint()}")
                time.sleep(0.3)

    def _fail_if_any_died(self) -> None:
        for role in self.roles:
            code = role.process.poll()
            if code is not None:
                tail = role.log.read_text(errors="replace").splitlines()[-15:]
                raise DemoError(
                    f"the {role.name} process exited with code {code}; last lines of "
                    f"{role.log}:\n  " + "\n  ".join(tail)
                )

    def _log_hint(self) -> str:
        return f"; see the logs in {self.logs}"

    def stop(self) -> None:
        """Ask every process to stop (warm shutdown), then make sure they did."""
        for role in self.roles:
            # The whole group: a worker's pool processes too, even if its main one died.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(role.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for role in self.roles:
            try:
                role.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(role.process.pid, signal.SIGKILL)
                role.process.wait()


def _purge_file_broker() -> None:
    """Drop messages a crashed earlier demo left in the file-system broker."""
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    folder = options.get("data_folder_in")
    if str(settings.CELERY_BROKER_URL).startswith("filesystem://") and folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def format_version(version: ModelVersion) -> str:
    literature = version.metrics.get("test", {}).get("literature", {})
    strict = version.metrics.get("test", {}).get("strict", {})
    line = (
        f"round {version.version}: global model test RMSE {literature.get('rmse', 0):.2f} "
        f"(strict {strict.get('rmse', 0):.2f}), NASA score {literature.get('score', 0):.0f}"
    )
    if version.round is not None:
        t = round_timing(round_=version.round)
        line += (
            f"; {t['total']:.2f} s: sites training {t['training_slowest_site']:.2f} s "
            f"(slowest), stages and transfer {t['waiting_and_transfer']:.2f} s, "
            f"aggregation {t['aggregating']:.2f} s"
        )
    return line


def setup_federation(
    config: DemoConfig, site_dirs: dict[str, Path]
) -> tuple[Federation, dict[str, str]]:
    """A fresh demo federation: an admin, one owner per site, every site approved.

    Returns the federation and each site's credential (issued once, as for a real site).
    """
    User = get_user_model()
    Federation.objects.filter(name=DEMO_FEDERATION).delete()
    Site.objects.filter(name__in=list(site_dirs)).delete()
    admin, _ = User.objects.get_or_create(username=DEMO_ADMIN)
    admin.set_password(demo_admin_password()[0])  # the admin signs in to approve requests
    admin.save(update_fields=["password"])
    boosting = None
    if config.model != "network":
        boosting = replace(default_boosting(), trees=config.trees)
    federation = federations.federation_create(
        name=DEMO_FEDERATION,
        admin=admin,
        subset=config.subset,
        rounds=0 if config.model == "trees" else config.rounds,
        boosting=boosting,
        min_sites=min(3, config.sites),
        deadline=config.deadline,
        secure=config.secure,
        personal_epochs=DEMO_PERSONAL_EPOCHS,
    )
    credentials = {}
    for name in site_dirs:
        owner, _ = User.objects.get_or_create(username=f"owner-{name}")
        site = sites.site_create(owner=owner, name=name)
        membership = sites.membership_request(federation=federation, site=site)
        sites.membership_approve(membership=membership)
        # Each demo owner gets their site's credential, as a real owner does on the site page.
        credentials[name] = sites.site_issue_credential(site=site)
    return federation, credentials
