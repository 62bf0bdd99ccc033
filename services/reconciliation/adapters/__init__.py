"""Persistence, the outbox event, and the readers of the three sources (payment-core, WeChat Pay,
insurance-adapter)."""
