"""Celery tasks: adapters that take ids, call a service, and handle retries."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.db import connection, transaction

from worker.celery import COORDINATOR_QUEUE

log = logging.getLogger(__name__)

ROLE_ENV = "TURBOFAN_ROLE"


# --- coordinator ------------------------------------------------------------------------


@shared_task(name="coordinator.health")
def coordinator_health() -> dict[str, object]:
    """Prove the coordinator worker is up and reaches the database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"host": socket.gethostname(), "pid": os.getpid(), "database": connection.vendor}


def schedule_deadline(round_: Any) -> None:
    """Check the round when its deadline passes (and at once if it already has)."""
    round_deadline.apply_async((round_.id,), eta=round_.deadline, queue=COORDINATOR_QUEUE)


def enqueue_close(round_id: int) -> None:
    round_deadline.apply_async((round_id,), queue=COORDINATOR_QUEUE)


def enqueue_aggregate(round_id: int) -> None:
    round_aggregate.apply_async((round_id,), queue=COORDINATOR_QUEUE)


@shared_task(name="coordinator.round_deadline")
def round_deadline(round_id: int) -> bool:
    """Close a round if every site answered or its deadline passed; then aggregate."""
    from federation import services
    from federation.models import Round

    round_ = Round.objects.select_related("federation").filter(id=round_id).first()
    if round_ is None:
        return False
    with transaction.atomic():
        closed = services.round_close(round_=round_)
    if closed:
        enqueue_aggregate(round_id)
    else:
        round_.refresh_from_db()
        if round_.status == Round.Status.COLLECTING:
            # Delivered early (clock skew, a premature redelivery): check again at the deadline.
            schedule_deadline(round_)
    return closed


@shared_task(name="coordinator.round_aggregate")
def round_aggregate(round_id: int) -> None:
    from federation import services
    from federation.models import Round

    round_ = Round.objects.select_related("federation").filter(id=round_id).first()
    if round_ is None:
        return
    try:
        services.round_aggregate(round_=round_)
    except Exception as error:  # a failed aggregation fails the round, visibly
        log.exception("aggregation failed round=%s", round_id)
        services.round_fail(round_=round_, reason=f"aggregation failed: {error}")


@worker_ready.connect
def _resume_rounds(**kwargs: Any) -> None:
    """A coordinator that restarts picks up every round it left mid-way."""
    if os.environ.get(ROLE_ENV) != "coordinator":
        return
    from federation.services import rounds_resume

    touched = rounds_resume()
    if touched:
        log.info("resumed rounds %s after start", touched)


# --- site -------------------------------------------------------------------------------


@shared_task(name="site.poll", bind=True, max_retries=None)
def site_poll(self: Any) -> str:
    """Ask the coordinator for work; do it and post the result (retrying with backoff)."""
    from worker.site_runtime import CoordinatorUnreachable, runtime_from_env

    try:
        return runtime_from_env().poll_once()
    except CoordinatorUnreachable as error:
        delay = min(60, 2 ** min(self.request.retries, 6))
        log.warning("coordinator unreachable (%s); retrying in %d s", error, delay)
        raise self.retry(countdown=delay, max_retries=8) from None
