"""Whether the site API stays quick while the public pages are under load.

Runs the main command (``manage.py demo --headless``) in a fresh state folder to fill a
federation with rounds and model versions, then serves the web app as the demo does
(gunicorn: the pages' pool, and the site API's own pool on the next port) and measures
``GET /api/v1/work`` from a site, one request at a time, in four phases:

- quiet: nothing else hits the server;
- progress: 50 connections poll the federation's public ``progress.json`` as fast as
  they can, without ``If-None-Match`` (the worst case; a browser revalidates);
- page: 50 connections load the federation's page (HTML, computed each time);
- logins: 6 connections post wrong passwords to the login form as fast as they can.

The goal: a p99 under 100 ms for ``/api/v1/work`` in every loaded phase (``--goal`` to
set another). Exits 1 on a miss. The load runs in its own process, on the same cores.

    .venv/bin/python benchmarks/api_load.py
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_MS = 100.0


def fill(args: argparse.Namespace, env: dict[str, str]) -> None:
    command = [
        sys.executable,
        str(ROOT / "manage.py"),
        "demo",
        "--headless",
        "--rounds",
        str(args.rounds),
        "--sites",
        "3",
        "--port",
        str(args.port),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the demo failed:\n{done.stdout}\n{done.stderr}")


def site_credential() -> tuple[int, str]:
    """The demo federation's id and a fresh credential for one of its sites."""
    import django

    django.setup()
    from federation.models import Federation
    from federation.services.sites import site_issue_credential
    from worker.demo import DEMO_FEDERATION

    federation = Federation.objects.get(name=DEMO_FEDERATION)
    site = federation.memberships.select_related("site").first().site  # type: ignore[union-attr]
    return federation.id, site_issue_credential(site=site)


def serve(port: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """The pages' pool on ``port`` and the site API's own pool on ``port + 1``, as the
    demo runs them."""
    from worker.demo import api_command, web_command

    processes = [
        subprocess.Popen(
            command, env=extra, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for command, extra in (
            (web_command(f"127.0.0.1:{port}"), env),
            (api_command(f"127.0.0.1:{port + 1}"), {**env, "SERVE": "api"}),
        )
    ]
    deadline = time.monotonic() + 30
    for each in (port, port + 1):
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", each, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                for process in processes:
                    process.terminate()
                raise SystemExit("the web app did not start")
            time.sleep(0.2)
    return processes


def _hammer(port: int, kind: str, path: str, connections: int, stop: Any, counts: Any) -> None:
    """``connections`` threads, each one connection, sending requests until ``stop``."""

    def one() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        csrf, cookie = "", ""
        while not stop.is_set():
            try:
                if kind == "login" and not csrf:
                    connection.request("GET", path)
                    response = connection.getresponse()
                    page = response.read().decode()
                    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
                    csrf = match.group(1) if match else ""
                    cookie = (response.getheader("Set-Cookie") or "").split(";")[0]
                if kind == "login":
                    body = urllib.parse.urlencode(
                        {"csrfmiddlewaretoken": csrf, "username": "admin", "password": "wrong"}
                    )
                    headers = {
                        "Content-Type": "application/x-www-form-urlencoded",
                        "Cookie": cookie,
                        "Referer": f"http://127.0.0.1:{port}{path}",
                    }
                    connection.request("POST", path, body=body, headers=headers)
                else:
                    connection.request("GET", path)
                response = connection.getresponse()
                size = len(response.read())
                with counts.get_lock():
                    counts[0] += 1
                    counts[1] += size
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                csrf = ""

    threads = [threading.Thread(target=one, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def measure(port: int, credential: str, requests: int) -> list[float]:
    """Milliseconds of each of ``requests`` sequential GET /api/v1/work (no long poll)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {credential}"}
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        connection.request("GET", "/api/v1/work?wait=0", headers=headers)
        response = connection.getresponse()
        response.read()
        times.append((time.perf_counter() - started) * 1000)
        if response.status not in (200, 204):
            raise SystemExit(f"/api/v1/work answered {response.status}")
        time.sleep(0.01)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def phase(
    name: str, port: int, credential: str, args: argparse.Namespace, load: tuple[str, str, int]
) -> dict[str, float]:
    """``load`` on the pages' pool at ``port``, /api/v1/work measured on the API's pool."""
    stop = multiprocessing.Event()
    counts = multiprocessing.Array("d", 2)
    loader = None
    if load[2]:
        loader = multiprocessing.Process(
            target=_hammer, args=(port, load[0], load[1], load[2], stop, counts)
        )
        loader.start()
        time.sleep(args.warmup)
    started = time.perf_counter()
    with counts.get_lock():
        counts[0] = counts[1] = 0
    times = measure(port + 1, credential, args.requests)
    elapsed = time.perf_counter() - started
    with counts.get_lock():
        served, size = counts[0], counts[1]
    stop.set()
    if loader is not None:
        loader.join(timeout=60)
        if loader.is_alive():
            loader.kill()
    row = {
        "p50": statistics.median(times),
        "p99": percentile(times, 99),
        "max": max(times),
        "load_per_s": served / elapsed,
        "load_bytes": size / served if served else 0.0,
    }
    print(
        f"{name:<9} /api/v1/work p50 {row['p50']:6.1f} ms  p99 {row['p99']:6.1f} ms  "
        f"max {row['max']:6.1f} ms"
        + (
            f"   load: {row['load_per_s']:.0f} requests/s, {row['load_bytes'] / 1000:.1f} kB each"
            if load[2]
            else ""
        )
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="training rounds to fill")
    parser.add_argument("--requests", type=int, default=400, help="/api/v1/work per phase")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--logins", type=int, default=6)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--goal", type=float, default=GOAL_MS, help="p99 goal (ms)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="api-load-") as folder:
        env = {
            **os.environ,
            "VAR_DIR": folder,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": "",
            "REDIS_URL": "",
        }
        env = {k: v for k, v in env.items() if v != ""}
        os.environ.clear()
        os.environ.update(env)
        fill(args, env)
        federation_id, credential = site_credential()
        servers = serve(args.port, env)
        try:
            progress = f"/federations/{federation_id}/progress.json"
            rows = {
                "quiet": phase("quiet", args.port, credential, args, ("", "", 0)),
                "progress": phase(
                    "progress",
                    args.port,
                    credential,
                    args,
                    ("get", progress, args.connections),
                ),
                "page": phase(
                    "page",
                    args.port,
                    credential,
                    args,
                    ("get", f"/federations/{federation_id}/", args.connections),
                ),
                "logins": phase(
                    "logins",
                    args.port,
                    credential,
                    args,
                    ("login", "/accounts/login/", args.logins),
                ),
            }
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=30)
    loaded = ("progress", "page", "logins")
    missed = [name for name in loaded if rows[name]["p99"] >= args.goal]
    for name in loaded:
        verdict = "MISSED" if name in missed else "met"
        print(f"goal: p99 under {args.goal:.0f} ms with {name} load: {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
