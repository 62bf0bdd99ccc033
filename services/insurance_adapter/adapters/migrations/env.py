"""Alembic environment of insurance-adapter: the runtime runs it on its own connection."""

from alembic import context

from services.insurance_adapter.adapters.orm import metadata
from services.runtime.migrations import run_env

run_env(context, metadata)
