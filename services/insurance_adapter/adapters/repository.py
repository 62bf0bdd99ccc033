"""Settlements and totals statements: rows <-> domain objects, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.insurance_adapter.adapters.orm import (
    charge_lines,
    settlements,
    totals_statements,
    visit_details,
)
from services.insurance_adapter.domain.bill import ChargeLine, OutpatientBill
from services.insurance_adapter.domain.settlement import (
    ACTIVE_STATUSES,
    InsuredVisit,
    QueryAnswer,
    Settlement,
    SettlementBreakdown,
    SettlementStatus,
)
from services.insurance_adapter.domain.totals import TotalsStatement
from services.runtime.clock import as_utc
from services.runtime.masking import PatientIdentifier
from services.runtime.money import Money
from services.runtime.prepared import prepared
from services.runtime.statements import KEY, insert_into, select_by, update_by

_BREAKDOWN = SettlementBreakdown.field_names()
# Columns a state change may touch; everything else is written once.
_MUTABLE = (
    "status",
    "chrg_bchno",
    "setl_id",
    "settle_msgid",
    "invoice_no",
    "status_reason",
    "undecided_queries",
    "last_query",
)
_TIMES = ("presettled_at", "settled_at", "revoked_at", "last_queried_at")


@dataclass(frozen=True, slots=True)
class SettlementPage:
    """Newest first; `after` is the (created_at, settlement_id) of the last row already seen."""

    limit: int
    after: tuple[datetime, str] | None = None
    statuses: frozenset[SettlementStatus] | None = None
    settled_between: tuple[datetime, datetime] | None = None


# An order's settlement still in play (built once: runtime.prepared; statuses as fixed parameters).
_ACTIVE_FOR_ORDER = prepared(
    select(settlements).where(
        settlements.c.order_ref == bindparam(KEY),
        or_(*(settlements.c.status == status for status in sorted(ACTIVE_STATUSES))),
    )
)
_ACTIVE_FOR_ORDER_LOCKED = prepared(_ACTIVE_FOR_ORDER.with_for_update())


class SettlementRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, settlement: Settlement, bill: OutpatientBill) -> None:
        """The settlement with its bill: the lines and the visit details a continuation needs."""
        await self._session.execute(insert_into(settlements), _settlement_row(settlement))
        await self._session.execute(insert_into(visit_details), _visit_details_row(settlement, bill))
        rows = [
            _line_row(settlement.settlement_id, position, line) for position, line in enumerate(bill.lines)
        ]
        await self._session.execute(insert_into(charge_lines), rows)

    async def get(self, settlement_id: str, for_update: bool = False) -> Settlement | None:
        query = select_by(settlements, "settlement_id", for_update)
        row = (await self._session.execute(query, {KEY: settlement_id})).first()
        return _settlement(row) if row is not None else None

    async def active_for_order(self, order_ref: str, for_update: bool = False) -> Settlement | None:
        query = _ACTIVE_FOR_ORDER_LOCKED if for_update else _ACTIVE_FOR_ORDER
        row = (await self._session.execute(query, {KEY: order_ref})).first()
        return _settlement(row) if row is not None else None

    async def save(self, settlement: Settlement) -> None:
        values: dict[str, Any] = {name: getattr(settlement, name) for name in _MUTABLE}
        values["settle_msgid"] = settlement.settle_msgid or None
        values.update(_times_row(settlement))
        values.update(_breakdown_row(settlement.breakdown))
        await self._session.execute(
            update_by(settlements, "settlement_id"), {KEY: settlement.settlement_id, **values}
        )

    async def bill_of(self, settlement_id: str) -> OutpatientBill:
        """The bill a settlement was opened with (to continue an interrupted pre-settlement)."""
        settlement = await self.get(settlement_id)
        details = (
            await self._session.execute(
                select(visit_details).where(visit_details.c.settlement_id == settlement_id)
            )
        ).one()
        query = select(charge_lines).where(charge_lines.c.settlement_id == settlement_id)
        lines = (await self._session.execute(query.order_by(charge_lines.c.position))).all()
        assert settlement is not None
        return _bill(settlement, details, lines)

    async def page(self, page: SettlementPage) -> list[Settlement]:
        query = select(settlements)
        if page.statuses:
            query = query.where(settlements.c.status.in_(sorted(page.statuses)))
        if page.settled_between:
            start, end = page.settled_between
            query = query.where(settlements.c.settled_at >= start, settlements.c.settled_at < end)
        if page.after:
            created_at, settlement_id = page.after
            query = query.where(
                or_(
                    settlements.c.created_at < created_at,
                    and_(settlements.c.created_at == created_at, settlements.c.settlement_id < settlement_id),
                )
            )
        query = query.order_by(settlements.c.created_at.desc(), settlements.c.settlement_id.desc())
        return [_settlement(row) for row in (await self._session.execute(query.limit(page.limit))).all()]

    async def settled_in(
        self, insutype: str, setl_optins: str, day: tuple[datetime, datetime]
    ) -> list[Settlement]:
        """Settlements settled during the day, whatever became of them afterwards."""
        return await self._of_day(insutype, setl_optins, settlements.c.settled_at, day)

    async def revoked_in(
        self, insutype: str, setl_optins: str, day: tuple[datetime, datetime]
    ) -> list[Settlement]:
        return await self._of_day(insutype, setl_optins, settlements.c.revoked_at, day)

    async def _of_day(
        self, insutype: str, setl_optins: str, moment: Any, day: tuple[datetime, datetime]
    ) -> list[Settlement]:
        query = select(settlements).where(
            settlements.c.insutype == insutype,
            settlements.c.insuplc_admdvs == setl_optins,
            settlements.c.status.in_([SettlementStatus.SETTLED.value, SettlementStatus.REVOKED.value]),
            moment >= day[0],
            moment < day[1],
        )
        return [_settlement(row) for row in (await self._session.execute(query)).all()]


class StatementRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, statement: TotalsStatement, created_at: datetime) -> None:
        platform, insurer = statement.platform, statement.insurer
        await self._session.execute(
            insert(totals_statements).values(
                statement_id=statement.statement_id,
                business_date=statement.business_date.isoformat(),
                insutype=statement.insutype,
                clr_type=statement.clr_type,
                setl_optins=statement.setl_optins,
                medfee_sumamt_fen=platform.medfee_sumamt.fen,
                fund_pay_sumamt_fen=platform.fund_pay_sumamt.fen,
                acct_pay_fen=platform.acct_pay.fen,
                settlement_count=platform.settlement_count,
                stmt_rslt=statement.stmt_rslt,
                stmt_rslt_dscr=statement.stmt_rslt_dscr[:200],
                insurer_medfee_sumamt_fen=insurer.medfee_sumamt.fen if insurer else None,
                insurer_fund_pay_sumamt_fen=insurer.fund_pay_sumamt.fen if insurer else None,
                insurer_acct_pay_fen=insurer.acct_pay.fen if insurer else None,
                insurer_settlement_count=insurer.settlement_count if insurer else None,
                created_at=created_at,
            )
        )


def _settlement_row(settlement: Settlement) -> dict[str, Any]:
    visit = settlement.visit
    return {
        "settlement_id": settlement.settlement_id,
        "order_ref": settlement.order_ref,
        "bill_fingerprint": settlement.bill_fingerprint,
        "psn_no": visit.psn_no,
        "insutype": visit.insutype,
        "med_type": visit.med_type,
        "insuplc_admdvs": visit.insuplc_admdvs,
        "mdtrt_cert_type": visit.mdtrt_cert_type,
        "mdtrt_cert_no": visit.mdtrt_cert_no.reveal(),
        "visit_no": visit.visit_no,
        "use_personal_account": visit.use_personal_account,
        "mdtrt_id": visit.mdtrt_id,
        "created_at": settlement.created_at,
        **{name: getattr(settlement, name) for name in _MUTABLE},
        "settle_msgid": settlement.settle_msgid or None,
        **_times_row(settlement),
        **_breakdown_row(settlement.breakdown),
    }


def _times_row(settlement: Settlement) -> dict[str, datetime | None]:
    """The moments in UTC: SQLite keeps a datetime's wall time and drops its offset, so the
    insurer's Beijing setl_time would otherwise be read back (as UTC) eight hours late."""
    moments = {name: getattr(settlement, name) for name in _TIMES}
    return {name: as_utc(moment) if moment else None for name, moment in moments.items()}


