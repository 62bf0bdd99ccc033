"""The persisted log of every message exchanged with the insurer.

Each exchange is written in its own short transaction as soon as it ends, whatever the business
transaction around it does: the log records what was said to the insurer, and that happened. This
is why no handler holds a transaction open while it talks to the insurer (on SQLite the log would
wait for that transaction's write lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.insurance_adapter.adapters.orm import insurer_messages
from services.insurance_adapter.domain.message_log import ExchangeOutcome, InsurerExchange
from services.insurance_adapter.service_layer.ports import current_order_ref
from services.runtime.clock import as_utc


@dataclass(frozen=True, slots=True)
class MessagePage:
    """Newest first; `after` is the (sent_at, id) of the last message already seen."""

    limit: int
    after: tuple[datetime, int] | None = None
    infno: str = ""
    order_ref: str = ""


class MessageLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(self, exchange: InsurerExchange) -> None:
        """Store one exchange; its JSON is already masked (see domain.message_log.masked_json)."""
        async with self._sessions.begin() as session:
            await session.execute(
                insert(insurer_messages).values(
                    msgid=exchange.msgid,
                    infno=exchange.infno,
                    outcome=exchange.outcome.value,
                    request_json=exchange.request_json,
                    response_json=exchange.response_json,
                    elapsed_ms=exchange.elapsed_ms,
                    sent_at=exchange.sent_at,
                    order_ref=exchange.order_ref or current_order_ref.get(),
                )
            )

    async def page(self, page: MessagePage) -> list[tuple[int, InsurerExchange]]:
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
