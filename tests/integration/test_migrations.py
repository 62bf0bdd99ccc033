"""Each service's Alembic migrations build exactly the schema its ORM metadata describes, on the
test database (PostgreSQL in CI), in the service's own schema; and running them twice is a no-op."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Boolean, DateTime, Integer, LargeBinary, MetaData, insert, text
from sqlalchemy.engine import Connection

from services.runtime.db import create_engine
from services.runtime.migrations import alembic_config, migrate

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


@pytest.fixture(params=["sqlite", "test-database"])
def either_backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/migrations.sqlite3"
    return str(request.getfixturevalue("database_url"))


def _one_charge_line_at_0001(sync: Connection, parent: str) -> None:
    """One parent row and one charge line of 1.5 units, as revision 0001 named the columns; every
    other column gets a plain value that passes its constraints."""
    tables = MetaData()
    tables.reflect(sync, only=[parent, "charge_lines"])
    for name, overrides in (
        (parent, {"status": "PRESETTLED"}),
        ("charge_lines", {"quantity_milli_units": 15_000}),
    ):
        table = tables.tables[name]
        row = {column.name: _plain_value(column.type) for column in table.columns}
        row.update({key: value for key, value in overrides.items() if key in table.columns})
        sync.execute(insert(table).values(row))


def _plain_value(kind: object) -> object:
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return 1
    if isinstance(kind, DateTime):
        return datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    if isinstance(kind, LargeBinary):
        return b""
    return "1"  # every key and code: the child's foreign key matches the parent's primary key


@pytest.mark.parametrize(
    ("service", "parent"), [("payment_core", "payment_orders"), ("insurance_adapter", "settlements")]
)
async def test_the_charge_line_quantity_keeps_its_values_under_its_new_name(
    either_backend: str, service: str, parent: str
) -> None:
    """ChargeItem.quantity_milli_units held ten-thousandths; revision 0002 renames the column to
    quantity_ten_thousandths and keeps every stored quantity."""
    schema = service if either_backend.startswith("postgresql") else None
    engine = create_engine(either_backend, schema)
    script_location = REPO / "services" / service / "adapters" / "migrations"
    try:
        async with engine.begin() as connection:
            if schema:
                await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await connection.run_sync(
                lambda sync: command.upgrade(alembic_config(script_location, sync), "0001")
            )
            await connection.run_sync(_one_charge_line_at_0001, parent)
        await migrate(engine, script_location, schema)
        async with engine.connect() as connection:
            stored = await connection.execute(text("SELECT quantity_ten_thousandths FROM charge_lines"))
            assert stored.scalars().all() == [15_000]
    finally:
        await engine.dispose()


def _children_at_0004(sync: Connection) -> None:
    """One order with two payments and one refund, written as revision 0004 left the tables."""
    tables = MetaData()
    tables.reflect(sync, only=["payment_orders", "payments", "refunds"])
    rows = {
        "payment_orders": [{"cash_paid_fen": 1, "refunded_cash_fen": 0}],
        "payments": [
            {"payment_id": "p1", "attempt_no": 1, "out_trade_no": "t1"},
            {"payment_id": "p2", "attempt_no": 2, "out_trade_no": "t2"},
        ],
        "refunds": [{"refund_id": "r1", "payment_id": "p1", "refund_no": 1, "out_refund_no": "rf1"}],
    }
    for name, overrides in rows.items():
        table = tables.tables[name]
        for override in overrides:
            row = {column.name: _plain_value(column.type) for column in table.columns}
            row.update({key: value for key, value in override.items() if key in table.columns})
            row.pop("id", None)
            sync.execute(insert(table).values(row))


async def test_the_child_counts_are_filled_in_for_orders_stored_before_them(either_backend: str) -> None:
    """Revision 0005 counts each order's payments and refunds: a load skips only what it has none of."""
    schema = "payment_core" if either_backend.startswith("postgresql") else None
    engine = create_engine(either_backend, schema)
    script_location = REPO / "services" / "payment_core" / "adapters" / "migrations"
    try:
        async with engine.begin() as connection:
            if schema:
                await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await connection.run_sync(
                lambda sync: command.upgrade(alembic_config(script_location, sync), "0004")
            )
            await connection.run_sync(_children_at_0004)
        await migrate(engine, script_location, schema)
        async with engine.connect() as connection:
            counts = await connection.execute(text("SELECT payment_count, refund_count FROM payment_orders"))
            assert counts.all() == [(2, 1)]
    finally:
        await engine.dispose()
