"""Reads for the dashboard pages."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection

from turbofan.data.source import DataSourceError, find_data_dir


def service_status() -> dict[str, str]:
    """What this installation runs on, without credentials."""
    try:
        data = str(find_data_dir(download=False))
    except DataSourceError:
        data = "not found yet (it is downloaded on first use)"
    return {
        "database": connection.vendor,
        "broker": str(urlsplit(settings.CELERY_BROKER_URL).scheme),
        "data": data,
        "environment": settings.DJANGO_ENV,
    }