def _breakdown_row(breakdown: SettlementBreakdown | None) -> dict[str, int | None]:
    return {f"{name}_fen": getattr(breakdown, name).fen if breakdown else None for name in _BREAKDOWN}


def _settlement(row: Row[Any]) -> Settlement:
    visit = InsuredVisit(
        psn_no=row.psn_no,
        insutype=row.insutype,
        med_type=row.med_type,
        insuplc_admdvs=row.insuplc_admdvs,
        mdtrt_cert_type=row.mdtrt_cert_type,
        mdtrt_cert_no=PatientIdentifier(row.mdtrt_cert_no),
        visit_no=row.visit_no,
        mdtrt_id=row.mdtrt_id,
        use_personal_account=bool(row.use_personal_account),
    )
    return Settlement(
        settlement_id=row.settlement_id,
        order_ref=row.order_ref,
        bill_fingerprint=row.bill_fingerprint,
        visit=visit,
        created_at=as_utc(row.created_at),
        status=SettlementStatus(row.status),
        chrg_bchno=row.chrg_bchno,
        breakdown=_breakdown(row),
        setl_id=row.setl_id,
        settle_msgid=row.settle_msgid or "",
        invoice_no=row.invoice_no,
        status_reason=row.status_reason,
        undecided_queries=int(row.undecided_queries),
        last_query=QueryAnswer(row.last_query),
        **{name: as_utc(row._mapping[name]) if row._mapping[name] else None for name in _TIMES},
    )


