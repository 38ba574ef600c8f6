"""A WSGI entry point, `ingest_api.wsgi:app`, for any WSGI server (ingest serves it through
ingest/rsgi.py on granian)."""

from ingest_api import create_app

app = create_app()
