"""Alembic environment of reconciliation: the shared runner over this service's metadata."""

from alembic import context

from services.reconciliation.adapters.orm import metadata
from services.runtime.migrations import run_env

run_env(context, metadata)
