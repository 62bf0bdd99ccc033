"""Transactional outbox and the event feed every service serves.

`record_event()` inserts an event in the caller's transaction, so it exists iff the state change
committed. The relay then gives committed events a gap-free, increasing `sequence` (one writer at a
time: an advisory lock on PostgreSQL, the write lock on SQLite), and `EventFeedServicer` serves them
in that order. Consumers keep a durable cursor and deduplicate by event_id.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from medpay.events.v1 import events_pb2, events_pb2_grpc
from opentelemetry import propagate
from sqlalchemy import MetaData, Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.runtime.clock import utcnow
from services.runtime.db import AUTOCOMMIT, sessions_on_postgres
from services.runtime.prepared import prepared, rowcount, run_script
from services.runtime.statements import insert_into
from services.runtime.validation import Violations

log = logging.getLogger(__name__)
_RELAY_LOCK_KEY = 7_341_001
_MAX_PAGE = 1000
_MAX_WAIT_MS = 30_000
_ANSWER_MARGIN_S = 0.5


def new_envelope(
    source_service: str, aggregate_type: str, aggregate_id: str, occurred_at: datetime | None = None
) -> events_pb2.EventEnvelope:
    """An envelope with id, source, time and the current trace context; set the payload after."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    stamp = Timestamp()
    stamp.FromDatetime(occurred_at or utcnow())
    return events_pb2.EventEnvelope(
        event_id=str(uuid.uuid4()),
        source_service=source_service,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        occurred_at=stamp,
        traceparent=carrier.get("traceparent", ""),
    )


_BATCH = 500
# One relay pass on PostgreSQL, sent as one message of the simple query protocol (one round trip,
# run as one implicit transaction): the advisory lock (one relay at a time, held to the end of
# that transaction), then the next `_BATCH` unsequenced events get head+1, head+2, ... At READ
# COMMITTED the UPDATE takes its snapshot after the lock is granted, so it sees the numbers of the
# pass that held the lock before it. The script is constant: no parameters, nothing interpolated
# from outside.
_SEQUENCE_PASS = f"""
    SELECT pg_advisory_xact_lock({_RELAY_LOCK_KEY});
    UPDATE outbox_events AS o SET sequence = h.head + n.position
    FROM (
        SELECT id, row_number() OVER (ORDER BY id) AS position
        FROM (SELECT id FROM outbox_events WHERE sequence IS NULL ORDER BY id LIMIT {_BATCH}) AS waiting
    ) AS n,
    (SELECT coalesce(max(sequence), 0) AS head FROM outbox_events) AS h
    WHERE o.id = n.id
"""


