"""Which processes of a service are alive right now, so work a crashed one left half-done can be
taken over within seconds instead of after a long timeout.

Every start of a service process is one *instance* with its own id and a row in its service's
`service_instances` table, whose `heartbeat_at` it refreshes every `heartbeat_s`
(MEDPAY_INSTANCE_HEARTBEAT_S, 2 s). Work an instance holds (an in-progress request claim, a lease
on an order) records the holder's `instance_id`. Whoever finds such work asks `is_alive()`, or puts
`alive_clause()` into its own statement: a holder whose heartbeat is older than `dead_after_s`
(MEDPAY_INSTANCE_DEAD_AFTER_S, 6 s), or whose row is gone, is dead, and its work may be taken over
at once. An instance is always alive to itself. On a clean stop the row is removed, so nobody has
to wait out `dead_after_s` after a deploy.

Why a heartbeat row and not a PostgreSQL advisory (session) lock held for the life of the process:
the row works the same on SQLite, the laptop default, which has neither advisory locks nor sessions
to hold them; it needs no connection pinned out of the pool per process (a session lock silently
dies with whichever pooled connection held it); an operator can read it (`SELECT * FROM
service_instances`); and one UPDATE of one row every 2 s costs nothing. What it asks in return is
clocks that agree to well within `dead_after_s` (NTP), since each process stamps with its own.

A process paused longer than `dead_after_s` (a stopped VM, a debugger) looks dead and its work may
run twice; that is safe for the same reason a stale claim always was: handlers are idempotent by
business key (out_trade_no, msgid...), the claim only keeps retries from racing each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    MetaData,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.runtime.clock import new_id, utcnow
from services.runtime.prepared import prepared

log = logging.getLogger(__name__)

# Rows of instances dead this long are removed when an instance registers; younger ones stay for
# an operator asking what ran when.
PRUNE_AFTER = timedelta(days=1)


class ServiceInstance:
    """This process's row in `service_instances`, and the liveness test for everyone else's."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        metadata: MetaData,
        service: str,
        *,
        heartbeat_s: float = 2.0,
        dead_after_s: float = 6.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if dead_after_s <= heartbeat_s:
            raise ValueError("dead_after_s must be longer than heartbeat_s, or live instances look dead")
        self.instance_id = new_id("ins")
        self.service = service
        self.heartbeat_s = heartbeat_s
        self.dead_after = timedelta(seconds=dead_after_s)
        self._sessions = sessions
        self._table: Table = metadata.tables["service_instances"]
        self._clock = clock
        self._started_at = clock()
        # The heartbeat's statement, built once (runtime.prepared): it runs every few seconds for ever.
        table = self._table
        self._beat = prepared(
            update(table)
            .where(table.c.instance_id == bindparam("instance"))
            .values(heartbeat_at=bindparam("now"))
            .returning(table.c.instance_id)
        )

    async def register(self) -> None:
        """Write this instance's row (again, if it exists) and prune rows of long-dead instances."""
        now = self._clock()
        async with self._sessions.begin() as session:
            await session.execute(delete(self._table).where(self._table.c.heartbeat_at < now - PRUNE_AFTER))
            await self._stamp(session, now)

    async def beat(self) -> None:
        """One heartbeat; the row is written anew if it went missing (pruned, or deleted by hand)."""
        async with self._sessions.begin() as session:
            await self._stamp(session, self._clock())

    async def retire(self) -> None:
        """Remove this instance's row: what it held may be taken over at once."""
        async with self._sessions.begin() as session:
            await session.execute(delete(self._table).where(self._table.c.instance_id == self.instance_id))

    async def run(self) -> None:
        """Background task: register, then a heartbeat every `heartbeat_s` until cancelled; then
        retire. A failed beat is logged and retried at the next one (a short database outage must
        not stop the process; it only makes it look dead to others meanwhile)."""
        try:
            await self._logged(self.register)
            while True:
                await asyncio.sleep(self.heartbeat_s)
                await self._logged(self.beat)
        finally:
            await self._logged(self.retire)

    def alive_clause(
        self, holder_column: ColumnElement[Any], now: datetime | None = None
    ) -> ColumnElement[bool]:
        """SQL that is true when the instance named by `holder_column` is alive: it is this
        instance, or its heartbeat is at most `dead_after` old at `now`. False (never NULL) for a
        NULL holder, so `~alive_clause(...)` finds what nobody alive holds."""
        instances = self._table
        since = (now or self._clock()) - self.dead_after
        fresh = exists().where(instances.c.instance_id == holder_column, instances.c.heartbeat_at >= since)
        return and_(holder_column.is_not(None), or_(holder_column == self.instance_id, fresh))

    async def is_alive(self, session: AsyncSession, holder_id: str | None) -> bool:
        """Whether `holder_id` names a live instance (this one always is)."""
        if holder_id == self.instance_id:
            return True
        if holder_id is None:
            return False
        return bool((await session.execute(select(self.alive_clause(literal(holder_id))))).scalar_one())

    async def _stamp(self, session: AsyncSession, now: datetime) -> None:
        table = self._table
        touched = await session.execute(self._beat, {"instance": self.instance_id, "now": now})
        if touched.first() is None:
            await session.execute(
                insert(table).values(
                    instance_id=self.instance_id,
                    service=self.service,
                    started_at=self._started_at,
                    heartbeat_at=now,
                )
            )

    async def _logged(self, step: Callable[[], Any]) -> None:
        # Bounded, so a hung database cannot hold up a shutdown; cancellation passes through.
        try:
            await asyncio.wait_for(step(), timeout=self.dead_after.total_seconds())
        except Exception:
            log.exception("service instance %s: %s failed", self.instance_id, getattr(step, "__name__", step))
