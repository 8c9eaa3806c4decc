"""Prediction packs: every model's predicted RUL at every cycle of the replayed engines.

The Tycoon replay needs, for each model and each held-out engine, the RUL the model
predicts after every cycle (from the window ending there). Predicting is the slow
part, so it is done once per set of models and saved; a replay then only compares
the stored trajectories with a threshold.

A pack also holds the test engines of the subset (truncated before failure, true
RUL from the RUL file) for the model page. It is one ``.npz`` file (plain arrays
and a JSON manifest, loaded without pickle), written atomically.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from turbofan.data.features import windows
from turbofan.models.artefact import RulModel

FORMAT = "turbofan-tycoon-pack"
VERSION = 1
HOLDOUT = "holdout"
TEST = "test"
CENTRALISED = "centralised"
FEDERATED = "federated"
LOCAL = "local"
KINDS = (CENTRALISED, LOCAL, FEDERATED)
# The sensors a turbofan shows in the game, as the original Tycoon showed them: the two
# operating settings that vary and the fourteen sensors that move with wear (C-MAPSS
# column, then the name in the C-MAPSS documentation).
SHOWN_SENSORS = (
    ("setting_1", "altitude"), ("setting_2", "Mach"), ("s_2", "T24"), ("s_3", "T30"),
    ("s_4", "T50"), ("s_7", "P30"), ("s_8", "Nf"), ("s_9", "Nc"), ("s_11", "Ps30"),
    ("s_12", "phi"), ("s_13", "NRf"), ("s_14", "NRc"), ("s_15", "BPR"), ("s_17", "htBleed"),
    ("s_20", "W31"), ("s_21", "W32"),
)  # fmt: skip


class PackError(ValueError):
    """A pack file that cannot be used."""


@dataclass
class ModelInfo:
    """Where one model of the pack came from.

    ``key`` names its trajectories (``centralised``, ``federated``, ``local:<site>``);
    ``trained_on_holdout`` is true when the model saw the replayed engines in training
    (a report's models trained on every training engine), which flatters it.
    """

    key: str
    kind: str
    label: str
    source: str
    sha256: str = ""
    site: str | None = None
    trained_on_holdout: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class EngineSet:
    """Engines and each model's predicted RUL after each of their cycles.

    Attributes
    ----------
    units : (n,) the engines' unit ids in their source file
    cycles : (n,) cycles recorded per engine (its life, for a run-to-failure engine)
    final_rul : (n,) true RUL after the last recorded cycle (0 for run-to-failure)
    predicted : model key -> (n, max cycles) float32, NaN past each engine's last cycle
    sensors : (n, max cycles, len(SHOWN_SENSORS)) uint8 or None: each shown sensor
        scaled to 0-255 over the set (0 past each engine's last cycle), for sparklines
    """

    units: np.ndarray
    cycles: np.ndarray
    final_rul: np.ndarray
    predicted: dict[str, np.ndarray] = field(default_factory=dict)
    sensors: np.ndarray | None = None

    def true_rul(self, engine: int) -> np.ndarray:
        """True (uncapped) RUL after each cycle of one engine."""
        n = int(self.cycles[engine])
        return (self.final_rul[engine] + n - np.arange(1, n + 1)).astype(np.float64)

    def last_predictions(self, key: str) -> np.ndarray:
        """Each engine's prediction from its last window (how test sets are scored)."""
        rows = np.arange(len(self.cycles))
        return self.predicted[key][rows, self.cycles - 1]


@dataclass
class PredictionPack:
    subset: str
    models: list[ModelInfo]
    holdout: EngineSet
    test: EngineSet | None = None
    rul_cap: float = 125.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def lives(self) -> np.ndarray:
        """Cycles each held-out engine ran before it failed."""
        return self.holdout.cycles

    def model(self, key: str) -> ModelInfo | None:
        return next((m for m in self.models if m.key == key), None)

    def sites(self) -> list[str]:
        return [m.site for m in self.models if m.kind == LOCAL and m.site]

    def save(self, path: Path | str) -> Path:
        """Write the pack to ``path`` atomically (a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **self._arrays())  # type: ignore[arg-type]
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(buffer.getvalue())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return path

    def _arrays(self) -> dict[str, np.ndarray]:
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "subset": self.subset,
            "rul_cap": self.rul_cap,
            "models": [asdict(m) for m in self.models],
            "meta": self.meta,
            "sets": [name for name, s in ((HOLDOUT, self.holdout), (TEST, self.test)) if s],
        }
        arrays = {"manifest": np.array(json.dumps(manifest))}
        for name, engines in ((HOLDOUT, self.holdout), (TEST, self.test)):
            if engines is None:
                continue
            arrays[f"{name}/units"] = engines.units
            arrays[f"{name}/cycles"] = engines.cycles
            arrays[f"{name}/final_rul"] = engines.final_rul
            for i, model in enumerate(self.models):
                arrays[f"{name}/predicted/{i}"] = engines.predicted[model.key]
            if engines.sensors is not None:
                arrays[f"{name}/sensors"] = engines.sensors
        return arrays

    @classmethod
    def load(cls, path: Path | str) -> PredictionPack:
        """Read a pack written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            manifest = json.loads(str(arrays["manifest"]))
        except FileNotFoundError:
            raise PackError(f"{path}: no such prediction pack") from None
        except (OSError, ValueError, KeyError) as error:
            raise PackError(f"{path}: not a prediction pack ({error})") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise PackError(f"{path}: not a prediction pack of version {VERSION}: build it again")
        models = [ModelInfo(**m) for m in manifest["models"]]
        sets = {name: _engine_set(arrays, name, models) for name in manifest["sets"]}
        return cls(
            subset=manifest["subset"],
            models=models,
            holdout=sets[HOLDOUT],
            test=sets.get(TEST),
            rul_cap=manifest["rul_cap"],
            meta=manifest["meta"],
        )


def _engine_set(arrays: dict[str, np.ndarray], name: str, models: list[ModelInfo]) -> EngineSet:
    return EngineSet(
        units=arrays[f"{name}/units"],
        cycles=arrays[f"{name}/cycles"],
        final_rul=arrays[f"{name}/final_rul"],
        predicted={m.key: arrays[f"{name}/predicted/{i}"] for i, m in enumerate(models)},
        sensors=arrays.get(f"{name}/sensors"),  # packs built before the game have none
    )


# --- building -------------------------------------------------------------------


def engine_set(frame: pd.DataFrame, final_rul: np.ndarray | None = None) -> EngineSet:
    """The engines of a train or test frame, without predictions yet.

    ``final_rul`` is the RUL file of a test frame, in unit order; None for engines
    that ran to failure.
    """
    counts = frame.groupby("unit", sort=False)["cycle"].size()
    n = len(counts)
    final = np.zeros(n) if final_rul is None else np.asarray(final_rul, dtype=np.float64)
    if len(final) != n:
        raise ValueError(f"{len(final)} final RUL values for {n} engines")
    return EngineSet(
        units=counts.index.to_numpy(dtype=np.int64),
        cycles=counts.to_numpy(dtype=np.int64),
        final_rul=final,
    )


def add_sensors(engines: EngineSet, frame: pd.DataFrame) -> None:
    """Keep the shown sensors of ``frame``'s engines (in file order), scaled to 0-255.

    Each sensor is scaled over the whole set; a sensor that never moves is 128.
    """
    columns = [column for column, _ in SHOWN_SENSORS]
    values = frame[columns].to_numpy(dtype=np.float64)
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.where(high > low, np.rint(255 * (values - low) / span), 128).astype(np.uint8)
    units = frame["unit"].to_numpy()
    new_unit = np.r_[True, units[1:] != units[:-1]]
    row = np.cumsum(new_unit) - 1
    column = np.arange(len(units)) - np.flatnonzero(new_unit)[row]
    if row[-1] + 1 != len(engines.cycles):
        raise ValueError(f"{row[-1] + 1} engines in the frame, {len(engines.cycles)} in the set")
    out = np.zeros((len(engines.cycles), int(column.max()) + 1, len(columns)), dtype=np.uint8)
    out[row, column] = scaled
    engines.sensors = out


def trajectories(model: RulModel, frame: pd.DataFrame) -> np.ndarray:
    """The model's predicted RUL after every cycle of every engine of ``frame``.

    Each prediction comes from the window ending at that cycle (padded at the front
    for the first cycles, as for a short test engine).

    Returns
    -------
    float32 (engines, longest engine), engines in file order, NaN past each
    engine's last cycle.
    """
    units = frame["unit"].to_numpy()
    features = model.pipeline.transform(frame)
    x, ends = windows(features, units, model.pipeline.window, pad=True)
    predicted = model.predict_windows(x).astype(np.float32)
    new_unit = np.r_[True, units[1:] != units[:-1]]
    row = np.cumsum(new_unit) - 1
    first = np.flatnonzero(new_unit)
    column = np.arange(len(units)) - first[row]
    out = np.full((len(first), int(column.max()) + 1), np.nan, dtype=np.float32)
    out[row[ends], column[ends]] = predicted
    return out


def add_predictions(engines: EngineSet, frame: pd.DataFrame, key: str, model: RulModel) -> None:
    """Predict every cycle of ``frame``'s engines with ``model``, stored under ``key``."""
    predicted = trajectories(model, frame)
    if predicted.shape[0] != len(engines.cycles):
        raise ValueError(f"{key}: {predicted.shape[0]} engines predicted, {len(engines.cycles)}")
    engines.predicted[key] = predicted
