"""Alembic environment of payment-core: the runtime runs it on its own connection."""

from alembic import context

from services.payment_core.adapters.orm import metadata
from services.runtime.migrations import run_env

run_env(context, metadata)
