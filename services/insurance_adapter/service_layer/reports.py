"""Reading: one settlement, pages of settlements and of the message log, and 3201 totals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.insurance_adapter.adapters.message_log import MessageLog, MessagePage
from services.insurance_adapter.adapters.repository import SettlementPage
from services.insurance_adapter.domain import commands
from services.insurance_adapter.domain.settlement import Settlement, SettlementBreakdown
from services.insurance_adapter.domain.totals import DayTotals, TotalsStatement, day_totals
from services.insurance_adapter.service_layer.handlers import Dependencies, SettlementSteps
from services.insurance_adapter.service_layer.ports import TotalsRequest
from services.runtime.clock import business_day_bounds, new_id
from services.runtime.errors import InvalidArgument
from services.runtime.pagination import decode_page_token, encode_page_token


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_page_token: str


class ReportHandlers(SettlementSteps):
    def __init__(self, deps: Dependencies, message_log: MessageLog) -> None:
        super().__init__(deps)
        self._message_log = message_log

    async def get(self, settlement_id: str) -> Settlement:
        return await self._load(settlement_id)

    async def list_settlements(self, query: commands.ListSettlements) -> Page:
        cursor = decode_page_token(query.page_token)
        page = SettlementPage(
            limit=query.limit + 1,
            after=_settlement_cursor(cursor) if cursor else None,
            statuses=query.statuses,
            settled_between=business_day_bounds(query.business_date) if query.business_date else None,
        )
        async with self._deps.unit_of_work(read_only=True) as uow:
            found = await uow.settlements.page(page)
        shown = found[: query.limit]
        more = len(found) > query.limit
        last = shown[-1] if shown else None
        token = (
            encode_page_token({"c": last.created_at.isoformat(), "i": last.settlement_id})
            if more and last
            else ""
        )
        return Page(shown, token)

    async def list_messages(self, query: commands.ListInsurerMessages) -> Page:
        cursor = decode_page_token(query.page_token)
        page = MessagePage(
            limit=query.limit + 1,
            after=_message_cursor(cursor) if cursor else None,
            infno=query.infno,
            order_ref=query.order_ref,
        )
        found = await self._message_log.page(page)
        shown = found[: query.limit]
        token = ""
        if len(found) > query.limit and shown:
            row_id, last = shown[-1]
            token = encode_page_token({"s": last.sent_at.isoformat(), "i": row_id})
        return Page([exchange for _, exchange in shown], token)

    async def reconcile_totals(self, command: commands.ReconcileTotals) -> TotalsStatement:
        """3201 for one day and insurance type: the platform's own net totals against the insurer's."""
        setl_optins = self._deps.setl_optins
        platform = await self._day_totals(command, setl_optins)
        request = TotalsRequest(
            command.business_date, command.insutype, command.clr_type, setl_optins, platform
        )
        answer = await self._insurer.reconcile_totals(request)
        statement = TotalsStatement(
            statement_id=new_id("stmt"),
            business_date=command.business_date,
            insutype=command.insutype,
            clr_type=command.clr_type,
            setl_optins=setl_optins,
            platform=platform,
            stmt_rslt=answer.stmt_rslt,
            stmt_rslt_dscr=answer.stmt_rslt_dscr,
            insurer=answer.insurer,
        )
        async with self._deps.unit_of_work() as uow:
            await uow.statements.add(statement, self._now())
        return statement

    async def _day_totals(self, command: commands.ReconcileTotals, setl_optins: str) -> DayTotals:
        day = business_day_bounds(command.business_date)
        async with self._deps.unit_of_work(read_only=True) as uow:
            settled = await uow.settlements.settled_in(command.insutype, setl_optins, day)
            revoked = await uow.settlements.revoked_in(command.insutype, setl_optins, day)
        return day_totals(_splits(settled), _splits(revoked))


def _splits(settlements: list[Settlement]) -> list[SettlementBreakdown]:
    return [settlement.breakdown for settlement in settlements if settlement.breakdown is not None]


def _settlement_cursor(cursor: dict[str, Any]) -> tuple[datetime, str]:
    moment, last_id = _cursor_parts(cursor, "c")
    return moment, str(last_id)


def _message_cursor(cursor: dict[str, Any]) -> tuple[datetime, int]:
    moment, last_id = _cursor_parts(cursor, "s")
    try:
        return moment, int(last_id)
    except (TypeError, ValueError) as exc:
        raise _bad_token() from exc


def _cursor_parts(cursor: dict[str, Any], moment_key: str) -> tuple[datetime, Any]:
    try:
        return datetime.fromisoformat(str(cursor[moment_key])), cursor["i"]
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad_token() from exc


def _bad_token() -> InvalidArgument:
    return InvalidArgument.field("page_token", "not a page token this service issued")
