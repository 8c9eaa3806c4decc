"""The Celery application shared by the coordinator worker and the site workers."""

from __future__ import annotations

import os

from celery import Celery

# The coordinator's queue is named by the domain, which schedules its tasks by name.
from federation.scheduling import COORDINATOR_QUEUE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("turbofan")
# All Celery settings live in Django settings under the CELERY_ prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

__all__ = ["COORDINATOR_QUEUE", "app", "site_queue"]


def site_queue(site: str) -> str:
    """The queue only the named site's worker consumes."""
    return f"site.{site}"
