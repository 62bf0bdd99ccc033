"""SQLAlchemy 2 async engines: PostgreSQL (asyncpg) with one schema per service, or a SQLite file
(aiosqlite) per service as the laptop default. Tables shared by every service live here too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    event,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# Execution option marking a transaction that only reads (see SqlUnitOfWork(read_only=True)).
READ_ONLY = "medpay_read_only"
# On PostgreSQL, what only reads, or writes one statement, runs without BEGIN/COMMIT: at READ
# COMMITTED every statement takes its own snapshot inside a transaction too, so the transaction
# adds two round trips and no consistency (a single statement is atomic by itself).
AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}

# BIGINT on PostgreSQL, INTEGER on SQLite (so SQLite's rowid autoincrement works).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Every stored moment is UTC, and reads back as an aware UTC datetime on every backend.

    SQLite's DateTime(timezone=True) keeps the wall-clock digits and drops the offset, so an aware
    time in another zone (WeChat Pay's `+08:00` success_time, the insurer's Beijing setl_time) would
    be read back 8 hours off: it is converted to UTC here, on the way in, for every column and every
    comparison against one. A naive datetime is taken as UTC, the platform's convention."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def create_engine(url: str, schema: str | None, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["server_settings"] = {"search_path": schema}
    # No pre-ping: it costs two round trips on every checkout. A connection the server dropped
    # fails the one transaction that finds it (SQLAlchemy then discards the pool's stale
    # connections) and the caller's retry, with its same request id, gets a fresh one; connections
    # are renewed every half hour anyway, before idle-timeouts of proxies and firewalls.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max(1, pool_size // 2),
        pool_recycle=1800,
        connect_args=connect_args,
    )


def _sqlite_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself, and make it BEGIN IMMEDIATE: SQLite has no row locks,
        # so a writer takes the write lock up front instead of failing half-way on upgrade.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers (READ_ONLY) take no write lock, so a status poll never queues behind a writer.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # MedPaySession runs the statements marked prepared straight on asyncpg (runtime.prepared).
    from services.runtime.prepared import MedPaySession

    return async_sessionmaker(engine, expire_on_commit=False, class_=MedPaySession)


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def sessions_on_postgres(sessions: async_sessionmaker[AsyncSession]) -> bool:
    engine = sessions.kw.get("bind")
    return isinstance(engine, AsyncEngine) and is_postgres(engine)


def add_runtime_tables(metadata: MetaData) -> None:
    """The outbox, the idempotency keys and the live service instances, in every service's own
    schema."""
    Table(
        "outbox_events",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(40), nullable=False, unique=True),
        Column("event_type", String(64), nullable=False),
        Column("aggregate_id", String(64), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
        # Feed position, assigned by the relay after commit; NULL until then.
        Column("sequence", BigInteger, nullable=True, unique=True),
    )
    Table(
        "idempotency_keys",
        metadata,
        Column("request_id", String(64), primary_key=True),
        Column("method", String(64), nullable=False),
        Column("request_hash", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("response", LargeBinary, nullable=True),
        Column("created_at", UtcDateTime(), nullable=False),
        Column("updated_at", UtcDateTime(), nullable=False),
        # The service instance processing an in_progress claim (see services.runtime.instances);
        # NULL for claims made before holders were recorded.
        Column("holder", String(40), nullable=True),
    )
    Table(
        "service_instances",
        metadata,
        Column("instance_id", String(40), primary_key=True),
        Column("service", String(32), nullable=False),
        Column("started_at", UtcDateTime(), nullable=False),
        Column("heartbeat_at", UtcDateTime(), nullable=False),
    )
