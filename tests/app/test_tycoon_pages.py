"""The Tycoon's pages and JSON API, on a small fake prediction pack."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest

from turbofan.tycoon_pack import EngineSet, ModelInfo, PredictionPack

pytestmark = pytest.mark.django_db

LIVES = np.array([120, 150, 180, 200, 260])
SITES = ["site-1", "site-2"]


def perfect(lives: np.ndarray, bias: float = 0.0) -> np.ndarray:
    cycles = np.arange(1, lives.max() + 1)
    rul = lives[:, None] - cycles[None, :]
    return np.where(rul >= 0, np.minimum(rul, 125) + bias, np.nan).astype(np.float32)


def fake_pack(*, federated: bool = True) -> PredictionPack:
    # Local models predict late (engines fail), the federated and centralised ones well.
    predicted = {"centralised": perfect(LIVES), "local:site-1": perfect(LIVES, 15)}
    predicted["local:site-2"] = perfect(LIVES, 5)
    if federated:
        predicted["federated"] = perfect(LIVES, 1)
    models = [ModelInfo(k, k.split(":")[0], k, "test") for k in predicted]
    for model in models:
        model.site = model.key.split(":")[1] if ":" in model.key else None
    test_cycles = np.array([30, 60])
    test = EngineSet(
        units=np.array([1, 2]),
        cycles=test_cycles,
        final_rul=np.array([80.0, 20.0]),
        predicted={k: np.full((2, 60), 50.0, dtype=np.float32) for k in predicted},
    )
    # Sensors that drift with wear, as the game's sparklines show them.
    wear = np.arange(LIVES.max())[None, :, None] / LIVES[:, None, None]
    noise = np.random.default_rng(0).normal(0, 0.05, (len(LIVES), LIVES.max(), 16))
    sensors = np.clip(255 * (0.3 + 0.5 * wear + noise), 0, 255).astype(np.uint8)
    holdout = EngineSet(np.arange(1, 6), LIVES, np.zeros(5), predicted, sensors=sensors)
    return PredictionPack(subset="FD001", models=models, holdout=holdout, test=test)


@pytest.fixture
def pack(settings, tmp_path):
    settings.TYCOON_PACK = tmp_path / "pack.npz"
    return fake_pack().save(settings.TYCOON_PACK)


@pytest.fixture
def no_pack(settings, tmp_path):
    settings.TYCOON_PACK = tmp_path / "missing.npz"


def simulate(client, **params):
    return client.get("/tycoon/api/simulate", params)


# --- without a pack ---------------------------------------------------------------------


def test_the_page_says_how_to_build_a_pack_when_there_is_none(client, no_pack):
    response = client.get("/tycoon/")

    assert response.status_code == 200
    assert b"No prediction pack yet" in response.content
    assert b"manage.py tycoon_pack" in response.content


def test_the_api_answers_404_with_the_command_when_there_is_no_pack(client, no_pack):
    response = simulate(client)

    assert response.status_code == 404
    assert "tycoon_pack" in response.json()["error"]


def test_a_damaged_pack_is_a_404_that_says_to_build_it_again(client, settings, tmp_path):
    settings.TYCOON_PACK = tmp_path / "pack.npz"
    settings.TYCOON_PACK.write_text("not a pack")

    for url in ("/tycoon/api/simulate", "/tycoon/api/models", "/tycoon/api/trajectory"):
        response = client.get(url)
        assert response.status_code == 404
        assert "tycoon_pack" in response.json()["error"]
    assert b"not a prediction pack" in client.get("/tycoon/").content


def test_the_model_page_says_how_to_build_a_pack_when_there_is_none(client, no_pack):
    response = client.get("/tycoon/models/")

    assert response.status_code == 200
    assert b"tycoon_pack" in response.content


# --- the page ---------------------------------------------------------------------------


def test_the_page_has_the_labelled_controls_the_browser_uses(client, pack):
    html = client.get("/tycoon/").content.decode()

    for element in (
        'id="tycoon-form"',
        'id="profit-table"',
        'id="profit-chart"',
        'id="play"',
        'id="speed"',
        'name="maintenance_cost"',
    ):
        assert element in html
    assert '<label for="id_maintenance_cost">' in html
    assert 'name="maintenance_cost" min="0"' in html and 'value="10000"' in html
    assert '<label for="speed"' in html
    assert "plotly/plotly.min.js" in html
    assert "profit = revenue per cycle" in html
    assert '<option value="site-2">' in html


# --- the API ------------------------------------------------------------------------------


def test_the_defaults_replay_five_strategies(client, pack):
    body = simulate(client).json()

    keys = [row["key"] for row in body["strategies"]]
    assert keys == ["corrective", "preventive", "local", "federated", "centralised"]
    assert body["parameters"]["maintenance_cost"] == 10_000
    assert body["parameters"]["fleet_size"] == 4
    assert body["parameters"]["site"] == "site-1"
    rows = {row["key"]: row for row in body["strategies"]}
    assert rows["corrective"]["maintenances"] == 0
    assert rows["corrective"]["savings_vs_corrective"] == 0
    assert rows["corrective"]["vs_corrective"] == {"difference": 0, "low": 0, "high": 0}
    assert rows["centralised"]["oracle"] is True
    assert rows["federated"]["failures"] == 0
    assert rows["local"]["failures"] > 0  # predicts 15 cycles late: the engines break first
    assert len(body["curve"]["profit"]["federated"]) == len(body["curve"]["cycles"])
    assert body["curve"]["profit"]["federated"][-1] == rows["federated"]["profit"]


def test_the_bottom_line_is_one_sentence_with_an_interval_over_engine_sequences(client, pack):
    body = simulate(client).json()

    line = body["bottom_line"]
    assert line["low"] <= line["worth"] <= line["high"]  # the mean of the paired sequences
    assert line["worth"] > 0  # the fake pack's local model predicts 15 cycles late
    assert line["sentence"].startswith("Federated predictive earns $")
    assert "on average (90%: $" in line["sentence"]
    assert line["sentence"].endswith("per factory of 4 engines over 5,000 cycles.")
    assert body["interval"] == {"sequences": 40, "level": 0.9}


def test_the_measures_read_sanely_savings_are_a_share_of_what_running_to_failure_loses(
    client, pack
):
    body = simulate(client, failure_cost=300_000).json()

    for row in body["strategies"]:
        assert row["savings_vs_corrective"] is None or row["savings_vs_corrective"] <= 1
        assert row["profit_per_engine_cycle"] <= 300
        vs = row["vs_corrective"]
        assert vs["low"] <= vs["high"]


def test_a_threshold_the_models_cannot_reach_is_refused_with_the_reason(client, pack):
    response = simulate(client, rul_threshold=125)

    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == "rul_threshold"
    assert "the models predict at most 125 cycles" in body["error"]
    assert body["error"].startswith("Predictive: maintain when predicted RUL is below (cycles)")


def test_what_joining_is_worth_is_federated_minus_the_sites_local_profit(client, pack):
    body = simulate(client, site="site-2").json()

    rows = {row["key"]: row for row in body["strategies"]}
    joining = body["joining"]
    assert joining["site"] == "site-2"
    assert joining["worth"] == rows["federated"]["profit"] - rows["local"]["profit"]
    assert [s["site"] for s in joining["sites"]] == SITES
    # Every site's worth comes with its interval over the paired engine sequences; the
    # chosen site's is the bottom line's.
    for row in joining["sites"]:
        assert row["low"] <= row["mean"] <= row["high"]
    assert (joining["mean"], joining["low"], joining["high"]) == (
        body["bottom_line"]["worth"],
        body["bottom_line"]["low"],
        body["bottom_line"]["high"],
    )


def test_a_higher_maintenance_cost_lowers_the_preventive_profit_by_its_count(client, pack):
    cheap = {r["key"]: r for r in simulate(client).json()["strategies"]}["preventive"]
    dear = {r["key"]: r for r in simulate(client, maintenance_cost=20_000).json()["strategies"]}

    assert dear["preventive"]["profit"] == cheap["profit"] - 10_000 * cheap["maintenances"]


def test_the_fleet_animation_gets_the_first_slots_episodes(client, pack):
    fleet = simulate(client, fleet_size=20).json()["fleet"]

    assert fleet["slots"] == 8
    assert fleet["lives"] == LIVES.tolist()
    slots = {episode[0] for episode in fleet["episodes"]["preventive"]}
    assert slots == set(range(8))


def test_a_pack_without_a_federated_model_replays_the_others(client, settings, tmp_path):
    settings.TYCOON_PACK = tmp_path / "pack.npz"
    fake_pack(federated=False).save(settings.TYCOON_PACK)

    body = simulate(client).json()

    assert "federated" not in [row["key"] for row in body["strategies"]]
    assert body["missing"] == ["federated"]
    assert body["joining"] is None


@pytest.mark.parametrize(
    ("params", "parameter", "says"),
    [
        (
            {"maintenance_cost": "-5"},
            "maintenance_cost",
            "Maintenance cost ($) must be a number from 0 to 10,000,000",
        ),
        (
            {"fleet_size": "abc"},
            "fleet_size",
            "Engines per factory must be a whole number from 1 to 10,000",
        ),
        ({"horizon": "2.5"}, "horizon", "a whole number"),
        ({"rul_threshold": "nan"}, "rul_threshold", "from 0 to 124: the models predict at most"),
        ({"preventive_age": "0"}, "preventive_age", "from 1 to 1,000"),
        ({"site": "site-9"}, "site", "site-1, site-2"),
        ({"revenue": "300"}, "revenue", "unknown setting"),
        (
            {"fleet_size": "10000", "horizon": "100000"},
            "fleet_size",
            "lower the engines per factory or the horizon",
        ),
    ],
)
def test_a_bad_setting_is_a_400_in_the_users_words(client, pack, params, parameter, says):
    response = simulate(client, **params)

    assert response.status_code == 400
    assert response.json()["parameter"] == parameter
    assert says in response.json()["error"]


def test_the_api_takes_get_only(client, pack):
    assert client.post("/tycoon/api/simulate").status_code == 405


# --- the model page ---------------------------------------------------------------------


def test_the_model_page_links_its_data(client, pack):
    html = client.get("/tycoon/models/").content.decode()

    assert 'data-models-url="/tycoon/api/models"' in html
    assert 'id="trajectory-chart"' in html


def test_the_models_api_scores_each_model_on_the_test_engines(client, pack):
    body = client.get("/tycoon/api/models").json()

    federated = next(m for m in body["models"] if m["key"] == "federated")
    # Both test engines predicted 50 from their last window; true 80 and 20.
    assert federated["test"]["predicted"] == [50.0, 50.0]
    assert federated["test"]["rmse"] == pytest.approx(30.0)
    assert [e["life"] for e in body["engines"]["holdout"]] == LIVES.tolist()


def test_the_trajectory_api_gives_one_engines_predictions_per_cycle(client, pack):
    body = client.get("/tycoon/api/trajectory", {"set": "holdout", "engine": 0}).json()

    assert body["cycles"][-1] == 120
    assert body["true_rul"][0] == 119
    assert body["true_rul_capped"][0] == 119 if 119 <= 125 else 125
    assert body["predicted"]["centralised"][-1] == 0


def test_the_trajectory_api_rejects_an_engine_out_of_range(client, pack):
    response = client.get("/tycoon/api/trajectory", {"set": "holdout", "engine": 5})

    assert response.status_code == 400
    assert response.json()["parameter"] == "engine"


# --- the command that builds a pack -------------------------------------------------------


def tiny_model(frame, *, kind_label: str):
    """A baseline model that predicts a constant: fast to make, a real model file."""
    from sklearn.dummy import DummyRegressor

    from turbofan.data.features import FeaturePipeline
    from turbofan.models.artefact import BASELINE, RulModel
    from turbofan.models.baseline import window_features

    pipeline = FeaturePipeline(window=5).fit(frame)
    x, y = pipeline.training_windows(frame)
    estimator = DummyRegressor().fit(window_features(x[:50]), y[:50])
    return RulModel(kind=BASELINE, pipeline=pipeline, estimator=estimator, meta={"k": kind_label})


def test_the_command_builds_a_pack_from_a_report_and_a_live_federation(
    cmapss_dir, tmp_path, settings
):
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.core.management import call_command

    from federation.models import Federation, ModelVersion
    from turbofan.data.files import read_engine_file
    from turbofan.data.partition import plan_iid, write_partition

    train = read_engine_file(cmapss_dir / "train_FD001.txt")
    plan = plan_iid("FD001", train["unit"].to_numpy(), 2, seed=0)
    sites = write_partition(plan, cmapss_dir, tmp_path / "sites")
    report = tmp_path / "report"
    tiny_model(train, kind_label="c").save(report / "models" / "centralised_FD001.rulmodel")
    tiny_model(train, kind_label="l").save(report / "models" / "local-site-1_FD001.rulmodel")
    admin = get_user_model().objects.create(username="admin")
    federation = Federation.objects.create(name="fd001-fleet", admin=admin)
    content, digest = tiny_model(train, kind_label="f").to_bytes()
    version = ModelVersion(federation=federation, version=4, sha256=digest, status="accepted")
    version.file.save("v4.rulmodel", ContentFile(content))
    # A newer candidate the sites have not scored yet (no file: it must not be read).
    ModelVersion.objects.create(federation=federation, version=5, sha256="0" * 64)
    settings.TYCOON_PACK = tmp_path / "pack.npz"

    call_command(
        "tycoon_pack", sites_dir=sites, report=report, federation="fd001-fleet", stdout=StringIO()
    )

    pack = PredictionPack.load(settings.TYCOON_PACK)
    assert [m.key for m in pack.models] == ["centralised", "local:site-1", "federated"]
    federated, centralised = pack.model("federated"), pack.model("centralised")
    assert federated is not None and centralised is not None
    assert federated.details == {"federation": "fd001-fleet", "version": 4}
    assert centralised.trained_on_holdout  # a report trained on every engine
    assert pack.holdout.units.tolist() == plan.holdout.engines["FD001"]
    lives = train.groupby("unit")["cycle"].max()
    assert pack.lives.tolist() == lives[plan.holdout.engines["FD001"]].tolist()
    assert pack.holdout.predicted["federated"].shape == (10, pack.lives.max())
    assert pack.test is not None and len(pack.test.cycles) == 100


def test_the_command_says_what_to_do_without_a_partition(tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no partition folder"):
        call_command("tycoon_pack", sites_dir=tmp_path)


def test_the_command_trains_on_public_engines_only_never_on_a_sites_folder(
    cmapss_dir, tmp_path, settings, monkeypatch
):
    """The coordinator may not hold a model trained on one site alone: the pack's local
    strategy is a single site's worth of public engines, none of them held out."""
    import shutil

    from django.core.management import call_command

    from dashboard.management.commands import tycoon_pack
    from federation.core.recipes import default_recipe
    from turbofan.data.files import read_engine_file
    from turbofan.data.partition import plan_iid, write_partition

    train = read_engine_file(cmapss_dir / "train_FD001.txt")
    plan = plan_iid("FD001", train["unit"].to_numpy(), 4, seed=0)
    sites = write_partition(plan, cmapss_dir, tmp_path / "sites")
    for share in plan.sites:  # the sites' folders are not the coordinator's
        shutil.rmtree(sites / share.name)
    trained: list[set[int]] = []

    def quick_fit(frame, pipeline, recipe, *, seed=0, **kwargs):
        trained.append(set(frame["unit"].unique().tolist()))
        return tiny_model(frame, kind_label=str(len(trained)))

    monkeypatch.setattr(tycoon_pack, "fit_network_model", quick_fit)
    monkeypatch.setattr(tycoon_pack, "default_recipe", default_recipe)
    settings.TYCOON_PACK = tmp_path / "pack.npz"

    call_command("tycoon_pack", sites_dir=sites, stdout=StringIO())

    pack = PredictionPack.load(settings.TYCOON_PACK)
    assert [m.key for m in pack.models] == ["centralised", "local:single-site"]
    centralised, one_site = trained
    held_out = set(plan.holdout.engines["FD001"])
    assert not (centralised | one_site) & held_out
    assert len(centralised) == 100 - len(held_out)
    sizes = [len(share.engines["FD001"]) for share in plan.sites]
    assert min(sizes) <= len(one_site) <= max(sizes) and one_site < centralised
    local = pack.model("local:single-site")
    assert local is not None and "single site's worth" in local.label


