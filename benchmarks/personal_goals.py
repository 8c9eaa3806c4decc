"""Personalisation against its goals: does every site gain by joining?

    python benchmarks/personal_goals.py [--part by-subset by-subset-3 iid4 iid20 global]
        [--seeds 0 1 2] [--personal-epochs 5] [--private-head | --ditto MU]
        [--model network|trees|hybrid] [--fresh-optimisers]
        [--out DIR] [--check DIR]

by-subset:   one site per subset, FD001-FD004 (4 sites); the whole report in < 15 min
by-subset-3: FD001 + FD002 + FD003 (3 sites)
             in both: every site's chosen model at most its alone RMSE + 0.1 on its own
             subset's test set, and the mean over sites at least 5% below the mean alone
iid4:        FD001, IID, 4 sites: the mean chosen model at most the global model + 0.1
iid20:       FD001, IID, 20 sites (5 engines each): the mean chosen model at most 13.0
             (one model per setup, not an ensemble)
global:      FD001, IID, 4 sites, one federated model (not an ensemble): at most 11.1, and
             within 3% of the centralised model of the same family

Means over the seeds, RMSE in the literature's convention (true test RUL capped at 125).
"alone" is each site's model trained alone in the personalisation round, for as many
epochs as the federation trained; every choice is made on validation engines only.
``--check DIR`` checks the reports already in DIR (one folder per part) without training;
``--readme README.md`` writes each part's per-site table and goals between its own
``personal-goals-<part>`` markers there, leaving the other parts' as they are. Exits 1
if a goal is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.readme import write_between_markers  # noqa: E402
from federation.core.engine.training import CHOICES, FederatedTraining  # noqa: E402
from federation.core.recipes import (  # noqa: E402
    default_boosting,
    default_recipe,
    default_training,
)
from federation.core.report import (  # noqa: E402
    Report,
    ReportConfig,
    markdown_table,
    personal_table,
)
from turbofan.data.source import find_data_dir  # noqa: E402

PARTS: dict[str, dict[str, Any]] = {
    "by-subset": {"subsets": ["FD001", "FD002", "FD003", "FD004"], "scheme": "by-subset"},
    "by-subset-3": {"subsets": ["FD001", "FD002", "FD003"], "scheme": "by-subset"},
    "iid4": {"subsets": ["FD001"], "sites": 4},
    # One member per setup: the choice is made against the one model a live federation
    # trains, and twenty sites' three federations a seed would take three times as long.
    "iid20": {"subsets": ["FD001"], "sites": 20, "members": 1},
    "global": {"subsets": ["FD001"], "sites": 4, "one_model": True, "members": 1},
}
TIME_LIMIT = 15 * 60  # seconds, for the by-subset report of all four subsets


# Every goal's line as checked, for the README.
CHECKED: list[str] = []


def check(label: str, ok: bool) -> bool:
    line = f"[{'ok' if ok else 'MISSED'}] {label}"
    CHECKED.append(line)
    print(f"  {line}")
    return ok


def run_part(
    part: str,
    seeds: list[int],
    epochs: int,
    out: Path,
    private_head: bool = False,
    ditto_mu: float = 0.0,
    model: str = "network",
    site_optimiser: bool = True,
) -> dict[str, Any]:
    spec = PARTS[part]
    recipe = default_recipe()
    if spec.get("members") == 1:
        recipe = dataclasses.replace(recipe, ensemble=1)
    training = dataclasses.replace(
        default_training(),
        personal_epochs=0 if spec.get("one_model") else epochs,
        private_head=private_head and not spec.get("one_model"),
        ditto_mu=0.0 if spec.get("one_model") else ditto_mu,
        site_optimiser=site_optimiser,
    )
    if model != "network":
        training = dataclasses.replace(training, boosting=default_boosting().to_dict())
    if model == "trees":  # no network rounds: the trees grow on their own
        training = dataclasses.replace(training, rounds=0)
    config = ReportConfig(
        spec["subsets"],
        sites=spec.get("sites", len(spec["subsets"])),
        seeds=seeds,
        scheme=spec.get("scheme", "iid"),
        recipe=recipe,
        training=training,
    )
    started = time.perf_counter()
    report = Report(config, find_data_dir(), out / part, progress=False, say=print).run()
    report["wall_seconds"] = time.perf_counter() - started
    print(markdown_table(report))
    return report


def site_means(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per site, the mean over seeds of each candidate on its own test set."""
    means = {}
    for site, rows in report.get("personalisation", {}).items():
        means[site] = {
            key: float(np.mean([r[key] for r in rows]))
            for key in (*CHOICES, "chosen")
            if key in rows[0]
        }
    return means


