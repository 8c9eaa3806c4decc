"""How long a live secure round takes beyond its slowest site's training.

Runs the main command (``manage.py demo --headless``) in a fresh state folder, with real
processes: the web app, the coordinator's worker and one worker per site, on the embedded
defaults (SQLite and the file-system broker) or, with ``--database-url`` and
``--redis-url``, on PostgreSQL and Redis. Then it reads every training round the demo ran
from the database and prints, per round, its time from opening to the stored model, the
slowest site's training, each stage's time, the queue and aggregation, and the overhead:
the round's time minus the slowest site's training (stage hand-offs, transfers, the
masking, the queue, aggregating and scoring the new model).

The goal is checked on the median overhead over the rounds: at most 0.5 s on the embedded
defaults, at most 1 s on PostgreSQL and Redis (``--goal`` to set another). Exits 1 on a
miss.

    .venv/bin/python benchmarks/live_round.py --rounds 10 --sites 4
    .venv/bin/python benchmarks/live_round.py --rounds 10 --sites 4 \\
        --database-url postgres://postgres@127.0.0.1:5432/turbofan_bench \\
        --redis-url redis://127.0.0.1:6379/5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_EMBEDDED = 0.5
GOAL_SERVERS = 1.0
STAGE_NAMES = {
    "advertise_keys": "keys",
    "share_keys": "shares",
    "masked_input": "masked input",
    "unmask": "unmask",
    "plain_input": "plain input",
}


def run_demo(args: argparse.Namespace, env: dict[str, str]) -> None:
    command = [
        sys.executable,
        str(ROOT / "manage.py"),
        "demo",
        "--headless",
        "--rounds",
        str(args.rounds),
        "--sites",
        str(args.sites),
        "--port",
        str(args.port),
        *(["--plain"] if args.plain else []),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the demo failed:\n{done.stdout}\n{done.stderr}")
    print(f"the demo ran {args.rounds} rounds in {time.perf_counter() - started:.0f} s")


def rounds_of_the_demo() -> list[dict[str, Any]]:
    """Each training round of the demo federation, with its timing."""
    import django

    django.setup()
    from federation.models import Round
    from federation.selectors.federations import round_timing
    from worker.demo import DEMO_FEDERATION

    rows = []
    done = Round.objects.filter(
        federation__name=DEMO_FEDERATION, kind=Round.Kind.TRAIN, status=Round.Status.DONE
    ).order_by("number")
    for round_ in done:
        timing = round_timing(round_=round_)
        ends = timing["stage_ends"]
        stages, previous = {}, 0.0
        for stage, end in sorted(ends.items(), key=lambda item: item[1]):
            stages[stage] = end - previous
            previous = end
        rows.append(
            {
                "round": round_.number,
                "total": timing["total"],
                "training": timing["training_slowest_site"],
                "stages": stages,
                "after": timing["total"] - previous,  # queue, aggregation, scoring, storing
                "aggregating": timing["aggregating"],
                "overhead": timing["overhead"],
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    stage_order = [s for s in STAGE_NAMES if any(s in r["stages"] for r in rows)]
    header = ["round", "total", "slowest training"]
    header += [STAGE_NAMES[s] for s in stage_order]
    header += ["queue + aggregation", "overhead"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for row in rows:
        cells = [str(row["round"]), f"{row['total']:.3f}", f"{row['training']:.3f}"]
        cells += [f"{row['stages'].get(s, 0.0):.3f}" for s in stage_order]
        cells += [f"{row['after']:.3f}", f"{row['overhead']:.3f}"]
        print("| " + " | ".join(cells) + " |")
    print("\nSeconds. A stage's time runs from the end of the one before (the round's opening")
    print("for the first); the slowest site trains within the masked-input stage.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--plain", action="store_true", help="plain rounds, for comparison")
    parser.add_argument("--database-url", help="PostgreSQL (default: SQLite in a temp folder)")
    parser.add_argument("--redis-url", help="Redis as broker and results (default: files)")
    parser.add_argument("--goal", type=float, help="seconds of median overhead (see above)")
    args = parser.parse_args()
    servers = bool(args.database_url or args.redis_url)
    goal = args.goal if args.goal is not None else GOAL_SERVERS if servers else GOAL_EMBEDDED
    with tempfile.TemporaryDirectory(prefix="live-round-") as state:
        env = {**os.environ, "VAR_DIR": state, "DJANGO_SETTINGS_MODULE": "config.settings"}
        for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            env.pop(name, None)
        if args.database_url:
            env["DATABASE_URL"] = args.database_url
        if args.redis_url:
            env["REDIS_URL"] = args.redis_url
        where = "PostgreSQL and Redis" if servers else "the embedded defaults"
        mode = "plain" if args.plain else "secure"
        print(f"{args.sites} sites, {args.rounds} {mode} training rounds on {where}")
        run_demo(args, env)
        os.environ.update(env)
        rows = rounds_of_the_demo()
    if len(rows) != args.rounds:
        raise SystemExit(f"expected {args.rounds} training rounds, found {len(rows)}")
    print_table(rows)
    overhead = statistics.median(r["overhead"] for r in rows)
    training = statistics.median(r["training"] for r in rows)
    total = statistics.median(r["total"] for r in rows)
    met = overhead <= goal
    print(
        f"\nmedians: round {total:.3f} s, slowest training {training:.3f} s, overhead "
        f"{overhead:.3f} s; goal: overhead at most {goal:g} s: {'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
