"""Temporary: tasks/persist.py and tasks/projection.py import the app from here until they
import it from tasks.celery; then this module goes."""

from tasks.celery import app

__all__ = ["app"]
