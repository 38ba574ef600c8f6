"""`python -m ingest_cli`, the same as the `ingest` command."""

from ingest_cli import main

main()
