"""``manage.py tycoon_pack``: predict every cycle of the replayed engines with every model.

Models: ``federated`` is a live federation's latest model version; ``centralised``
(the public training engines in one place, the oracle) and ``local:single-site`` (a
single site's worth of public engines: as many as a typical member has, drawn at random)
are trained here from the public C-MAPSS training file, with the federation's own recipe,
or taken from a ``rul_report`` output folder. The coordinator never trains on a site's
folder: a model trained on one site's data alone is what secure aggregation hides; each
site compares its own local model in its console. The engines replayed are the
partition's held-out engines, which no site has and no model here trained on.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.tycoon import pack_path
from federation.core.crossfit import CrossfitConfig, crossfit
from federation.core.recipes import default_recipe, default_training
from federation.models import Federation, ModelVersion
from federation.services.versions import latest_accepted
from federation.specs import federation_recipe, federation_training
from turbofan.data.files import DataFileError, read_engine_file, read_rul_file
from turbofan.data.partition import HOLDOUT, read_manifest
from turbofan.data.source import DataSourceError, find_data_dir
from turbofan.models.artefact import ArtefactError, RulModel
from turbofan.models.fit import NetworkRecipe, fit_network_model
from turbofan.tycoon_pack import (
    CENTRALISED,
    FEDERATED,
    LOCAL,
    EngineSet,
    ModelInfo,
    PredictionPack,
    add_predictions,
    add_sensors,
    engine_set,
)

SINGLE_SITE = "single-site"  # the local strategy's model: a site's worth of public engines


class Command(BaseCommand):
    help = (
        "Build the Turbofan Tycoon's prediction pack: every model's predicted RUL after "
        "each cycle of the held-out engines of a partition folder (and of the test engines). "
        "federated = a federation's latest model; centralised and a single site's worth of "
        "data are trained here on public engines (or taken from --report), never on a "
        "site's folder."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--sites-dir",
            type=Path,
            default=None,
            help="a partition folder (partition_data --out, or the demo's): site folders, "
            "holdout/ and partition.json; default: the demo's",
        )
        parser.add_argument(
            "--federation",
            default=None,
            help="federation whose latest model is 'federated' (default: the one with the "
            "newest trained model on the subset)",
        )
        parser.add_argument(
            "--report",
            type=Path,
            default=None,
            help="take centralised, local and federated models from this rul_report folder "
            "instead of training (they trained on every engine, held-out ones included)",
        )
        parser.add_argument(
            "--crossfit",
            action="store_true",
            help="replay every run-to-failure engine of --subset instead of a partition's "
            "held-out ones, each predicted only by models that never trained on it: per fold, "
            "centralised, a single site's worth and federated (simulated) models trained on "
            "the other folds",
        )
        parser.add_argument(
            "--subset",
            default=None,
            choices=["FD001", "FD002", "FD003", "FD004"],
            help="with --crossfit: the subset (default: the federation's, else FD001)",
        )
        parser.add_argument("--folds", type=int, default=5, help="with --crossfit: folds")
        parser.add_argument(
            "--rounds",
            type=int,
            default=None,
            help="with --crossfit: federated rounds per fold (default: the federation's, else 30)",
        )
        parser.add_argument("--out", type=Path, default=None, help="default: the Tycoon's pack")
        parser.add_argument("--seed", type=int, default=0, help="seed of the trained models")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.perf_counter()
        sites_dir = options["sites_dir"] or Path(settings.VAR_DIR) / "demo" / "sites"
        try:
            if options["crossfit"]:
                pack = self._build_crossfit(options)
            else:
                pack = self._build(sites_dir, options)
        except (DataSourceError, DataFileError, ArtefactError, ValueError, OSError) as error:
            raise CommandError(str(error)) from None
        out = pack.save(options["out"] or pack_path())
        names = ", ".join(m.key for m in pack.models)
        self.stdout.write(
            f"Prediction pack of {len(pack.lives)} {pack.subset} engines no model trained on "
            f"({names}) "
            f"written to {out} in {time.perf_counter() - started:.0f} s"
        )

    def _build(self, sites_dir: Path, options: dict[str, Any]) -> PredictionPack:
        if not (sites_dir / "partition.json").is_file():
            raise ValueError(
                f"{sites_dir} is no partition folder (no partition.json): run `manage.py demo` "
                "or `manage.py partition_data --out DIR` and pass --sites-dir DIR"
            )
        manifest = read_manifest(sites_dir)
        subset = _one_subset(manifest)
        holdout_frame = read_engine_file(sites_dir / HOLDOUT / f"train_{subset}.txt")
        data_dir = find_data_dir()
        test_frame = read_engine_file(data_dir / f"test_{subset}.txt", "test")
        test_rul = read_rul_file(
            data_dir / f"RUL_{subset}.txt", expected_units=test_frame["unit"].nunique()
        )
        # A report brings its own federated model: a live one only when asked for by name.
        if options["report"] and options["federation"] is None:
            federation = None
        else:
            federation = _federation(options["federation"], subset)
        models = self._models(sites_dir, manifest, subset, federation, options)
        holdout = engine_set(holdout_frame)
        add_sensors(holdout, holdout_frame)  # what the game's turbofans show
        # Units in the holdout file are renumbered 1..N in source order: show the source ids.
        holdout.units = np.asarray(manifest["holdout"]["engines"][subset], dtype=np.int64)
        test = engine_set(test_frame, test_rul)
        self.stdout.write(f"Predicting every cycle with {len(models)} models ...")
        for info, model in models:
            _predict(holdout, holdout_frame, info.key, model)
            _predict(test, test_frame, info.key, model)
        return PredictionPack(
            subset=subset,
            models=[info for info, _ in models],
            holdout=holdout,
            test=test,
            rul_cap=float(models[0][1].pipeline.rul_cap or 125),
            meta={"built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )

    def _build_crossfit(self, options: dict[str, Any]) -> PredictionPack:
        federation = _federation(options["federation"], options["subset"] or "FD001")
        subset = options["subset"] or (federation.subset if federation else "FD001")
        recipe = federation_recipe(federation) if federation else _one_network()
        recipe.ensemble = 1  # one network per model, as a live federation trains
        training = federation_training(federation) if federation else default_training()
        if options["rounds"] is not None:
            if not 1 <= options["rounds"] <= 200:
                raise ValueError(f"--rounds must be from 1 to 200, got {options['rounds']}")
            training = replace(training, rounds=options["rounds"])
        data_dir = find_data_dir()
        frame = read_engine_file(data_dir / f"train_{subset}.txt")
        test = read_engine_file(data_dir / f"test_{subset}.txt", "test")
        test_rul = read_rul_file(
            data_dir / f"RUL_{subset}.txt", expected_units=test["unit"].nunique()
        )
        models, engines, tested = crossfit(
            frame,
            subset,
            recipe,
            training,
            CrossfitConfig(folds=options["folds"], seed=options["seed"]),
            test=test,
            test_rul=test_rul,
            say=self.stdout.write,
        )
        return PredictionPack(
            subset=subset,
            models=models,
            holdout=engines,
            test=tested,
            rul_cap=float(recipe.pipeline(subset).rul_cap or 125),
            meta={
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "crossfit": {"folds": options["folds"], "rounds": training.rounds},
            },
        )

    def _models(
        self,
        sites_dir: Path,
        manifest: dict[str, Any],
        subset: str,
        federation: Federation | None,
        options: dict[str, Any],
    ) -> list[tuple[ModelInfo, RulModel]]:
        if options["report"]:
            models = _report_models(options["report"], subset)
        else:
            recipe = federation_recipe(federation) if federation else _one_network()
            models = self._train(sites_dir, manifest, subset, recipe, options["seed"])
        if federation is not None:
            models = [m for m in models if m[0].kind != FEDERATED] + [_federated(federation)]
        elif not any(m[0].kind == FEDERATED for m in models):
            self.stdout.write("No federation has a trained model yet: no federated strategy.")
        return models

    def _train(
        self,
        sites_dir: Path,
        manifest: dict[str, Any],
        subset: str,
        recipe: NetworkRecipe,
        seed: int,
    ) -> list[tuple[ModelInfo, RulModel]]:
        public = read_engine_file(find_data_dir() / f"train_{subset}.txt")
        held_out = set(manifest["holdout"]["engines"][subset])
        public = public[~public["unit"].isin(held_out)]
        self.stdout.write(
            f"Training the centralised model on {public['unit'].nunique()} public engines ..."
        )
        centralised = fit_network_model(public, recipe.pipeline(subset), recipe, seed=seed)
        size = _site_size(manifest, subset)
        units = np.random.default_rng(seed).choice(public["unit"].unique(), size, replace=False)
        self.stdout.write(f"Training a single site's worth of data ({size} public engines) ...")
        one_site = public[public["unit"].isin(units)]
        local = fit_network_model(one_site, recipe.pipeline(subset), recipe, seed=seed)
        return [
            (
                ModelInfo(
                    CENTRALISED,
                    CENTRALISED,
                    "Centralised (the public engines in one place)",
                    "trained here on the public training engines",
                    centralised.hash,
                ),
                centralised,
            ),
            (
                ModelInfo(
                    f"{LOCAL}:{SINGLE_SITE}",
                    LOCAL,
                    f"A single site's worth of public engines ({size})",
                    "trained here on public engines, as many as a typical member has",
                    local.hash,
                    site=SINGLE_SITE,
                ),
                local,
            ),
        ]


def _site_size(manifest: dict[str, Any], subset: str) -> int:
    """As many engines as the partition's median site has of the subset."""
    sizes = [len(share["engines"].get(subset, [])) for share in manifest["sites"]]
    return max(2, int(np.median(sizes))) if sizes else 2


