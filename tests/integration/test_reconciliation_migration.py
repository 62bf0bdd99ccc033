"""reconciliation's 0002 on a database the earlier build used: the runs it left RUNNING forever (its
process died mid-run, several per day) end FAILED with the reason, so at most one run per day is
RUNNING from then on and none is RUNNING without a lease."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text

from services.runtime.db import create_engine
from services.runtime.migrations import alembic_config, migrate

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "reconciliation" / "adapters" / "migrations"
OLD_RUN = (
    "INSERT INTO reconciliation_runs (run_id, business_date, status, matched_count, discrepancy_count,"
    " failure_reason, started_at, finished_at) VALUES (:run_id, '2025-03-14', :status, 0, 0, '',"
    " '2025-03-15 01:00:00+00', NULL)"
)


async def test_runs_the_old_build_left_running_end_failed_with_the_reason(database_url: str) -> None:
    schema = "reconciliation" if database_url.startswith("postgresql") else None
    engine = create_engine(database_url, schema)
    try:
        async with engine.begin() as connection:
            if schema:
                await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(MIGRATIONS, sync), "0001"))
            for run_id, status in [("rcn_a", "RUNNING"), ("rcn_b", "RUNNING"), ("rcn_c", "COMPLETED")]:
                await connection.execute(text(OLD_RUN), {"run_id": run_id, "status": status})

        await migrate(engine, MIGRATIONS, schema)

        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text(
                        "SELECT run_id, status, failure_reason, finished_at IS NOT NULL AS ended, holder,"
                        " attempts FROM reconciliation_runs ORDER BY run_id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    reason = "interrupted: the process executing it stopped before runs were resumable jobs"
    assert [tuple(row) for row in rows] == [
        ("rcn_a", "FAILED", reason, True, "", 1),
        ("rcn_b", "FAILED", reason, True, "", 1),
        ("rcn_c", "COMPLETED", "", False, "", 1),
    ]
