"""Alembic, run programmatically: each service keeps its migrations beside its adapters and calls
`migrate()` at start (or `python -m services.<svc> migrate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime.db import is_postgres


def alembic_config(script_location: Path, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["connection"] = connection
    return config


async def migrate(engine: AsyncEngine, script_location: Path, schema: str | None) -> None:
    """Bring the service's schema to head; safe when several replicas start together."""
    async with engine.begin() as connection:
        if is_postgres(engine) and schema:
            await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(script_location, sync), "head"))


def run_env(context: Any, metadata: MetaData) -> None:
    """Body of every service's migrations/env.py."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        context.configure(url="sqlite://", target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
