"""Use cases of data-aggregation: ingest a feed page exactly once, and answer the finance queries."""
