"""The Tycoon game's page and the one JSON answer a game starts from."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from dashboard.tycoon_game import GAME_HOURS
from tests.app.test_tycoon_pages import LIVES, fake_pack
from turbofan.tycoon import engine_sequence, outcomes, predictive_triggers

pytestmark = pytest.mark.django_db

ORIGINAL = {
    "revenue_per_cycle": 300,
    "maintenance_cost": 10_000,
    "maintenance_downtime": 20,
    "failure_cost": 60_000,
    "failure_downtime": 60,
    "preventive_age": 193,
    "rul_threshold": 10,
    "fleet_size": 4,
    "target": 3_000_000,
    "unlock_failures": 4,
    "scientist_hours": 499,
    "federation_hours": 499,
}


@pytest.fixture
def pack(settings, tmp_path):
    settings.TYCOON_PACK = tmp_path / "pack.npz"
    return fake_pack().save(settings.TYCOON_PACK)


def decode(b64: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=dtype)


def game(client, **params):
    return client.get("/tycoon/api/game", params)


def test_the_page_has_the_settings_the_controls_and_the_dialogs(client, pack):
    page = client.get("/tycoon/play/").content.decode()
    for name in ORIGINAL:
        assert f'id="id_{name}"' in page, name
    for control in ("play", "speed", "reset", "solo", "auto-upgrade", "leader-chart"):
        assert f'id="{control}"' in page, control
    for dialog in ("intro-dialog", "unlock-dialog", "end-dialog"):
        assert f'<dialog id="{dialog}"' in page
    assert "How to play" in page
    assert 'href="/tycoon/"' in page  # the analyst view


def test_without_a_pack_the_page_says_how_to_build_one(client, settings, tmp_path):
    settings.TYCOON_PACK = tmp_path / "missing.npz"
    page = client.get("/tycoon/play/").content.decode()
    assert "No prediction pack yet" in page
    assert "tycoon_pack --crossfit" in page
    assert game(client).status_code == 404


def test_the_defaults_are_the_original_games(client, pack):
    answer = game(client).json()
    for name, value in ORIGINAL.items():
        assert answer["settings"][name] == value, name
    assert answer["ladder"] == ["corrective", "preventive", "local", "federated"]
    assert [r["strategy"] for r in answer["rivals"]] == ["corrective", "preventive", "local"]
    keys = [s["key"] for s in answer["strategies"]]
    assert keys == ["corrective", "preventive", "local", "federated", "centralised"]


def test_the_engines_arrive_whole_and_as_the_pack_predicts_them(client, pack):
    answer = game(client).json()
    pool = answer["pool"]
    assert pool["lives"] == LIVES.tolist()
    assert pool["offsets"] == np.r_[0, np.cumsum(LIVES)[:-1]].tolist()
    stored = fake_pack()
    keys = {"local": "local:site-1", "federated": "federated", "centralised": "centralised"}
    for kind, key in keys.items():
        flat = decode(pool["predicted"][kind], "<f4")
        assert len(flat) == LIVES.sum()
        for engine, life in enumerate(LIVES):
            start = pool["offsets"][engine]
            np.testing.assert_array_equal(
                flat[start : start + life], stored.holdout.predicted[key][engine, :life]
            )
    sensors = decode(pool["sensors"]["data"], "u1").reshape(-1, 16)
    assert len(sensors) == LIVES.sum()
    assert stored.holdout.sensors is not None
    np.testing.assert_array_equal(sensors[: LIVES[0]], stored.holdout.sensors[0, : LIVES[0]])
    assert pool["sensors"]["names"][:4] == ["altitude", "Mach", "T24", "T30"]


def test_the_engine_sequence_is_the_analyst_replays_and_lasts_the_game(client, pack):
    answer = game(client, seed=7, fleet_size=3).json()
    sequence = answer["sequence"]
    dealt = decode(sequence["data"], "<i4").reshape(sequence["rows"], sequence["slots"])
    np.testing.assert_array_equal(dealt, engine_sequence(len(LIVES), 3, sequence["rows"], 7))
    # Enough engines per slot for the whole game under the strategy with the shortest runs.
    stored = fake_pack()
    shortest = min(
        int(
            (
                run + np.where(maintained, 20, 60)  # the default downtimes
            ).min()
        )
        for run, maintained in (
            outcomes(LIVES, predictive_triggers(stored.holdout.predicted[key], 10))
            for key in stored.holdout.predicted
        )
    )
    assert sequence["rows"] * shortest >= GAME_HOURS


def test_the_analyst_link_replays_the_same_settings(client, pack):
    answer = game(client, seed=5, failure_cost=90_000, rul_threshold=12).json()
    link = answer["analyst"] + "&horizon=2345"
    query = parse_qs(urlsplit(link).query)
    assert query["seed"] == ["5"] and query["failure_cost"] == ["90000.0"]
    page = client.get(link).content.decode()
    assert 'id="id_horizon" name="horizon"' in page
    assert 'value="2345" data-default="5000"' in page
    assert 'value="90000" data-default="60000"' in page
    assert 'value="12" data-default="10"' in page
    assert "were not used" not in page


def test_an_analyst_address_that_does_not_hold_is_named_and_the_defaults_stand(client, pack):
    page = client.get("/tycoon/?horizon=-3").content.decode()
    assert "The address&#x27;s settings were not used: Horizon (cycles) must be" in page
    assert 'value="5000" data-default="5000"' in page


@pytest.mark.parametrize(
    ("params", "parameter", "says"),
    [
        ({"rul_threshold": 125}, "rul_threshold", "from 0 to 124: the models predict at most 125"),
        ({"fleet_size": 9}, "fleet_size", "Turbofans per factory must be a whole number from 1"),
        ({"target": "lots"}, "target", "race ($) must be a whole number from 10,000"),
        ({"scientist_hours": -1}, "scientist_hours", "must be a whole number from 0 to 10,000"),
        ({"rival_2": "psychic"}, "rival_2", "Boreal Power's strategy must be one of"),
        ({"site": "site-9"}, "site", "the local model must be one of site-1, site-2"),
        ({"horizon": 10}, "horizon", "unknown setting horizon"),
    ],
)
def test_a_bad_setting_is_refused_in_the_forms_words(client, pack, params, parameter, says):
    response = game(client, **params)
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == parameter
    assert says in body["error"]


def test_a_pack_without_a_federation_plays_what_it_has(client, settings, tmp_path):
    settings.TYCOON_PACK = tmp_path / "pack.npz"
    fake_pack(federated=False).save(settings.TYCOON_PACK)
    answer = game(client).json()
    assert answer["ladder"] == ["corrective", "preventive", "local"]
    assert "federated" not in answer["pool"]["predicted"]
    refused = game(client, rival_1="federated").json()
    assert refused["parameter"] == "rival_1"


def test_a_pack_without_sensors_still_plays(client, settings, tmp_path):
    settings.TYCOON_PACK = tmp_path / "pack.npz"
    pack = fake_pack()
    pack.holdout.sensors = None
    pack.save(settings.TYCOON_PACK)
    assert game(client).json()["pool"]["sensors"] is None


def test_the_answer_is_compressed_for_a_browser_that_asks(client, pack):
    response = client.get("/tycoon/api/game", headers={"accept-encoding": "gzip"})
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"


def test_a_pack_whose_arrays_are_shorter_than_its_lives_says_to_build_it_again(
    client, settings, tmp_path
):
    settings.TYCOON_PACK = tmp_path / "pack.npz"
    pack = fake_pack()
    assert pack.holdout.sensors is not None
    pack.holdout.sensors = pack.holdout.sensors[:, :100]
    pack.save(settings.TYCOON_PACK)
    response = game(client)
    assert response.status_code == 404
    assert (
        "shorter than its engines' lives: run `python manage.py tycoon_pack` again"
        in (response.json()["error"])
    )
