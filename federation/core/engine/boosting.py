"""Boosted trees through the round engine: the sites' bins, then one tree level a round.

A *sketch* round sums every site's window summaries counted on the public grid of
:func:`turbofan.models.trees.grid_counts`; the coordinator reads the bins' edges off the
summed counts (the pooled quantiles) and starts an empty model.

Each *boost* round grows one level of the tree being grown. Every site routes its
training windows down the tree so far, and puts under masks the sums of its gradients
and hessians per open node, feature and bin, then its validation score as training
rounds do::

    [G / (scale * cap), H / scale  for each (node, feature, bin)...,  w * mse / VAL_UNIT,
     w * has_validation]

with ``scale`` the public sum of the sites' (bounded) reported rows
(:func:`federation.core.engine.rounds.row_shares`) and ``cap`` the RUL
cap, so that each site's values are its share of the rows at most. The coordinator sees
only the sum: the histograms of the pooled rows, from which it splits the open nodes
(:func:`turbofan.models.trees.grow`), the same split a model grown on all the rows in
one place would make. A finished tree joins the model as a new candidate version, which
the next round's sites score against the last accepted model and vote on, as they do a
network's. Growing stops once ``patience`` trees bring no better pooled validation RMSE
(the model is then cut back to its best number of trees) or at the most trees.

What a lying site can do: put any values within the round's range (twice the largest
public share of the rows) in its histograms. That can bend a split, and the vote catches a tree that
makes the model worse; it cannot read anything of another site's rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from federation.core import messages as m
from federation.core.engine.training import (
    TRAINING_EXTRAS,
    VAL_UNIT,
    Judged,
    LocalData,
    LocalResult,
    PersonalChoice,
    choose_model,
    combine,
    decode_scores,
    encode_scores,
)
from turbofan.models.trees import (
    GRID_CELLS,
    SHARES,
    BoostingSettings,
    Ensemble,
    GrowingTree,
    blend,
    edges_from_counts,
    fit_trees,
    grid_counts,
    grow,
    histograms,
    rebase,
    sample,
    share_from_errors,
    summaries,
)


def summary_count(channels: int) -> int:
    """Window summaries per window: four of each input channel."""
    return 4 * channels


# --- the sketch round -----------------------------------------------------------------------------


def sketch_length(channels: int) -> int:
    return summary_count(channels) * GRID_CELLS


def encode_sketch(local: LocalData, scale: float) -> np.ndarray:
    """A site's training windows' summaries counted on the public grid, over ``scale``."""
    return grid_counts(summaries(local.x)).ravel() / scale


def prior(cap: float) -> float:
    """Where a federation's trees start from before the first tree: the middle of the
    labels' range. The first tree moves the start to the labels' mean (see
    :func:`decode_boost`), and is judged against this start."""
    return cap / 2


def decode_sketch(
    summed: np.ndarray, *, scale: float, channels: int, settings: BoostingSettings, cap: float
) -> Ensemble:
    """An empty model on the pooled quantiles' bins, starting from :func:`prior`."""
    # Counts are whole numbers: rounding takes off the fixed point's last bits.
    counts = np.rint(np.maximum(summed, 0.0) * scale).reshape(summary_count(channels), GRID_CELLS)
    return Ensemble.empty(edges_from_counts(counts, settings.bins), prior(cap), settings)


# --- the boost round ------------------------------------------------------------------------------


def open_count(growing: GrowingTree | None) -> int:
    """Nodes whose histograms a boost round sums (the root when a new tree starts)."""
    return 1 if growing is None else len(growing.open_nodes)


def boost_length(channels: int, settings: BoostingSettings, growing: GrowingTree | None) -> int:
    return open_count(growing) * summary_count(channels) * settings.bins * 2 + TRAINING_EXTRAS


def arrays_digest(arrays: list[np.ndarray]) -> str:
    return m.weights_digest(arrays)


class SiteTrees:
    """What a site keeps between boost rounds: its windows' bins, and the model's
    predictions so far on them (each new tree is added, not the model recomputed)."""

    def __init__(self) -> None:
        self._codes: tuple[tuple[int, bytes], np.ndarray, np.ndarray] | None = None
        self._predictions: tuple[Ensemble, np.ndarray, np.ndarray] | None = None

    def codes(self, local: LocalData, model: Ensemble) -> tuple[np.ndarray, np.ndarray]:
        """The bins of the site's training and validation windows under ``model``'s edges."""
        key = (id(local), model.edges.tobytes())
        if self._codes is None or self._codes[0] != key:
            codes = model.codes(summaries(local.x)), model.codes(summaries(local.x_val))
            self._codes = (key, *codes)
            self._predictions = None
        return self._codes[1], self._codes[2]

    def predictions(self, local: LocalData, model: Ensemble) -> tuple[np.ndarray, np.ndarray]:
        """The model's predictions on the site's training and validation windows."""
        codes, val_codes = self.codes(local, model)
        cached = self._predictions
        if cached is not None and _extends(model, cached[0]):
            start, shift = cached[0].trees, model.base - cached[0].base
            train = cached[1] + model.predict_codes(codes, start) + shift
            val = cached[2] + model.predict_codes(val_codes, start) + shift
        else:
            train = model.base + model.predict_codes(codes)
            val = model.base + model.predict_codes(val_codes)
        self._predictions = (model, train, val)
        return train, val

    def validation(self, local: LocalData, model: Ensemble) -> np.ndarray:
        """Another model's predictions on the validation windows (the accepted trees'),
        leaving the kept predictions as they are."""
        _, val_codes = self.codes(local, model)
        return model.base + model.predict_codes(val_codes)


