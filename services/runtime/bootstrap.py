"""Pieces every service's composition root (`services/<svc>/bootstrap.py`) puts together."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.runtime.changes import ChangeBroker, ChangeListener, listener_dsn, notify_channel
from services.runtime.config import MeshSettings
from services.runtime.db import create_engine, is_postgres, session_factory
from services.runtime.idempotency import IdempotencyStore
from services.runtime.instances import ServiceInstance
from services.runtime.logging import configure_logging
from services.runtime.metrics import count_httpx_requests, count_sql
from services.runtime.migrations import migrate, migrate_in_child
from services.runtime.outbox import Outbox
from services.runtime.server import ServiceHost, serve
from services.runtime.telemetry import configure_tracing, instrument_httpx


@dataclass
class ServiceDatabase:
    """A service's own database (its schema on PostgreSQL, its file on SQLite) and the runtime
    components that live in it: the outbox, the idempotency keys, this process's instance (run
    `instance.run` as a background task; hold work with `instance.instance_id` and ask
    `instance.is_alive()` / `instance.alive_clause()` whether another holder still lives), and the
    signals of what its commits changed (`changes`; on PostgreSQL `listener` brings in other
    replicas' commits)."""

    service: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    metadata: MetaData
    schema: str | None
    migrations: Path
    outbox: Outbox
    idempotency: IdempotencyStore
    instance: ServiceInstance
    changes: ChangeBroker
    listener: ChangeListener | None

    @classmethod
    def open(
        cls, settings: MeshSettings, service: str, metadata: MetaData, migrations: Path
    ) -> ServiceDatabase:
        url, schema = settings.database_for(service)
        engine = create_engine(url, schema, pool_size=settings.db_pool_size)
        count_sql(engine, service)
        sessions = session_factory(engine)
        instance = ServiceInstance(
            sessions,
            metadata,
            service,
            heartbeat_s=settings.instance_heartbeat_s,
            dead_after_s=settings.instance_dead_after_s,
        )
        changes = ChangeBroker(notify_channel(service) if is_postgres(engine) else None)
        listener = None
        if changes.channel is not None:
            listener = ChangeListener(changes, listener_dsn(engine), f"medpay {service} changes")
        return cls(
            service=service,
            engine=engine,
            sessions=sessions,
            metadata=metadata,
            schema=schema,
            migrations=migrations,
            outbox=Outbox(sessions, metadata),
            idempotency=IdempotencyStore(sessions, metadata, instance),
            instance=instance,
            changes=changes,
            listener=listener,
        )

    async def migrate(self) -> None:
        await migrate(self.engine, self.migrations, self.schema)

    async def migrate_in_child(self) -> None:
        """The same, in a child process: a serving process never loads Alembic."""
        await migrate_in_child(self.service)

    async def listen_for_changes(self) -> None:
        """Background task: other replicas' commits into `changes` (PostgreSQL). SQLite is one
        process: its commits are published in-process, so there is nothing to listen to."""
        if self.listener is not None:
            await self.listener.run()

    async def close(self) -> None:
        await self.engine.dispose()


def start_process(service: str, settings: MeshSettings) -> None:
    """Logging and tracing first, before any server or channel exists."""
    configure_logging(service, settings.log_level, settings.log_dir)
    configure_tracing(service, settings.trace_dir)
    instrument_httpx()
    count_httpx_requests()


def command_line(service: str) -> str:
    """`python -m services.<svc> [serve|migrate]`; returns the command."""
    parser = argparse.ArgumentParser(prog=f"python -m services.{service.replace('-', '_')}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    return str(parser.parse_args().command)


def run(main: object) -> None:
    asyncio.run(main)  # type: ignore[arg-type]


async def serve_or_migrate(
    command: str,
    database: ServiceDatabase,
    host: Callable[[], ServiceHost],
    close: Callable[[], Awaitable[None]],
    migrate_on_start: bool,
) -> None:
    """`migrate`: bring the schema to head and exit. `serve`: migrate (unless turned off), then
    serve until SIGTERM. At start the migration runs in a child process (migrations.py), so the
    serving process never loads Alembic. The instance registers before the server starts, so no
    request this process claims can be seen without a live holder."""
    if command == "migrate":
        await database.migrate()
        await close()
        return
    if migrate_on_start:
        await database.migrate_in_child()
    await database.instance.register()
    await serve(host())
