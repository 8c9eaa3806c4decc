"""Which way to personalise earns its place: the ways side by side, one site per subset.

    python benchmarks/personal_variants.py [--subsets FD001 FD002 FD003] [--seed 0]
        [--variant fine-tune private-head ditto] [--readme README.md]

Each variant is one federation (one model, as a live federation trains: the ensemble's
first member is the one that personalises) of one site per subset, with the default
recipe and training and a personalisation round of 5 epochs; each site's candidates are
scored on its own subset's test set (literature RMSE), and the site's choice, made on
its validation engines, is shown beside them. ``--readme`` rewrites the table between
the ``personal-variants`` markers of that file, so that the README shows what this
script measured, not figures typed by hand. A comparison, not a goal: it exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.readme import write_between_markers  # noqa: E402
from federation.core.engine.simulation import run_simulation  # noqa: E402
from federation.core.engine.training import CHOICES  # noqa: E402
from federation.core.recipes import default_recipe, default_training  # noqa: E402
from federation.core.report import load_subset  # noqa: E402
from turbofan.data.features import REGIMES_BY_SUBSET  # noqa: E402
from turbofan.data.partition import plan_by_subset  # noqa: E402
from turbofan.data.source import find_data_dir  # noqa: E402
from turbofan.metrics import evaluate  # noqa: E402
from turbofan.models.artefact import RulModel  # noqa: E402

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "fine-tune": ("fine-tuning after the last round", {}),
    "private-head": ("private heads (FedPer) + fine-tuning", {"private_head": True}),
    "ditto": ("Ditto (mu 0.1) + fine-tuning", {"ditto_mu": 0.1}),
}
PERSONAL_EPOCHS = 5
MARKER = "personal-variants"
NAMES = {
    "alone": "alone",
    "global": "global",
    "personal": "fine-tuned",
    "mixture": "mixture",
    "ditto": "Ditto",
}


def run_variant(subsets: list[str], seed: int, settings: dict[str, Any]) -> dict[str, Any]:
    """One federation of one site per subset; per site, each candidate on its test set."""
    data_dir = find_data_dir()
    data = {s: load_subset(data_dir, s) for s in subsets}
    plan = plan_by_subset(
        {s: train["unit"].to_numpy() for s, (train, _) in data.items()}, seed=seed, holdout=0
    )
    frames, tests = {}, {}
    for share in plan.sites:
        (subset,) = share.engines
        frames[share.name] = data[subset][0]
        tests[share.name] = (subset, data[subset][1])
    recipe = dataclasses.replace(default_recipe(), ensemble=1)
    template = recipe.pipeline(n_regimes=max(REGIMES_BY_SUBSET.get(s, 1) for s in subsets))
    training = dataclasses.replace(
        default_training(), seed=seed, personal_epochs=PERSONAL_EPOCHS, **settings
    )
    started = time.perf_counter()
    result = run_simulation(frames, template, recipe, training)
    sites = {}
    for name, chosen in sorted(result.choices.items()):
        subset, test = tests[name]
        row: dict[str, Any] = {"subset": subset, "choice": chosen.choice}
        for candidate, members in chosen.candidates.items():
            model = RulModel(**{**result.model.__dict__, "members": members, "meta": {}})
            predicted = model.predict_frame(test.frame)["predicted_rul"].to_numpy()
            row[candidate] = evaluate(predicted, test.rul, cap=125)["literature"]["rmse"]
        sites[name] = row
    return {"sites": sites, "seconds": time.perf_counter() - started}


def table(results: dict[str, dict[str, Any]], subsets: list[str], seed: int) -> str:
    shown = [
        c for c in CHOICES if any(c in r for v in results.values() for r in v["sites"].values())
    ]
    lines = [
        f"One site per subset ({', '.join(subsets)}), seed {seed}, literature RMSE on each "
        "site's own test set; the site chose on its validation engines "
        "(`python benchmarks/personal_variants.py`):",
        "",
        f"| variant | site | {' | '.join(NAMES[c] for c in shown)} | chosen | vs alone |",
        f"|---|---|{'---:|' * len(shown)}---|---:|",
    ]
    for variant, result in results.items():
        rows = result["sites"]
        for name, row in rows.items():
            figures = " | ".join(f"{row[c]:.2f}" if c in row else "-" for c in shown)
            gain = row[row["choice"]] / row["alone"] - 1
            lines.append(
                f"| {VARIANTS[variant][0]} | {name} ({row['subset']}) | {figures} | "
                f"{row['choice']} | {gain:+.1%} |"
            )
        chosen = np.mean([r[r["choice"]] for r in rows.values()])
        alone = np.mean([r["alone"] for r in rows.values()])
        lines.append(
            f"| {VARIANTS[variant][0]} | **mean** | "
            + " | ".join(
                f"{np.mean([r[c] for r in rows.values()]):.2f}"
                if all(c in r for r in rows.values())
                else "-"
                for c in shown
            )
            + f" | {chosen:.2f} | {chosen / alone - 1:+.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", nargs="+", default=["FD001", "FD002", "FD003"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--readme", type=Path, default=None, help="rewrite its table here")
    args = parser.parse_args()
    results = {}
    for variant in args.variant:
        print(f"[{variant}] training ...", flush=True)
        results[variant] = run_variant(args.subsets, args.seed, VARIANTS[variant][1])
        print(f"[{variant}] {results[variant]['seconds']:.0f} s", flush=True)
    text = table(results, args.subsets, args.seed)
    print(text)
    if args.readme is not None:
        write_between_markers(args.readme, MARKER, text)
        print(f"rewrote the table in {args.readme}")


if __name__ == "__main__":
    main()
