"""Real processes for integration tests: web (gunicorn), coordinator and site workers.

They run against the test database (committed data: use ``transactional_db``) and the
configured broker (Redis in CI, the file-system broker locally).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from tests.helpers import ROOT
from worker.celery import app

# Seconds every process of a stack gets, together, to stop before it is killed.
STOP_SECONDS = 5


def database_url() -> str:
    """The URL of the database the tests run on, for child processes."""
    config = connection.settings_dict
    if config["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{config['NAME']}"
    user = config["USER"] + (f":{config['PASSWORD']}" if config["PASSWORD"] else "")
    return f"postgres://{user}@{config['HOST']}:{config['PORT'] or 5432}/{config['NAME']}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # The same database and media folder as the test process, which reads what they write.
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        }

    def __enter__(self) -> Stack:
        # Tasks left on the coordinator's queue by an earlier run must not reach this one.
        app.control.purge()
        return self

    def __exit__(self, *exc: Any) -> None:
        # Each process leads its own group: signalling the group stops its pool and beat
        # children too, even where the leader is already gone.
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        # One grace period for all: a worker still training finishes its task on SIGTERM
        # (a warm shutdown), which a test that is over does not need to wait for.
        deadline = time.monotonic() + STOP_SECONDS
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=(self.tmp / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        argv = [sys.executable, str(ROOT / "manage.py"), *args]
        return self._spawn(name, argv, {**self.env, **(env or {})})

    def start_module(
        self, name: str, module: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``python -m module args`` from the project's root (a scripted member, say)."""
        argv = [sys.executable, "-m", module, *args]
        return self._spawn(name, argv, {**self.env, "PYTHONPATH": str(ROOT), **(env or {})})

    def start_web(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "2",
            "--threads",
            "16",  # each site's long poll for work holds a thread
        ]
        self._spawn("web", argv, self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"the web app did not start: {self.log('web')}")

    def start_site(self, name: str, data_dir: Path, credential: str) -> None:
        self.start(
            name,
            "site_worker",
            "--coordinator",
            self.url,
            "--data-dir",
            str(data_dir),
            "--poll-interval",
            "1",
            "--state-dir",
            str(self.tmp / "sites" / name),
            env={"SITE_CREDENTIAL": credential},
        )

    def kill(self, name: str) -> None:
        """Kill a worker with its pool and beat, without warning, as a crash would."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
