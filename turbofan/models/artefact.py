"""A trained RUL model with its preprocessing, saved as one file.

The file is a zip of ``manifest.json`` (format version, kind, the fitted feature
pipeline, the network's architecture, free-form metadata and a SHA-256 over all
of it) and one payload: ``weights.npz`` for networks and boosted trees (plain arrays,
loaded without pickle, so a model from another party cannot run code) or
``estimator.pkl`` for the scikit-learn baseline (pickle: load only your own).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from turbofan.data.features import FeaturePipeline
from turbofan.models.baseline import window_features
from turbofan.models.nets import build_net
from turbofan.models.training import Weights, predict, set_weights
from turbofan.models.trees import Ensemble, summaries

FORMAT = "turbofan-rul-model"
VERSION = 1
NETWORK = "network"
TREES = "trees"  # boosted trees (turbofan.models.trees), each member an ensemble's arrays
HYBRID = "hybrid"  # a network and boosted trees, their predictions blended
BASELINE = "baseline"
ARRAY_KINDS = (NETWORK, TREES, HYBRID)  # kinds whose members are plain arrays


class ArtefactError(ValueError):
    """A model file that cannot be used: wrong format, version, or a failed hash check."""


@dataclass
class RulModel:
    """Predicts remaining useful life from raw C-MAPSS rows.

    A ``network`` model averages the predictions of its ``members`` (one or more
    weight sets of the same architecture); a ``trees`` model those of its members'
    boosted-tree ensembles (:meth:`turbofan.models.trees.Ensemble.to_arrays`); a
    ``baseline`` model holds a fitted scikit-learn ``estimator``. A ``hybrid`` model
    blends the mean of its network ``members`` with the mean of its ``trees`` (ensembles'
    arrays): ``(1 - share) * network + share * trees``.
    """

    kind: str
    pipeline: FeaturePipeline
    architecture: str | None = None
    net_options: dict[str, Any] = field(default_factory=dict)
    members: list[Weights] = field(default_factory=list)
    estimator: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    trees: list[Weights] = field(default_factory=list)  # a hybrid's boosted trees
    share: float = 0.0  # a hybrid's weight of its trees in the blend

    def new_net(self) -> nn.Module:
        """An untrained network of this model's architecture and input shape."""
        if self.architecture is None:
            raise ValueError("a baseline model has no network")
        n_features, window = self.pipeline.n_features, self.pipeline.window
        scale = float(self.pipeline.rul_cap or 125)
        options = {"output_scale": scale, **self.net_options}
        return build_net(self.architecture, n_features, window, **options)

    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        """RUL in cycles for windows from this model's pipeline, clipped to [0, cap]."""
        if self.kind == NETWORK:
            raw = self.network_predictions(windows)
        elif self.kind == TREES:
            raw = _trees(self.members, windows)
        elif self.kind == HYBRID:
            zeros = np.zeros(len(windows))
            network = self.network_predictions(windows) if self.share < 1 else zeros
            trees = _trees(self.trees, windows) if self.share > 0 else zeros
            raw = (1 - self.share) * network + self.share * trees  # as trees.blend
        else:
            raw = self.estimator.predict(window_features(windows))
        upper = self.pipeline.rul_cap if self.pipeline.rul_cap is not None else np.inf
        return np.clip(raw, 0, upper)

    def network_predictions(self, windows: np.ndarray) -> np.ndarray:
        """The mean of the network members' raw outputs (a hybrid blends them)."""
        net = self.new_net()
        outputs = []
        for weights in self.members:
            set_weights(net, weights)
            outputs.append(predict(net, windows))
        return np.mean(outputs, axis=0)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One prediction per unit, from its last window: columns ``unit, predicted_rul``."""
        windows, units = self.pipeline.last_windows(frame)
        return pd.DataFrame({"unit": units, "predicted_rul": self.predict_windows(windows)})

    # --- saving and loading ------------------------------------------------------

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "pipeline": self.pipeline.to_dict(),
            "architecture": self.architecture,
            "net_options": self.net_options,
            "members": len(self.members),
            "meta": self.meta,
            **({"trees": len(self.trees), "share": self.share} if self.kind == HYBRID else {}),
        }

    def _payload(self) -> tuple[str, bytes]:
        if self.kind in ARRAY_KINDS:
            buffer = io.BytesIO()
            arrays = {
                f"m{i}_{j:03d}": a for i, w in enumerate(self.members) for j, a in enumerate(w)
            }
            arrays.update(
                {f"t{i}_{j:03d}": a for i, w in enumerate(self.trees) for j, a in enumerate(w)}
            )
            np.savez(buffer, **arrays)  # type: ignore[arg-type]
            return "weights.npz", buffer.getvalue()
        return "estimator.pkl", pickle.dumps(self.estimator)

    def to_bytes(self) -> tuple[bytes, str]:
        """The model file's bytes and its hash."""
        manifest = self._manifest()
        name, payload = self._payload()
        manifest["payload"] = name
        manifest["sha256"] = _digest(manifest, payload)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
            archive.writestr(name, payload)
        return buffer.getvalue(), str(manifest["sha256"])

    def save(self, path: Path | str) -> str:
        """Write the model to ``path`` (atomically) and return its hash."""
        content, digest = self.to_bytes()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return digest

    @classmethod
    def load(cls, path: Path | str) -> RulModel:
        """Read a model file, checking its format, version and hash."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise ArtefactError(f"{path}: no such model file") from None
        return cls.from_bytes(data, source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "model") -> RulModel:
        """A model from the bytes of a model file, checking format, version and hash."""
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                manifest = json.loads(archive.read("manifest.json"))
                payload = archive.read(manifest["payload"])
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
            raise ArtefactError(f"{source}: not a model file of this app ({error})") from None
        if manifest.get("format") != FORMAT:
            raise ArtefactError(f"{source}: not a model file of this app")
        if manifest.get("version") != VERSION:
            raise ArtefactError(
                f"{source}: model format version {manifest.get('version')}, this app reads "
                f"version {VERSION}: retrain or convert the model"
            )
        expected = manifest.pop("sha256", None)
        if _digest(manifest, payload) != expected:
            raise ArtefactError(f"{source}: hash check failed: the file is damaged or was altered")
        model = cls(
            kind=manifest["kind"],
            pipeline=FeaturePipeline.from_dict(manifest["pipeline"]),
            architecture=manifest["architecture"],
            net_options=manifest["net_options"],
            meta=manifest["meta"],
        )
        if model.kind in ARRAY_KINDS:
            with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
                loaded = dict(arrays)
            model.members = _members(loaded, manifest["members"], "m")
            if model.kind == HYBRID:
                model.trees = _members(loaded, int(manifest["trees"]), "t")
                model.share = float(manifest["share"])
        else:
            model.estimator = pickle.loads(payload)  # noqa: S301 - own files only, see module doc
        return model

    @property
    def hash(self) -> str:
        manifest = self._manifest()
        name, payload = self._payload()
        manifest["payload"] = name
        return _digest(manifest, payload)


def _digest(manifest: dict[str, Any], payload: bytes) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical + b"\0" + payload).hexdigest()


def _members(arrays: dict[str, np.ndarray], count: int, prefix: str) -> list[Weights]:
    members: list[Weights] = [[] for _ in range(count)]
    for key in sorted(arrays):
        if key.startswith(prefix):
            members[int(key[1 : key.index("_")])].append(arrays[key])
    return members


def _trees(members: list[Weights], windows: np.ndarray) -> np.ndarray:
    """The mean prediction of boosted-tree ensembles on windows."""
    features = summaries(windows)
    return np.mean([Ensemble.from_arrays(m).predict(features) for m in members], axis=0)
