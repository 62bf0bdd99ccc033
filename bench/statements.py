"""What one SQL statement costs payment-core in CPU, by how it is built and sent.

    python -m bench.statements [--calls 2000]

On a scratch PostgreSQL database (MEDPAY_BENCH_DATABASE_URL, default the local one), the order
row's UPDATE and SELECT-by-key built afresh per call with the values inline, built once with the
values as parameters (services/runtime/statements.py) through SQLAlchemy's own execution, the same
statements as the services send them now (run straight on asyncpg: services/runtime/prepared.py),
and the SELECT through asyncpg alone (the floor).
Prints µs of this process's CPU per statement (the database's own time is not counted) and
writes them as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.settlement import database_for_bench, drop_database
from services.payment_core.adapters import orm
from services.runtime.db import create_engine, session_factory
from services.runtime.statements import KEY, insert_into, select_by, update_by

ORDER_ID = "ord_0123456789abcdef01234567"
RESULTS = Path(__file__).resolve().parent / "results"


def _order_row() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "order_id": ORDER_ID, "create_request_id": "req", "his_order_no": "MZ1", "campus_code": "FZ01",
        "scene": "OUTPATIENT", "dept_code": "0301", "his_patient_id": "P1", "masked_cert_no": "",
        "insured": False, "insutype": "", "med_type": "", "status": "AWAITING_PAYMENT", "total_fen": 12_500,
        "cash_due_fen": 12_500, "cash_paid_fen": 0, "refunded_cash_fen": 0, "settlement_id": "",
        "setl_id": "", "attention_reason": "", "settlement_revoked": False, "close_requested": False,
        "close_reason": "", "presettlement_cancelled": False, "attempts": 0, "created_at": now,
        "updated_at": now,
    }  # fmt: skip


def _changes() -> dict[str, Any]:
    """What a turn of the process manager writes back: the order's mutable columns."""
    return {"status": "PAYING", "attempts": 1, "due_at": datetime.now(UTC), "lease_holder": "i/1",
            "attention_reason": "", "close_reason": "", "updated_at": datetime.now(UTC)}  # fmt: skip


async def _cpu_per_call(send: Callable[[], Awaitable[object]], calls: int) -> float:
    for _ in range(min(200, calls)):  # warm the compiled cache and the prepared statements
        await send()
    started = time.process_time()
    for _ in range(calls):
        await send()
    return (time.process_time() - started) / calls * 1e6


Send = Callable[[AsyncSession], Awaitable[object]]


async def measure(url: str, calls: int) -> list[tuple[str, float]]:
    engine = create_engine(url, None)
    table = orm.payment_orders
    try:
        async with engine.begin() as connection:
            await connection.run_sync(orm.metadata.create_all)
        prepared = session_factory(engine)  # as the services run them: straight on asyncpg
        ordinary = async_sessionmaker(engine, expire_on_commit=False)  # SQLAlchemy's own execution
        async with prepared.begin() as session:
            await session.execute(insert_into(table), _order_row())

        async def update_fresh(session: AsyncSession) -> object:
            return await session.execute(
                update(table).where(table.c.order_id == ORDER_ID).values(**_changes())
            )

        async def update_once(session: AsyncSession) -> object:
            return await session.execute(update_by(table, "order_id"), {KEY: ORDER_ID, **_changes()})

        async def select_fresh(session: AsyncSession) -> object:
            return (await session.execute(select(table).where(table.c.order_id == ORDER_ID))).one()

        async def select_once(session: AsyncSession) -> object:
            return (await session.execute(select_by(table, "order_id"), {KEY: ORDER_ID})).one()

        drivers: dict[int, Any] = {}  # the session's asyncpg connection, looked up once

        async def select_driver(session: AsyncSession) -> object:
            driver = drivers.get(id(session))
            if driver is None:
                raw = await (await session.connection()).get_raw_connection()
                driver = drivers[id(session)] = raw.driver_connection
            assert driver is not None
            return await driver.fetchrow("SELECT * FROM payment_orders WHERE order_id = $1", ORDER_ID)

        kinds: list[tuple[str, async_sessionmaker[AsyncSession], Send]] = [
            ("order UPDATE, built per call", ordinary, update_fresh),
            ("order UPDATE, built once + parameters", ordinary, update_once),
            ("order UPDATE, built once, run on asyncpg (prepared)", prepared, update_once),
            ("order SELECT by key, built per call", ordinary, select_fresh),
            ("order SELECT by key, built once + parameters", ordinary, select_once),
            ("order SELECT by key, built once, run on asyncpg (prepared)", prepared, select_once),
            ("order SELECT by key, asyncpg alone", ordinary, select_driver),
        ]
        rows = []
        for name, sessions, send in kinds:
            async with sessions.begin() as session:  # one transaction per kind: no lock waits
                rows.append((name, await _cpu_per_call(functools.partial(send, session), calls)))
        return rows
    finally:
        await engine.dispose()


async def run(calls: int) -> int:
    url, database = await database_for_bench()
    if url is None:
        Console().print("no PostgreSQL answers: this bench measures the PostgreSQL driver path")
        return 1
    try:
        rows = await measure(url, calls)
    finally:
        await drop_database(url)
    table = Table(title=f"CPU of this process per statement ({database}, {calls} calls each)")
    table.add_column("statement")
    table.add_column("µs CPU", justify="right")
    for name, micros in rows:
        table.add_row(name, f"{micros:.0f}")
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    written = RESULTS / f"statements-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    document = {"database": database, "calls": calls, "cpu_us_per_statement": dict(rows)}
    written.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    Console().print(f"wrote {written}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="statements per kind (bounded)")
    arguments = parser.parse_args()
    return asyncio.run(run(max(1, min(arguments.calls, 100_000))))


if __name__ == "__main__":
    raise SystemExit(main())
