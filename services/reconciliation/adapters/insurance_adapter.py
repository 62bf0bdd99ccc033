"""InsurerTotalsSource over insurance-adapter's InsuranceService.ReconcileTotals (3201, gRPC)."""

from __future__ import annotations

from datetime import date

import grpc
from medpay.insurance.v1 import insurance_pb2, insurance_pb2_grpc

from services.reconciliation.domain.model import InsurerFigures, InsurerStatement
from services.reconciliation.service_layer.ports import SourceUnavailable
from services.runtime.interceptors import outbound_timeout
from services.runtime.money import Money


class InsuranceAdapterTotals:
    def __init__(self, channel: grpc.aio.Channel, clr_type: str, deadline_s: float) -> None:
        self._stub = insurance_pb2_grpc.InsuranceServiceStub(channel)
        self._clr_type = clr_type
        self._deadline_s = deadline_s

    async def reconcile_totals(self, business_date: date, insutype: str, request_id: str) -> InsurerStatement:
        request = insurance_pb2.ReconcileTotalsRequest(
            request_id=request_id, business_date=business_date.isoformat(), insutype=insutype,
            clr_type=self._clr_type,
        )  # fmt: skip
        try:
            response = await self._stub.ReconcileTotals(request, timeout=outbound_timeout(self._deadline_s))
        except grpc.aio.AioRpcError as error:
            reason = f"insurance-adapter ReconcileTotals {error.code().name}: {error.details()}"
            raise SourceUnavailable(f"insurer:{insutype}", reason) from error
        return insurer_statement(insutype, response.statement)


def insurer_statement(insutype: str, statement: insurance_pb2.TotalsStatement) -> InsurerStatement:
    declared = InsurerFigures(
        medfee=Money(statement.medfee_sumamt_fen),
        fund=Money(statement.fund_pay_sumamt_fen),
        personal_account=Money(statement.acct_pay_fen),
        settlement_count=statement.settlement_count,
    )
    return InsurerStatement(
        insutype=statement.insutype or insutype,
        clr_type=statement.clr_type,
        balanced=statement.balanced,
        result_code=statement.stmt_rslt,
        result_text=statement.stmt_rslt_dscr,
        declared=declared,
        reported=_reported(statement),
    )


def _reported(statement: insurance_pb2.TotalsStatement) -> InsurerFigures | None:
    """The insurer's own totals, when it sent any (3201 often answers only balanced or not)."""
    figures = (
        statement.insurer_medfee_sumamt_fen, statement.insurer_fund_pay_sumamt_fen,
        statement.insurer_acct_pay_fen, statement.insurer_settlement_count,
    )  # fmt: skip
    if not any(figures):
        return None
    return InsurerFigures(
        medfee=Money(statement.insurer_medfee_sumamt_fen),
        fund=Money(statement.insurer_fund_pay_sumamt_fen),
        personal_account=Money(statement.insurer_acct_pay_fen),
        settlement_count=statement.insurer_settlement_count,
    )
