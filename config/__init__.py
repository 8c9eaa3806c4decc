"""Project settings package."""

# Import the Celery app whenever Django starts so that @shared_task binds to it.
from worker.celery import app as celery_app

__all__ = ("celery_app",)
