"""Boosted trees through the round engine: the sketch of the bins, one tree level a round
from the secure sum of the sites' histograms, votes, early stopping and personalisation."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest

from federation.core import messages as m
from federation.core.engine import state as fs
from federation.core.engine.boosting import SHARES
from federation.core.engine.rounds import next_round
from federation.core.engine.simulation import Simulation, run_simulation
from federation.core.engine.site import site_input
from federation.core.engine.training import CHOICES, FederatedTraining, prepare_local_data
from federation.core.messages import Kind
from federation.core.secagg.primitives import SecAggError
from turbofan.data.files import read_engine_file
from turbofan.models.artefact import HYBRID, TREES, RulModel
from turbofan.models.fit import NetworkRecipe
from turbofan.models.trees import BoostingSettings, Ensemble, fit_trees, summaries

SMALL: dict[str, Any] = {"trees": 6, "depth": 3, "learning_rate": 0.3, "bins": 16, "min_child": 10}
RECIPE = NetworkRecipe(window=20, cycle_channel=True, pad_training=True)


@pytest.fixture(scope="module")
def sites(cmapss_dir) -> dict[str, pd.DataFrame]:
    train = read_engine_file(cmapss_dir / "train_FD001.txt")
    return {f"site-{k}": train[train["unit"].between(8 * k - 7, 8 * k)] for k in (1, 2, 3)}


def trees_training(**settings) -> FederatedTraining:
    boosting = {**SMALL, "subsample": 1.0, "patience": 0, **settings.pop("boosting", {})}
    return FederatedTraining(rounds=0, patience=0, val_fraction=0.25, boosting=boosting, **settings)


def pooled_fit(sites, pipeline, training: FederatedTraining):
    """The trees grown on every site's training windows in one place."""
    local = [
        prepare_local_data(f, pipeline, val_fraction=training.val_fraction, seed=training.seed)
        for _, f in sorted(sites.items())
    ]
    x = summaries(np.concatenate([data.x for data in local]))
    y = np.concatenate([data.y for data in local])
    settings = training.boosting_settings()
    assert settings is not None
    return fit_trees(x, y, settings, limit=125).ensemble


@pytest.mark.parametrize("secure", [True, False])
def test_a_federation_grows_the_very_trees_of_its_pooled_rows(sites, secure):
    training = trees_training(secure=secure)

    result = run_simulation(sites, RECIPE.pipeline("FD001"), RECIPE, training)

    assert result.model.kind == TREES
    federated = Ensemble.from_arrays(result.model.members[0])
    pooled = pooled_fit(sites, result.model.pipeline, training)
    assert federated.trees == pooled.trees == SMALL["trees"]
    np.testing.assert_array_equal(federated.edges, pooled.edges)  # the pooled quantiles' bins
    np.testing.assert_array_equal(federated.feature, pooled.feature)
    np.testing.assert_array_equal(federated.threshold, pooled.threshold)
    np.testing.assert_allclose(federated.value, pooled.value, atol=1e-4)
    assert federated.base == pytest.approx(pooled.base)
    kinds = [entry.kind for entry in result.log]
    assert kinds.count("sketch") and kinds.count("boost") and "train" not in kinds


def test_a_boost_round_sums_one_tree_level_and_a_finished_tree_is_a_candidate(sites):
    training = trees_training(boosting={"trees": 2, "depth": 2})
    simulation = Simulation(
        sites, template=RECIPE.pipeline("FD001"), recipe=RECIPE, training=training
    )
    state = simulation.setup()
    assert state.trees is not None and state.ensemble().trees == 0
    assert fs.input_length(Kind.BOOST, state) == 4 * state.channels * 16 * 2 + 2  # the root

    first = fs.advance(state, Kind.BOOST, simulation.run_round(Kind.BOOST, 1, state), number=1)
    assert first.growing is not None and first.accepted_trees is None
    assert fs.input_length(Kind.BOOST, first) == 2 * 4 * first.channels * 16 * 2 + 2

    outcome = simulation.run_round(Kind.BOOST, 2, first)
    assert outcome.new_tree
    second = fs.advance(first, Kind.BOOST, outcome, number=2)
    assert second.ensemble().trees == 1 and second.growing is None
    assert second.accepted_trees is not None and second.version == 1  # a candidate version

    judged = simulation.run_round(Kind.BOOST, 3, second)
    assert judged.verdict == fs.ACCEPTED and judged.voters == 3