class Outbox:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], metadata: MetaData) -> None:
        self._sessions = sessions
        self._table: Table = metadata.tables["outbox_events"]
        self._wake = asyncio.Event()
        # Set (and replaced) after each pass that sequenced events: long-polling readers wake.
        self._sequenced = asyncio.Event()
        # PostgreSQL: feed reads run without a transaction, a relay pass is one script.
        self._on_postgres = sessions_on_postgres(sessions)
        # A feed page and the feed's head, built once for the process (runtime.prepared).
        table = self._table
        self._page = prepared(
            select(table.c.payload, table.c.sequence)
            .where(table.c.sequence > bindparam("after_sequence"))
            .order_by(table.c.sequence)
            .limit(bindparam("limit"))
        )
        self._head = prepared(select(func.coalesce(func.max(table.c.sequence), 0).label("head")))

    async def record_event(self, session: AsyncSession, envelope: events_pb2.EventEnvelope) -> None:
        """Add an event to the caller's open transaction. The event_type is the payload's name."""
        payload_case = envelope.WhichOneof("payload")
        if payload_case is None:
            raise ValueError("event envelope without a payload")
        envelope.event_type = envelope.event_type or payload_case
        await session.execute(
            insert_into(self._table),
            {
                "event_id": envelope.event_id,
                "event_type": envelope.event_type,
                "aggregate_id": envelope.aggregate_id,
                "payload": envelope.SerializeToString(),
                "created_at": utcnow(),
                "sequence": None,
            },
        )

    def committed(self) -> None:
        """Events were committed just now (called by the unit of work after its commit): the relay
        sequences them at once, instead of at its next look."""
        self._wake.set()

    async def anything_to_sequence(self) -> bool:
        """One read, no transaction on PostgreSQL: whether a pass of `assign_sequences` has work."""
        table = self._table
        async with self._sessions.begin() as session:
            if sessions_on_postgres(self._sessions):
                await session.connection(execution_options=AUTOCOMMIT)
            found = await session.execute(select(table.c.id).where(table.c.sequence.is_(None)).limit(1))
            return found.first() is not None

    async def assign_sequences(self) -> int:
        """Give committed, unsequenced events the next feed positions. Returns how many."""
        if self._on_postgres:  # the pass is one script, its own transaction
            async with self._sessions() as session:
                await session.connection(execution_options=AUTOCOMMIT)
                numbered = rowcount(await run_script(session, _SEQUENCE_PASS))
        else:
            async with self._sessions.begin() as session:
                numbered = await self._number_one_by_one(session)
        if numbered:  # committed: readers waiting in a long poll read them now
            self._sequenced.set()
            self._sequenced = asyncio.Event()
        return numbered

    async def _number_one_by_one(self, session: AsyncSession) -> int:
        """SQLite (the writer lock is held): head, then each waiting event in commit-id order."""
        table = self._table
        head = (await session.execute(select(func.coalesce(func.max(table.c.sequence), 0)))).scalar_one()
        pending = (
            (
                await session.execute(
                    select(table.c.id).where(table.c.sequence.is_(None)).order_by(table.c.id).limit(_BATCH)
                )
            )
            .scalars()
            .all()
        )
        for offset, row_id in enumerate(pending, start=1):
            await session.execute(update(table).where(table.c.id == row_id).values(sequence=head + offset))
        return len(pending)

    async def run_relay(self, poll_interval_s: float = 5.0) -> None:
        """Background task: sequence events as soon as this process commits them (`committed`);
        every `poll_interval_s` also those a process that died between its commit and its relay
        left unsequenced. An idle relay costs one short transaction per interval, nothing more."""
        while True:
            woken = True
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=poll_interval_s)
            except TimeoutError:
                woken = False
            self._wake.clear()
            try:
                # Woken by a commit: there is work. A timed look asks first, in one read.
                if not woken and not await self.anything_to_sequence():
                    continue
                while await self.assign_sequences() == _BATCH:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay pass failed; retrying")

    async def events_after(
        self, after_sequence: int, limit: int, wait_s: float = 0.0
    ) -> tuple[list[events_pb2.EventEnvelope], int]:
        """Events after `after_sequence`; with `wait_s`, a caught-up reader waits that long for
        this process's relay to sequence the next one (a long poll, not a polling loop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            sequenced = self._sequenced  # taken before the read: a pass after it wakes us
            events, head = await self._read(after_sequence, limit)
            remaining = deadline - loop.time()
            if events or remaining <= 0:
                return events, head
            try:
                await asyncio.wait_for(sequenced.wait(), timeout=remaining)
            except TimeoutError:
                return events, head

    async def _read(self, after_sequence: int, limit: int) -> tuple[list[events_pb2.EventEnvelope], int]:
        async with self._sessions.begin() as session:
            if self._on_postgres:
                await session.connection(execution_options=AUTOCOMMIT)
            rows = (
                await session.execute(self._page, {"after_sequence": after_sequence, "limit": limit})
            ).all()
            if rows and len(rows) < limit:
                head = rows[-1].sequence  # the page holds every event after the cursor
            else:
                head = (await session.execute(self._head)).scalar_one()
        events = []
        for payload, sequence in rows:
            envelope = events_pb2.EventEnvelope.FromString(payload)
            envelope.sequence = sequence
            events.append(envelope)
        return events, int(head)


class EventFeedServicer(events_pb2_grpc.EventFeedServiceServicer):
    """medpay.events.v1.EventFeedService over a service's outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def ListEvents(
        self, request: events_pb2.ListEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> events_pb2.ListEventsResponse:
        violations = Violations()
        violations.require(request.after_sequence >= 0, "after_sequence", "must be >= 0")
        page_size = violations.page_size(request.page_size, default=100, maximum=_MAX_PAGE)
        violations.require(0 <= request.wait_ms <= _MAX_WAIT_MS, "wait_ms", f"must be 0..{_MAX_WAIT_MS}")
        violations.raise_if_any()
        wait_s = request.wait_ms / 1000
        left = context.time_remaining()
        if left is not None:  # answer (empty) before the caller's deadline, not after it
            wait_s = max(0.0, min(wait_s, left - _ANSWER_MARGIN_S))
        events, head = await self._outbox.events_after(request.after_sequence, page_size, wait_s)
        return events_pb2.ListEventsResponse(events=events, head_sequence=head)
