"""Gradient-boosted regression trees grown from histograms of gradients.

A tree is grown one level at a time. At each level every row still in an open node adds
its gradient and hessian to a histogram over (node, feature, bin); the best split of
each node is read off the histogram. Nothing else about the rows is needed, so the same
code grows a tree from one site's rows (a site alone, its fine-tuning) and from the
*sum* of every site's histograms (a federation, :mod:`federation.core.engine.boosting`):
histograms add up, so a tree grown from the sum of the sites' histograms is the tree
grown from their pooled rows.

The features are the window summaries of :func:`turbofan.models.baseline.window_features`
(last value, mean, standard deviation and slope of every channel), cut into at most
``bins`` bins per feature at quantiles read off counts on a fixed public grid
(:func:`grid_counts`, :func:`edges_from_counts`): counts add up across sites too.

Trees are kept in heap layout (node ``i`` has children ``2i + 1`` and ``2i + 2``) as
plain arrays, so a model travels and is stored without pickle. Loss: squared error
(gradient ``prediction - label``, hessian 1 for every sampled row).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from turbofan.models.baseline import window_features

Arrays = list[np.ndarray]

# The public grid on which features are counted to find the bins' edges: a value v
# falls in one of GRID_CELLS equal cells of asinh(v / GRID_UNIT) over
# [-GRID_LIMIT, GRID_LIMIT]. The cells are about 1 % wide in relative terms for
# |v| > 0.1 and 1e-5 wide near zero, from -80 to 80: scale-free, so that no site needs to
# know the others' ranges.
GRID_CELLS = 2048
GRID_UNIT = 1e-3
GRID_LIMIT = 12.0
# A tree's arrays, and an ensemble's.
TREE_ARRAYS = 3  # feature, threshold, value
ENSEMBLE_ARRAYS = 5  # edges, base, feature, threshold, value
LEAF = -1  # the feature of a leaf (or of a node not grown)
GAIN_TIE = 1e-6  # gains closer than this share of a node's best tie (see best_splits)


@dataclass(frozen=True)
class BoostingSettings:
    """How a boosted-tree model grows.

    Parameters
    ----------
    trees : the most trees
    depth : levels of every tree (at most ``2**depth`` leaves)
    learning_rate : each tree's leaf values are scaled by this
    bins : the most bins per feature (at most 256)
    l2 : L2 penalty on leaf values (XGBoost's lambda)
    min_child : the fewest sampled rows on each side of a split
    subsample : the share of rows each tree is grown on (drawn per tree, seeded)
    patience : stop after this many trees without a better validation RMSE (0: never)
    seed : seeds the rows' sampling
    """

    trees: int = 300
    depth: int = 5
    learning_rate: float = 0.05
    bins: int = 32
    l2: float = 1.0
    min_child: float = 40.0
    subsample: float = 0.5
    patience: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.trees <= 5000:
            problems.append("trees must be between 1 and 5000")
        if not 1 <= self.depth <= 8:
            problems.append("depth must be between 1 and 8")
        if not 0 < self.learning_rate <= 1:
            problems.append("learning_rate must be above 0 and at most 1")
        if not 2 <= self.bins <= 256:
            problems.append("bins must be between 2 and 256")
        if not self.l2 >= 0 or not self.min_child >= 0:
            problems.append("l2 and min_child must not be negative")
        if not 0 < self.subsample <= 1:
            problems.append("subsample must be above 0 and at most 1")
        if self.patience < 0:
            problems.append("patience must not be negative")
        if problems:
            raise ValueError("boosting settings: " + "; ".join(problems))

    @property
    def nodes(self) -> int:
        """Nodes of a tree in heap layout."""
        return 2 ** (self.depth + 1) - 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BoostingSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"boosting settings: unknown {', '.join(unknown)}")
        return cls(**data)


summaries = window_features


# --- bins -------------------------------------------------------------------------------------


def grid_counts(features: np.ndarray) -> np.ndarray:
    """How many rows of each feature fall in each cell of the public grid.

    Parameters
    ----------
    features : (n, F)

    Returns
    -------
    (F, GRID_CELLS) float64
    """
    n, n_features = features.shape
    scaled = np.arcsinh(np.asarray(features, dtype=np.float64) / GRID_UNIT)
    cell = np.floor((scaled + GRID_LIMIT) / (2 * GRID_LIMIT) * GRID_CELLS)
    cell = np.clip(cell, 0, GRID_CELLS - 1).astype(np.int64)
    index = cell + np.arange(n_features)[None, :] * GRID_CELLS
    counts = np.bincount(index.ravel(), minlength=n_features * GRID_CELLS)
    return counts.reshape(n_features, GRID_CELLS).astype(np.float64)


def _cell_top(cells: np.ndarray) -> np.ndarray:
    """The upper boundary of grid cells, as feature values."""
    return GRID_UNIT * np.sinh((cells + 1) / GRID_CELLS * 2 * GRID_LIMIT - GRID_LIMIT)


def edges_from_counts(counts: np.ndarray, bins: int) -> np.ndarray:
    """Each feature's bin edges at its quantiles, read off its grid counts.

    A value ``x`` is in bin ``b`` when exactly ``b`` edges are below it. A feature with
    fewer distinct cells than bins gets fewer edges; the rest are +inf.

    Returns
    -------
    (F, bins - 1) float32
    """
    n_features = counts.shape[0]
    edges = np.full((n_features, bins - 1), np.inf, dtype=np.float32)
    quantiles = np.arange(1, bins) / bins
    for f in range(n_features):
        cumulative = np.cumsum(np.maximum(counts[f], 0.0))
        total = cumulative[-1]
        if total <= 0:
            continue
        cells = np.searchsorted(cumulative, quantiles * total, side="left")
        # An edge at or above the last occupied cell would split nothing off.
        last = int(np.flatnonzero(counts[f] > 0)[-1])
        cells = np.unique(cells[cells < last])
        found = _cell_top(cells).astype(np.float32)
        edges[f, : len(found)] = found
    return edges


def bin_codes(features: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value's bin: the number of its feature's edges below it, (n, F) uint8."""
    values = np.asarray(features, dtype=np.float32)
    codes = np.empty(values.shape, dtype=np.uint8)
    for f in range(values.shape[1]):
        codes[:, f] = np.searchsorted(edges[f], values[:, f], side="left")
    return codes


# --- histograms and splits ------------------------------------------------------------------


def histograms(
    codes: np.ndarray,
    gradient: np.ndarray,
    hessian: np.ndarray,
    position: np.ndarray,
    n_nodes: int,
    bins: int,
) -> np.ndarray:
    """Sums of gradient and hessian per open node, feature and bin.

    Parameters
    ----------
    codes : (n, F) bins
    gradient, hessian : (n,)
    position : (n,) each row's open node (0 .. n_nodes - 1), -1 for rows in none
    n_nodes : open nodes
    bins : bins per feature (every code is below)

    Returns
    -------
    (n_nodes, F, bins, 2) float64: gradient sums, then hessian sums
    """
    n_features = codes.shape[1]
    size = n_nodes * n_features * bins
    out = np.zeros((n_nodes, n_features, bins, 2))
    hessian = np.asarray(hessian, dtype=np.float64)
    rows = np.flatnonzero((position >= 0) & (hessian != 0))  # a row not sampled adds nothing
    if not len(rows) or not n_nodes:
        return out
    base = (position[rows].astype(np.int64) * n_features)[:, None] + np.arange(n_features)
    index = (base * bins + codes[rows]).ravel()
    weights = np.asarray(gradient, dtype=np.float64)[rows]
    out[..., 0] = np.bincount(index, np.repeat(weights, n_features), size).reshape(out.shape[:3])
    if np.all(hessian[rows] == 1):  # the usual case: counts, without weights
        out[..., 1] = np.bincount(index, minlength=size).reshape(out.shape[:3])
    else:
        out[..., 1] = np.bincount(index, np.repeat(hessian[rows], n_features), size).reshape(
            out.shape[:3]
        )
    return out


@dataclass(frozen=True)
class Splits:
    """The best split of each open node, and its totals.

    ``ok`` whether it splits; ``feature``, ``bin`` where (left: codes <= bin);
    ``left`` and ``total`` the (gradient, hessian) sums of the left side and the node.
    """

    ok: np.ndarray
    feature: np.ndarray
    bin: np.ndarray
    gain: np.ndarray
    left: np.ndarray  # (K, 2)
    total: np.ndarray  # (K, 2)


def best_splits(histogram: np.ndarray, settings: BoostingSettings) -> Splits:
    """Where each node splits best (XGBoost's gain with ``l2``), given (K, F, B, 2) sums."""
    gradient, hessian = histogram[..., 0], histogram[..., 1]
    n_nodes, n_features, bins = gradient.shape
    total_g = gradient.sum(axis=2)[:, :1]  # any feature's bins hold every row of the node
    total_h = hessian.sum(axis=2)[:, :1]
    left_g = np.cumsum(gradient, axis=2)[:, :, :-1]
    left_h = np.cumsum(hessian, axis=2)[:, :, :-1]
    right_g, right_h = total_g[:, :, None] - left_g, total_h[:, :, None] - left_h
    lam = settings.l2
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = (
            left_g**2 / (left_h + lam)
            + right_g**2 / (right_h + lam)
            - (total_g**2 / (total_h + lam))[:, :, None]
        )
    allowed = (left_h >= max(settings.min_child, 1e-9)) & (right_h >= max(settings.min_child, 1e-9))
    gain = np.where(allowed & np.isfinite(gain), gain, -np.inf)
    # Gains equal to about six digits count as a tie, which goes to the first feature and
    # bin: splits that cut the rows alike (the cycle's last value and its mean, say) tie
    # exactly on the pooled rows, and the fixed point of a secure sum must not break the
    # tie another way than rows in one place would.
    top = np.max(np.where(np.isfinite(gain), np.abs(gain), 0.0), axis=(1, 2), keepdims=True)
    unit = np.where(top > 0, top * GAIN_TIE, 1.0)
    gain = np.where(np.isfinite(gain), np.rint(gain / unit) * unit, gain)
    flat = gain.reshape(n_nodes, -1)
    best = flat.argmax(axis=1) if flat.shape[1] else np.zeros(n_nodes, dtype=np.int64)
    rows = np.arange(n_nodes)
    best_gain = flat[rows, best] if flat.shape[1] else np.full(n_nodes, -np.inf)
    feature, bin_ = np.divmod(best, max(bins - 1, 1))
    left = (
        np.stack(
            [left_g.reshape(n_nodes, -1)[rows, best], left_h.reshape(n_nodes, -1)[rows, best]], 1
        )
        if flat.shape[1]
        else np.zeros((n_nodes, 2))
    )
    return Splits(
        ok=best_gain > 1e-12,
        feature=feature.astype(np.int16),
        bin=bin_.astype(np.uint8),
        gain=best_gain,
        left=left,
        total=np.concatenate([total_g, total_h], axis=1),
    )


def leaf_value(
    gradient: np.ndarray, hessian: np.ndarray, settings: BoostingSettings, limit: float
) -> np.ndarray:
    """The shrunk Newton step of a leaf, ``-lr * G / (H + l2)``, held within ``+-lr * limit``
    (a prediction never needs to move further than the label range in one tree)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(hessian + settings.l2 > 0, -gradient / (hessian + settings.l2), 0.0)
    return settings.learning_rate * np.clip(raw, -limit, limit)


# --- the tree being grown ---------------------------------------------------------------------


@dataclass
class GrowingTree:
    """A tree part-way through growing: its nodes so far (heap layout) and which of the
    nodes at ``level`` are open (waiting for the next histograms)."""

    feature: np.ndarray  # (M,) int16, LEAF where not split
    threshold: np.ndarray  # (M,) uint8
    value: np.ndarray  # (M,) float32
    open: np.ndarray  # (M,) bool
    level: int = 0

    @classmethod
    def new(cls, settings: BoostingSettings) -> GrowingTree:
        size = settings.nodes
        is_open = np.zeros(size, dtype=bool)
        is_open[0] = True
        return cls(
            np.full(size, LEAF, np.int16),
            np.zeros(size, np.uint8),
            np.zeros(size, np.float32),
            is_open,
        )

    @property
    def open_nodes(self) -> np.ndarray:
        """Heap indices of the open nodes, in order (their histograms' order)."""
        return np.flatnonzero(self.open)

    def position(self, codes: np.ndarray) -> np.ndarray:
        """Each row's open node (its index among :attr:`open_nodes`), or -1."""
        node = descend(codes, self.feature, self.threshold, self.level)
        lookup = np.full(len(self.open), -1, dtype=np.int64)
        lookup[self.open_nodes] = np.arange(len(self.open_nodes))
        return lookup[node]

    def to_arrays(self) -> Arrays:
        return [
            self.feature,
            self.threshold,
            self.value,
            self.open.astype(np.uint8),
            np.array([self.level], dtype=np.int64),
        ]

    @classmethod
    def from_arrays(cls, arrays: Arrays, settings: BoostingSettings) -> GrowingTree:
        if len(arrays) != 5 or any(len(a) != settings.nodes for a in arrays[:4]):
            raise ValueError("the growing tree does not fit the boosting settings")
        level = int(arrays[4][0])
        if not 0 <= level < settings.depth:
            raise ValueError(f"the growing tree's level {level} is outside 0..{settings.depth - 1}")
        return cls(
            np.asarray(arrays[0], np.int16),
            np.asarray(arrays[1], np.uint8),
            np.asarray(arrays[2], np.float32),
            np.asarray(arrays[3]).astype(bool),
            level,
        )


def descend(
    codes: np.ndarray, feature: np.ndarray, threshold: np.ndarray, levels: int
) -> np.ndarray:
    """The heap index each row reaches going down ``levels`` levels of one tree (it stops
    at a leaf)."""
    node = np.zeros(len(codes), dtype=np.int64)
    for _ in range(levels):
        split = feature[node] >= 0
        if not split.any():
            break
        rows = np.flatnonzero(split)
        at = node[rows]
        right = codes[rows, feature[at].astype(np.int64)] > threshold[at]
        node[rows] = 2 * at + 1 + right
    return node


def grow(
    tree: GrowingTree, histogram: np.ndarray, settings: BoostingSettings, limit: float
) -> tuple[GrowingTree, bool]:
    """The tree after splitting its open nodes as ``histogram`` (K, F, B, 2) says; and
    whether it is finished (no node split, or the last level was reached). A node that
    does not split keeps the value it was given, a leaf; the root gets its value here."""
    nodes = tree.open_nodes
    if histogram.shape[0] != len(nodes):
        raise ValueError(f"{histogram.shape[0]} histograms for {len(nodes)} open nodes")
    feature, threshold = tree.feature.copy(), tree.threshold.copy()
    value, is_open = tree.value.copy(), np.zeros_like(tree.open)
    splits = best_splits(histogram, settings)
    if tree.level == 0:
        value[0] = leaf_value(splits.total[:1, 0], splits.total[:1, 1], settings, limit)[0]
    last = tree.level + 1 >= settings.depth
    left_value = leaf_value(splits.left[:, 0], splits.left[:, 1], settings, limit)
    right = splits.total - splits.left
    right_value = leaf_value(right[:, 0], right[:, 1], settings, limit)
    for k, node in enumerate(nodes):
        if not splits.ok[k]:
            continue
        feature[node], threshold[node] = splits.feature[k], splits.bin[k]
        value[2 * node + 1], value[2 * node + 2] = left_value[k], right_value[k]
        if not last:
            is_open[2 * node + 1] = is_open[2 * node + 2] = True
    grown = GrowingTree(feature, threshold, value, is_open, tree.level + 1)
    return grown, last or not is_open.any()


def rebase(histogram: np.ndarray, base: float) -> tuple[float, np.ndarray]:
    """The first tree's root histogram taken around the labels' mean instead of ``base``:
    the mean, and the histogram as if every prediction had started there (a shift of the
    starting prediction by d shifts each row's gradient by d)."""
    gradient, hessian = histogram[0, 0, :, 0].sum(), histogram[0, 0, :, 1].sum()
    if hessian <= 0:
        return base, histogram
    shift = -gradient / hessian
    shifted = histogram.copy()
    shifted[..., 0] += shift * shifted[..., 1]
    return base + shift, shifted


# --- an ensemble ------------------------------------------------------------------------------


@dataclass
class Ensemble:
    """A boosted-tree model: the bins' edges, the starting prediction and the trees."""

    edges: np.ndarray  # (F, bins - 1) float32
    base: float
    feature: np.ndarray  # (T, M) int16
    threshold: np.ndarray  # (T, M) uint8
    value: np.ndarray  # (T, M) float32

    @classmethod
    def empty(cls, edges: np.ndarray, base: float, settings: BoostingSettings) -> Ensemble:
        size = settings.nodes
        return cls(
            np.asarray(edges, np.float32),
            float(base),
            np.zeros((0, size), np.int16),
            np.zeros((0, size), np.uint8),
            np.zeros((0, size), np.float32),
        )

    @property
    def trees(self) -> int:
        return len(self.feature)

    @property
    def depth(self) -> int:
        return int(math.log2(self.feature.shape[1] + 1)) - 1

    def with_tree(self, tree: GrowingTree) -> Ensemble:
        return replace(
            self,
            feature=np.vstack([self.feature, tree.feature[None]]),
            threshold=np.vstack([self.threshold, tree.threshold[None]]),
            value=np.vstack([self.value, tree.value[None]]),
        )

    def first(self, trees: int) -> Ensemble:
        """The model of its first ``trees`` trees."""
        return replace(
            self,
            feature=self.feature[:trees],
            threshold=self.threshold[:trees],
            value=self.value[:trees],
        )

    def codes(self, features: np.ndarray) -> np.ndarray:
        return bin_codes(features, self.edges)

    def predict_codes(self, codes: np.ndarray, start: int = 0) -> np.ndarray:
        """The sum of the trees from ``start`` on (without the base), for binned rows."""
        out = np.zeros(len(codes))
        depth = self.depth
        for t in range(start, self.trees):
            node = descend(codes, self.feature[t], self.threshold[t], depth)
            out += self.value[t][node]
        return out

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predictions for window summaries (n, F)."""
        return self.base + self.predict_codes(self.codes(features))

    def to_arrays(self) -> Arrays:
        return [
            self.edges,
            np.array([self.base], dtype=np.float64),
            self.feature,
            self.threshold,
            self.value,
        ]

    @classmethod
    def from_arrays(cls, arrays: Arrays) -> Ensemble:
        if len(arrays) != ENSEMBLE_ARRAYS:
            raise ValueError(f"a boosted-tree model is {ENSEMBLE_ARRAYS} arrays, got {len(arrays)}")
        edges, base, feature, threshold, value = arrays
        shapes = {feature.shape, threshold.shape, value.shape}
        if len(shapes) != 1 or feature.ndim != 2 or edges.ndim != 2:
            raise ValueError("a boosted-tree model's arrays do not fit together")
        nodes = feature.shape[1]
        if nodes < 3 or (nodes + 1) & nodes:
            raise ValueError(f"a tree of {nodes} nodes is not a full binary tree")
        if len(feature) and (feature.max(initial=-1) >= edges.shape[0] or feature.min() < LEAF):
            raise ValueError("a tree splits on a feature the model does not have")
        return cls(
            np.asarray(edges, np.float32),
            float(np.asarray(base).ravel()[0]),
            np.asarray(feature, np.int16),
            np.asarray(threshold, np.uint8),
            np.asarray(value, np.float32),
        )


def sample(n: int, settings: BoostingSettings, tree: int, *stream: int) -> np.ndarray:
    """Which of ``n`` rows tree number ``tree`` is grown on (1.0 or 0.0 each), seeded by
    the settings' seed, the tree and ``stream`` (a site's id, so that sites draw apart)."""
    if settings.subsample >= 1:
        return np.ones(n)
    rng = np.random.default_rng([settings.seed, tree, *stream])
    return (rng.random(n) < settings.subsample).astype(np.float64)


# --- growing a model from rows in one place -------------------------------------------------------


@dataclass
class FitResult:
    ensemble: Ensemble
    history: list[dict[str, float]] = field(default_factory=list)
    best_trees: int = 0


def fit_trees(
    x: np.ndarray,
    y: np.ndarray,
    settings: BoostingSettings,
    *,
    limit: float,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    start: Ensemble | None = None,
    stream: tuple[int, ...] = (),
) -> FitResult:
    """Boost trees on window summaries ``x`` with labels ``y``, in one place.

    From ``start`` (its bins and trees: fine-tuning) or from bins read off ``x`` and the
    labels' mean. With validation rows, keeps the number of trees with the best validation
    RMSE (``start``'s own count included) and stops ``settings.patience`` trees after it.
    ``limit`` bounds the labels (the RUL cap): see :func:`leaf_value`.
    """
    if start is None:
        edges = edges_from_counts(grid_counts(x), settings.bins)
        model = Ensemble.empty(edges, 0.0, settings)
    else:
        model = start
    codes = model.codes(x)
    prediction = model.base + model.predict_codes(codes)
    validate = x_val is not None and y_val is not None and len(y_val) > 0
    val_codes = model.codes(x_val) if validate and x_val is not None else None
    val_prediction = (
        model.base + model.predict_codes(val_codes) if val_codes is not None else np.zeros(0)
    )
    best = (
        _rmse(val_prediction, y_val) if validate and start is not None else math.inf,
        model.trees,
    )
    history: list[dict[str, float]] = []
    first = model.trees
    for t in range(first, first + settings.trees):
        weight = sample(len(y), settings, t, *stream)
        gradient = (prediction - y) * weight
        tree = GrowingTree.new(settings)
        done = False
        while not done:
            position = tree.position(codes)
            histogram = histograms(
                codes, gradient, weight, position, len(tree.open_nodes), settings.bins
            )
            if model.trees == 0 and tree.level == 0 and start is None:
                base, histogram = rebase(histogram, model.base)
                shift = base - model.base
                model = replace(model, base=base)
                prediction = prediction + shift
                val_prediction = val_prediction + shift
                gradient = gradient + shift * weight
            tree, done = grow(tree, histogram, settings, limit)
        model = model.with_tree(tree)
        prediction += model.predict_codes(codes, start=model.trees - 1)
        record: dict[str, float] = {"trees": float(model.trees)}
        if val_codes is not None and y_val is not None:
            val_prediction += model.predict_codes(val_codes, start=model.trees - 1)
            record["val_rmse"] = _rmse(val_prediction, y_val)
            if record["val_rmse"] < best[0]:
                best = (record["val_rmse"], model.trees)
            elif settings.patience and model.trees - best[1] >= settings.patience:
                history.append(record)
                break
        history.append(record)
    if validate:
        model = model.first(best[1])
    return FitResult(model, history, model.trees)


def _rmse(predicted: np.ndarray, true: np.ndarray | None) -> float:
    assert true is not None
    return float(np.sqrt(np.mean((np.asarray(predicted) - true) ** 2)))


# --- a network and trees, blended ---------------------------------------------------------------

# The shares of the trees a hybrid model's blend is chosen from, on validation windows.
SHARES = tuple(round(0.1 * k, 1) for k in range(11))
DEFAULT_SHARE = 0.5  # an equal blend, unless validation clearly prefers another share
SHARE_MARGIN = 0.05  # how much better another share must be (as a candidate must be worse)


def blend(network: np.ndarray, trees: np.ndarray, share: float, cap: float) -> np.ndarray:
    """A hybrid's predictions from its network's and its trees' (as a model file blends)."""
    return np.clip((1 - share) * network + share * trees, 0, cap)


def share_from_errors(errors: np.ndarray | list[float]) -> float:
    """The share to blend at, from the mean squared validation error at each of
    :data:`SHARES`: half, unless another share's RMSE is more than :data:`SHARE_MARGIN`
    below half's. The trees' number was picked on the same validation engines, which so
    flatter the trees; and on a handful of engines the error moves a lot from one share to
    the next: an equal blend is the prior that only clear evidence moves."""
    errors = np.asarray(errors, dtype=np.float64)
    if not np.any(errors > 0):
        return DEFAULT_SHARE
    best = int(np.argmin(np.round(errors, 12)))
    half = errors[SHARES.index(DEFAULT_SHARE)]
    if np.sqrt(errors[best]) < (1 - SHARE_MARGIN) * np.sqrt(half):
        return SHARES[best]
    return DEFAULT_SHARE


def best_share(network: np.ndarray, trees: np.ndarray, labels: np.ndarray, cap: float) -> float:
    """The share for a hybrid from its validation windows (see :func:`share_from_errors`)."""
    if not len(labels):
        return DEFAULT_SHARE
    return share_from_errors(
        [float(np.mean((blend(network, trees, s, cap) - labels) ** 2)) for s in SHARES]
    )
