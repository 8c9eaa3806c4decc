"""The local demo: a coordinator, its web app and several demo sites on one machine.

Every role runs as its own process, started with the same management commands a
real deployment uses (``coordinator_worker``, ``site_worker``, gunicorn on the
WSGI app); only the data is prepared here, as a seeded partition of C-MAPSS
training engines, one folder per site.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from celery.result import AsyncResult
from django.conf import settings

from turbofan.data.files import read_engine_file
from turbofan.data.partition import plan_iid, read_manifest, write_partition
from turbofan.data.source import find_data_dir
from worker.celery import COORDINATOR_QUEUE, site_queue
from worker.tasks import coordinator_health, site_describe_data

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")


class DemoError(RuntimeError):
    """The demo could not start or finish; the message says which part and why."""


@dataclass
class DemoConfig:
    subset: str = "FD001"
    sites: int = 4
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 8000
    timeout: float = 180.0
    root: Path = field(default_factory=lambda: Path(settings.VAR_DIR) / "demo")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


@dataclass
class Role:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def prepare_sites(config: DemoConfig) -> dict[str, Path]:
    """Partition the subset's training engines into one data folder per demo site.

    An existing partition made with the same subset, site count and seed is kept.
    """
    out = config.root / "sites"
    wanted = {"scheme": "iid", "seed": config.seed}
    if out.exists():
        manifest = read_manifest(out)
        sites = manifest.get("sites", [])
        same = all(manifest.get(k) == v for k, v in wanted.items()) and len(sites) == config.sites  # type: ignore[arg-type]
        if same and all(config.subset in s["engines"] for s in sites):  # type: ignore[union-attr]
            return {s["name"]: out / s["name"] for s in sites}  # type: ignore[index]
    source = find_data_dir()
    units = read_engine_file(source / f"train_{config.subset}.txt")["unit"].to_numpy()
    plan = plan_iid(config.subset, units, config.sites, seed=config.seed)
    write_partition(plan, source, out, overwrite=True)
    return {share.name: out / share.name for share in plan.sites}


class Demo:
    """Starts, watches and stops the demo's processes."""

    def __init__(self, config: DemoConfig, say: Callable[[str], None]) -> None:
        self.config = config
        self.say = say
        self.roles: list[Role] = []
        self.logs = config.root / "logs"

    def start(self, site_dirs: dict[str, Path]) -> None:
        self._check_port_free()
        self.logs.mkdir(parents=True, exist_ok=True)
        _purge_file_broker()
        bind = f"{self.config.host}:{self.config.port}"
        self._spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi",
                "--bind",
                bind,
                "--workers",
                "2",
                "--access-logfile",
                "-",
            ],
        )
        self._spawn("coordinator", [sys.executable, MANAGE, "coordinator_worker"])
        for site, folder in site_dirs.items():
            self._spawn(
                site,
                [sys.executable, MANAGE, "site_worker", "--site", site, "--data-dir", str(folder)],
            )

    def _check_port_free(self) -> None:
        with socket.socket() as probe:
            if probe.connect_ex((self.config.host, self.config.port)) == 0:
                raise DemoError(
                    f"port {self.config.port} on {self.config.host} is in use: stop what runs "
                    "there or pick another with --port"
                )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.logs / f"{name}.log"
        handle: IO[bytes] = log.open("wb")
        process = subprocess.Popen(
            argv,
            cwd=settings.BASE_DIR,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            start_new_session=True,  # Ctrl-C reaches the demo, which stops each role in order
        )
        self.roles.append(Role(name, process, log))

    def wait_until_ready(self) -> dict[str, dict[str, object]]:
        """Wait for the web app and every worker to answer; their replies by role."""
        deadline = time.monotonic() + self.config.timeout
        self._wait_for_web(deadline)
        pending: dict[str, AsyncResult] = {
            "coordinator": coordinator_health.apply_async(queue=COORDINATOR_QUEUE)
        }
        for role in self.roles:
            if role.name not in ("web", "coordinator"):
                pending[role.name] = site_describe_data.apply_async(queue=site_queue(role.name))
        replies: dict[str, dict[str, object]] = {}
        while pending:
            self._fail_if_any_died()
            for name, result in list(pending.items()):
                if result.ready():
                    replies[name] = result.get(propagate=True)
                    del pending[name]
            if time.monotonic() > deadline:
                raise DemoError(
                    f"no answer within {self.config.timeout:.0f} s from: "
                    f"{', '.join(sorted(pending))}{self._log_hint()}"
                )
            time.sleep(0.2)
        return replies

    def _wait_for_web(self, deadline: float) -> None:
        url = self.config.url + "healthz"
        while time.monotonic() < deadline:
            self._fail_if_any_died()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        raise DemoError(f"the web app did not answer at {url}{self._log_hint()}")

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
            if role.process.poll() is None:
                role.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for role in self.roles:
            try:
                role.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(role.process.pid, signal.SIGKILL)
                role.process.wait()


def _purge_file_broker() -> None:
    """Drop messages a crashed earlier demo left in the file-system broker."""
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    folder = options.get("data_folder_in")
    if settings.CELERY_BROKER_URL.startswith("filesystem://") and folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)


def format_site_table(replies: dict[str, dict[str, object]]) -> str:
    lines = [f"{'site':<10} {'engines':>8} {'rows':>8}  subsets"]
    for name, reply in sorted(replies.items()):
        if name == "coordinator":
            continue
        if not reply.get("ok"):
            lines.append(f"{name:<10} data rejected: {reply.get('error')}")
            continue
        subsets = ",".join(reply["subsets"])  # type: ignore[arg-type]
        lines.append(f"{name:<10} {reply['train_engines']:>8} {reply['train_rows']:>8}  {subsets}")
    return "\n".join(lines)


def summary_json(replies: dict[str, dict[str, object]]) -> str:
    return json.dumps(replies, sort_keys=True)
