"""Work the coordinator's worker does later, asked for by task name.

The domain names the tasks and the queue; ``worker.tasks`` registers the functions
under these names. Sending by name (``send_task``) keeps this app free of the worker's
code, and each message goes out only once the transaction that asked for it commits
(outside a transaction: at once), so a worker never looks for a row not yet written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import current_app
from django.db import transaction

COORDINATOR_QUEUE = "coordinator"
ROUND_DEADLINE = "coordinator.round_deadline"  # close a round's stage if it is over
ROUND_AGGREGATE = "coordinator.round_aggregate"  # sum, decode and store a closed round


def _send(name: str, args: tuple[Any, ...], **options: Any) -> None:
    current_app.send_task(name, args=args, queue=COORDINATOR_QUEUE, **options)


def _after_commit(name: str, args: tuple[Any, ...], **options: Any) -> None:
    transaction.on_commit(lambda: _send(name, args, **options))


def schedule_deadline(round_id: int, stage: str, deadline: datetime) -> None:
    """Check the round's ``stage`` when its deadline passes (at once if it has); a check
    that finds the round in a later stage does nothing (that stage has its own)."""
    _after_commit(ROUND_DEADLINE, (round_id, stage), eta=deadline)


def enqueue_close(round_id: int) -> None:
    """Check the round's current stage now (a site left the round)."""
    _after_commit(ROUND_DEADLINE, (round_id, None))


def enqueue_aggregate(round_id: int) -> None:
    _after_commit(ROUND_AGGREGATE, (round_id,))
