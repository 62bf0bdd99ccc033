"""Alembic environment of data-aggregation: the shared runner over this service's metadata."""

from alembic import context

from services.data_aggregation.adapters.orm import metadata
from services.runtime.migrations import run_env

run_env(context, metadata)
