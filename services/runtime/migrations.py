"""Alembic, run programmatically: each service keeps its migrations beside its adapters and calls
`migrate()` at start (or `python -m services.<svc> migrate`).

Alembic (and Mako under it) is imported only when a migration runs: a serving process has its
schema brought to head by a child process (`migrate_in_child`), so ~9 MB of modules it never
uses again stay out of its memory."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime.db import is_postgres

if TYPE_CHECKING:
    from alembic.config import Config


def alembic_config(script_location: Path, connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["connection"] = connection
    return config


async def migrate(engine: AsyncEngine, script_location: Path, schema: str | None) -> None:
    """Bring the service's schema to head; safe when several replicas start together."""
    from alembic import command

    async with engine.begin() as connection:
        if is_postgres(engine) and schema:
            await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(script_location, sync), "head"))


async def migrate_in_child(service: str) -> None:
    """Bring the service's schema to head in `python -m services.<svc> migrate`, a child with this
    process's environment (so the same settings); raises if it fails, before anything is served."""
    module = f"services.{service.replace('-', '_')}"
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", module, "migrate")
    if await child.wait() != 0:
        raise RuntimeError(f"{module} migrate exited with {child.returncode}")


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
