"""What secure aggregation costs a live round: the same federation, secure and plain.

Runs the main command (``manage.py demo --headless``) twice on the embedded defaults,
each in a fresh state folder, with the same sites, data split and rounds: once with
secure aggregation (the default) and once with ``--plain``. Every round line the demo
prints carries the round's wall time (opening to the new global model) and the slowest
site's training; the table compares their medians. A secure round needs four
exchanges between each site and the coordinator where a plain round needs one, so its
extra time is mostly polling: three more poll intervals (1 s in the demo).

    .venv/bin/python benchmarks/live_round.py --rounds 5 --sites 4
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUND_LINE = re.compile(
    r"round (?P<n>\d+): .*?; (?P<total>[\d.]+) s: sites training (?P<train>[\d.]+) s"
    r".*?aggregation (?P<agg>[\d.]+) s"
)


def run_demo(rounds: int, sites: int, port: int, plain: bool) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="live-round-") as state:
        env = {**os.environ, "VAR_DIR": state}
        env.pop("DATABASE_URL", None)  # the embedded defaults: SQLite, file broker
        env.pop("REDIS_URL", None)
        command = [
            sys.executable,
            str(ROOT / "manage.py"),
            "demo",
            "--headless",
            "--rounds",
            str(rounds),
            "--sites",
            str(sites),
            "--port",
            str(port),
            *(["--plain"] if plain else []),
        ]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(
                f"the demo failed ({'plain' if plain else 'secure'}):\n{done.stdout}\n{done.stderr}"
            )
        print(
            f"  {'plain' if plain else 'secure'}: demo took {time.perf_counter() - started:.0f} s"
        )
        return [
            {k: float(v) for k, v in m.groupdict().items()}
            for m in map(ROUND_LINE.search, done.stdout.splitlines())
            if m
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    results = {}
    for plain in (False, True):
        rows = run_demo(args.rounds, args.sites, args.port, plain)
        if len(rows) != args.rounds:
            raise SystemExit(f"expected {args.rounds} round lines, parsed {len(rows)}")
        results["plain" if plain else "secure"] = rows
    print(f"\n{args.sites} sites, {args.rounds} training rounds, medians over the rounds:\n")
    print("| mode | round wall time | slowest site training | aggregation |")
    print("|---|---|---|---|")
    for mode, rows in results.items():
        median = {k: statistics.median(r[k] for r in rows) for k in ("total", "train", "agg")}
        print(
            f"| {mode} | {median['total']:.2f} s | {median['train']:.2f} s | "
            f"{median['agg']:.2f} s |"
        )
    secure = statistics.median(r["total"] for r in results["secure"])
    plain = statistics.median(r["total"] for r in results["plain"])
    print(f"\nsecure over plain: +{secure - plain:.2f} s per round ({secure / plain:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
