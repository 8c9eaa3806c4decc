"""What a site's console reads and computes, from the site's own folders only.

The state folder (the site worker's ``--state-dir``) holds what the site kept: the model
it chose after personalisation, the model it trained alone and the federation's model
beside it, its validation engines, its outbox, its peers' keys and its privacy ledger.
The data folder holds its engines: run-to-failure training files (``train_*.txt``) and
the engines in service (``test_*.txt``: runs that have not failed yet).

Nothing here talks to the coordinator or writes anything but the console's own secret.
"""

from __future__ import annotations

import functools
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation.core.private_files import private_folder, write_private
from federation.core.secagg.primitives import fingerprint
from turbofan.data.checks import training_rows
from turbofan.data.files import read_engine_file
from turbofan.models.artefact import RulModel
from turbofan.plan import Calibration
from turbofan.tycoon_pack import trajectories
from worker.keystore import Keystore
from worker.ledger import DEFAULT_DELTA, SitePolicy

SITE_FILE = "site.json"  # the site's name, coordinator and data folder (site_worker writes it)
SECRET_FILE = "console-secret"  # signs the owner in to the console
FLEET_PATTERN = "test_*.txt"
SPARK_CYCLES = 60  # cycles of history a sparkline shows
DRIVERS = 3  # sensors shown per engine: those the chosen model leans on most

CHOSEN, LOCAL, FEDERATION = "chosen", "local", "federation"
MODEL_FILES = {
    CHOSEN: "chosen.rulmodel",
    LOCAL: "local.rulmodel",
    FEDERATION: "federation.rulmodel",
}
CHOICE_FILE = "choice.json"


class ConsoleError(RuntimeError):
    """The console cannot show this yet; the message says why and what to do."""


def write_site_file(
    state_dir: Path,
    *,
    name: str,
    coordinator: str,
    data_dir: Path,
    epsilon_cap: float | None = None,
    delta: float = DEFAULT_DELTA,
) -> None:
    """Note who this site is and its owner's privacy policy, for its console (the worker
    writes it at each start)."""
    body = {
        "name": name,
        "coordinator": coordinator,
        "data_dir": str(data_dir),
        "epsilon_cap": epsilon_cap,
        "delta": delta,
    }
    private_folder(state_dir)
    write_private(Path(state_dir) / SITE_FILE, json.dumps(body, indent=2).encode())


def read_site_file(state_dir: Path) -> dict[str, Any]:
    path = Path(state_dir) / SITE_FILE
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def console_secret(state_dir: Path) -> str:
    """The secret that signs the site's owner in to its console: made on first use and
    kept in the state folder (mode 0600), beside the site's identity key."""
    path = Path(state_dir) / SECRET_FILE
    if path.is_file():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    private_folder(state_dir)
    write_private(path, secret.encode())
    return secret


@dataclass(frozen=True)
class FleetEngine:
    """One engine in service: where it comes from, its last window's predictions, and
    the recent history of the sensors the chosen model leans on."""

    file: str
    unit: int
    cycles: int
    predicted: dict[str, float]  # by model role
    sparks: dict[str, list[float]]  # sensor -> its last SPARK_CYCLES scaled values


