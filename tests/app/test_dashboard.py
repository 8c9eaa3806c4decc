from __future__ import annotations

from typing import Any

import pytest

from dashboard.progress import duration, live_summary, metrics_figure, round_rows

pytestmark = pytest.mark.django_db


def test_the_home_page_leads_to_the_federations_and_to_signing_up(client):
    response = client.get("/")

    assert response.status_code == 200
    page = response.content.decode()
    assert 'href="/federations/"' in page and 'href="/accounts/signup/"' in page


def test_only_staff_see_how_the_installation_is_wired(client, django_user_model):
    public = client.get("/").content.decode()
    staff = django_user_model.objects.create(username="operator", is_staff=True)
    client.force_login(staff)

    inside = client.get("/").content.decode()

    for internal in ("This installation", "Database", "Broker", "C-MAPSS data"):
        assert internal not in public
        assert internal in inside


def test_healthz_reports_the_database(client):
    response = client.get("/healthz")

    assert response.json() == {"status": "ok", "database": response.json()["database"]}
    assert response.json()["database"] in {"sqlite", "postgresql"}


def test_every_page_links_to_the_tycoon_and_lets_the_keyboard_skip_the_links(client):
    page = client.get("/federations/").content.decode()

    assert '<a href="/tycoon/play/"' in page and ">Tycoon</a>" in page
    assert '<a class="skip-link" href="#content">' in page and '<main id="content"' in page
    assert 'href="/federations/" aria-current="page"' in page


# --- what the federation page shows, from selector output (no database) ------------------


def progress(**overrides):
    base = {
        "status": "running",
        "status_label": "running",
        "reason": "",
        "training_rounds": 10,
        "training_done": 2,
        "current": None,
        "rounds": [],
        "versions": [],
    }
    return {**base, **overrides}


def a_round(**overrides):
    base = {
        "id": 7,
        "number": 3,
        "kind": "train",
        "kind_label": "training",
        "status": "collecting",
        "status_label": "collecting",
        "reason": "",
        "stage": "",
        "stage_label": "",
        "stage_number": None,
        "stages": 4,
        "stage_answered": 0,
        "assigned": 4,
        "received": 1,
        "dropped": 0,
        "seconds": 75.0,
        "seconds_left": 125,
        "timing": {"training_slowest_site": 30.0, "aggregating": 1.25},
        "sites": None,
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, ""),
        (1.25, "1.2 s"),
        (42.4, "42 s"),
        (60, "1 min"),
        (250, "4 min 10 s"),
        (3600, "1 h"),
        (3780, "1 h 3 min"),
    ],
)
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("status", "reason", "headline"),
    [
        ("draft", "", "Not started yet."),
        ("finished", "", "Finished: 2 training rounds done."),
        ("failed", "round 3: only 1 site", "Stopped: round 3: only 1 site"),
        ("running", "", "Opening the next round."),
    ],
)
def test_without_a_live_round_the_headline_says_why(status, reason, headline):
    live = live_summary(progress(status=status, reason=reason))

    assert live["headline"] == headline
    assert live["round"] is None and live["stage"] == ""


def test_a_secure_round_names_its_stage_and_how_many_sites_answered_it():
    current = a_round(
        stage="masked_input", stage_label="masked input", stage_number=3, stage_answered=2
    )

    live = live_summary(progress(current=current, rounds=[current]))

    assert live["headline"] == "Training round 3 of 10: collecting."
    assert live["stage"] == (
        "Secure aggregation, stage 3 of 4, masked input: 2 of 4 sites answered this stage"
    )
    assert live["round"]["text"] == "1 of 4 sites have sent their input"
    assert live["deadline"] == "Closes at the latest in 2 min 5 s."


def test_round_rows_come_newest_first_with_names_only_when_given():
    done = a_round(
        id=6,
        number=2,
        status="done",
        status_label="done",
        received=3,
        dropped=1,
        sites={"received": ["a", "b", "c"], "dropped": ["d"], "waiting": []},
    )
    failed = a_round(id=7, status="failed", status_label="failed", reason="too few sites")

    rows = round_rows(progress(rounds=[done, failed]))

    assert [[c["text"] for c in row["cells"]] for row in rows] == [
        ["3", "training", "failed: too few sites", "1 of 4", "0", "1 min 15 s"],
        [
            "2",
            "training",
            "done",
            "3 of 4: a, b, c",
            "1: d",
            "1 min 15 s (training 30 s, aggregation 1.2 s)",
        ],
    ]


def test_round_rows_say_who_was_excluded_and_what_the_sites_chose():
    excluded = a_round(id=8, status="done", status_label="done", excluded=1)
    chosen = a_round(
        id=9,
        number=3,
        kind_label="personalisation",
        status="done",
        status_label="done",
        choices={"global": 1, "personal": 2, "alone": 0},
    )

    rows = round_rows(progress(rounds=[excluded, chosen]))

    statuses = [row["cells"][2]["text"] for row in rows]
    assert statuses == [
        "done; sites chose: 1 the federation's model, 2 their fine-tuned copy, 0 their own model",
        "done (1 excluded for breaking the protocol)",
    ]


