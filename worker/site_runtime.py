"""A site's side of the federation: pull work over HTTP, compute locally, post results.

Everything the site sends is also appended to its outbound log
(``<state-dir>/outbox.jsonl``), which the site's owner can read: what was sent,
when, to which endpoint, how many bytes, and with which keys. Rows never leave.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from federation.core import messages as m
from federation.core.engine.rounds import RoundParameters
from federation.core.engine.site import (
    SiteData,
    kept_models,
    site_input,
    site_step,
    validation_units,
)
from federation.core.private_files import private_folder, write_private
from federation.core.secagg import protocol as p
from federation.core.secagg.primitives import SecAggError
from turbofan.data.checks import training_rows
from worker.keystore import Keystore
from worker.ledger import OverBudget, PrivacyLedger, SitePolicy
from worker.peers import PeerBook

log = logging.getLogger(__name__)

# A site asks for work with a long poll: the coordinator holds the request until there is
# work (the next stage of a round opens the moment its last site answers) or this long.
LONG_POLL_SECONDS = 20.0
IDLE_PAUSE_SECONDS = 1.0
# While idle, how often a site asks the coordinator what work each federation has for it.
STATUS_EVERY_SECONDS = 60.0
# The stages after which a site's part in a round is over.
LAST_STAGES = (p.UNMASK, m.PLAIN_INPUT)

COORDINATOR_ENV = "SITE_COORDINATOR"
CREDENTIAL_ENV = "SITE_CREDENTIAL"
DATA_DIR_ENV = "SITE_DATA_DIR"
STATE_DIR_ENV = "SITE_STATE_DIR"
ALLOW_PLAIN_ENV = "SITE_ALLOW_PLAIN"
EPSILON_CAP_ENV = "SITE_EPSILON_CAP"
DELTA_ENV = "SITE_DELTA"
OUTBOX = "outbox.jsonl"
CHOSEN_MODEL = "chosen.rulmodel"  # the model this site chose after personalisation
LOCAL_MODEL = "local.rulmodel"  # the model it trained alone, to compare with
FEDERATION_MODEL = "federation.rulmodel"  # the federation's model it started from
KEPT_MODELS = {"chosen": CHOSEN_MODEL, "local": LOCAL_MODEL, "federation": FEDERATION_MODEL}
CHOICE = "choice.json"  # ... and why: its validation figures and validation engines
# What joining is worth here, which the owner chose to publish from the site's console:
# the worker sends it at its next poll, logs it in the outbox and removes the file.
PUBLISH = "publish.json"


class CoordinatorUnreachable(Exception):
    """No answer from the coordinator (network, timeout, 5xx): try again later."""


class CoordinatorRefused(Exception):
    """A 4xx answer: the request is wrong or not allowed; retrying will not help."""


@dataclass
class SiteRuntime:
    coordinator: str
    credential: str
    data_dir: Path
    state_dir: Path
    timeout: float = 60.0
    long_poll: float = LONG_POLL_SECONDS
    # Plain rounds send this site's input in the clear: only if its owner allows them.
    allow_plain: bool = False
    # The owner's own privacy cap, kept whatever the coordinator's budget says.
    policy: SitePolicy = field(default_factory=SitePolicy)
    _data: SiteData | None = field(default=None, repr=False)
    # The last status line said per federation, and when the coordinator was last asked.
    _said: dict[str, str] = field(default_factory=dict, repr=False)
    _asked_status: float = field(default=-math.inf, repr=False)

    def data(self) -> SiteData:
        """The site's rows (read once), with what the rounds derive from them."""
        if self._data is None:
            self._data = SiteData(training_rows(self.data_dir), private_dir=self.state_dir)
        return self._data

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        about: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One request to the coordinator's API, logged in the outbox (with ``about``: the
        federation, round and kind it answers); a 4xx raises :class:`CoordinatorRefused`,
        no answer or a 5xx :class:`CoordinatorUnreachable`."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {
            "Authorization": f"Bearer {self.credential}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        status = 0
        try:
            status, raw = self.transport(method, self.coordinator.rstrip("/") + path, data, headers)
        finally:
            self._log(method, path, body, data, status, about or {})
        if status >= 500:
            raise CoordinatorUnreachable(f"{method} {path}: HTTP {status}")
        if status >= 400:
            message = _error_message(raw)
            raise CoordinatorRefused(f"{method} {path}: HTTP {status}: {message}")
        return status, (json.loads(raw) if raw else {})

    def transport(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """The HTTP exchange itself: the status and the body of the answer."""
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise CoordinatorUnreachable(f"{method} {url}: {error}") from None

    def _log(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        data: bytes | None,
        status: int,
        about: dict[str, Any],
    ) -> None:
        self._outbox(
            method=method,
            path=path,
            coordinator=self.coordinator,
            **about,
            status=status,
            bytes=len(data or b""),
            keys=sorted(body) if body else [],
            summary={
                k: v
                for k, v in (body or {}).items()
                if k in ("examples", "metrics", "stage", "worth", "low", "high")
            },
        )

    def _outbox(self, **entry: Any) -> None:
        """One timestamped line of the site's outbox, in its private state folder."""
        private_folder(self.state_dir)
        line = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **entry}
        with (self.state_dir / OUTBOX).open("a") as handle:
            handle.write(json.dumps(line) + "\n")

    def _keep_choice(self, task: dict[str, Any], where: str, federation: dict[str, Any]) -> None:
        """After a personalisation round's input: the model this site chose, kept as
        ``<state-dir>/chosen.rulmodel`` (what its predictions use from then on), the
        model it trained alone and the federation's beside it (its console compares
        them), and in ``choice.json`` its validation figures and which of its engines it
        kept back for validation. None of it leaves the site."""
        if self._data is None or self._data.choice is None:
            return
        models = kept_models(task, self._data)
        choice = self._data.choice
        figures = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "where": where,
            "federation": {"id": federation.get("id"), "name": federation.get("name")},
            "choice": choice.choice,
            "val_rmse": choice.val_rmse,
            # Each candidate's confidence of beating the federation's model on the
            # resampled validation engines: a site leaves it only at 90 % or more.
            "confidence": {k: v for k, v in choice.confidence.items() if k != "global"},
            "val_units": validation_units(task, self._data),
        }
        self._data.choice = None
        private_folder(self.state_dir)
        for role, name in KEPT_MODELS.items():
            write_private(self.state_dir / name, models[role].to_bytes()[0])
        write_private(self.state_dir / CHOICE, json.dumps(figures, indent=2).encode())
        log.info(
            "%s: this site chose the %s model (validation RMSE %s); kept in %s",
            where,
            choice.choice,
            ", ".join(f"{k} {v:.2f}" for k, v in choice.val_rmse.items()),
            CHOSEN_MODEL,
        )

    def _note_refusal(self, work: dict[str, Any], error: Exception) -> None:
        """A line in the outbox for work this site refused: nothing was sent, and why."""
        self._outbox(
            method="-",
            path=f"/api/v1/contributions/{work.get('contribution')}",
            status=0,
            bytes=0,
            keys=[],
            summary={},
            refused=str(error)[:500],
        )

    def publish_pending(self) -> str | None:
        """Send what the site's owner chose to publish from its console, if anything waits
        (``<state-dir>/publish.json``); kept for the next poll if the coordinator is away.
        Returns what happened."""
        path = self.state_dir / PUBLISH
        if not path.is_file():
            return None
        figure = json.loads(path.read_text())
        about = {"federation": figure.pop("federation_name", None), "kind": "worth"}
        try:
            self.request("PUT", "/api/v1/site/worth", figure, about)
            outcome = f"{about['federation']}: what joining is worth here published"
        except CoordinatorRefused as error:
            outcome = f"{about['federation']}: publishing what joining is worth refused: {error}"
        path.unlink(missing_ok=True)
        log.info("%s", outcome)
        return outcome

    def register_identity(self) -> str:
        """Send the coordinator the public half of this site's identity (made on first use)."""
        public = base64.b64encode(Keystore(self.state_dir).identity().public).decode("ascii")
        self.request("PUT", "/api/v1/site/identity", {"public_key": public})
        return public

    def work_session(self, seconds: float) -> str:
        """Pull work and answer it, one stage after another, for about ``seconds`` (longer
        while work keeps coming): each pull is a long poll, so the next stage is answered as
        soon as it opens. Work this site refused is not answered again. Returns what
        happened."""
        outcomes: list[str] = []
        Keystore(self.state_dir).prune()  # secrets of rounds the coordinator never finished
        published = self.publish_pending()
        if published:
            outcomes.append(published)
        refused: set[tuple[Any, Any]] = set()  # (contribution, stage) this site will not answer
        give_up = time.monotonic() + seconds
        while True:
            asked = time.monotonic()
            wait = max(0.0, min(self.long_poll, give_up - asked))
            status, work = self.request("GET", f"/api/v1/work?wait={wait:.1f}")
            key = _work_key(work) if status != 204 and work else None
            if key is not None and key not in refused:
                outcome, answered = self.answer(work)
                outcomes.append(outcome)
                if not answered:
                    refused.add(key)  # the same work comes back until its stage ends
                continue
            if time.monotonic() >= give_up:
                break
            if time.monotonic() - asked < wait / 2:
                # Nothing new at once (work this site refused, or a coordinator that does
                # not hold the request): pause instead of asking again straight away.
                time.sleep(min(IDLE_PAUSE_SECONDS, max(0.0, give_up - time.monotonic())))
        return "; ".join(outcomes) or "idle"

    def say_status(self, outcome: str) -> list[str]:
        """Plain status lines for the site's console, one per change: what each stage
        answered, and while idle what work each federation has for the site or why none
        (asked of the coordinator when the site falls idle, then at most once a minute).
        Returns the lines said."""
        lines = []
        if outcome != "idle":
            lines = [line for line in outcome.split("; ") if line]
            self._asked_status = -math.inf  # ask again once the site falls idle
        elif time.monotonic() - self._asked_status >= STATUS_EVERY_SECONDS:
            self._asked_status = time.monotonic()
            try:
                _, site = self.request("GET", "/api/v1/site")
            except (CoordinatorRefused, CoordinatorUnreachable) as error:
                site = {"memberships": [{"name": "the coordinator", "work": str(error)}]}
            for membership in site.get("memberships", []):
                name, words = str(membership.get("name")), str(membership.get("work", ""))
                if self._said.get(name) != words:
                    self._said[name] = words
                    lines.append(f"{name}: {words}")
        for line in lines:
            log.info("%s", line)
        return lines

    def answer(self, work: dict[str, Any]) -> tuple[str, bool]:
        """This site's message for the stage ``work`` asks for, computed (and kept in the
        keystore) once, and sent. Returns what happened, and whether it was sent."""
        try:
            task = work["work"]
            part = task[m.KEY_PROTOCOL]
            stage = str(part[m.STAGE])
            parameters = part[m.PARAMETERS]
            round_id = str(parameters[p.ROUND])
            where = (
                f"{work['federation']['name']} {task[m.KEY_KIND]} round {work['round']['number']}"
            )
            if stage == m.PLAIN_INPUT and not self.allow_plain:
                raise SecAggError(
                    "a plain round (the coordinator would see this site's input): this site's "
                    "owner has not allowed plain rounds (site_worker --allow-plain)"
                )
            if stage == m.PLAIN_INPUT:
                log.warning(
                    "%s runs plain aggregation (for debugging): the coordinator sees this "
                    "site's input",
                    where,
                )
            round_parameters = RoundParameters.from_json(parameters)
            ledger = PrivacyLedger(self.state_dir, self.policy)
            if stage in (p.ADVERTISE_KEYS, m.PLAIN_INPUT):  # a round's first stage
                # A boost round sums gradients of the site's labels: it trains, too.
                trains = task[m.KEY_KIND] in (m.Kind.TRAIN, m.Kind.BOOST)
                ledger.check(round_parameters.privacy, where, trains=trains)
            secure = round_parameters.secure
            if secure is not None and stage == p.ADVERTISE_KEYS:
                # Who this round's shares and signatures are with: noted once, at the
                # round's first stage, instead of reading the record at every stage.
                PeerBook(self.state_dir).record(
                    round_id=round_id,
                    federation=str(work["federation"]["name"]),
                    round_label=f"{task[m.KEY_KIND]} round {work['round']['number']}",
                    site=int(part[m.SITE]),
                    identities=secure.identities,
                )
            keystore = Keystore(self.state_dir)

            def compute() -> tuple[Any, dict[str, Any]]:
                return site_input(task, self.data(), RoundParameters.from_json(parameters))

            body, state = site_step(
                task, part[m.SITE], keystore.identity(), keystore.load_round(round_id), compute
            )
            self._keep_choice(task, where, work["federation"])
        except (SecAggError, OverBudget, KeyError, TypeError, ValueError, AttributeError) as error:
            # Forged, replayed, unsafe, malformed or past the owner's cap: this site sends
            # nothing, and says so.
            log.warning("work %s refused: %s", work.get("contribution"), error)
            self._note_refusal(work, error)
            return f"work {work.get('contribution')} refused: {error}", False
        keystore.save_round(round_id, state, deadline=_deadline(work))
        try:
            about = {
                "federation": work["federation"]["name"],
                "round": work["round"]["number"],
                "kind": task[m.KEY_KIND],
            }
            self.request("POST", f"/api/v1/contributions/{work['contribution']}", body, about)
            outcome, sent = f"{where}: {stage} sent", True
            if stage in (p.MASKED_INPUT, m.PLAIN_INPUT) and round_parameters.privacy:
                ledger.record(
                    privacy=round_parameters.privacy,
                    federation=str(work["federation"]["name"]),
                    round_label=f"{task[m.KEY_KIND]} round {work['round']['number']}",
                )
        except CoordinatorRefused as refused:  # e.g. the round closed meanwhile
            outcome, sent = f"{where}: {stage} refused by the coordinator: {refused}", False
        if stage in LAST_STAGES:  # the site's part is over: its round secrets go
            keystore.forget_round(round_id)
        return outcome, sent