def _breakdown(row: Row[Any]) -> SettlementBreakdown | None:
    mapping = row._mapping
    if mapping["medfee_sumamt_fen"] is None:
        return None
    return SettlementBreakdown(**{name: Money(int(mapping[f"{name}_fen"])) for name in _BREAKDOWN})


def _visit_details_row(settlement: Settlement, bill: OutpatientBill) -> dict[str, Any]:
    return {
        "settlement_id": settlement.settlement_id,
        "dept_code": bill.dept_code,
        "dept_name": bill.dept_name,
        "doctor_code": bill.doctor_code,
        "doctor_name": bill.doctor_name,
        "dise_codg": bill.dise_codg,
        "dise_name": bill.dise_name,
    }


def _line_row(settlement_id: str, position: int, line: ChargeLine) -> dict[str, Any]:
    return {
        "settlement_id": settlement_id,
        "position": position,
        "line_no": line.line_no,
        "hospital_code": line.hospital_code,
        "national_code": line.national_code,
        "name": line.name,
        "chrgitm_lv": line.chrgitm_lv,
        "med_chrgitm_type": line.med_chrgitm_type,
        "quantity_ten_thousandths": line.quantity_ten_thousandths,
        "unit_price_fen": line.unit_price.fen,
        "line_total_fen": line.line_total.fen,
        "dept_code": line.dept_code,
        "doctor_code": line.doctor_code,
    }


def _bill(settlement: Settlement, details: Row[Any], lines: Sequence[Row[Any]]) -> OutpatientBill:
    visit = settlement.visit
    return OutpatientBill(
        insutype=visit.insutype,
        med_type=visit.med_type,
        use_personal_account=visit.use_personal_account,
        visit_no=visit.visit_no,
        dept_code=details.dept_code,
        dept_name=details.dept_name,
        doctor_code=details.doctor_code,
        doctor_name=details.doctor_name,
        dise_codg=details.dise_codg,
        dise_name=details.dise_name,
        insuplc_admdvs=visit.insuplc_admdvs,
        lines=tuple(_line(row) for row in lines),
    )


def _line(row: Row[Any]) -> ChargeLine:
    return ChargeLine(
        line_no=row.line_no,
        hospital_code=row.hospital_code,
        national_code=row.national_code,
        name=row.name,
        chrgitm_lv=row.chrgitm_lv,
        med_chrgitm_type=row.med_chrgitm_type,
        quantity_ten_thousandths=int(row.quantity_ten_thousandths),
        unit_price=Money(int(row.unit_price_fen)),
        line_total=Money(int(row.line_total_fen)),
        dept_code=row.dept_code,
        doctor_code=row.doctor_code,
    )
