"""The Celery side of ingest: the app in tasks/celery.py (`celery -A tasks worker|beat|flower`)
and the task modules it includes. Importing the package builds nothing."""
