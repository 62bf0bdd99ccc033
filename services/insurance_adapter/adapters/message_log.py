"""The persisted log of every message exchanged with the insurer.

An exchange is kept in memory when it ends and written by the next transaction this process
commits (`carry`), which is usually the one recording the step's outcome, so logging costs no
transaction of its own; when nothing commits soon, the log's own writer (`run`) writes it within a
moment. So every exchange whose outcome the adapter acted on is in the log (the outcome's commit
carried it), and a process killed mid-step loses at most the entries of exchanges it never acted
on (the step runs again, under the same msgid, and is logged then). No handler holds a transaction
open while it talks to the insurer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.insurance_adapter.adapters.orm import insurer_messages
from services.insurance_adapter.domain.message_log import ExchangeOutcome, InsurerExchange
from services.insurance_adapter.service_layer.ports import current_order_ref
from services.runtime.clock import as_utc
from services.runtime.statements import insert_into

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MessagePage:
    """Newest first; `after` is the (sent_at, id) of the last message already seen."""

    limit: int
    after: tuple[datetime, int] | None = None
    infno: str = ""
    order_ref: str = ""


class MessageLog:
    # How long an exchange waits for a business transaction to carry it before its own write.
    CARRY_WITHIN_S = 0.2

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._pending: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    async def record(self, exchange: InsurerExchange) -> None:
        """Keep one exchange for the next commit; its JSON is already masked (see
        domain.message_log.masked_json)."""
        self._pending.append(
            {
                "msgid": exchange.msgid,
                "infno": exchange.infno,
                "outcome": exchange.outcome.value,
                "request_json": exchange.request_json,
                "response_json": exchange.response_json,
                "elapsed_ms": exchange.elapsed_ms,
                "sent_at": exchange.sent_at,
                "order_ref": exchange.order_ref or current_order_ref.get(),
            }
        )
        self._arrived.set()

    async def carry(self, session: AsyncSession) -> list[dict[str, Any]]:
        """Write the kept exchanges in the caller's transaction; returns them, so that a
        transaction that fails to commit can hand them back (`put_back`)."""
        rows, self._pending = self._pending, []
        if rows:
            await session.execute(insert_into(insurer_messages), rows)
        return rows

    def put_back(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._pending[:0] = rows
            self._arrived.set()

    async def write_pending(self) -> None:
        rows: list[dict[str, Any]] = []
        try:
            async with self._sessions.begin() as session:
                rows = await self.carry(session)
        except Exception:
            self.put_back(rows)
            raise

    async def run(self) -> None:
        """Background task: write what no business transaction carried soon enough."""
        while True:
            await self._arrived.wait()
            await asyncio.sleep(self.CARRY_WITHIN_S)
            self._arrived.clear()
            try:
                await self.write_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not write the insurer message log; retrying")
                await asyncio.sleep(1.0)
                self._arrived.set()

    async def close(self) -> None:
        """At shutdown: write what is kept."""
        with contextlib.suppress(Exception):
            await self.write_pending()

    async def page(self, page: MessagePage) -> list[tuple[int, InsurerExchange]]:
        if self._pending:  # a reader sees every exchange this process has had
            await self.write_pending()
        table = insurer_messages
        query = select(table)
        if page.infno:
            query = query.where(table.c.infno == page.infno)
        if page.order_ref:
            query = query.where(table.c.order_ref == page.order_ref)
        if page.after:
            sent_at, row_id = page.after
            query = query.where(
                or_(table.c.sent_at < sent_at, and_(table.c.sent_at == sent_at, table.c.id < row_id))
            )
        query = query.order_by(table.c.sent_at.desc(), table.c.id.desc()).limit(page.limit)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [(int(row.id), _exchange(row)) for row in rows]


def _exchange(row: Row[Any]) -> InsurerExchange:
    return InsurerExchange(
        msgid=row.msgid,
        infno=row.infno,
        outcome=ExchangeOutcome(row.outcome),
        request_json=row.request_json,
        response_json=row.response_json,
        elapsed_ms=int(row.elapsed_ms),
        sent_at=as_utc(row.sent_at),
        order_ref=row.order_ref,
    )
