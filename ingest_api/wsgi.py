"""A WSGI entry point, `ingest_api.wsgi:app`, for any WSGI server (ingest serves it through
ingest_api/rsgi.py on granian)."""

from ingest_api.app import create_app

app = create_app()