def goals(part: str, report: dict[str, Any]) -> bool:
    if part == "global":
        results = report["results"]["FD001"]
        fed = results["federated"]["mean"]["literature"]["rmse"]
        central = results["centralised"]["mean"]["literature"]["rmse"]
        return all(
            [
                check(f"one federated model: RMSE {fed:.2f} <= 11.1", fed <= 11.1),
                check(
                    f"within 3% of centralised {central:.2f} ({fed / central - 1:+.1%})",
                    fed <= 1.03 * central,
                ),
            ]
        )
    means = site_means(report)
    if not means:
        return check("the report has a personalisation table", False)
    chosen = float(np.mean([m["chosen"] for m in means.values()]))
    alone = float(np.mean([m["alone"] for m in means.values()]))
    global_ = float(np.mean([m["global"] for m in means.values()]))
    if part.startswith("by-subset"):
        results = [
            check(
                f"{site}: chosen {m['chosen']:.2f} <= alone {m['alone']:.2f} + 0.1",
                m["chosen"] <= m["alone"] + 0.1,
            )
            for site, m in sorted(means.items())
        ]
        results.append(
            check(
                f"mean chosen {chosen:.2f} at least 5% below mean alone {alone:.2f} "
                f"({chosen / alone - 1:+.1%})",
                chosen <= 0.95 * alone,
            )
        )
        if part == "by-subset":
            seeds = len(report["config"]["seeds"])
            seconds = report.get("wall_seconds", report["seconds"]) / seeds
            results.append(
                check(f"report in {seconds:.0f} s a seed < {TIME_LIMIT} s", seconds < TIME_LIMIT)
            )
        return all(results)
    if part == "iid4":
        return check(
            f"mean chosen {chosen:.2f} <= global {global_:.2f} + 0.1", chosen <= global_ + 0.1
        )
    return check(f"mean chosen {chosen:.2f} <= 13.0 (global {global_:.2f})", chosen <= 13.0)


def readme_section(part: str, report: dict[str, Any], checked: list[str]) -> str:
    """One part's per-site table and goal lines, for the README."""
    subsets = PARTS[part]["subsets"]
    seeds = ", ".join(map(str, report["config"]["seeds"]))
    seconds = report.get("wall_seconds", report["seconds"])
    table = personal_table(report["personalisation"]) if "personalisation" in report else []
    training = FederatedTraining.from_dict(report["config"]["training"])
    fresh = "" if training.site_optimiser else ", fresh site optimisers"
    title = (
        f"`{part}` ({', '.join(subsets)}, {training.family}{fresh}, seeds {seeds}, the "
        f"whole report in {seconds:.0f} s):"
    )
    return "\n".join([title, "", *table[2:], "", *(f"- {line}" for line in checked)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--personal-epochs", type=int, default=5)
    parser.add_argument(
        "--private-head", action="store_true", help="FedPer: the sites keep the output layer"
    )
    parser.add_argument(
        "--ditto", type=float, default=0.0, metavar="MU", help="Ditto's proximal weight"
    )
    parser.add_argument(
        "--model",
        choices=("network", "trees", "hybrid"),
        default="network",
        help="what every setup trains",
    )
    parser.add_argument(
        "--fresh-optimisers",
        action="store_true",
        help="every site's optimiser starts afresh each round (plain FedAvg)",
    )
    parser.add_argument("--out", type=Path, default=None, help="keep the reports here")
    parser.add_argument(
        "--check", type=Path, default=None, help="check the reports in this folder, no training"
    )
    parser.add_argument("--readme", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="personal-goals-"))
    results = []
    sections = []
    for part in args.part:
        print(f"\n## {part}\n")
        if args.check is not None:
            report = json.loads((args.check / part / "report.json").read_text())
        else:
            report = run_part(
                part,
                args.seeds,
                args.personal_epochs,
                out,
                args.private_head,
                args.ditto,
                args.model,
                not args.fresh_optimisers,
            )
        CHECKED.clear()
        results.append(goals(part, report))
        sections.append(readme_section(part, report, CHECKED))
    if args.check is None:
        print(f"\nReports in {out}")
    if args.readme is not None:
        for part, section in zip(args.part, sections, strict=True):
            write_between_markers(args.readme, f"personal-goals-{part}", section)
        print(f"rewrote the results of {', '.join(args.part)} in {args.readme}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
