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
    """Revision 0006 counts each order's payments and refunds: a load skips only what it has none of."""
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


def _an_insured_order_at_0004(sync: Connection) -> None:
    """An insured, settled order of an earlier release: one open attempt of 300 fen, one succeeded
    of 700 fen, one excess success of 700 fen, and a requested refund."""
    tables = MetaData()
    tables.reflect(sync, only=["payment_orders", "payments", "refunds"])
    order = {column.name: _plain_value(column.type) for column in tables.tables["payment_orders"].columns}
    order.update(insured=True, total_fen=2_000, cash_due_fen=1_000, cash_paid_fen=1_400, refunded_cash_fen=0)
    sync.execute(insert(tables.tables["payment_orders"]).values(order))
    for n, (status, amount, excess) in enumerate(
        [("PENDING", 300, False), ("SUCCEEDED", 700, False), ("SUCCEEDED", 700, True)], start=1
    ):
        payment = {column.name: _plain_value(column.type) for column in tables.tables["payments"].columns}
        payment.update(payment_id=f"pay_{n}", attempt_no=n, out_trade_no=f"t{n}", status=status,
                       amount_fen=amount, refunded_fen=0, excess=excess)  # fmt: skip
        sync.execute(insert(tables.tables["payments"]).values(payment))
    back = {column.name: _plain_value(column.type) for column in tables.tables["refunds"].columns}
    back.update(payment_id="pay_2", kind="REQUESTED")
    sync.execute(insert(tables.tables["refunds"]).values(back))


async def test_what_the_payments_of_an_earlier_order_cover_is_counted_once_migrated(
    either_backend: str,
) -> None:
    """Revision 0005 sets cash_placed_fen from the payments (open and kept, not excess) and marks an
    earlier requested refund of an insured, settled order as the one that revoked its settlement."""
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
            await connection.run_sync(_an_insured_order_at_0004)
        await migrate(engine, script_location, schema)
        async with engine.connect() as connection:
            placed = await connection.execute(text("SELECT cash_placed_fen FROM payment_orders"))
            assert placed.scalars().all() == [1_000]
            revoking = await connection.execute(text("SELECT revokes_settlement FROM refunds"))
            assert [bool(value) for value in revoking.scalars().all()] == [True]
    finally:
        await engine.dispose()
