"""The accuracy report: centralised vs each site alone vs federated vs a baseline.

For each subset (and seed) it trains the four setups of the federated-learning
literature on the same engines (the federated one also as its first ensemble
member alone: the one model a live federation trains) and scores them on the subset's
test set, both the literature's way (true RUL capped at 125) and strictly (as given).
With a :class:`PrivacyPlan` it also trains, per target epsilon, the federated setup under
site-level differential privacy (``federated-dp-eps<epsilon>``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation.core.engine.simulation import run_simulation
from federation.core.engine.training import (
    ALONE_PATIENCE,
    CHOICES,
    FederatedTraining,
    PersonalChoice,
)
from federation.core.privacy import PrivacySettings, noise_for_budget
from federation.core.recipes import DP_CLIP
from turbofan.data.features import REGIMES_BY_SUBSET, FeaturePipeline
from turbofan.data.files import pool_engines, read_engine_file, read_rul_file
from turbofan.data.partition import plan_by_subset, plan_iid
from turbofan.metrics import evaluate
from turbofan.models.artefact import RulModel
from turbofan.models.fit import NetworkRecipe, fit_baseline_model, fit_model

SETUPS = ("centralised", "local", "federated", "federated-one", "baseline")
SCHEMES = ("iid", "by-subset")
DP_SETUP = "federated-dp-eps"  # + the target epsilon, e.g. federated-dp-eps8


@dataclass
class PrivacyPlan:
    """Federated setups under DP: one per target epsilon, each with the smallest noise
    multiplier that stays within it over all the rounds of all the ensemble members."""

    epsilons: list[float]
    delta: float = 1e-5
    clip: float = DP_CLIP
    sample_fraction: float = 1.0

    def settings(self, epsilon: float, rounds: int) -> PrivacySettings:
        # Checked (with a stand-in noise multiplier) before the accountant sees them.
        settings = PrivacySettings(
            noise_multiplier=1.0,
            clip=self.clip,
            epsilon=epsilon,
            delta=self.delta,
            sample_fraction=self.sample_fraction,
        )
        noise = noise_for_budget(epsilon, self.delta, rounds, self.sample_fraction)
        return dataclasses.replace(settings, noise_multiplier=noise)


@dataclass
class ReportConfig:
    subsets: list[str]
    sites: int = 4
    seeds: list[int] = field(default_factory=lambda: [0])
    scheme: str = "iid"
    recipe: NetworkRecipe = field(default_factory=NetworkRecipe)
    training: FederatedTraining = field(default_factory=FederatedTraining)
    privacy: PrivacyPlan | None = None

    def private_settings(self) -> dict[str, PrivacySettings]:
        """The DP setups by name, each with its settings (none without a plan)."""
        if self.privacy is None:
            return {}
        # Every ensemble member is another training run on the same sites: all count.
        rounds = self.training.rounds * self.recipe.ensemble
        return {
            f"{DP_SETUP}{epsilon:g}": self.privacy.settings(epsilon, rounds)
            for epsilon in self.privacy.epsilons
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.privacy is None:
            del data["privacy"]  # a report without DP reads as it always did
        return data


@dataclass
class TestSet:
    frame: pd.DataFrame
    rul: np.ndarray


def load_test_set(data_dir: Path, subset: str) -> TestSet:
    test = read_engine_file(data_dir / f"test_{subset}.txt", "test")
    rul = read_rul_file(data_dir / f"RUL_{subset}.txt", expected_units=test["unit"].nunique())
    return TestSet(test, rul)


def load_subset(data_dir: Path, subset: str) -> tuple[pd.DataFrame, TestSet]:
    return read_engine_file(data_dir / f"train_{subset}.txt"), load_test_set(data_dir, subset)


class Report:
    """Runs the setups, collects scores, writes report.json, report.md and predictions."""

    def __init__(
        self,
        config: ReportConfig,
        data_dir: Path,
        out_dir: Path,
        *,
        progress: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        if config.scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {config.scheme!r}: use one of {', '.join(SCHEMES)}")
        self.config, self.data_dir, self.out_dir = config, Path(data_dir), Path(out_dir)
        self.progress, self.say = progress, say
        # Settled before any training, so that a bad privacy setting fails at once.
        self.private = config.private_settings()
        self.results: dict[str, dict[str, Any]] = {}
        # With personalisation: per site, per seed, its own test RMSE of each candidate.
        self.personal: dict[str, list[dict[str, Any]]] = {}

    # --- running --------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        data = {s: load_subset(self.data_dir, s) for s in self.config.subsets}
        for seed_index, seed in enumerate(self.config.seeds):
            if self.config.scheme == "iid":
                for subset, (train, test) in data.items():
                    self._run_iid(subset, train, test, seed, seed_index)
            else:
                self._run_by_subset(data, seed, seed_index)
        report = {
            "config": self.config.to_dict(),
            "results": self._summarise(),
            **({"personalisation": self.personal} if self.personal else {}),
            "seconds": round(time.perf_counter() - started, 1),
        }
        self._write(report)
        return report

    def _run_iid(
        self, subset: str, train: pd.DataFrame, test: TestSet, seed: int, seed_index: int
    ) -> None:
        plan = plan_iid(subset, train["unit"].to_numpy(), self.config.sites, seed=seed, holdout=0)
        sites = {s.name: train[train["unit"].isin(s.engines[subset])] for s in plan.sites}
        template = self.config.recipe.pipeline(subset)
        self._run_setups(
            f"{subset} seed {seed}",
            seed,
            seed_index,
            train,
            template,
            {subset: test},
            {name: (frame, template, {subset: test}) for name, frame in sites.items()},
        )

    def _run_by_subset(
        self, data: dict[str, tuple[pd.DataFrame, TestSet]], seed: int, seed_index: int
    ) -> None:
        """Non-IID: one site per subset; each site alone is scored on its own subset."""
        plan = plan_by_subset(
            {s: t["unit"].to_numpy() for s, (t, _) in data.items()}, seed=seed, holdout=0
        )
        sites = {}
        for share in plan.sites:
            (subset,) = share.engines
            train, test = data[subset]
            sites[share.name] = (train, self.config.recipe.pipeline(subset), {subset: test})
        n_regimes = max(REGIMES_BY_SUBSET.get(s, 1) for s in data)
        template = self.config.recipe.pipeline(n_regimes=n_regimes)
        pooled = pool_engines([train for _, (train, _) in sorted(data.items())])
        tests = {s: test for s, (_, test) in data.items()}
        self._run_setups(f"seed {seed}", seed, seed_index, pooled, template, tests, sites)

    def _run_setups(
        self,
        title: str,
        seed: int,
        seed_index: int,
        pooled: pd.DataFrame,
        template: FeaturePipeline,
        tests: dict[str, TestSet],
        sites: dict[str, tuple[pd.DataFrame, FeaturePipeline, dict[str, TestSet]]],
    ) -> None:
        """The four setups; ``sites`` maps a name to its rows, pipeline and test sets."""
        self._step(
            f"{title}: centralised",
            seed_index,
            "centralised",
            tests,
            lambda: self._central(pooled, template, seed, "centralised"),
        )
        alone = self._alone_recipe()
        for name, (frame, own_template, own_tests) in sites.items():
            self._step(
                f"{title}: {name} alone",
                seed_index,
                f"local:{name}",
                own_tests,
                functools.partial(self._central, frame, own_template, seed, "local", alone),
            )
        site_frames = {name: frame for name, (frame, _, _) in sites.items()}
        site_tests = {name: own for name, (_, _, own) in sites.items()}
        federated: list[RulModel] = []

        def train_federated() -> RulModel:
            federated.append(self._federated(site_frames, template, seed, site_tests=site_tests))
            return federated[0]

        self._step(
            f"{title}: federated over {len(sites)} sites",
            seed_index,
            "federated",
            tests,
            train_federated,
        )
        if federated and len(federated[0].members) > 1:
            # The ensemble's first member alone: the one model a live federation trains.
            self._step(
                f"{title}: federated, one model",
                seed_index,
                "federated-one",
                tests,
                lambda: one_model(federated[0]),
            )
        for setup, settings in self.private.items():
            self._step(
                f"{title}: federated over {len(sites)} sites, DP epsilon {settings.epsilon:g} "
                f"(noise x{settings.noise_multiplier:.3g})",
                seed_index,
                setup,
                tests,
                functools.partial(self._federated, site_frames, template, seed, settings),
            )
        self._step(
            f"{title}: baseline",
            seed_index,
            "baseline",
            tests,
            lambda: fit_baseline_model(pooled, template.unfitted(), seed=seed),
        )

    def _alone_recipe(self) -> NetworkRecipe:
        """How a site trains alone: the recipe, for as many epochs (and at least as many
        steps) as the site trains in the federation (the same optimizer steps on the same
        engines), keeping its best
        epoch on its validation engines and stopping after as many epochs without a
        better one as a site alone does in the personalisation round."""
        training, recipe = self.config.training, self.config.recipe
        train = dataclasses.replace(
            recipe.train,
            epochs=max(recipe.train.epochs, training.rounds * training.local_epochs),
            min_steps=training.rounds * training.local_steps,
            patience=ALONE_PATIENCE,
        )
        return dataclasses.replace(recipe, train=train)

    def _central(
        self,
        frame: pd.DataFrame,
        template: FeaturePipeline,
        seed: int,
        description: str,
        recipe: NetworkRecipe | None = None,
    ) -> RulModel:
        """A model of the federation's family trained on ``frame`` in one place."""
        return fit_model(
            frame,
            template.unfitted(),
            recipe or self.config.recipe,
            **self.config.training.family_settings(),
            seed=seed,
            progress=self.progress,
            description=description,
        )

    def _federated(
        self,
        sites: dict[str, pd.DataFrame],
        template: FeaturePipeline,
        seed: int,
        privacy: PrivacySettings | None = None,
        *,
        site_tests: dict[str, dict[str, TestSet]] | None = None,
    ) -> RulModel:
        config = FederatedTraining(
            **{
                **self.config.training.to_dict(),
                "seed": seed,
                "privacy": privacy.to_dict() if privacy else None,
            }
        )
        result = run_simulation(sites, template, self.config.recipe, config, progress=self.progress)
        result.model.meta["rounds"] = result.history
        if result.choices and site_tests:
            self._score_choices(result.model, result.choices, site_tests, seed)
        return result.model

    def _score_choices(
        self,
        federated: RulModel,
        choices: dict[str, PersonalChoice],
        site_tests: dict[str, dict[str, TestSet]],
        seed: int,
    ) -> None:
        """Each site's candidates (its model alone, the federation's, its personalised
        one) on the site's own test sets, and what it chose on its validation engines:
        the report can see what a real coordinator never does. Each candidate's
        predictions, on the test engines and on the validation windows it was chosen on,
        go to ``candidates/`` (:func:`save_candidates`)."""
        for name, chosen in choices.items():
            for subset, test in site_tests[name].items():
                row: dict[str, Any] = {"seed": seed, "subset": subset, "choice": chosen.choice}
                tested: dict[str, np.ndarray] = {}
                for candidate, members in chosen.candidates.items():
                    model = RulModel(**{**federated.__dict__, "members": members, "meta": {}})
                    if chosen.share is not None:  # a hybrid's candidate: its trees too
                        model.trees, model.share = chosen.tree_candidates[candidate], chosen.share
                    predicted = model.predict_frame(test.frame)["predicted_rul"].to_numpy()
                    tested[candidate] = predicted
                    scores = evaluate(predicted, test.rul, cap=model.pipeline.rul_cap or 125)
                    row[candidate] = scores["literature"]["rmse"]
                    row[f"{candidate}_val"] = chosen.val_rmse[candidate]
                    if candidate != "global" and candidate in chosen.confidence:
                        row[f"{candidate}_confidence"] = chosen.confidence[candidate]
                row["chosen"] = row[chosen.choice]
                self.personal.setdefault(name, []).append(row)
                save_candidates(
                    self.out_dir / "candidates" / f"seed-{seed}_{name}_{subset}.npz",
                    tested,
                    np.asarray(test.rul, np.float64),
                    chosen,
                )
                figures = ", ".join(
                    f"{c} {row[c]:.2f}" for c in CHOICES if c in row and c != "global"
                )
                self.say(
                    f"[personalised] {name} on {subset}: global {row['global']:.2f}, "
                    f"{figures}: chose {chosen.choice} ({row['chosen']:.2f})"
                )

    def _step(
        self,
        title: str,
        seed_index: int,
        setup: str,
        tests: dict[str, TestSet],
        train: Callable[[], RulModel],
    ) -> None:
        self.say(f"[{title}] training ...")
        started = time.perf_counter()
        model = train()
        seconds = time.perf_counter() - started
        if model.meta.get("private_head"):
            # FedPer: the federation's model is a body without a usable head; each site's
            # model (the body with its own head) is scored in the personalisation table.
            self.say(f"[{title}] private heads: the sites' models are scored per site")
            return
        for subset, test in tests.items():
            predictions = model.predict_frame(test.frame)
            scores = evaluate(
                predictions["predicted_rul"].to_numpy(), test.rul, cap=model.pipeline.rul_cap or 125
            )
            entry = {"seed": self.config.seeds[seed_index], "seconds": round(seconds, 1), **scores}
            if "privacy" in model.meta:  # settings, rounds run and the epsilon they spent
                entry["privacy"] = model.meta["privacy"]
            self.results.setdefault(subset, {}).setdefault(setup, []).append(entry)
            self.say(
                f"[{title}] {subset}: RMSE {scores['literature']['rmse']:.2f} "
                f"(strict {scores['strict']['rmse']:.2f}), "
                f"score {scores['literature']['score']:.0f}, {seconds:.0f} s"
            )
            if seed_index == 0:
                self._save_predictions(setup, subset, predictions)
        if seed_index == 0:
            name = f"{setup.replace(':', '-')}_{'-'.join(sorted(tests))}.rulmodel"
            model.save(self.out_dir / "models" / name)

    # --- writing --------------------------------------------------------------------

    def _save_predictions(self, setup: str, subset: str, predictions: pd.DataFrame) -> None:
        folder = self.out_dir / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{setup.replace(':', '-')}_{subset}.csv"
        predictions.round({"predicted_rul": 3}).to_csv(folder / name, index=False)

    def _summarise(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for subset, setups in self.results.items():
            rows: dict[str, Any] = {}
            for setup, entries in setups.items():
                rows[setup] = {"runs": entries, "mean": _mean_scores(entries)}
            local = [e for s, es in setups.items() if s.startswith("local:") for e in es]
            if local:
                rows["local"] = {
                    "mean": _mean_scores(local),
                    "sites": sorted(s.split(":", 1)[1] for s in setups if s.startswith("local:")),
                }
            summary[subset] = rows
        return summary

    def _write(self, report: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (self.out_dir / "report.md").write_text(markdown_table(report))


def save_candidates(
    path: Path, tested: dict[str, np.ndarray], truth: np.ndarray, chosen: PersonalChoice
) -> None:
    """One site's candidates for study without retraining: ``test_<candidate>`` (its
    prediction for each test engine) beside ``test_truth``, and, where the site judged
    them, ``val_<candidate>`` beside ``val_truth`` and ``val_units`` (each validation
    window's engine). Written whole or not at all."""
    arrays: dict[str, Any] = {f"test_{name}": values for name, values in tested.items()}
    arrays["test_truth"] = truth
    if chosen.judged is not None:
        arrays.update({f"val_{n}": v for n, v in chosen.judged.predictions.items()})
        arrays["val_truth"], arrays["val_units"] = chosen.judged.truth, chosen.judged.units
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.npz")
    np.savez_compressed(partial, **arrays)
    partial.replace(path)


def one_model(model: RulModel) -> RulModel:
    """An ensemble's first member alone (a hybrid's first network and trees, blended at
    that member's share): the one model a live federation trains."""
    first = RulModel(**{**model.__dict__, "members": model.members[:1], "trees": model.trees[:1]})
    shares = model.meta.get("shares")
    if shares:
        first.share = float(shares[0])
    return first


def _mean_scores(entries: list[dict[str, Any]]) -> dict[str, Any]:
    mean: dict[str, Any] = {}
    for variant in ("literature", "strict"):
        mean[variant] = {
            metric: float(np.mean([e[variant][metric] for e in entries]))
            for metric in ("rmse", "score")
        }
    mean["rmse_std"] = float(np.std([e["literature"]["rmse"] for e in entries]))
    mean["runs"] = len(entries)
    return mean


def markdown_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per subset and setup."""
    seeds = report["config"]["seeds"]
    lines = [
        f"# RUL accuracy: {report['config']['scheme']} split, {report['config']['sites']} sites, "
        f"seeds {', '.join(map(str, seeds))}",
        "",
        "Literature: true test RUL capped at 125, as published figures are. "
        "Strict: true RUL as given. Means over seeds (and over sites for 'each site alone'). "
        "A site alone trains as many epochs as it does in the federation, keeping its best "
        "epoch on its own validation engines.",
        "",
        "| subset | setup | RMSE (literature) | score (literature) | RMSE (strict) | "
        "score (strict) | runs |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "centralised": "centralised",
        "local": "each site alone (mean)",
        "federated": "federated",
        "federated-one": "federated, one model (what a live federation trains)",
        "baseline": "gradient boosting (centralised)",
    }
    private: list[str] = []
    for subset, rows in report["results"].items():
        for setup in [*SETUPS[:4], *_private_setups(rows), *SETUPS[4:]]:
            if setup not in rows:
                continue
            if setup.startswith(DP_SETUP):
                epsilon = rows[setup]["runs"][0]["privacy"]["epsilon"]
                labels[setup] = f"federated (DP, eps={epsilon:g})"
                private.append(_privacy_row(subset, labels[setup], rows[setup]["runs"]))
            mean = rows[setup]["mean"]
            lit, strict = mean["literature"], mean["strict"]
            lines.append(
                f"| {subset} | {labels[setup]} | {lit['rmse']:.2f} ± {mean['rmse_std']:.2f} | "
                f"{lit['score']:.0f} | {strict['rmse']:.2f} | {strict['score']:.0f} | "
                f"{mean['runs']} |"
            )
    if private:
        lines += [
            "",
            "Differential privacy across sites: updates clipped to L2 norm 'clip', Gaussian "
            "noise of 'noise' x clip on their secure sum (added in shares by the sites), "
            "sites sampled at 'q' per round; epsilon spent by every round of every "
            "ensemble member (dp_accounting's RDP accountant). The last round's model is "
            "kept.",
            "",
            "| subset | setup | target epsilon | delta | clip | noise | q | rounds | "
            "epsilon spent |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *private,
        ]
    if report.get("personalisation"):
        lines += ["", *personal_table(report["personalisation"])]
    lines += ["", f"Total time: {report['seconds']} s.", ""]
    return "\n".join(lines)


def _natural(name: str) -> tuple[str, int]:
    """site-2 before site-10."""
    stem, _, number = name.rpartition("-")
    return (stem, int(number)) if number.isdigit() else (name, -1)


def personal_table(personal: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per site, on its own test set (means over seeds): its model alone (trained in the
    personalisation round, as many epochs as the federation trained), the federation's
    model, its fine-tuned copy, the mixture of that copy and its model alone, its Ditto
    model where it trained one, and the one it chose on its validation engines."""
    rows = [r for runs in personal.values() for r in runs]
    names = {
        "alone": "alone",
        "global": "global",
        "personal": "personalised",
        "mixture": "mixture",
        "ditto": "Ditto",
    }
    order = ("alone", *(c for c in CHOICES if c != "alone"))
    shown = [c for c in order if c in rows[0]]
    lines = [
        "Personalisation: each site on its own test set (literature RMSE, means over "
        "seeds). 'alone' trained as many epochs as the federation; the site chose on its "
        "validation engines, never on test scores.",
        "",
        f"| site | subset | {' | '.join(names[c] for c in shown)} | chosen | choices |",
        f"|---|---|{'---:|' * len(shown)}---:|---|",
    ]
    for site, runs_of_site in sorted(personal.items(), key=lambda item: _natural(item[0])):
        for subset in sorted({r["subset"] for r in runs_of_site}):
            runs = [r for r in runs_of_site if r["subset"] == subset]
            means = {k: float(np.mean([r[k] for r in runs])) for k in (*shown, "chosen")}
            picked = ", ".join(r["choice"] for r in runs)
            figures = " | ".join(f"{means[c]:.2f}" for c in shown)
            lines.append(f"| {site} | {subset} | {figures} | {means['chosen']:.2f} | {picked} |")
    return lines


def _private_setups(rows: dict[str, Any]) -> list[str]:
    return [setup for setup in rows if setup.startswith(DP_SETUP)]


def _privacy_row(subset: str, label: str, runs: list[dict[str, Any]]) -> str:
    """One DP setup's settings and the epsilon spent (the most over its seeds)."""
    dp = runs[0]["privacy"]
    spent = max(run["privacy"]["epsilon_spent"] for run in runs)
    rounds = max(run["privacy"]["rounds"] for run in runs)
    return (
        f"| {subset} | {label} | {dp['epsilon']:g} | {dp['delta']:g} | {dp['clip']:g} | "
        f"{dp['noise_multiplier']:.3f} | {dp['sample_fraction']:g} | {rounds} | {spent:.3f} |"
    )
