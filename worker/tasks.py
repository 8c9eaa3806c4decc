"""Celery tasks: adapters that take ids, call a service, and handle retries.

The coordinator's tasks carry the names ``federation.scheduling`` sends them by.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.db import connection, transaction
from django.utils import timezone

from federation import scheduling

log = logging.getLogger(__name__)

ROLE_ENV = "TURBOFAN_ROLE"
# How long one site.poll task keeps pulling work (long polls, one after another) before
# it ends and the next one, started by the worker's beat, takes over.
WORK_SESSION_SECONDS = 60.0


# --- coordinator ------------------------------------------------------------------------


@shared_task(name="coordinator.health")
def coordinator_health() -> dict[str, object]:
    """Prove the coordinator worker is up and reaches the database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"host": socket.gethostname(), "pid": os.getpid(), "database": connection.vendor}


@shared_task(name=scheduling.ROUND_DEADLINE, ignore_result=True)
def round_deadline(round_id: int, stage: str | None = None) -> bool:
    """End the round's stage if every site answered or its deadline passed.

    ``stage``: the stage this check was scheduled for; a round that has moved on since
    has a check of its own scheduled, and this one does nothing.
    """
    from federation.models import Round
    from federation.services.stages import stage_close

    round_ = Round.objects.select_related("federation").filter(id=round_id).first()
    if round_ is None or round_.status != Round.Status.COLLECTING:
        return False
    if stage is not None and round_.stage != stage:
        return False
    with transaction.atomic():
        closed = stage_close(round_=round_, stage=stage)
    round_.refresh_from_db()
    early = round_.status == Round.Status.COLLECTING and round_.deadline > timezone.now()
    if stage is not None and round_.stage == stage and early:
        # Delivered before the deadline (clock skew, a redelivery): check again then.
        scheduling.schedule_deadline(round_.id, stage, round_.deadline)
    return closed


@shared_task(name=scheduling.ROUND_AGGREGATE, ignore_result=True)
def round_aggregate(round_id: int) -> None:
    from federation.models import Round
    from federation.services.rounds import round_fail
    from federation.services.stages import round_aggregate as aggregate

    round_ = Round.objects.select_related("federation").filter(id=round_id).first()
    if round_ is None:
        return
    try:
        aggregate(round_=round_)
    except Exception as error:  # a failed aggregation fails the round, visibly
        log.exception("aggregation failed round=%s", round_id)
        round_fail(round_=round_, reason=f"aggregation failed: {error}")


@worker_ready.connect
def _resume_rounds(**kwargs: Any) -> None:
    """A coordinator that restarts picks up every round it left mid-way."""
    if os.environ.get(ROLE_ENV) != "coordinator":
        return
    from federation.services.rounds import rounds_resume

    touched = rounds_resume()
    if touched:
        log.info("resumed rounds %s after start", touched)


# --- site -------------------------------------------------------------------------------


@shared_task(name="site.poll", bind=True, max_retries=None, ignore_result=True)
def site_poll(self: Any) -> str:
    """Pull work from the coordinator (long polls) and answer it, for a while; retry with
    backoff while the coordinator is unreachable."""
    from worker.site_runtime import CoordinatorUnreachable, runtime_from_env

    try:
        runtime = runtime_from_env()
        outcome = runtime.work_session(WORK_SESSION_SECONDS)
        runtime.say_status(outcome)
        return outcome
    except CoordinatorUnreachable as error:
        delay = min(60, 2 ** min(self.request.retries, 6))
        log.warning("coordinator unreachable (%s); retrying in %d s", error, delay)
        raise self.retry(countdown=delay, max_retries=8) from None
