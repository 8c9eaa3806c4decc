"""The coordinator's side of federated training: merging what sites send."""

from __future__ import annotations

import math

import numpy as np

from turbofan.data.features import FeaturePipeline, RegimeModel, SensorMoments


def merge_regimes(
    site_points: list[tuple[np.ndarray, np.ndarray]], n_regimes: int, seed: int = 0
) -> RegimeModel:
    """Operating regimes of the federation, from every site's points and counts."""
    points = np.concatenate([p for p, _ in site_points])
    counts = np.concatenate([c for _, c in site_points])
    return RegimeModel.fit_points(points, counts, n_regimes, seed)


def merge_pipeline(
    template: FeaturePipeline, regimes: RegimeModel, site_moments: list[SensorMoments]
) -> FeaturePipeline:
    """The federation's feature pipeline from the sites' summed moments."""
    total = site_moments[0]
    for moments in site_moments[1:]:
        total = total + moments
    return template.unfitted().fit_moments(regimes, total)


def merge_validation(reports: list[tuple[float, int]]) -> float:
    """RMSE over all sites' validation windows from their sums of squared errors."""
    sse = sum(s for s, _ in reports)
    count = sum(n for _, n in reports)
    return math.sqrt(sse / count) if count else math.nan
