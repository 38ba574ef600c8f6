"""ingest: an event-ingestion service with guaranteed delivery."""