def _extends(model: Ensemble, earlier: Ensemble) -> bool:
    """Whether ``model`` is ``earlier`` with trees added (and perhaps another base)."""
    n = earlier.trees
    return (
        model.trees >= n
        and np.array_equal(model.edges, earlier.edges)
        and np.array_equal(model.feature[:n], earlier.feature)
        and np.array_equal(model.threshold[:n], earlier.threshold)
        and np.array_equal(model.value[:n], earlier.value)
    )


def tree_sse(predictions: np.ndarray, local: LocalData) -> tuple[float, int]:
    """Sum of squared errors on the validation windows, clipped to the labels' range as a
    model's predictions are, and their count."""
    if not len(local.y_val):
        return 0.0, 0
    error = np.clip(predictions, 0, None) - local.y_val
    return float(np.sum(error.astype(np.float64) ** 2)), len(local.y_val)


@dataclass(frozen=True)
class BoostTask:
    """What a site is handed to answer a boost round (see :func:`decode_task`)."""

    settings: BoostingSettings
    model: Ensemble
    growing: GrowingTree | None
    accepted: Ensemble | None  # the last accepted trees, while ``model`` is a candidate
    cap: float


def boost_input(
    task: BoostTask,
    local: LocalData,
    cache: SiteTrees,
    *,
    site: int,
    weight: float,
    scale: float,
    judged: LocalResult | None = None,
) -> tuple[np.ndarray, LocalResult]:
    """A site's boost-round vector, and the scores beside it: its histograms of the open
    nodes, then the incoming model's validation score (its trees', or ``judged``: the
    scores of the network, when the round scores its last candidate)."""
    train, _ = cache.predictions(local, task.model)
    codes, _ = cache.codes(local, task.model)
    tree_index = task.model.trees
    rows = sample(len(train), task.settings, tree_index, site)
    # Held within the labels' range, so that a site's values are its share of the rows.
    gradient = np.clip(train - local.y, -task.cap, task.cap) * rows
    growing = task.growing or GrowingTree.new(task.settings)
    position = growing.position(codes)
    histogram = histograms(
        codes, gradient, rows, position, len(growing.open_nodes), task.settings.bins
    )
    histogram[..., 0] /= task.cap
    if judged is None:
        judged = score_trees(task.model, task.accepted, local, cache)
    result = replace(judged, examples=int(rows.sum()))
    return np.concatenate([histogram.ravel() / scale, encode_scores(result, weight)]), result


def decode_boost(
    summed: np.ndarray,
    *,
    scale: float,
    settings: BoostingSettings,
    channels: int,
    model: Ensemble,
    growing: GrowingTree | None,
    cap: float,
) -> tuple[Ensemble, GrowingTree | None, float]:
    """The model and the tree being grown after a boost round, from its sum: a finished
    tree joins the model (the growing tree is then None); and the incoming model's pooled
    validation RMSE."""
    size = len(summed) - TRAINING_EXTRAS
    shape = (open_count(growing), summary_count(channels), settings.bins, 2)
    histogram = summed[:size].reshape(shape) * scale
    histogram[..., 0] *= cap
    # Each row's hessian is 1 or 0 (sampled or not): the sums are counts, whole numbers,
    # and rounding them keeps the fixed point's last bits off the fewest-rows rule.
    histogram[..., 1] = np.rint(histogram[..., 1])
    tree = growing or GrowingTree.new(settings)
    if model.trees == 0 and tree.level == 0:
        base, histogram = rebase(histogram, model.base)
        held = min(max(base, 0.0), cap)  # a mean of labels is within their range
        histogram[..., 0] += (held - base) * histogram[..., 1]
        model = replace(model, base=held)
    grown, finished = grow(tree, histogram, settings, cap)
    val_rmse = decode_scores(summed[size:])
    if finished:
        return model.with_tree(grown), None, val_rmse
    return model, grown, val_rmse


def early_stop(
    best: tuple[float, int] | None, val_rmse: float, trees: int, settings: BoostingSettings
) -> tuple[tuple[float, int] | None, bool]:
    """The best (validation RMSE, trees) so far after the model of ``trees`` trees scored
    ``val_rmse``, and whether growing should stop (no better model for ``patience`` trees,
    or the most trees reached)."""
    if not math.isnan(val_rmse) and (best is None or val_rmse < best[0]):
        best = (val_rmse, trees)
    stalled = best is not None and settings.patience and trees - best[1] >= settings.patience
    return best, bool(stalled) or trees >= settings.trees


def to_wire(arrays: list[np.ndarray]) -> str:
    return m.b64(m.weights_to_bytes(arrays))


