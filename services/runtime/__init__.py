"""What every MedPay Mesh service shares: config, server bootstrap, interceptors, database,
outbox, idempotency, telemetry, logging, masking and errors. Small and boring on purpose."""
