"""Use cases of reconciliation: one handler per business step, over a unit of work and ports."""
