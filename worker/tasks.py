"""Celery tasks: adapters that take ids or names, call the core, return JSON."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from celery import shared_task
from django.db import connection

from turbofan.data.checks import describe_folder
from turbofan.data.files import DataFileError

SITE_NAME_ENV = "SITE_NAME"
SITE_DATA_DIR_ENV = "SITE_DATA_DIR"


@shared_task(name="coordinator.health")
def coordinator_health() -> dict[str, object]:
    """Prove the coordinator worker is up and reaches the database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"host": socket.gethostname(), "pid": os.getpid(), "database": connection.vendor}


@shared_task(name="site.describe_data")
def site_describe_data() -> dict[str, object]:
    """Validate this site's data folder and report aggregate metadata only.

    The folder is the worker's own setting (``site_worker --data-dir``): the
    coordinator never learns where a site keeps its data.
    """
    site, data_dir = os.environ.get(SITE_NAME_ENV), os.environ.get(SITE_DATA_DIR_ENV)
    if not site or not data_dir:
        raise RuntimeError("site.describe_data runs only on a site worker (manage.py site_worker)")
    try:
        summary = describe_folder(Path(data_dir))
    except DataFileError as error:
        return {"site": site, "ok": False, "error": error.problem}
    return {"site": site, "ok": True, **summary}