def test_a_member_that_spoils_its_histograms_gets_the_tree_rejected(sites):
    training = trees_training(boosting={"trees": 3, "depth": 2, "learning_rate": 1.0})
    simulation = Simulation(
        sites, template=RECIPE.pipeline("FD001"), recipe=RECIPE, training=training
    )
    state = simulation.setup()
    honest = simulation.members[3].compute

    def lying(work, parameters):  # the most negative gradients the round's range allows
        vector, beside = honest(work, parameters)
        vector[:-2] = np.where(np.arange(len(vector) - 2) % 2 == 0, -parameters.value_range, 0)
        return vector, beside

    simulation.members[3].compute = lying
    for number in (1, 2):
        outcome = simulation.run_round(Kind.BOOST, number, state)
        state = fs.advance(state, Kind.BOOST, outcome, number=number)
    simulation.members[3].compute = honest
    spoiled = state.ensemble()
    assert spoiled.trees == 1 and np.abs(spoiled.value).max() == pytest.approx(125.0)

    judged = simulation.run_round(Kind.BOOST, 3, state)

    assert judged.verdict == fs.REJECTED and judged.worse >= 2
    assert judged.found_worse >= {1, 2}
    rolled_back = fs.advance(state, Kind.BOOST, judged, number=3)
    assert rolled_back.ensemble().trees == 0 and rolled_back.version == 0
    assert rolled_back.growing is None  # what was grown on the spoiled trees' errors went too


def test_growing_stops_once_validation_stalls_and_keeps_the_best_trees(sites):
    training = trees_training(boosting={"trees": 40, "learning_rate": 0.5, "patience": 3})

    result = run_simulation(sites, RECIPE.pipeline("FD001"), RECIPE, training)

    kept = Ensemble.from_arrays(result.model.members[0]).trees
    scored = {int(r["trees"]): r["val_rmse"] for r in result.history}
    best = min(scored, key=lambda trees: scored[trees])
    assert kept == best and max(scored) < 40  # stopped, and cut back to the best


def test_a_tree_rejected_twice_in_a_row_ends_growing(sites):
    # At a learning rate of 1 the second tree overshoots: the sites find it worse.
    training = trees_training(boosting={"trees": 40, "learning_rate": 1.0, "patience": 0})

    result = run_simulation(sites, RECIPE.pipeline("FD001"), RECIPE, training)

    rejected = [int(r["trees"]) for r in result.history if r.get("accepted") == 0.0]
    assert rejected == [2, 2]  # the second tree, rejected, grown again, rejected again
    assert result.history[-1] == {**result.history[-1], "trees": 2.0, "accepted": 0.0}
    assert Ensemble.from_arrays(result.model.members[0]).trees == 1


def test_the_rounds_of_a_boosted_federation_follow_one_another():
    sequence = [(Kind.POINTS, 0)]
    boosted = lambda number: number >= 3  # noqa: E731  growing stops after round 3
    while True:
        kind, number = sequence[-1]
        following = next_round(
            kind,
            number,
            0,
            personalise=True,
            boost_rounds=10,
            boosted=kind == Kind.BOOST and boosted(number),
        )
        if following is None:
            break
        sequence.append(following)

    assert sequence == [
        (Kind.POINTS, 0),
        (Kind.MOMENTS, 0),
        (Kind.SKETCH, 0),
        (Kind.BOOST, 1),
        (Kind.BOOST, 2),
        (Kind.BOOST, 3),
        (Kind.EVALUATE, 3),
        (Kind.PERSONALISE, 3),
    ]
    assert next_round(Kind.BOOST, 10, 0, boost_rounds=10) == (Kind.EVALUATE, 10)  # the most


def test_each_site_chooses_its_trees_and_the_sum_counts_the_choices(sites):
    training = trees_training(personal_epochs=1, boosting={"trees": 8})

    result = run_simulation(sites, RECIPE.pipeline("FD001"), RECIPE, training)

    chosen = [choice.choice for choice in result.choices.values()]
    assert len(chosen) == 3
    assert result.choice_counts == {name: chosen.count(name) for name in CHOICES}
    for choice in result.choices.values():
        assert set(choice.candidates) == set(CHOICES) - {"ditto"}
        assert len(choice.candidates["mixture"]) == 2  # the personal and alone trees
        model = RulModel(kind=TREES, pipeline=result.model.pipeline, members=choice.members)
        predicted = model.predict_frame(sites["site-1"])["predicted_rul"]
        assert predicted.between(0, 125).all()


