"""Request-id idempotency (AIP-155) for every mutating RPC.

Same request_id + same request → the stored response is replayed. Same request_id + a different
request → RequestIdReused. A request_id being processed right now → RequestInProgress. The claim is
a row with a primary key, so two concurrent claims cannot both win. If the handler fails the claim
is released and nothing is stored; business keys (out_trade_no, msgid...) make the retry safe.

A claim records its holder, the service instance processing it (services.runtime.instances). If
that process dies mid-request its claim stays `in_progress`; the first retry that finds the holder
dead (heartbeat older than MEDPAY_INSTANCE_DEAD_AFTER_S, or no row) takes the claim over and runs
the request, seconds after the crash. A claim held by a live instance answers RequestInProgress.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message
from sqlalchemy import MetaData, Table, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.runtime.clock import utcnow
from services.runtime.db import AUTOCOMMIT, sessions_on_postgres
from services.runtime.errors import RequestIdReused, RequestInProgress
from services.runtime.instances import ServiceInstance
from services.runtime.statements import KEY, insert_into, update_by
from services.runtime.validation import Violations

# Last resort: a claim untouched this long is taken over whatever its holder looks like (a claim
# with no holder recorded, or a holder that is alive but stuck). Longer than any RPC may run (max
# deadline 60 s; a reconciliation run included), so a slow request is never run twice.
STALE_CLAIM_AFTER = timedelta(minutes=5)


def request_fingerprint(method: str, request: Message) -> str:
    digest = hashlib.sha256(method.encode())
    digest.update(request.SerializeToString(deterministic=True))
    return digest.hexdigest()


class IdempotencyStore:
    """Claims on request ids, held by `instance` (this process)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], metadata: MetaData, instance: ServiceInstance
    ) -> None:
        self._sessions = sessions
        self._keys: Table = metadata.tables["idempotency_keys"]
        self._instance = instance
        self._autocommit = sessions_on_postgres(sessions)

    @contextlib.asynccontextmanager
    async def _one_statement(self) -> AsyncIterator[AsyncSession]:
        """For a claim, its completion or its release: one statement, atomic by itself, so on
        PostgreSQL it is sent without BEGIN/COMMIT (one round trip instead of three)."""
        async with self._sessions.begin() as session:
            if self._autocommit:  # before the session's first statement procures its connection
                await session.connection(execution_options=AUTOCOMMIT)
            yield session

    async def claim(self, method: str, request_id: str, request: Message) -> bytes | None:
        """Claim the request_id; returns the stored response if this exact request already ran."""
        fingerprint = request_fingerprint(method, request)
        now = utcnow()
        try:
            async with self._one_statement() as session:
                await session.execute(
                    insert_into(self._keys),
                    {
                        "request_id": request_id,
                        "method": method,
                        "request_hash": fingerprint,
                        "state": "in_progress",
                        "response": None,
                        "created_at": now,
                        "updated_at": now,
                        "holder": self._instance.instance_id,
                    },
                )
            return None
        except IntegrityError:
            return await self._existing(method, request_id, fingerprint)

    async def _existing(self, method: str, request_id: str, fingerprint: str) -> bytes | None:
        async with self._sessions.begin() as session:
            row = (
                await session.execute(select(self._keys).where(self._keys.c.request_id == request_id))
            ).one_or_none()
            if row is None:
                raise RequestInProgress("request_id was released a moment ago; retry", {"method": method})
            if row.request_hash != fingerprint:
                raise RequestIdReused(
                    f"request_id {request_id} was already used for a different request",
                    {"request_id": request_id, "first_method": row.method},
                )
            if row.state == "done":
                return bytes(row.response)
            if not await self._take_over(session, request_id):
                raise RequestInProgress(f"request {request_id} is being processed", {"method": method})
            return None

    async def _take_over(self, session: AsyncSession, request_id: str) -> bool:
        """Make this instance the holder of an in_progress claim whose holder is dead (or that is
        stale). One statement, so of two retries racing for a dead holder's claim one wins: the
        other sees the winner, alive, as the holder."""
        keys, now = self._keys, utcnow()
        holder_dead = and_(keys.c.holder.is_not(None), ~self._instance.alive_clause(keys.c.holder, now))
        taken = await session.execute(
            update(keys)
            .where(
                keys.c.request_id == request_id,
                keys.c.state == "in_progress",
                or_(holder_dead, keys.c.updated_at < now - STALE_CLAIM_AFTER),
            )
            .values(holder=self._instance.instance_id, updated_at=now)
            .returning(keys.c.request_id)
        )
        return taken.first() is not None

    async def complete(self, request_id: str, response: Message) -> None:
        async with self._one_statement() as session:
            await session.execute(
                update_by(self._keys, "request_id"),
                {
                    KEY: request_id,
                    "state": "done",
                    "response": response.SerializeToString(),
                    "updated_at": utcnow(),
                },
            )

    async def release(self, request_id: str) -> None:
        """Drop this instance's claim after a failure. A claim another instance took over (this one
        looked dead meanwhile) is that instance's now, and stays."""
        keys = self._keys
        async with self._one_statement() as session:
            await session.execute(
                delete(keys).where(
                    keys.c.request_id == request_id,
                    keys.c.state == "in_progress",
                    keys.c.holder == self._instance.instance_id,
                )
            )


class HasIdempotency(Protocol):
    idempotency: IdempotencyStore


ServicerT = TypeVar("ServicerT", bound=HasIdempotency)
RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)
Handler = Callable[[ServicerT, RequestT, Any], Awaitable[ResponseT]]


def idempotent(
    response_type: type[ResponseT],
) -> Callable[[Handler[ServicerT, RequestT, ResponseT]], Handler[ServicerT, RequestT, ResponseT]]:
    """Decorate a servicer method whose request has a `request_id` field."""

    def decorate(method: Handler[ServicerT, RequestT, ResponseT]) -> Handler[ServicerT, RequestT, ResponseT]:
        @functools.wraps(method)
        async def wrapper(self: ServicerT, request: RequestT, context: Any) -> ResponseT:
            request_id: str = request.request_id  # type: ignore[attr-defined]
            violations = Violations()
            violations.require_request_id(request_id)
            violations.raise_if_any()
            stored = await self.idempotency.claim(method.__name__, request_id, request)
            if stored is not None:
                return response_type.FromString(stored)
            try:
                response = await method(self, request, context)
            except BaseException:
                await self.idempotency.release(request_id)
                raise
            await self.idempotency.complete(request_id, response)
            return response

        return wrapper

    return decorate