def _deadline(work: dict[str, Any]) -> datetime | None:
    """The deadline of the stage ``work`` asks for (None if the coordinator gave none)."""
    try:
        return datetime.fromisoformat(work["round"]["deadline"])
    except (KeyError, TypeError, ValueError):
        return None


def _work_key(work: dict[str, Any]) -> tuple[Any, Any]:
    """Which piece of work this is: the contribution and the stage it asks for."""
    part = (work.get("work") or {}).get(m.KEY_PROTOCOL) or {}
    return work.get("contribution"), part.get(m.STAGE) if isinstance(part, dict) else None


# What each kind of message a site sends holds, in words for its owner.
SENT_WORDS = {
    p.ADVERTISE_KEYS: "public keys (the round's, signed with the site's identity)",
    p.SHARE_KEYS: "encrypted shares of its mask secrets, one per neighbour",
    p.MASKED_INPUT: "its input under masks (the coordinator sees only the sum)",
    p.UNMASK: "shares that remove dropped sites' masks from the sum",
    m.PLAIN_INPUT: "its input in the clear (plain round)",
}


def what_was_sent(entry: dict[str, Any]) -> str:
    """One outbox line's content in words: what kind of thing left the site."""
    method, path = entry.get("method"), str(entry.get("path", ""))
    stage = (entry.get("summary") or {}).get("stage")
    if method == "GET":
        return "a request for work" if path.startswith("/api/v1/work") else "a read"
    if path == "/api/v1/site/data":
        return "counts of its data (rows, engines, subsets)"
    if path == "/api/v1/site/identity":
        return "the public half of its identity key"
    if path == "/api/v1/site/worth":
        return "what joining is worth here, as its owner chose to publish it (one figure)"
    if stage in SENT_WORDS:
        return f"{stage}: {SENT_WORDS[stage]}"
    return f"keys={','.join(entry.get('keys', []))}"


