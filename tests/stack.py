"""Real processes for integration tests: web (gunicorn), coordinator and site workers.

They run against the test database (committed data: use ``transactional_db``) and the
configured broker (Redis in CI, the file-system broker locally).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.db import connection

from tests.helpers import ROOT
from worker.celery import app


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
        self.env = {**os.environ, "DATABASE_URL": database_url(), "MEDIA_ROOT": str(tmp / "media")}

    def __enter__(self) -> Stack:
        # Tasks left on the coordinator's queue by an earlier run must not reach this one.
        app.control.purge()
        return self

    def __exit__(self, *exc: Any) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        return process

    def start_web(self) -> None:
        self.processes["web"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=(self.tmp / "web.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
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
        """Kill a worker and its pool without warning, as a crash or power cut would."""
        process = self.processes[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        subprocess.run(
            ["pkill", "-KILL", "-f", f"--state-dir {self.tmp / 'sites' / name}"], check=False
        )

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
