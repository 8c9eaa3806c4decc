"""Celery app, thin tasks and the process runtime of the coordinator and the sites."""
