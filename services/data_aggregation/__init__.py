"""data-aggregation, the data middle platform: one fact store fed by every service's event feed,
each event ingested exactly once, answering daily summaries and settlement-time distributions."""