def test_a_site_refuses_trees_other_than_the_round_announces(sites):
    training = trees_training()
    simulation = Simulation(
        sites, template=RECIPE.pipeline("FD001"), recipe=RECIPE, training=training
    )
    state = simulation.setup()
    work = {
        m.KEY_KIND: Kind.BOOST,
        **fs.task(Kind.BOOST, 1, state),
        m.KEY_PROTOCOL: {m.SITE: 1},
    }
    other = dataclasses.replace(state.ensemble(), base=10.0)
    work[m.KEY_TREES] = m.b64(m.weights_to_bytes(other.to_arrays()))
    parameters = simulation_parameters(simulation, state)

    with pytest.raises(SecAggError, match="do not match the round's announced digest"):
        site_input(work, simulation.data[1], parameters)


def simulation_parameters(simulation: Simulation, state: fs.FederationState):
    from federation.core.engine.rounds import Participant, plan_round

    participants = [
        Participant(s, simulation.members[s].identity.public, simulation.data[s].rows)
        for s in simulation.members
    ]
    return plan_round(
        kind=Kind.BOOST,
        participants=participants,
        length=fs.input_length(Kind.BOOST, state),
        secure=True,
        minimum=3,
        announcement=fs.announcement(Kind.BOOST, state),
    )


def test_trees_refuse_settings_that_do_not_go_with_them():
    assert trees_training().problems() == []
    private = dataclasses.replace(trees_training(), privacy={"noise_multiplier": 1.0})
    assert "do not run with differential privacy" in private.problems()[0]
    with pytest.raises(ValueError, match="depth must be between 1 and 8"):
        BoostingSettings.from_dict({"depth": 12})


def test_a_hybrid_trains_its_network_then_grows_trees_and_blends_them_as_validation_says(
    sites,
):
    recipe = dataclasses.replace(RECIPE, net_options={"hidden": 16}, ensemble=1)
    training = dataclasses.replace(
        trees_training(boosting={"trees": 4}), rounds=2, local_epochs=1, personal_epochs=1
    )
    assert training.family == "hybrid" and training.problems() == []

    result = run_simulation(sites, recipe.pipeline("FD001"), recipe, training)

    model = result.model
    assert model.kind == HYBRID and len(model.members) == len(model.trees) == 1
    assert model.share in SHARES
    kinds = [entry.kind for entry in result.log]
    assert kinds.index("boost") > max(i for i, k in enumerate(kinds) if k == "train")
    assert kinds[-12:] == ["personalise"] * 12 and kinds.count("evaluate") == 12  # one round
    # The network's last candidate was judged by the first boost round's sites.
    first_boost = next(r for r in result.history if r.get("trees") == 0.0)
    assert first_boost["accepted"] == 1.0
    # The blend is what the model predicts.
    network = dataclasses.replace(model, kind="network", trees=[], share=0.0)
    trees = dataclasses.replace(model, kind=TREES, members=model.trees)
    frame = sites["site-2"]
    blended = (1 - model.share) * network.predict_frame(frame)["predicted_rul"]
    blended += model.share * trees.predict_frame(frame)["predicted_rul"]
    np.testing.assert_allclose(model.predict_frame(frame)["predicted_rul"], blended, atol=1e-4)
    for choice in result.choices.values():
        assert choice.share == model.share and set(choice.tree_candidates) == set(choice.candidates)


def test_a_hybrid_model_file_keeps_its_network_trees_and_share(sites, tmp_path):
    rng = np.random.default_rng(0)
    pipeline = RECIPE.pipeline("FD001").fit(sites["site-1"])
    local = prepare_local_data(sites["site-1"], pipeline, val_fraction=0.2, seed=0)
    grown = fit_trees(summaries(local.x), local.y, BoostingSettings.from_dict(SMALL), limit=125)
    from turbofan.models.fit import new_network_model
    from turbofan.models.training import get_weights

    model = new_network_model(pipeline, RECIPE)
    model.members = [get_weights(model.new_net())]
    model.kind, model.trees, model.share = HYBRID, [grown.ensemble.to_arrays()], 0.7
    model.save(tmp_path / "hybrid.rulmodel")

    again = RulModel.load(tmp_path / "hybrid.rulmodel")

    assert again.kind == HYBRID and again.share == 0.7
    windows = local.x_val[rng.choice(len(local.x_val), 20)]
    np.testing.assert_allclose(again.predict_windows(windows), model.predict_windows(windows))
