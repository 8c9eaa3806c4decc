"""Models: training, predictions per engine, the saved artefact, the simulation."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from federation.core import messages as m
from federation.core.engine import simulation as simulation_module
from federation.core.engine.simulation import Simulation, run_simulation
from federation.core.engine.site import STALE_STARTS, SiteData, _line_key, earlier_starts
from federation.core.engine.training import (
    CHOICE_CONFIDENCE,
    CHOICES,
    MIN_JUDGING_ENGINES,
    TRAINING_EXTRAS,
    FederatedTraining,
    LocalData,
    PersonalChoice,
    choose_model,
    flatten,
    head_of,
    initial_weights,
    local_update,
    personalise_locally,
    prepare_local_data,
)
from tests.helpers import manage
from turbofan.data.features import FeaturePipeline
from turbofan.data.files import read_engine_file
from turbofan.metrics import rmse
from turbofan.models.artefact import ArtefactError, RulModel
from turbofan.models.fit import (
    NetworkRecipe,
    fit_baseline_model,
    fit_network_model,
    new_network_model,
    split_engines,
)
from turbofan.models.nets import build_net
from turbofan.models.training import (
    TrainConfig,
    get_weights,
    seed_everything,
    set_weights,
    train_network,
)

SMALL_NET = {"hidden": 16}


@pytest.fixture(scope="module")
def train(cmapss_dir):
    frame = read_engine_file(cmapss_dir / "train_FD001.txt")
    return frame[frame["unit"] <= 24].reset_index(drop=True)


@pytest.fixture(scope="module")
def test_frame(cmapss_dir):
    frame = read_engine_file(cmapss_dir / "test_FD001.txt", "test")
    # Unit 1 has 31 cycles; cut unit 2 to 12 cycles, shorter than the 30-cycle window.
    keep = (frame["unit"] == 1) | ((frame["unit"] == 2) & (frame["cycle"] <= 12))
    return frame[keep].reset_index(drop=True)


@pytest.fixture(scope="module")
def network(train):
    recipe = NetworkRecipe(net_options=SMALL_NET, train=TrainConfig(epochs=3), ensemble=2)
    return fit_network_model(train, FeaturePipeline.for_subset("FD001"), recipe, seed=1)


def test_engines_are_split_for_validation_by_engine_never_by_row(train):
    fit_rows, val_rows = split_engines(train, 0.25, seed=0)

    assert set(fit_rows["unit"]).isdisjoint(set(val_rows["unit"]))
    assert val_rows["unit"].nunique() == 6 and len(fit_rows) + len(val_rows) == len(train)


def test_a_network_predicts_one_rul_per_engine_including_engines_shorter_than_the_window(
    network, test_frame
):
    predictions = network.predict_frame(test_frame)

    assert list(predictions.columns) == ["unit", "predicted_rul"]
    assert predictions["unit"].tolist() == [1, 2]
    assert ((predictions["predicted_rul"] >= 0) & (predictions["predicted_rul"] <= 125)).all()


def test_training_is_deterministic_for_a_seed(train, network, test_frame):
    recipe = NetworkRecipe(net_options=SMALL_NET, train=TrainConfig(epochs=3), ensemble=2)

    again = fit_network_model(train, FeaturePipeline.for_subset("FD001"), recipe, seed=1)

    np.testing.assert_array_equal(
        again.predict_frame(test_frame)["predicted_rul"],
        network.predict_frame(test_frame)["predicted_rul"],
    )


def test_a_saved_network_loads_with_its_preprocessing_and_predicts_identically(
    network, test_frame, tmp_path
):
    path = tmp_path / "model.rulmodel"

    digest = network.save(path)
    loaded = RulModel.load(path)

    assert digest == loaded.hash and len(digest) == 64
    assert loaded.pipeline.sensors == network.pipeline.sensors
    assert loaded.pipeline.window == 30 and len(loaded.members) == 2
    np.testing.assert_array_equal(
        loaded.predict_frame(test_frame)["predicted_rul"],
        network.predict_frame(test_frame)["predicted_rul"],
    )


def test_a_saved_baseline_round_trips_too(train, test_frame, tmp_path):
    baseline = fit_baseline_model(train, FeaturePipeline.for_subset("FD001"))
    baseline.save(tmp_path / "baseline.rulmodel")

    loaded = RulModel.load(tmp_path / "baseline.rulmodel")

    np.testing.assert_array_equal(
        loaded.predict_frame(test_frame)["predicted_rul"],
        baseline.predict_frame(test_frame)["predicted_rul"],
    )


def test_an_altered_model_file_fails_its_hash_check(network, tmp_path):
    path = tmp_path / "model.rulmodel"
    network.save(path)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries["manifest.json"] = entries["manifest.json"].replace(b'"window": 30', b'"window": 31')
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)

    with pytest.raises(ArtefactError, match="hash check failed"):
        RulModel.load(path)


def test_a_file_that_is_no_model_is_refused_clearly(tmp_path):
    path = tmp_path / "notes.rulmodel"
    path.write_text("hello")

    with pytest.raises(ArtefactError, match="not a model file of this app"):
        RulModel.load(path)


def test_the_federation_fits_the_same_pipeline_as_pooled_rows_would_without_pooling(train):
    sites = {f"site-{k}": train[train["unit"].between(8 * k - 7, 8 * k)] for k in (1, 2, 3)}
    template = FeaturePipeline.for_subset("FD001", window=40, cycle_channel=True)

    simulation = Simulation(
        sites, template=template, recipe=NetworkRecipe(), training=FederatedTraining()
    )
    setup = simulation.setup()
    assert setup.pipeline is not None
    federated = FeaturePipeline.from_dict(setup.pipeline)
    pooled = template.unfitted().fit(train)

    assert federated.mean is not None and federated.std is not None
    assert pooled.mean is not None and pooled.std is not None
    assert federated.sensors == pooled.sensors
    assert (federated.window, federated.cycle_channel) == (40, True)
    np.testing.assert_allclose(federated.mean, pooled.mean, rtol=1e-12)
    # Summed squares lose a few digits against two-pass variance: harmless for scaling.
    np.testing.assert_allclose(federated.std, pooled.std, rtol=1e-5)
    np.testing.assert_allclose(federated.transform(train), pooled.transform(train), atol=1e-4)


def test_the_cnn_architecture_takes_the_same_windows(train):
    pipeline = FeaturePipeline.for_subset("FD001").fit(train)
    x, _ = pipeline.training_windows(train)

    net = build_net("cnn", pipeline.n_features, pipeline.window, filters=4, kernel=5)

    assert tuple(net(torch.from_numpy(x[:8])).shape) == (8,)


def test_a_small_federation_improves_on_its_starting_model(train, test_frame, cmapss_dir):
    sites = {f"site-{k}": train[train["unit"].between(8 * k - 7, 8 * k)] for k in (1, 2, 3)}
    recipe = NetworkRecipe(net_options=SMALL_NET)
    config = FederatedTraining(rounds=4, local_epochs=1, lr=5e-3, lr_final=5e-3, patience=0)
    validation = read_engine_file(cmapss_dir / "train_FD001.txt")
    validation = validation[validation["unit"].between(60, 75)]

    result = run_simulation(sites, FeaturePipeline.for_subset("FD001"), recipe, config)

    x, y = result.model.pipeline.training_windows(validation)
    start = RulModel(**{**result.model.__dict__, "members": []})
    seed_everything(0)
    start.members = [get_weights(start.new_net())]
    assert rmse(result.model.predict_windows(x), y) < 0.8 * rmse(start.predict_windows(x), y)
    assert [r["round"] for r in result.history] == [1, 2, 3, 4]
    assert result.model.meta["sites"] == ["site-1", "site-2", "site-3"]


def test_predict_prints_unit_and_predicted_rul_as_csv(network, tmp_path, cmapss_dir):
    network.save(tmp_path / "m.rulmodel")

    result = manage(
        "predict",
        "--model",
        str(tmp_path / "m.rulmodel"),
        "--test-file",
        str(cmapss_dir / "test_FD001.txt"),
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "unit,predicted_rul" and len(lines) == 101
    assert lines[1].startswith("1,")


def test_predict_with_a_bad_model_file_exits_1_without_traceback(tmp_path, cmapss_dir):
    (tmp_path / "m.rulmodel").write_text("not a model")

    result = manage(
        "predict",
        "--model",
        str(tmp_path / "m.rulmodel"),
        "--test-file",
        str(cmapss_dir / "test_FD001.txt"),
    )

    assert result.returncode == 1
    assert "not a model file of this app" in result.stderr and "Traceback" not in result.stderr


def test_predict_uses_the_model_a_site_chose(network, tmp_path, cmapss_dir):
    network.save(tmp_path / "state" / "chosen.rulmodel")
    test_file = str(cmapss_dir / "test_FD001.txt")

    chosen = manage("predict", "--site-state", str(tmp_path / "state"), "--test-file", test_file)
    missing = manage("predict", "--site-state", str(tmp_path), "--test-file", test_file)

    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.splitlines()[0] == "unit,predicted_rul"
    assert missing.returncode == 1 and "holds no chosen model" in missing.stderr


def test_fedprox_keeps_a_site_closer_to_the_global_model(train):
    pipeline = FeaturePipeline.for_subset("FD001").fit(train)
    data = prepare_local_data(train, pipeline, val_fraction=0.2, seed=0)
    model = new_network_model(pipeline, NetworkRecipe(net_options=SMALL_NET))
    seed_everything(0)
    start = get_weights(model.new_net())
    config = TrainConfig(epochs=2, lr=1e-2, schedule="constant")

    def drift(mu: float) -> float:
        weights, _ = local_update(model, start, data, config, proximal_mu=mu)
        return sum(float(((w - s) ** 2).sum()) for w, s in zip(weights, start, strict=True))

    assert drift(1.0) < 0.5 * drift(0.0)


class _Linear(torch.nn.Module):
    """A network without dropout, so that one full batch is one deterministic step."""

    def __init__(self, inputs: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(inputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.flatten(1)).squeeze(-1)


def test_an_optimiser_started_from_its_moments_goes_on_as_if_it_never_stopped():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3, 2)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) * 10 + 50).astype(np.float32)
    config = TrainConfig(epochs=4, batch_size=64, lr=0.1, schedule="constant", patience=0)
    torch.manual_seed(0)
    net = _Linear(6)
    start = get_weights(net)

    straight = train_network(net, x, y, config).weights
    half = dataclasses.replace(config, epochs=2)
    set_weights(net, start)
    first = train_network(net, x, y, half)
    resumed = train_network(net, x, y, half, moments=first.moments).weights
    set_weights(net, first.weights)
    afresh = train_network(net, x, y, half).weights

    assert first.moments is not None and float(first.moments[0][0]) == 2  # two steps taken
    for a, b in zip(straight, resumed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(straight[0], afresh[0])  # fresh moments take another path
    # Moments of another network are left out: it starts afresh.
    set_weights(net, first.weights)
    other = train_network(net, x, y, half, moments=[first.moments[0]]).weights
    np.testing.assert_array_equal(other[0], afresh[0])
    # ... and so are moments that are not finite (a damaged file).
    damaged = [np.full_like(array, np.nan) for array in first.moments]
    set_weights(net, first.weights)
    other = train_network(net, x, y, half, moments=damaged).weights
    np.testing.assert_array_equal(other[0], afresh[0])


def test_a_trainer_with_few_windows_makes_more_passes_to_take_its_least_steps():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3, 2)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) * 10 + 50).astype(np.float32)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.1, schedule="constant", patience=0)
    torch.manual_seed(0)
    net = _Linear(6)

    plain = train_network(net, x, y, config)  # 4 steps an epoch
    floored = train_network(net, x, y, dataclasses.replace(config, min_steps=10))
    enough = train_network(net, x, y, dataclasses.replace(config, min_steps=6))

    assert plain.moments is not None and floored.moments is not None
    assert len(plain.history) == 2 and float(plain.moments[0][0]) == 8
    assert len(floored.history) == 3 and float(floored.moments[0][0]) == 12  # whole epochs
    assert len(enough.history) == 2  # the epochs take enough steps already
    # The one-cycle schedule spans every step the floor adds.
    cycle = dataclasses.replace(config, schedule="onecycle", min_steps=10)
    assert len(train_network(net, x, y, cycle).history) == 3


def test_small_sites_take_the_federations_least_steps_a_round(train, monkeypatch):
    # Two engines a site: about 7 windows' batches of 64 an epoch, below the floor.
    sites = {f"site-{k}": train[train["unit"].between(2 * k - 1, 2 * k)] for k in (1, 2, 3)}
    real_input = simulation_module.site_input
    steps_kept: list[int] = []

    def recording(work, data, parameters, rng=None):
        vector, beside = real_input(work, data, parameters, rng)
        if work[m.KEY_KIND] == "train":
            kept = [data.private_weights("optimiser", key) for key in _optimiser_keys(data)]
            steps_kept.append(int(kept[0][0][0]))
        return vector, beside

    monkeypatch.setattr(simulation_module, "site_input", recording)
    config = FederatedTraining(
        rounds=2, local_epochs=1, local_steps=20, batch_size=64, val_fraction=0.0, patience=0
    )
    run_simulation(
        sites, FeaturePipeline.for_subset("FD001"), NetworkRecipe(net_options=SMALL_NET), config
    )

    first_round = steps_kept[:3]
    assert all(20 <= steps < 28 for steps in first_round)  # whole epochs, just past 20
    assert steps_kept[3:] == [2 * steps for steps in first_round]  # and again next round
    # A site alone trains as many steps as it takes in the federation.
    assert config.personal_settings()["alone_steps"] == 2 * 20


def test_each_site_keeps_its_optimiser_between_rounds_and_sends_only_its_model(train, monkeypatch):
    sites = {f"site-{k}": train[train["unit"].between(8 * k - 7, 8 * k)] for k in (1, 2, 3)}
    real_input = simulation_module.site_input
    sent: list[tuple[int, int, np.ndarray, int]] = []  # round, site, vector, steps kept

    def recording(work, data, parameters, rng=None):
        vector, beside = real_input(work, data, parameters, rng)
        if work[m.KEY_KIND] == "train":
            given = m.weights_from_bytes(m.unb64(work[m.KEY_WEIGHTS]))
            assert vector.size == flatten(given).size + TRAINING_EXTRAS  # the model, no more
            kept = [data.private_weights("optimiser", key) for key in _optimiser_keys(data)]
            steps = int(kept[0][0][0]) if kept else 0
            site = work[m.KEY_PROTOCOL][m.SITE]
            round_number = 1 + sum(1 for _, who, *_ in sent if who == site)
            sent.append((round_number, site, vector, steps))
        return vector, beside

    monkeypatch.setattr(simulation_module, "site_input", recording)
    config = FederatedTraining(rounds=3, local_epochs=1, lr=5e-3, lr_final=5e-3, patience=0)
    recipe = NetworkRecipe(net_options=SMALL_NET)
    template = FeaturePipeline.for_subset("FD001")

    run_simulation(sites, template, recipe, config)
    kept_runs, sent[:] = list(sent), []
    run_simulation(sites, template, recipe, dataclasses.replace(config, site_optimiser=False))
    fresh_runs = list(sent)

    # Each round a site's optimiser takes its local steps on from where it left them.
    for site in (1, 2, 3):
        steps = [s for _, who, _, s in kept_runs if who == site]
        assert len(steps) == 3 and steps[0] > 0 and steps == [steps[0] * r for r in (1, 2, 3)]
    assert all(steps == 0 for *_, steps in fresh_runs)  # nothing kept without the setting
    # The first round starts afresh either way; from the second the moments tell.
    by_round = {(r, who): v for r, who, v, _ in fresh_runs}
    for r, who, vector, _ in kept_runs:
        same = np.array_equal(vector, by_round[r, who])
        assert same if r == 1 else not same


def _optimiser_keys(data) -> list[str]:
    return [key for kind, key in data._private if kind == "optimiser"]


def test_with_personalisation_each_site_chooses_and_the_sum_counts_the_choices(train):
    # 8 engines a site, 3 of them validate: the fewest a site judges models on.
    sites = {f"site-{k}": train[train["unit"].between(8 * k - 7, 8 * k)] for k in (1, 2, 3)}
    recipe = NetworkRecipe(net_options=SMALL_NET)
    config = FederatedTraining(
        rounds=2,
        local_epochs=1,
        lr=5e-3,
        lr_final=5e-3,
        patience=0,
        personal_epochs=2,
        val_fraction=0.4,
    )

    result = run_simulation(sites, FeaturePipeline.for_subset("FD001"), recipe, config)

    assert set(result.choices) == set(sites)
    chosen = [c.choice for c in result.choices.values()]
    assert result.choice_counts == {name: chosen.count(name) for name in CHOICES}
    for choice in result.choices.values():  # each chose by the rule, on its validation
        assert set(choice.val_rmse) == set(CHOICES) - {"ditto"}  # no Ditto model trained
        assert_chosen_by_the_rule(choice)
        judged = choice.judged  # the mixture averages the copy's and the alone model's
        assert judged is not None and len(judged.truth) == len(judged.units)
        pair = [judged.predictions[n] for n in ("personal", "alone")]
        np.testing.assert_allclose(judged.predictions["mixture"], np.mean(pair, axis=0))
        for name, predicted in judged.predictions.items():
            rmse = float(np.sqrt(np.mean((predicted - judged.truth) ** 2)))
            assert rmse == pytest.approx(choice.val_rmse[name])
    kinds = [entry.kind for entry in result.log]
    assert kinds[-3 * 4 :] == ["personalise"] * 12  # four stages of three sites, last


def assert_chosen_by_the_rule(choice: PersonalChoice) -> None:
    """The federation's model, unless another beat it with confidence: then the best of
    those that did."""
    sure = {n for n, c in choice.confidence.items() if c >= CHOICE_CONFIDENCE}
    if choice.choice == "global":
        assert not sure
    else:
        assert choice.choice in sure
        assert choice.val_rmse[choice.choice] == min(choice.val_rmse[n] for n in sure)


def test_a_private_head_never_enters_what_a_site_sends(train, monkeypatch):
    """FedPer: every training input carries back the head the site was given (times its
    weight), never the one it trained; the federation's head never moves, and each site's
    chosen model uses its own."""
    sites = {f"site-{k}": train[train["unit"].between(10 * k - 9, 10 * k)] for k in (1, 2, 3)}
    inputs: list[tuple[dict, np.ndarray, float]] = []
    real_input = simulation_module.site_input

    def recording(work, data, parameters, rng=None):
        vector, beside = real_input(work, data, parameters, rng)
        if work[m.KEY_KIND] == "train":
            site = work[m.KEY_PROTOCOL][m.SITE]
            inputs.append((work, vector, parameters.weight_of((site,))))
        return vector, beside

    monkeypatch.setattr(simulation_module, "site_input", recording)
    config = FederatedTraining(
        rounds=3,
        local_epochs=1,
        lr=5e-3,
        lr_final=5e-3,
        patience=0,
        personal_epochs=1,
        private_head=True,
    )
    recipe = NetworkRecipe(net_options=SMALL_NET)

    result = run_simulation(sites, FeaturePipeline.for_subset("FD001"), recipe, config)

    given_heads = []
    for work, vector, weight in inputs:
        given = m.weights_from_bytes(m.unb64(work[m.KEY_WEIGHTS]))
        head_size = sum(t.size for t in head_of(given))
        body_size = flatten(given).size - head_size
        sent_head = vector[body_size : body_size + head_size]
        np.testing.assert_allclose(sent_head, weight * flatten(head_of(given)), rtol=1e-6)
        given_heads.append(flatten(head_of(given)))
    assert len(inputs) == 3 * 3
    # The federation's head is the initial one in every round: nothing about a site's.
    assert all(np.array_equal(h, given_heads[0]) for h in given_heads)
    final = result.model.members[0]
    np.testing.assert_array_equal(flatten(head_of(final)), given_heads[0])
    # Each site trained a head of its own, and its chosen model uses it.
    own_heads = []
    for choice in result.choices.values():
        head = flatten(head_of(choice.candidates["global"][0]))
        assert not np.allclose(head, given_heads[0])
        assert np.array_equal(choice.candidates["global"][0][0], final[0])  # shared body
        own_heads.append(head)
    assert not np.allclose(own_heads[0], own_heads[1])


def test_a_ditto_model_trains_at_each_site_and_changes_nothing_the_sites_send(train):
    sites = {f"site-{k}": train[train["unit"].between(8 * k - 7, 8 * k)] for k in (1, 2, 3)}
    recipe = NetworkRecipe(net_options=SMALL_NET)
    plain = FederatedTraining(  # 3 validation engines a site: enough to judge on
        rounds=2,
        local_epochs=1,
        lr=5e-3,
        lr_final=5e-3,
        patience=0,
        personal_epochs=1,
        val_fraction=0.4,
    )
    template = FeaturePipeline.for_subset("FD001")

    without = run_simulation(sites, template, recipe, plain)
    with_ditto = run_simulation(sites, template, recipe, dataclasses.replace(plain, ditto_mu=0.1))

    # The federation's model is the same to the bit: a Ditto model never enters the sum.
    for a, b in zip(without.model.members[0], with_ditto.model.members[0], strict=True):
        np.testing.assert_array_equal(a, b)
    for choice in with_ditto.choices.values():
        assert set(choice.val_rmse) == set(CHOICES)
        assert_chosen_by_the_rule(choice)
        ditto, fine_tuned = choice.candidates["ditto"][0], choice.candidates["personal"][0]
        assert not np.array_equal(ditto[0], fine_tuned[0])
        assert not np.array_equal(ditto[0], with_ditto.model.members[0][0])


def test_ensemble_members_train_the_same_models_in_processes_of_their_own(train, monkeypatch):
    sites = {f"site-{k}": train[train["unit"].between(10 * k - 9, 10 * k)] for k in (1, 2, 3)}
    recipe = NetworkRecipe(net_options=SMALL_NET, ensemble=2)
    config = FederatedTraining(rounds=2, local_epochs=1, patience=0, personal_epochs=1)
    template = FeaturePipeline.for_subset("FD001")
    results = {}
    for processes in ("1", "2"):
        monkeypatch.setenv(simulation_module.PROCESSES_ENV, processes)
        results[processes] = run_simulation(sites, template, recipe, config)

    one, two = results["1"], results["2"]
    assert simulation_module.member_processes(2, private=False) == 2
    assert simulation_module.member_processes(2, private=True) == 1  # DP: one budget
    for a, b in zip(one.model.members, two.model.members, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert [r["member"] for r in two.history] == [0, 0, 1, 1]
    assert one.choice_counts == two.choice_counts
    assert {n: c.choice for n, c in one.choices.items()} == {
        n: c.choice for n, c in two.choices.items()
    }
    assert [(e.site, e.stage, e.kind) for e in one.log] == [
        (e.site, e.stage, e.kind) for e in two.log
    ]


def test_a_site_with_too_few_validation_engines_to_judge_keeps_the_federations_model(train):
    frame = train[train["unit"].between(1, 5)]  # 5 engines: 1 validates
    pipeline = FeaturePipeline.for_subset("FD001").fit(frame)
    recipe = NetworkRecipe(net_options=SMALL_NET)
    data = prepare_local_data(frame, pipeline, val_fraction=0.15, seed=0)
    model = new_network_model(pipeline, recipe)
    start = initial_weights(pipeline, recipe, 0)
    settings = FederatedTraining(rounds=1, local_epochs=1, personal_epochs=1).personal_settings()

    chosen = personalise_locally(model, start, start, data, settings)

    assert data.val_engines == 1 < MIN_JUDGING_ENGINES
    assert chosen.choice == "global"  # even where another scored better on that one engine
    assert set(chosen.val_rmse) == set(CHOICES) - {"ditto"}


def test_a_site_whose_personalised_model_is_worse_on_validation_keeps_another(train):
    frame = train[train["unit"].between(1, 12)]
    pipeline = FeaturePipeline.for_subset("FD001").fit(frame)
    recipe = NetworkRecipe(net_options=SMALL_NET)
    data = prepare_local_data(frame, pipeline, val_fraction=0.25, seed=0)
    model = new_network_model(pipeline, recipe)
    start = initial_weights(pipeline, recipe, 0)
    settings = FederatedTraining(rounds=1, local_epochs=1, personal_epochs=1).personal_settings()
    # A personalisation that only makes things worse: a learning rate that diverges.
    settings.update(lr_final=50.0)

    chosen = personalise_locally(model, start, start, data, settings)

    assert chosen.val_rmse["personal"] > min(chosen.val_rmse["global"], chosen.val_rmse["alone"])
    assert chosen.choice != "personal"


def _validation(errors: dict[str, list[float]], windows: int = 10) -> tuple[LocalData, dict]:
    """Validation windows of ``len(errors["global"])`` engines, ``windows`` each, and each
    candidate's predictions off the label by the candidate's error on that engine."""
    engines = len(errors["global"])
    units = np.repeat(np.arange(engines), windows)
    y = np.full(len(units), 50.0)
    data = LocalData(np.zeros((0, 1, 1)), np.zeros(0), np.zeros((len(y), 1, 1)), y, engines, units)
    predictions = {n: y + np.repeat(e, windows) for n, e in errors.items()}
    return data, predictions


def test_a_site_takes_its_own_model_when_it_is_better_on_nearly_every_engine():
    data, predictions = _validation(
        {"global": [10, 12, 9, 11, 10, 13], "personal": [6, 7, 9.5, 5, 6, 8], "alone": [20] * 6}
    )

    choice, rmse, confidence = choose_model(predictions, data, seed=0)

    assert choice == "personal" and confidence["personal"] > 0.99
    assert rmse["personal"] < rmse["global"] < rmse["alone"]


def test_a_site_keeps_the_federations_model_when_another_is_better_by_one_engines_luck():
    # Better on average, thanks to one engine; worse on the others.
    data, predictions = _validation(
        {"global": [10, 10, 10, 10, 30], "personal": [11, 11, 11, 11, 2]}
    )

    choice, rmse, confidence = choose_model(predictions, data, seed=0)

    assert rmse["personal"] < rmse["global"]
    assert confidence["personal"] < CHOICE_CONFIDENCE and choice == "global"


def test_a_site_keeps_the_federations_model_on_too_few_engines_to_judge():
    data, predictions = _validation({"global": [10, 10], "personal": [1, 1]})

    assert choose_model(predictions, data, seed=0)[0] == "global"


def test_the_choice_repeats_for_the_same_site_and_data():
    data, predictions = _validation(
        {"global": [10, 9, 11, 10, 12], "personal": [9, 8, 10, 11, 10], "alone": [9, 9, 9, 9, 9]}
    )

    assert choose_model(predictions, data, seed=3) == choose_model(predictions, data, seed=3)


def test_after_a_rejection_a_site_deletes_the_moments_it_will_never_use_again(tmp_path):
    data = SiteData(pd.DataFrame(), private_dir=tmp_path)
    moments = [np.arange(3.0)]
    work = {m.KEY_PIPELINE: {"subset": "FD001"}, m.KEY_LOCAL: {}}

    def start(lineage: int, restart: int) -> dict:
        return {**work, m.KEY_OPTIMISER: {"lineage": lineage, "restart": restart}}

    def key(lineage: int, restart: int) -> str:
        found = _line_key(start(lineage, restart), m.KEY_OPTIMISER)
        assert found is not None
        return found

    for lineage in (1, 2):  # two members' lines, each started before any rejection
        data.keep_private("optimiser", key(lineage, 0), moments)
    assert earlier_starts(start(1, 0)) == []

    stale = earlier_starts(start(1, 2))  # member 1's line, after two rejections
    assert stale == [key(1, 0), key(1, 1)]
    for gone in stale:
        data.forget_private("optimiser", gone)

    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f"private-optimiser-{key(2, 0)}.npz"]
    assert data.private_weights("optimiser", stale[0]) is None
    # However many rejections a coordinator claims, a site looks back a bounded way.
    assert len(earlier_starts(start(1, 10**9))) == STALE_STARTS
