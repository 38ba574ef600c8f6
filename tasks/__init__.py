"""The Celery side of ingest: `celery -A tasks worker|beat|flower`."""

from tasks.celery_app import app

__all__ = ["app"]
