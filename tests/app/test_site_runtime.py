"""The site's HTTP client: what it does when the coordinator is away or says no."""

from __future__ import annotations

import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from federation.core import messages as m
from federation.core.engine.rounds import Participant, plan_round
from federation.core.messages import Kind
from tests.stack import free_port
from worker.site_runtime import (
    CoordinatorRefused,
    CoordinatorUnreachable,
    SiteRuntime,
    read_outbox,
)


class Refusing(BaseHTTPRequestHandler):
    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        Refusing.asked.append(self.path)
        self.send_response(204)  # nothing to do, at once: it does not hold the request
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"error": "this result was received already"}).encode()
        self.send_response(409 if self.path.endswith("/1") else 503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def coordinator():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def runtime(url: str, tmp_path) -> SiteRuntime:
    return SiteRuntime(url, "tfs_secret", tmp_path / "data", tmp_path / "state", timeout=5)


def test_an_unreachable_coordinator_is_told_apart_so_the_worker_retries(tmp_path):
    site = runtime(f"http://127.0.0.1:{free_port()}", tmp_path)

    with pytest.raises(CoordinatorUnreachable):
        site.request("GET", "/api/v1/work")


def test_a_5xx_answer_counts_as_unreachable(coordinator, tmp_path):
    with pytest.raises(CoordinatorUnreachable, match="HTTP 503"):
        runtime(coordinator, tmp_path).request("POST", "/api/v1/contributions/2", {"a": 1})


def test_a_refusal_carries_the_coordinators_reason(coordinator, tmp_path):
    with pytest.raises(CoordinatorRefused, match="HTTP 409: this result was received already"):
        runtime(coordinator, tmp_path).request("POST", "/api/v1/contributions/1", {"a": 1})


def test_every_message_sent_is_in_the_owners_log_without_the_credential(coordinator, tmp_path):
    site = runtime(coordinator, tmp_path)
    body = {"examples": 7, "metrics": {"train_rmse": 3.5}, "payload": "AAAA"}

    with pytest.raises(CoordinatorRefused):
        site.request("POST", "/api/v1/contributions/1", body)

    (entry,) = read_outbox(tmp_path / "state")
    assert entry["method"] == "POST" and entry["path"] == "/api/v1/contributions/1"
    assert entry["status"] == 409 and entry["bytes"] == len(json.dumps(body))
    assert entry["keys"] == ["examples", "metrics", "payload"]
    assert entry["summary"] == {"examples": 7, "metrics": {"train_rmse": 3.5}}
    assert "tfs_secret" not in (tmp_path / "state" / "outbox.jsonl").read_text()


def test_the_owners_log_says_what_left_for_which_round_in_words(coordinator, tmp_path):
    from django.core.management import call_command

    site = runtime(coordinator, tmp_path)
    about = {"federation": "North fleet", "round": 3, "kind": "train"}

    with pytest.raises(CoordinatorRefused):
        site.request("POST", "/api/v1/contributions/1", {"stage": "masked_input"}, about)

    (entry,) = read_outbox(tmp_path / "state")
    assert entry["coordinator"] == coordinator and entry["round"] == 3
    out = io.StringIO()
    call_command("site_log", "--state-dir", str(tmp_path / "state"), stdout=out)
    assert (
        "North fleet, train round 3: masked_input: its input under masks (the coordinator "
        "sees only the sum)"
    ) in out.getvalue()


def test_a_work_session_long_polls_and_does_not_hammer_a_coordinator_that_answers_at_once(
    coordinator, tmp_path
):
    Refusing.asked.clear()

    outcome = runtime(coordinator, tmp_path).work_session(1.5)

    assert outcome == "idle"
    assert Refusing.asked[0] == "/api/v1/work?wait=1.5"  # the coordinator may hold it
    assert 2 <= len(Refusing.asked) <= 3  # a pause after each immediate "nothing"


class Refused(SiteRuntime):
    """A site whose coordinator keeps offering one piece of work it will not do."""

    asked = 0

    def transport(self, method, url, data, headers):
        self.asked += 1
        parameters = plan_round(
            kind=Kind.POINTS,
            participants=[Participant(1, None, 1), Participant(2, None, 1)],
            length=3,
            secure=False,
            minimum=2,
        )
        work = {
            "contribution": 5,
            "federation": {"id": 1, "name": "fleet"},
            "round": {"id": 1, "number": 0, "kind": "points"},
            "work": {
                m.KEY_KIND: "points",
                m.KEY_PROTOCOL: {
                    m.STAGE: m.PLAIN_INPUT,
                    m.SITE: 1,
                    m.PARAMETERS: parameters.to_json(),
                },
            },
        }
        return 200, json.dumps(work).encode()


def test_a_site_refuses_plain_rounds_unless_its_owner_allows_them_and_asks_again_slowly(tmp_path):
    site = Refused("http://coordinator", "tfs_secret", tmp_path / "data", tmp_path / "state")

    outcome = site.work_session(1.5)

    assert "has not allowed plain rounds" in outcome
    assert outcome.count("refused") == 1  # refused once, not answered again
    assert site.asked <= 4  # about one ask a second, not thousands
    outbox = read_outbox(tmp_path / "state")
    assert all(e["method"] in ("GET", "-") for e in outbox)  # nothing sent
    (refusal,) = [e for e in outbox if "refused" in e]  # and the owner can read why
    assert "has not allowed plain rounds" in refusal["refused"]


class Told(SiteRuntime):
    """A site whose coordinator says what work each federation has for it."""

    work = "Waiting for the federation's admin to start it; the worker then gets work."

    def transport(self, method, url, data, headers):
        memberships = [{"federation": 1, "name": "North fleet", "status": "approved"}]
        return 200, json.dumps({"memberships": [{**memberships[0], "work": self.work}]}).encode()


def test_the_worker_says_one_plain_line_per_change_of_its_work(tmp_path, caplog):
    site = Told("http://coordinator", "tfs_secret", tmp_path / "data", tmp_path / "state")
    caplog.set_level("INFO", logger="worker.site_runtime")

    first = site.say_status("idle")
    again = site.say_status("idle")  # asked at most once a minute, and nothing changed
    answered = site.say_status("North fleet train round 3: advertise_keys sent")
    site.work = "The federation has finished: no work will come unless its admin runs more"
    changed = site.say_status("idle")  # idle again after work: asked at once

    assert first == ["North fleet: " + Told.work]
    assert again == []
    assert answered == ["North fleet train round 3: advertise_keys sent"]
    assert changed == ["North fleet: " + site.work]
    assert [r.getMessage() for r in caplog.records] == [*first, *answered, *changed]


def test_a_site_records_its_peers_keys_per_round_and_warns_when_one_changes(tmp_path):
    from django.core.management import call_command

    from federation.core.secagg.primitives import SigningKey, fingerprint
    from worker.peers import PeerBook

    keys = {site: SigningKey.generate().public for site in (1, 2, 3)}
    book = PeerBook(tmp_path)

    first = book.record(
        round_id="r1",
        federation="North fleet",
        round_label="train round 1",
        site=1,
        identities=keys,
    )
    again = book.record(
        round_id="r1",
        federation="North fleet",
        round_label="train round 1",
        site=1,
        identities=keys,
    )
    swapped = {**keys, 2: SigningKey.generate().public}  # a key the coordinator swapped in
    second = book.record(
        round_id="r2",
        federation="North fleet",
        round_label="train round 2",
        site=1,
        identities=swapped,
    )

    assert first == [] and again == []
    [warning] = second
    assert f"site 2's identity key changed from {fingerprint(keys[2])} to" in warning
    assert fingerprint(swapped[2]) in warning
    entries = book.entries()
    assert [e["round"] for e in entries] == ["train round 1", "train round 2"]
    assert entries[0]["own"] == fingerprint(keys[1])
    assert entries[0]["peers"] == {"2": fingerprint(keys[2]), "3": fingerprint(keys[3])}
    assert re.fullmatch(r"([0-9A-F]{4}-){7}[0-9A-F]{4}", entries[0]["own"])
    out = io.StringIO()
    call_command("site_log", "--state-dir", str(tmp_path), "--peers", stdout=out)
    printed = out.getvalue()
    assert f"North fleet, train round 1: this site (site 1) {fingerprint(keys[1])}" in printed
    assert f"site    3  {fingerprint(keys[3])}" in printed
    assert "WARNING North fleet, train round 2: site 2's identity key changed" in printed


class Capped(Refused):
    """A coordinator offering a training round without privacy noise."""

    def transport(self, method, url, data, headers):
        status, body = super().transport(method, url, data, headers)
        work = json.loads(body)
        work["work"][m.KEY_KIND] = "train"
        return status, json.dumps(work).encode()


def test_a_site_with_a_privacy_cap_refuses_a_training_round_without_noise(tmp_path):
    from worker.ledger import SitePolicy

    site = Capped(
        "http://coordinator",
        "tfs_secret",
        tmp_path / "data",
        tmp_path / "state",
        allow_plain=True,
        policy=SitePolicy(epsilon_cap=4.0),
    )

    outcome = site.work_session(1.0)

    assert "trains without privacy noise" in outcome and "epsilon 4" in outcome
    outbox = read_outbox(tmp_path / "state")
    assert all(e["method"] in ("GET", "-") for e in outbox)  # nothing sent
    assert not (tmp_path / "state" / "privacy.jsonl").exists()  # and nothing spent
