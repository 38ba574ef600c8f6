"""The HTTP API: `ingest_api.app.create_app()` builds it; `python -m ingest_api.server` serves
it (granian). Importing the package builds nothing: the server sets up the workers' metrics
directory before any of the app's modules is imported."""
