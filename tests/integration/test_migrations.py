"""Each service's Alembic migrations build exactly the schema its ORM metadata describes, on the
test database (PostgreSQL in CI), in the service's own schema; and running them twice is a no-op."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from services.runtime.db import create_engine
from services.runtime.migrations import migrate

SERVICES = ["payment_core", "insurance_adapter", "reconciliation", "data_aggregation"]
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_match_the_orm(database_url: str, service: str) -> None:
    metadata = importlib.import_module(f"services.{service}.adapters.orm").metadata
    schema = service if database_url.startswith("postgresql") else None
    engine = create_engine(database_url, schema)
    script_location = REPO / "services" / service / "adapters" / "migrations"
    try:
        await migrate(engine, script_location, schema)
        await migrate(engine, script_location, schema)  # idempotent: already at head
        async with engine.connect() as connection:
            if schema:
                tables = await connection.execute(
                    text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"),
                    {"s": schema},
                )
                assert tables.scalar_one() == len(metadata.tables) + 1  # + alembic_version
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
        assert differences == []
    finally:
        await engine.dispose()
