"""The site API against its own description: schemathesis generates requests from
/api/v1/openapi.json (valid ones, and ones that break the schema) and sends them with a
real site's credential. Every answer must be one the description lists, in the shape it
gives, and never a server error; a message that breaks the schema must be refused."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from config.wsgi import application
from federation.core.messages import Kind
from federation.models import Contribution
from federation.services import rounds

pytestmark = pytest.mark.django_db

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)
# Bounded: enough to find a 500 or a drifted description, quick enough for every CI run.
# API_FUZZ_EXAMPLES=500 API_FUZZ_RANDOM=1 for a longer, freshly seeded run.
BOUNDED = settings(
    max_examples=int(os.environ.get("API_FUZZ_EXAMPLES", "40")),
    deadline=None,
    derandomize=not os.environ.get("API_FUZZ_RANDOM"),
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(autouse=True)
def connection_kept():
    """Requests go through the WSGI app as a server's would; as Django's test client
    does, the test's database connection is not closed at the end of each."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


CREDENTIAL: dict[str, str] = {}  # the member's, set by its fixture


@schema.auth(refresh_interval=None)
class SiteCredentialAuth:
    """The member's credential on every request schemathesis makes; left off on purpose
    where it tests a missing credential."""

    def get(self, case: Any, context: Any) -> str:
        return CREDENTIAL.get("value", "not-yet")  # collection asks before any fixture

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def member(cast, tmp_path, scheduled, media_root):
    """An approved member with its identity key, in a federation whose first round is
    open: its contribution is work the fuzzed messages can reach."""
    alpha = cast.add_member("alpha", keys=tmp_path)
    for name in ("beta", "gamma"):
        cast.add_member(name, keys=tmp_path)
    round_ = rounds.round_open(federation=cast.federation, kind=Kind.POINTS, number=0)
    contribution = Contribution.objects.get(round=round_, site=alpha.site)
    CREDENTIAL["value"] = alpha.credential
    return {"credential": alpha.credential, "contribution": contribution.id}


@schema.parametrize()
@BOUNDED
def test_every_answer_is_one_the_description_lists(case, member):
    # Half of the messages go to the member's real open work, the rest wherever.
    if "contribution_id" in (case.path_parameters or {}) and hash(repr(case.body)) % 2 == 0:
        case.path_parameters["contribution_id"] = member["contribution"]
    case.call_and_validate(
        # Every check but one: a message can fit the schema and still be refused (400)
        # for what only the round knows (a signature, a vector's length, which shares).
        excluded_checks=[positive_data_acceptance],
    )
