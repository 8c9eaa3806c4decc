"""Loading a C-MAPSS training file and building its windows.

    python benchmarks/data_load.py [--subset FD004] [--repeat 5]

Times the strict reader against two unvalidated readers of the same file
(pandas.read_csv and numpy.loadtxt), then the feature pipeline: regimes,
per-regime scaling and every training window. Medians of --repeat runs in a
warm process; the one-off import of scikit-learn is timed separately.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from turbofan.data.files import read_engine_file  # noqa: E402
from turbofan.data.source import find_data_dir  # noqa: E402


def median_seconds(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", default="FD004")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    path = find_data_dir() / f"train_{args.subset}.txt"

    start = time.perf_counter()
    import sklearn.cluster  # noqa: F401  (the regime model fits with it)

    sklearn_import = time.perf_counter() - start
    from turbofan.data.features import FeaturePipeline

    frame = read_engine_file(path)

    def load_and_window() -> tuple[np.ndarray, np.ndarray]:
        loaded = read_engine_file(path)
        return FeaturePipeline.for_subset(args.subset).fit(loaded).training_windows(loaded)

    windows, _ = load_and_window()
    rows = [
        (
            "strict reader (this project)",
            median_seconds(lambda: read_engine_file(path), args.repeat),
        ),
        (
            "pandas.read_csv, no checks",
            median_seconds(lambda: pd.read_csv(path, sep=r"\s+", header=None), args.repeat),
        ),
        ("numpy.loadtxt, no checks", median_seconds(lambda: np.loadtxt(path), args.repeat)),
        (
            "fit regimes + scaling, build windows",
            median_seconds(
                lambda: FeaturePipeline.for_subset(args.subset).fit(frame).training_windows(frame),
                args.repeat,
            ),
        ),
        ("load + windows, end to end", median_seconds(load_and_window, args.repeat)),
    ]
    print(
        f"{path.name}: {len(frame):,} rows -> windows {tuple(windows.shape)}, "
        f"median of {args.repeat} runs"
    )
    print(f"{'step':<40} {'seconds':>8}")
    for name, seconds in rows:
        print(f"{name:<40} {seconds:>8.3f}")
    print(f"{'(one-off) import scikit-learn':<40} {sklearn_import:>8.3f}")


if __name__ == "__main__":
    main()
