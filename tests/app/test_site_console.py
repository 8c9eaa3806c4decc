"""The site's console: signed in by its own secret, its fleet and plan, what joining is
worth, what left, its peers, its budget; and nothing it shows is sent anywhere."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import socket
from pathlib import Path

import pytest
from django.core.management import call_command

from federation.core.secagg.primitives import fingerprint
from federation.models import Contribution, ModelVersion, Round, StageMessage
from tests.site_state import FLEET_UNITS, make_site_state
from worker.console import app
from worker.console.state import console_secret
from worker.keystore import Keystore
from worker.ledger import PrivacyLedger, SitePolicy
from worker.peers import PeerBook
from worker.site_runtime import OUTBOX, PUBLISH, SiteRuntime, read_outbox, what_was_sent

PAGES = ("/", "/worth/", "/sent/", "/peers/", "/budget/", "/fleet.csv")


@pytest.fixture(scope="module")
def built_site(tmp_path_factory, cmapss_dir) -> tuple[Path, Path]:
    return make_site_state(tmp_path_factory.mktemp("site"), cmapss_dir)


@pytest.fixture
def site(built_site, tmp_path, settings) -> tuple[Path, Path]:
    """A fresh copy of the site's folders, served by the console."""
    data, state = (tmp_path / "data", tmp_path / "state")
    shutil.copytree(built_site[0], data)
    shutil.copytree(built_site[1], state)
    settings.ROOT_URLCONF = "worker.console.urls"
    app.configure(state, data)
    return data, state


@pytest.fixture
def owner(client, site):
    """The site's owner, signed in through the address the console printed."""
    secret = console_secret(site[1])
    response = client.get(f"/?key={secret}")
    assert response.status_code == 302 and response["Location"] == "/"
    return client