class SiteState:
    """The site's folders, read on demand; what is costly is cached until a file changes."""

    def __init__(self, state_dir: Path, data_dir: Path | None = None) -> None:
        self.state_dir = Path(state_dir)
        site = read_site_file(self.state_dir)
        if data_dir is None and site.get("data_dir"):
            data_dir = Path(site["data_dir"])
        if data_dir is None:
            raise ConsoleError(
                f"{self.state_dir} does not say where the site's data is (the site worker "
                "notes it at start): give --data-dir"
            )
        self.data_dir = Path(data_dir)

    @property
    def site(self) -> dict[str, Any]:
        """Who the site is, as its worker last wrote it (read again: it may restart)."""
        return read_site_file(self.state_dir)

    # --- what changed -----------------------------------------------------------------

    def _stamp(self, *paths: Path) -> tuple[tuple[str, float], ...]:
        return tuple((str(p), p.stat().st_mtime) for p in paths if p.exists())

    def models_stamp(self) -> tuple[tuple[str, float], ...]:
        files = [self.state_dir / f for f in (*MODEL_FILES.values(), CHOICE_FILE)]
        return self._stamp(*files, *self.data_dir.glob("train_*.txt"))

    def fleet_stamp(self) -> tuple[tuple[str, float], ...]:
        return self.models_stamp() + self._stamp(*self.fleet_files())

    # --- reading ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.site.get("name") or self.state_dir.name)

    def policy(self) -> SitePolicy:
        """The owner's privacy cap, as the worker last started with it."""
        cap = self.site.get("epsilon_cap")
        return SitePolicy(
            epsilon_cap=float(cap) if cap is not None else None,
            delta=float(self.site.get("delta") or DEFAULT_DELTA),
        )

    def identity_fingerprint(self) -> str | None:
        """The fingerprint of the site's identity key (None before the worker made one)."""
        public = Keystore(self.state_dir).public_identity()
        return fingerprint(public) if public is not None else None

    def choice(self) -> dict[str, Any] | None:
        path = self.state_dir / CHOICE_FILE
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def models(self) -> dict[str, RulModel]:
        return _models(self.state_dir, self.models_stamp())

    def require_models(self) -> dict[str, RulModel]:
        """The chosen, local and federation models, or a :class:`ConsoleError` saying how
        the site gets them."""
        models = self.models()
        if CHOSEN not in models:
            raise ConsoleError(
                "This site has not chosen a model yet. It chooses one in a federation's "
                "personalisation round, after the last training round: ask the "
                "federation's admin for personalisation (federation create "
                "--personal-epochs N), and keep the site worker running."
            )
        return models

    def fleet_files(self) -> list[Path]:
        return sorted(self.data_dir.glob(FLEET_PATTERN))

    def validation_frame(self) -> pd.DataFrame:
        """The site's run-to-failure engines that no model of the site trained on (read
        once per change of its files, though the intervals, drivers and replay use it)."""
        return _validation_frame(self, self.models_stamp())

    def fleet(self) -> list[FleetEngine]:
        return _fleet(self, self.fleet_stamp())

    def calibration(self, role: str) -> Calibration:
        return _calibration(self, role, self.models_stamp())

    def drivers(self) -> list[str]:
        return _drivers(self, self.models_stamp())

    def replay_pool(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The validation engines' lives and each model's predicted RUL after every cycle."""
        return _replay_pool(self, self.models_stamp())


# Caches keyed by the files' modification times: a new round's models replace the old.


@functools.lru_cache(maxsize=8)
def _models(state_dir: Path, stamp: tuple[tuple[str, float], ...]) -> dict[str, RulModel]:
    return {
        role: RulModel.load(state_dir / name)
        for role, name in MODEL_FILES.items()
        if (state_dir / name).is_file()
    }


@functools.lru_cache(maxsize=8)
def _validation_frame(state: SiteState, stamp: tuple[tuple[str, float], ...]) -> pd.DataFrame:
    units = (state.choice() or {}).get("val_units") or []
    frame = training_rows(state.data_dir)
    return frame[frame["unit"].isin(units)].reset_index(drop=True)


@functools.lru_cache(maxsize=8)
def _calibration(state: SiteState, role: str, stamp: tuple[tuple[str, float], ...]) -> Calibration:
    model = state.require_models()[role]
    frame = state.validation_frame()
    if frame.empty:
        return Calibration.of(np.empty(0), np.empty(0), 0)
    x, y = model.pipeline.training_windows(frame)
    return Calibration.of(model.predict_windows(x), y, int(frame["unit"].nunique()))


@functools.lru_cache(maxsize=8)
def _drivers(state: SiteState, stamp: tuple[tuple[str, float], ...]) -> list[str]:
    """The sensors the chosen model leans on most: the rise of its error on the
    validation windows when one sensor's values are shuffled across windows."""
    model = state.require_models()[CHOSEN]
    sensors = model.pipeline.sensors
    frame = state.validation_frame()
    if frame.empty:
        frame = training_rows(state.data_dir)
    x, y = model.pipeline.training_windows(frame)
    rng = np.random.default_rng(0)
    base = float(np.mean((model.predict_windows(x) - y) ** 2))
    rise = []
    for j in range(len(sensors)):
        shuffled = x.copy()
        shuffled[:, :, j] = x[rng.permutation(len(x)), :, j]
        rise.append(float(np.mean((model.predict_windows(shuffled) - y) ** 2)) - base)
    order = np.argsort(rise)[::-1][:DRIVERS]
    return [sensors[i] for i in order]


@functools.lru_cache(maxsize=8)
def _fleet(state: SiteState, stamp: tuple[tuple[str, float], ...]) -> list[FleetEngine]:
    models = state.require_models()
    drivers = state.drivers()
    chosen = models[CHOSEN]
    engines = []
    for path in state.fleet_files():
        frame = read_engine_file(path, "test")
        predicted = {
            role: model.predict_frame(frame).set_index("unit")["predicted_rul"]
            for role, model in models.items()
        }
        scaled = pd.DataFrame(
            chosen.pipeline.transform(frame)[:, : len(chosen.pipeline.sensors)],
            columns=chosen.pipeline.sensors,
        )
        scaled["unit"] = frame["unit"].to_numpy()
        for unit, rows in scaled.groupby("unit", sort=False):
            engines.append(
                FleetEngine(
                    file=path.name,
                    unit=int(unit),
                    cycles=int((frame["unit"] == unit).sum()),
                    predicted={role: float(p[unit]) for role, p in predicted.items()},
                    sparks={s: rows[s].to_numpy()[-SPARK_CYCLES:].tolist() for s in drivers},
                )
            )
    return engines


@functools.lru_cache(maxsize=8)
def _replay_pool(
    state: SiteState, stamp: tuple[tuple[str, float], ...]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    models = state.require_models()
    frame = state.validation_frame()
    if frame.empty:
        raise ConsoleError(
            "This site kept no validation engines (too few engines to keep some back), so "
            "it has no engines that neither model trained on to replay."
        )
    lives = frame.groupby("unit", sort=False)["cycle"].size().to_numpy()
    return lives, {role: trajectories(model, frame) for role, model in models.items()}
