"""Accuracy and time of the RUL report against the product's goals.

    python benchmarks/rul_goals.py [--part fd001 fd002 fd004 noniid] [--out DIR]

fd001:  FD001, IID split into 4 sites, seeds 0, 1, 2: centralised RMSE <= 12.5,
        federated <= 13.0 and within 5% of centralised, NASA score <= 300 (means
        over seeds); each site alone worse; the single-seed report under 300 s.
fd002, fd004: one seed, 4 sites: centralised and federated RMSE <= 16.
noniid: one site per subset (FD001-FD004), each subset's test set.

RMSE in the literature's convention (true test RUL capped at 125). The gradient-
boosting baseline runs in the same report as the named peer.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from federation.core.recipes import default_recipe, default_training  # noqa: E402
from federation.core.report import Report, ReportConfig, markdown_table  # noqa: E402
from turbofan.data.source import find_data_dir  # noqa: E402


def run(config: ReportConfig, out: Path) -> dict:
    report = Report(config, find_data_dir(), out, progress=False, say=lambda line: None).run()
    print(markdown_table(report))
    return report


def mean_rmse(report: dict, subset: str, setup: str) -> float:
    return report["results"][subset][setup]["mean"]["literature"]["rmse"]


def check(label: str, ok: bool) -> bool:
    print(f"  [{'ok' if ok else 'MISSED'}] {label}")
    return ok


def part_fd001(out: Path) -> bool:
    started = time.perf_counter()
    run(
        ReportConfig(
            ["FD001"], sites=4, seeds=[0], recipe=default_recipe(), training=default_training()
        ),
        out / "fd001-one-seed",
    )
    one_seed_seconds = time.perf_counter() - started
    three = run(
        ReportConfig(
            ["FD001"],
            sites=4,
            seeds=[0, 1, 2],
            recipe=default_recipe(),
            training=default_training(),
        ),
        out / "fd001",
    )
    central, fed = mean_rmse(three, "FD001", "centralised"), mean_rmse(three, "FD001", "federated")
    local = mean_rmse(three, "FD001", "local")
    score = three["results"]["FD001"]["federated"]["mean"]["literature"]["score"]
    central_score = three["results"]["FD001"]["centralised"]["mean"]["literature"]["score"]
    return all(
        [
            check(f"FD001 centralised RMSE {central:.2f} <= 12.5", central <= 12.5),
            check(f"FD001 federated RMSE {fed:.2f} <= 13.0", fed <= 13.0),
            check(
                f"federated within 5% of centralised ({fed / central - 1:+.1%})",
                fed <= 1.05 * central,
            ),
            check(
                f"NASA score centralised {central_score:.0f}, federated {score:.0f} <= 300",
                max(score, central_score) <= 300,
            ),
            check(f"each site alone worse: {local:.2f} vs federated {fed:.2f}", local > fed),
            check(
                f"single-seed FD001 report in {one_seed_seconds:.0f} s < 300 s",
                one_seed_seconds < 300,
            ),
        ]
    )


def part_multi_regime(subset: str, out: Path) -> bool:
    report = run(
        ReportConfig(
            [subset], sites=4, seeds=[0], recipe=default_recipe(), training=default_training()
        ),
        out / subset.lower(),
    )
    central, fed = mean_rmse(report, subset, "centralised"), mean_rmse(report, subset, "federated")
    return all(
        [
            check(f"{subset} centralised RMSE {central:.2f} <= 16", central <= 16),
            check(f"{subset} federated RMSE {fed:.2f} <= 16", fed <= 16),
        ]
    )


def part_noniid(out: Path) -> bool:
    run(
        ReportConfig(
            ["FD001", "FD002", "FD003", "FD004"],
            seeds=[0],
            scheme="by-subset",
            recipe=default_recipe(),
            training=default_training(),
        ),
        out / "noniid",
    )
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        nargs="+",
        default=["fd001", "fd002", "fd004", "noniid"],
        choices=["fd001", "fd002", "fd004", "noniid"],
    )
    parser.add_argument("--out", type=Path, default=None, help="keep the reports here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="rul-goals-"))
    results = []
    for part in args.part:
        print(f"\n## {part}\n")
        if part == "fd001":
            results.append(part_fd001(out))
        elif part == "noniid":
            results.append(part_noniid(out))
        else:
            results.append(part_multi_regime(part.upper(), out))
    print(f"\nReports in {out}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