def from_wire(text: str) -> list[np.ndarray]:
    return m.weights_from_bytes(m.unb64(text))


def task_fields(
    settings: BoostingSettings,
    model: Ensemble,
    growing: GrowingTree | None,
    accepted: Ensemble | None,
) -> dict[str, Any]:
    """The boost part of a round's task (each array set as .npz in base64)."""
    work: dict[str, Any] = {
        m.KEY_BOOSTING: settings.to_dict(),
        m.KEY_TREES: to_wire(model.to_arrays()),
    }
    if growing is not None:
        work[m.KEY_GROWING] = to_wire(growing.to_arrays())
    if accepted is not None:
        work[m.KEY_ACCEPTED_TREES] = to_wire(accepted.to_arrays())
    return work


# --- personalisation --------------------------------------------------------------------------


def personalise_trees(
    federation_model: Ensemble, local: LocalData, settings: BoostingSettings, *, cap: float
) -> PersonalChoice:
    """A site's candidates with boosted trees, and its choice between them: the
    federation's model, that model boosted on with trees of the site's own (*personal*,
    on the federation's bins), a model grown on the site's rows alone (*alone*, on bins
    of its own), and the mean of those two (*mixture*, :func:`combine`); each kept at
    its best number of trees on training engines held back for it
    (:meth:`LocalData.stopping_split`), and chosen between on the validation windows by
    :func:`choose_model`."""
    started = time.perf_counter()
    fit, stop = local.stopping_split(settings.seed)
    x, x_stop = summaries(fit.x), summaries(stop.x_val)
    personal = fit_trees(
        x, fit.y, settings, limit=cap, start=federation_model, x_val=x_stop, y_val=stop.y_val
    ).ensemble
    alone = fit_trees(x, fit.y, settings, limit=cap, x_val=x_stop, y_val=stop.y_val).ensemble
    x_val = summaries(local.x_val)
    candidates = {
        "global": [federation_model.to_arrays()],
        "personal": [personal.to_arrays()],
        "alone": [alone.to_arrays()],
    }
    combine(candidates)
    predictions = {
        name: np.mean(
            [np.clip(Ensemble.from_arrays(a).predict(x_val), 0, cap) for a in members], axis=0
        )
        for name, members in candidates.items()
    }
    choice, rmse, confidence = choose_model(predictions, local, seed=settings.seed)
    seconds = round(time.perf_counter() - started, 3)
    return PersonalChoice(
        choice, rmse, candidates, seconds, confidence, judged=Judged.of(predictions, local)
    )


def score_trees(
    model: Ensemble, accepted: Ensemble | None, local: LocalData, cache: SiteTrees
) -> LocalResult:
    """The trees' sum of squared errors on the site's validation windows (and the accepted
    trees', when ``model`` is a candidate), as a round that scores reports them."""
    started = time.perf_counter()
    _, val = cache.predictions(local, model)
    val_sse, val_count = tree_sse(val, local)
    accepted_sse = None
    if accepted is not None:
        accepted_sse = tree_sse(cache.validation(local, accepted), local)[0]
    seconds = round(time.perf_counter() - started, 3)
    return LocalResult([], 0, val_sse, val_count, seconds, accepted_sse)


# --- a network and trees, blended -----------------------------------------------------------------


def encode_blend(
    network: np.ndarray, trees: np.ndarray, local: LocalData, weight: float, cap: float
) -> np.ndarray:
    """Each share's validation error as a site puts it in the sum (``weight`` times its
    mean squared error, in the training vector's unit)."""
    if not len(local.y_val):
        return np.zeros(len(SHARES))
    return np.array(
        [
            weight * float(np.mean((blend(network, trees, s, cap) - local.y_val) ** 2)) / VAL_UNIT
            for s in SHARES
        ]
    )


def decode_share(summed: np.ndarray) -> float:
    """A hybrid's share from the sum of the sites' errors at each share (the pooled
    errors' rule is :func:`turbofan.models.trees.share_from_errors`)."""
    return share_from_errors(summed)


def personalise_hybrid(
    network: PersonalChoice,
    network_predictions: dict[str, np.ndarray],
    trees: PersonalChoice,
    local: LocalData,
    *,
    share: float,
    cap: float,
    seed: int,
) -> PersonalChoice:
    """A hybrid site's candidates: each of its network candidates blended with the trees
    candidate of the same name at the federation's share, chosen between on the validation
    windows by :func:`choose_model`."""
    x_val = summaries(local.x_val)
    predictions = {}
    for name, members in trees.candidates.items():
        grown = np.mean([Ensemble.from_arrays(a).predict(x_val) for a in members], axis=0)
        predictions[name] = blend(network_predictions[name], grown, share, cap)
    choice, rmse, confidence = choose_model(predictions, local, seed=seed)
    return PersonalChoice(
        choice,
        rmse,
        {name: network.candidates[name] for name in predictions},
        round(network.seconds + trees.seconds, 3),
        confidence,
        tree_candidates=dict(trees.candidates),
        share=share,
        judged=Judged.of(predictions, local),
    )
