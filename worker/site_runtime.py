"""A site's side of the federation: pull work over HTTP, compute locally, post results.

Everything the site sends is also appended to its outbound log
(``<state-dir>/outbox.jsonl``), which the site's owner can read: what was sent,
when, to which endpoint, how many bytes, and with which keys. Rows never leave.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation.core import messages
from federation.core.client import run_work, secure_input
from federation.core.secagg import protocol as p
from federation.core.secagg import session
from federation.core.secagg.primitives import SecAggError
from turbofan.data.checks import training_rows
from worker.keystore import Keystore

log = logging.getLogger(__name__)

FOLLOW_UP_INTERVAL = 0.25  # seconds between looks for a secure round's next stage

COORDINATOR_ENV = "SITE_COORDINATOR"
CREDENTIAL_ENV = "SITE_CREDENTIAL"
DATA_DIR_ENV = "SITE_DATA_DIR"
STATE_DIR_ENV = "SITE_STATE_DIR"
OUTBOX = "outbox.jsonl"


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
    follow_up: float = 3.0
    _rows: pd.DataFrame | None = field(default=None, repr=False)

    def rows(self) -> pd.DataFrame:
        if self._rows is None:
            self._rows = training_rows(self.data_dir)
        return self._rows

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        url = self.coordinator.rstrip("/") + path
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.credential}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        status = 0
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
                raw = response.read()
        except urllib.error.HTTPError as error:
            status = error.code
            raw = error.read()
            if status >= 500:
                raise CoordinatorUnreachable(f"{method} {path}: HTTP {status}") from None
            message = _error_message(raw)
            raise CoordinatorRefused(f"{method} {path}: HTTP {status}: {message}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise CoordinatorUnreachable(f"{method} {path}: {error}") from None
        finally:
            self._log(method, path, body, data, status)
        return status, (json.loads(raw) if raw else {})

    def _log(
        self, method: str, path: str, body: dict[str, Any] | None, data: bytes | None, status: int
    ) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "method": method,
            "path": path,
            "status": status,
            "bytes": len(data or b""),
            "keys": sorted(body) if body else [],
            "summary": {
                k: v for k, v in (body or {}).items() if k in ("examples", "metrics", "stage")
            },
        }
        with (self.state_dir / OUTBOX).open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def register_identity(self) -> str:
        """Send the coordinator the public half of this site's identity (made on first use)."""
        public = base64.b64encode(Keystore(self.state_dir).identity().public).decode("ascii")
        self.request("PUT", "/api/v1/site/identity", {"public_key": public})
        return public

    def poll_once(self) -> str:
        """One pull: do the next piece of work if there is one. Returns what happened."""
        status, work = self.request("GET", "/api/v1/work")
        if status == 204 or not work:
            return "idle"
        if session.WORK_KEY in work["work"]:
            return self._secure_round(work)
        if work["work"][messages.KEY_KIND] == messages.TRAIN:
            log.warning(
                "federation %s runs plain aggregation (for debugging): the coordinator "
                "sees this site's model update",
                work["federation"]["name"],
            )
        result = self._computed(work)
        try:
            self.request("POST", f"/api/v1/contributions/{work['contribution']}", result)
            outcome = f"{work['work']['kind']} round {work['round']['number']} done"
        except CoordinatorRefused as refused:  # e.g. the round closed meanwhile: drop it
            outcome = f"result refused: {refused}"
        self._cache_path(work).unlink(missing_ok=True)
        return outcome

    def _secure_round(self, work: dict[str, Any]) -> str:
        """Answer a secure round's stages as they open. The next stage opens as soon as
        every site has answered this one, usually within a second or two: look for it
        a few times a second for ``follow_up`` seconds instead of one poll interval."""
        outcomes = []
        while work is not None:
            outcomes.append(self._secure_step(work))
            if work["work"][session.WORK_KEY][p.STAGE] == p.UNMASK:
                break
            work = self._next_stage(work["contribution"])
        return "; ".join(outcomes)

    def _next_stage(self, contribution: int) -> dict[str, Any] | None:
        give_up = time.monotonic() + self.follow_up
        while time.monotonic() < give_up:
            time.sleep(FOLLOW_UP_INTERVAL)
            status, work = self.request("GET", "/api/v1/work")
            if status != 204 and work:
                # Other work (another federation's) waits for the next regular poll.
                return work if work["contribution"] == contribution else None
        return None

    def _cache_path(self, work: dict[str, Any]) -> Path:
        return self.state_dir / f"result-{work['contribution']}.json"

    def _computed(self, work: dict[str, Any]) -> dict[str, Any]:
        """The work's result, computed once: a result computed before a failed post is
        sent again, not computed again."""
        cached = self._cache_path(work)
        result = _read_cached(cached)
        if result is None:
            result = run_work(self.rows(), work["work"])
            self.state_dir.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".tmp")
            partial.write_text(json.dumps(result))
            os.replace(partial, cached)  # a crash mid-write leaves no half a result
        return result

    def _secure_step(self, work: dict[str, Any]) -> str:
        """This site's message for the current stage of a secure round, sent."""
        part = work["work"][session.WORK_KEY]
        stage, parameters = part[p.STAGE], part[session.ROUND_PARAMETERS]
        round_id = parameters[p.ROUND]
        keystore = Keystore(self.state_dir)

        def masked_input() -> tuple[np.ndarray, dict[str, Any]]:
            return secure_input(self.rows(), work["work"], parameters, lambda: self._computed(work))

        try:
            body, state = session.site_step(
                part, part[p.SITE], keystore.identity(), keystore.load_round(round_id), masked_input
            )
        except SecAggError as error:  # forged, replayed or unsafe: this site sends nothing
            log.warning("secure round %s, stage %s refused: %s", round_id, stage, error)
            return f"secure {stage} refused: {error}"
        keystore.save_round(round_id, state)
        where = f"/api/v1/contributions/{work['contribution']}"
        try:
            self.request("POST", where, body)
            outcome = f"secure round {work['round']['number']}: {stage} sent"
        except CoordinatorRefused as refused:
            outcome = f"secure {stage} refused by the coordinator: {refused}"
        if stage == p.UNMASK:  # the site's part is over: its round secrets go
            keystore.forget_round(round_id)
            self._cache_path(work).unlink(missing_ok=True)
        return outcome


def _read_cached(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


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
        )
    return _runtime