def read_outbox(state_dir: Path) -> list[dict[str, Any]]:
    """The site's outbound log, oldest first."""
    path = Path(state_dir) / OUTBOX
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _error_message(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("error", raw[:200]))
    except (ValueError, AttributeError):
        return raw[:200].decode(errors="replace")


_runtime: SiteRuntime | None = None


def runtime_from_env() -> SiteRuntime:
    """The runtime of this worker process, configured by ``site_worker``."""
    global _runtime
    if _runtime is None:
        _runtime = SiteRuntime(
            coordinator=os.environ[COORDINATOR_ENV],
            credential=os.environ[CREDENTIAL_ENV],
            data_dir=Path(os.environ[DATA_DIR_ENV]),
            state_dir=Path(os.environ[STATE_DIR_ENV]),
            allow_plain=os.environ.get(ALLOW_PLAIN_ENV) == "1",
            policy=policy_from_env(),
        )
    return _runtime


def policy_from_env() -> SitePolicy:
    """The owner's privacy cap, as ``site_worker`` passed it to its task processes."""
    cap = os.environ.get(EPSILON_CAP_ENV)
    delta = os.environ.get(DELTA_ENV)
    return SitePolicy(
        epsilon_cap=float(cap) if cap else None,
        delta=float(delta) if delta else SitePolicy().delta,
    )