def test_the_untrained_version_0_is_labelled_and_does_not_set_the_scale():
    versions: list[dict[str, Any]] = [
        {"version": 0, "rmse": 84.55, "score": 340402.0, "val_rmse": 80.0, "status": "accepted"},
        {"version": 1, "rmse": 14.3, "score": 900.0, "val_rmse": 14.0, "status": "accepted"},
        {"version": 2, "rmse": 12.7, "score": 400.0, "val_rmse": 12.5, "status": "accepted"},
    ]

    layout = metrics_figure(versions)["layout"]

    assert layout["yaxis"]["range"] == [0, pytest.approx(14.3 * 1.15)]
    low, high = layout["yaxis2"]["range"]
    assert 10**low < 400 and 900 < 10**high < 340402
    [note] = layout["annotations"]
    assert note["text"] == "version 0: untrained, RMSE 84.5 (off the scale)"


def test_the_figure_leaves_gaps_where_a_version_was_not_scored():
    versions: list[dict[str, Any]] = [
        {"version": 0, "rmse": None, "score": None, "val_rmse": None, "status": "accepted"},
        {"version": 1, "rmse": 20.5, "score": 800.0, "val_rmse": 19.0, "status": "candidate"},
        {"version": 2, "rmse": 90.0, "score": 9e6, "val_rmse": 88.0, "status": "rejected"},
    ]

    figure = metrics_figure(versions)  # a rejected version was never the model: not drawn

    assert [t["y"] for t in figure["data"]] == [[None, 20.5], [None, 19.0], [None, 800.0]]
    assert all(t["x"] == [0, 1] for t in figure["data"])
    assert [t["yaxis"] for t in figure["data"]] == ["y", "y", "y2"]


@pytest.mark.django_db
def test_the_glossary_explains_the_words_and_names_every_sensor(client):
    page = client.get("/glossary/").content.decode()

    for term in ("FedAvg", "Secure aggregation (SecAgg+)", "NASA score", "Seed", "Round"):
        assert f">{term}</dt>" in page
    assert "operating points" in page
    assert page.count('<th scope="row">s_') == 21
    assert "static pressure at the HPC outlet" in page and "high-pressure compressor" in page


def test_sensors_are_named_as_an_engineer_knows_them():
    from dashboard.forms import SENSOR_CHOICES
    from turbofan.data.sensors import sensor_label

    assert sensor_label("s_11") == "s_11 · Ps30, static pressure at the HPC outlet (psia)"
    assert sensor_label("s_15") == "s_15 · BPR, bypass ratio"
    assert sensor_label("cycle") == "cycle"
    assert dict(SENSOR_CHOICES)["s_2"].startswith("s_2 · T24, total temperature")


@pytest.mark.django_db
def test_a_bad_site_name_is_refused_in_plain_words():
    from dashboard.forms import SiteForm

    form = SiteForm({"name": "North hangar!"})

    assert not form.is_valid()
    assert form.errors["name"] == [
        "Use only letters, digits, hyphens (-) and underscores (_) in the name, with no "
        "spaces: e.g. north-hangar."
    ]


def test_a_model_no_better_than_the_untrained_one_is_flagged_unusable():
    from dashboard.progress import model_warning

    def version(number: int, rmse: float, status: str = "accepted") -> dict[str, Any]:
        return {"version": number, "rmse": rmse, "status": status}

    worse = [version(0, 84.5), version(1, 60.0), version(2, 95.7)]
    better = [version(0, 84.5), version(1, 14.3)]
    rejected = [version(0, 84.5), version(1, 14.3), version(2, 99.0, "rejected")]

    assert model_warning(worse, private=True).startswith(
        "Do not use this model: version 2 (test RMSE 95.7) predicts no better than the "
        "untrained model (RMSE 84.5). Under differential privacy"
    )
    assert model_warning(better, private=True) == ""
    assert model_warning(rejected, private=False) == ""
    assert model_warning([version(0, 84.5)], private=False) == ""


def test_a_federation_of_trees_counts_its_trees_not_rounds():
    live = live_summary(
        progress(status="finished", family="trees", trees=42, most_trees=300, training_rounds=0)
    )

    assert live["headline"] == "Finished: 42 trees grown."
    assert live["overall"]["value"] == 42 and live["overall"]["max"] == 300
    assert "stops earlier once the sites' validation stops improving" in live["overall"]["text"]


def test_earlier_boost_rounds_fold_into_one_line_where_they_belong():
    rounds = [
        a_round(id=1, number=0, kind="sketch", kind_label="bins of the trees", status="done"),
        *(
            a_round(id=i, number=i - 200, kind="boost", kind_label="growing trees", status="done")
            for i in (250, 251)
        ),
        a_round(id=252, number=52, kind="boost", kind_label="growing trees"),
    ]
    folded = {"first": 1, "last": 49, "count": 49, "first_id": 201}

    rows = round_rows(progress(rounds=rounds, folded_boost_rounds=folded))

    numbers = [row["cells"][0]["text"] for row in rows]
    assert numbers == ["52", "51", "50", "1-49", "0"]  # newest first, the fold in its place
    assert "49 earlier rounds, one tree level each" in rows[3]["cells"][2]["text"]