def test_a_cross_fitted_pack_replays_every_engine_with_provenance(
    cmapss_dir, settings, tmp_path, monkeypatch
):
    """``tycoon_pack --crossfit``: all 100 FD001 engines, each predicted by the fold
    models that never saw it (the trainers stand in here; the core's tests check them)."""
    from django.core.management import call_command

    from dashboard.management.commands import tycoon_pack
    from federation.core import crossfit as cf

    def fit(frame, pipeline, recipe, *, seed=0, **kwargs):
        return tiny_model(frame, kind_label=str(seed))

    class Simulated:
        def __init__(self, frames) -> None:
            self.model = tiny_model(next(iter(frames.values())), kind_label="f")

    monkeypatch.setattr(cf, "fit_model", fit)
    monkeypatch.setattr(cf, "run_simulation", lambda frames, *a, **k: Simulated(frames))
    real = tycoon_pack.crossfit
    monkeypatch.setattr(tycoon_pack, "crossfit", lambda *a, **k: real(*a, **{**k, "processes": 1}))
    settings.TYCOON_PACK = tmp_path / "pack.npz"
    out = StringIO()

    call_command("tycoon_pack", crossfit=True, subset="FD001", folds=3, rounds=2, stdout=out)

    pack = PredictionPack.load(settings.TYCOON_PACK)
    assert len(pack.lives) == 100 and pack.test is not None
    assert [m.key for m in pack.models] == ["centralised", "local:single-site", "federated"]
    federated = pack.model("federated")
    assert federated is not None and federated.details["rounds"] == 2
    assert len(federated.details["fold_hashes"]) == 3
    assert pack.meta["crossfit"] == {"folds": 3, "rounds": 2}
    printed = out.getvalue()
    assert "Cross-fitting 100 FD001 engines in 3 folds" in printed
    assert "fold 3/3 done" in printed
    assert "Prediction pack of 100 FD001 engines no model trained on" in printed
