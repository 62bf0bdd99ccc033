"""Autogenerate an Alembic revision for one service from its metadata (against a scratch SQLite
database brought to the current head first). Usage: python scripts/new_migration.py payment_core "msg"
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from services.runtime.migrations import alembic_config


async def autogenerate(service: str, message: str) -> None:
    root = Path(__file__).resolve().parent.parent / "services" / service / "adapters" / "migrations"
    importlib.import_module(f"services.{service}.adapters.orm")
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_async_engine(f"sqlite+aiosqlite:///{scratch}/scratch.db")
        async with engine.begin() as connection:

            def revise(sync_connection: object) -> None:
                config = alembic_config(root, sync_connection)  # type: ignore[arg-type]
                command.upgrade(config, "head")
                command.revision(config, message=message, autogenerate=True)

            await connection.run_sync(revise)
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(autogenerate(sys.argv[1], sys.argv[2]))