def rows_of(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_without_the_key_no_page_shows_anything(client, site):
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 403
        assert b"Open the address site_console printed" in response.content
    assert client.get("/?key=not-the-key").status_code == 403


def test_the_key_signs_the_owner_in_and_keeps_the_rest_of_the_address(client, site):
    secret = console_secret(site[1])
    response = client.get(f"/worth/?key={secret}&failure_cost=5")
    assert response.status_code == 302 and response["Location"] == "/worth/?failure_cost=5"
    cookie = response.cookies[app.cookie_name(secret)]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert client.get("/worth/").status_code == 200


def test_the_fleet_lists_every_engine_in_service_with_its_interval_and_plan(owner):
    page = owner.get("/")
    assert page.status_code == 200
    rows = page.context["plan"]["rows"]
    assert sorted(r["unit"] for r in rows) == sorted(FLEET_UNITS)
    for r in rows:
        assert r["low"] <= r["predicted"] <= r["high"]
        assert r["local"] is not None and len(r["sparks"]) == 3
    pulled = [r for r in rows if r["pull_in"] is not None]
    assert pulled and all(r["pull_in"] <= 30 for r in pulled)
    assert b"Pull <strong>" in page.content


def test_the_plans_predictions_are_those_of_predict_on_the_same_model_and_files(owner, site):
    out = io.StringIO()
    call_command("predict", site_state=site[1], test_file=site[0] / "test_FD001.txt", stdout=out)
    expected = {
        int(r["unit"]): float(r["predicted_rul"])
        for r in csv.DictReader(io.StringIO(out.getvalue()))
    }
    planned = {int(r["unit"]): float(r["predicted_rul"]) for r in rows_of(owner.get("/fleet.csv"))}
    assert planned == pytest.approx(expected, abs=1e-3)


def test_the_plan_changes_when_a_cost_changes(owner):
    def pulls(query: str) -> dict[int, str]:
        return {
            int(r["unit"]): r["pull_in_cycles"] for r in rows_of(owner.get(f"/fleet.csv?{query}"))
        }

    default = pulls("")
    cheap_failures = pulls("failure_cost=10000&failure_downtime=20")
    dear_failures = pulls("failure_cost=2000000")
    assert cheap_failures != default
    assert sum(v == "" for v in cheap_failures.values()) > sum(v == "" for v in default.values())
    assert all(dear_failures[u] != "" for u, v in default.items() if v != "")


def test_a_threshold_of_the_owners_own_pulls_by_the_prediction(owner):
    rows = rows_of(owner.get("/fleet.csv?threshold=10&horizon=1000"))
    for r in rows:
        predicted = float(r["predicted_rul"])
        expected = 0 if predicted < 10 else int(predicted - 10) + 1
        assert int(r["pull_in_cycles"]) == expected


def test_bad_settings_say_what_to_change_and_show_no_stale_plan(owner):
    page = owner.get("/?failure_cost=-5&threshold=150")
    assert page.status_code == 400
    assert "plan" not in page.context
    text = page.content.decode()
    assert "Ensure this value is greater than or equal to 0" in text
    assert "the models predict at most 125" in text
    assert owner.get("/fleet.csv?horizon=0").status_code == 400


def test_the_fleet_table_sorts_filters_and_exports_what_it_shows(owner):
    by_unit = owner.get("/?sort=-unit").context["plan"]["rows"]
    assert [r["unit"] for r in by_unit] == sorted(FLEET_UNITS, reverse=True)
    only = owner.get("/?q=34").context["plan"]["rows"]
    assert [r["unit"] for r in only] == [34]
    to_pull = owner.get("/?show=pull").context["plan"]["rows"]
    assert to_pull and all(r["pull_in"] is not None for r in to_pull)
    exported = owner.get("/fleet.csv?show=pull&sort=unit")
    assert exported["Content-Disposition"] == 'attachment; filename="site-7-fleet-plan.csv"'
    assert [int(r["unit"]) for r in rows_of(exported)] == sorted(r["unit"] for r in to_pull)


def test_what_joining_is_worth_is_replayed_on_engines_no_model_trained_on(owner, site):
    page = owner.get("/worth/")
    assert page.status_code == 200
    worth = page.context["worth"]
    assert worth["engines"] == 6  # the validation engines kept back
    chosen = worth["chosen"]
    assert chosen.low <= chosen.difference <= chosen.high
    assert worth["threshold"] == 10  # the original Tycoon's, for every model alike
    assert owner.get("/worth/?threshold=25").context["worth"]["threshold"] == 25
    assert "per factory of 4 engines over 5,000 cycles" in page.content.decode()
    costly = owner.get("/worth/?maintenance_cost=30000").context["worth"]
    assert costly["chosen"].profit != chosen.profit


def test_without_a_chosen_model_the_console_says_how_the_site_gets_one(owner, site):
    (site[1] / "chosen.rulmodel").unlink()
    for page in ("/", "/worth/"):
        response = owner.get(page)
        assert response.status_code == 200
        assert b"has not chosen a model yet" in response.content


def write_history(state: Path) -> None:
    """What a site's worker leaves after a secure round: outbox lines, its peers' keys,
    its privacy ledger and one refusal."""
    runtime = SiteRuntime("http://coordinator.example", "tfs_x", state.parent / "data", state)
    runtime.transport = lambda *a, **k: (200, b"{}")  # type: ignore[method-assign]
    runtime.request("PUT", "/api/v1/site/data", {"train_rows": 4000})
    about = {"federation": "Demo FD001 fleet", "round": 3, "kind": "train"}
    for stage in ("advertise_keys", "share_keys", "masked_input", "unmask"):
        runtime.request("POST", "/api/v1/contributions/9", {"stage": stage, "x": "AAAA"}, about)
    runtime._note_refusal({"contribution": 10}, ValueError("the model's hash did not match"))
    keys = {n: Keystore(state.parent / f"k{n}").identity().public for n in (1, 2, 3)}
    book = PeerBook(state)
    book.record(
        round_id="r1",
        federation="Demo FD001 fleet",
        round_label="train round 3",
        site=1,
        identities=keys,
    )
    keys[2] = Keystore(state.parent / "k9").identity().public  # site 2's key swapped
    book.record(
        round_id="r2",
        federation="Demo FD001 fleet",
        round_label="train round 4",
        site=1,
        identities=keys,
    )
    ledger = PrivacyLedger(state)
    for number in (3, 4):
        ledger.record(
            privacy={"noise_multiplier": 2.0, "clip": 1.0},
            federation="Demo FD001 fleet",
            round_label=f"train round {number}",
        )


def test_what_left_is_shown_by_round_and_stage_with_the_refusals(owner, site):
    write_history(site[1])
    page = owner.get("/sent/")
    text = page.content.decode()
    (group,) = page.context["outbox"]["rounds"]
    assert group["label"] == "Demo FD001 fleet, train round 3"
    assert [line["what"].split(":")[0] for line in group["lines"]] == [
        "advertise_keys",
        "share_keys",
        "masked_input",
        "unmask",
    ]
    assert "its input under masks (the coordinator sees only the sum)" in text
    assert "the model&#x27;s hash did not match" in text
    assert "counts of its data" in text


def test_the_fingerprints_are_shown_and_a_changed_key_is_warned_about(owner, site):
    write_history(site[1])
    own = Keystore(site[1]).identity().public  # made by the worker at its first start
    page = owner.get("/peers/")
    text = page.content.decode()
    assert fingerprint(own) in text
    assert "site 2&#x27;s identity key changed" in text
    assert fingerprint(Keystore(site[1].parent / "k9").identity().public) in text


def test_the_budget_is_the_ledger_the_site_computed_against_its_own_cap(owner, site):
    write_history(site[1])
    page = owner.get("/budget/")
    assert [r["round"] for r in page.context["rows"]] == ["train round 4", "train round 3"]
    expected = PrivacyLedger(site[1]).spent()
    assert page.context["spent"] == pytest.approx(expected)
    assert b"no cap of its own" in page.content
    from worker.console.state import write_site_file

    write_site_file(site[1], name="site-7", coordinator="x", data_dir=site[0], epsilon_cap=2.0)
    capped = owner.get("/budget/")
    assert capped.context["cap"] == 2.0 and capped.context["share"] == pytest.approx(
        min(1, expected / 2)
    )


def digest(folder: Path) -> str:
    hashes = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            hashes.update(path.name.encode() + path.read_bytes())
    return hashes.hexdigest()


@pytest.mark.django_db
def test_no_console_page_sends_anything_or_touches_the_coordinators_records(
    owner, site, fleet, monkeypatch, django_assert_num_queries
):
    """A secure round's messages are stored at the coordinator; the site's folders hold
    its outbox. Opening every page, with every setting, changes neither, asks the
    database nothing, and opens no connection."""
    round_ = fleet.open()
    fleet.run(round_)
    write_history(site[1])
    stored = [M.objects.count() for M in (StageMessage, Contribution, Round, ModelVersion)]
    assert stored[0] > 0
    before = (digest(site[1]), (site[1] / OUTBOX).read_bytes())

    def no_connection(*args, **kwargs):
        raise AssertionError("the console opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_connection)
    with django_assert_num_queries(0):
        for page in PAGES:
            for query in ("", "?failure_cost=900000&horizon=60", "?threshold=20&sort=-predicted"):
                assert owner.get(page + query).status_code == 200, page + query
    assert (digest(site[1]), (site[1] / OUTBOX).read_bytes()) == before
    assert [M.objects.count() for M in (StageMessage, Contribution, Round, ModelVersion)] == stored


def test_the_ledger_refuses_what_the_owners_cap_does_not_allow(tmp_path):
    from worker.ledger import OverBudget

    ledger = PrivacyLedger(tmp_path, SitePolicy(epsilon_cap=3.0))
    ledger.check({"noise_multiplier": 2.0}, "train round 1", trains=True)  # fits
    ledger.check(None, "moments round", trains=False)  # statistics only: no model update
    with pytest.raises(OverBudget, match="trains without privacy noise"):
        ledger.check(None, "train round 1", trains=True)
    with pytest.raises(OverBudget, match="past its owner's cap of 3"):
        ledger.check({"noise_multiplier": 0.3}, "train round 1", trains=True)
    for _ in range(3):
        ledger.record(privacy={"noise_multiplier": 2.0}, federation="f", round_label="train")
    assert [r["epsilon"] for r in ledger.running()] == sorted(
        r["epsilon"] for r in ledger.running()
    )
    PrivacyLedger(tmp_path).check({"noise_multiplier": 0.3}, "no cap", trains=True)


def with_federation(state: Path) -> None:
    """The choice as a worker keeps it: which federation it came from."""
    path = state / "choice.json"
    choice = json.loads(path.read_text())
    choice["federation"] = {"id": 7, "name": "Demo FD001 fleet"}
    path.write_text(json.dumps(choice))


def test_publishing_the_worth_is_off_until_the_owner_confirms_then_the_worker_sends_it(owner, site):
    with_federation(site[1])
    page = owner.get("/worth/")
    assert b"Nothing published: it is off unless you choose it." in page.content
    assert owner.post("/worth/publish/", {"failure_cost": "60000"}).status_code == 400
    assert not (site[1] / PUBLISH).exists()

    response = owner.post("/worth/publish/", {"failure_cost": "60000", "confirm": "yes"})

    assert response.status_code == 302 and response["Location"].startswith("/worth/?")
    queued = json.loads((site[1] / PUBLISH).read_text())
    headline = page.context["worth"]["chosen"]
    assert queued["federation"] == 7 and queued["worth"] == pytest.approx(headline.difference)
    assert b"Waiting to go" in owner.get("/worth/").content

    sent = []

    def transport(method, url, data, headers):
        sent.append((method, url, json.loads(data)))
        return 200, b"{}"

    runtime = SiteRuntime("http://coordinator.example", "tfs_x", site[0], site[1])
    runtime.transport = transport  # type: ignore[method-assign]
    outcome = runtime.publish_pending()

    assert outcome == "Demo FD001 fleet: what joining is worth here published"
    [(method, url, body)] = sent
    assert method == "PUT" and url.endswith("/api/v1/site/worth")
    assert set(body) == {"federation", "worth", "low", "high", "level", "engines"} | {
        "fleet_size",
        "horizon",
    }
    assert not (site[1] / PUBLISH).exists()
    last = read_outbox(site[1])[-1]
    assert last["kind"] == "worth" and last["summary"]["worth"] == queued["worth"]
    assert "what joining is worth here, as its owner chose to publish it" in what_was_sent(last)
    shown = owner.get("/worth/").content.decode()
    assert "Last published" in shown


def test_a_publish_request_from_another_site_is_refused(client, site, settings):
    """The form needs the console's cookie and its CSRF token: a page elsewhere cannot
    make the owner's browser publish."""
    with_federation(site[1])
    client.cookies[app.cookie_name(console_secret(site[1]))] = console_secret(site[1])
    from django.test import Client

    forged = Client(enforce_csrf_checks=True)
    forged.cookies = client.cookies
    response = forged.post("/worth/publish/", {"confirm": "yes"})
    assert response.status_code == 403
    assert not (site[1] / PUBLISH).exists()