def _one_subset(manifest: dict[str, Any]) -> str:
    subsets = sorted(manifest["holdout"]["engines"])
    if len(subsets) != 1:
        raise ValueError(f"the replay takes one subset, the partition has {', '.join(subsets)}")
    return subsets[0]


def _one_network() -> NetworkRecipe:
    # As a live federation trains (one network), so local and federated compare fairly.
    recipe = default_recipe()
    recipe.ensemble = 1
    return recipe


ACCEPTED = ModelVersion.Status.ACCEPTED


def _federation(name: str | None, subset: str) -> Federation | None:
    if name is not None:
        federation = Federation.objects.filter(name=name).first()
        if federation is None:
            raise ValueError(f"no federation named {name!r}")
        if not federation.versions.filter(version__gt=0, status=ACCEPTED).exists():
            raise ValueError(f"federation {name!r} has no accepted trained model yet")
        return federation
    latest = (
        ModelVersion.objects.filter(version__gt=0, status=ACCEPTED, federation__subset=subset)
        .order_by("-created_at")
        .select_related("federation")
        .first()
    )
    return latest.federation if latest else None


def _federated(federation: Federation) -> tuple[ModelInfo, RulModel]:
    """The federation's model: its newest accepted version (never a candidate the sites
    have not scored yet, nor one they rejected)."""
    version = latest_accepted(federation)
    assert version is not None
    with version.file.open("rb") as handle:
        model = RulModel.from_bytes(handle.read(), source=str(version.file.name))
    info = ModelInfo(
        FEDERATED,
        FEDERATED,
        f"Federated ({federation.name}, version {version.version})",
        f"federation {federation.name!r}, model version {version.version}",
        version.sha256,
        details={"federation": federation.name, "version": version.version},
    )
    return info, model


def _report_models(folder: Path, subset: str) -> list[tuple[ModelInfo, RulModel]]:
    """A rul_report folder's models: they trained on every engine, held-out ones too."""
    models = []
    for path in sorted((folder / "models").glob(f"*_{subset}.rulmodel")):
        setup = path.name[: -len(f"_{subset}.rulmodel")]
        model = RulModel.load(path)
        source = f"rul_report {folder.name}/models/{path.name}"
        if setup in (CENTRALISED, FEDERATED):
            info = ModelInfo(setup, setup, f"{setup.capitalize()} (report)", source, model.hash)
        elif setup.startswith("local-"):
            site = setup[len("local-") :]
            info = ModelInfo(
                f"{LOCAL}:{site}", LOCAL, f"{site} alone (report)", source, model.hash, site=site
            )
        else:
            continue  # the baseline: not one of the replay's strategies
        info.trained_on_holdout = True
        models.append((info, model))
    if not models:
        raise ValueError(f"{folder}/models holds no {subset} models of a rul_report run")
    return models


def _predict(engines: EngineSet, frame: pd.DataFrame, key: str, model: RulModel) -> None:
    add_predictions(engines, frame, key, model)
