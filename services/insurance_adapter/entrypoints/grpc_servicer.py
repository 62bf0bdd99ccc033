"""medpay.insurance.v1.InsuranceService: request → validated command → handler → response.

Servicers translate; they do not decide. Every mutating RPC is `@idempotent`: the same request_id
with the same request replays the stored response; with another request it is REQUEST_ID_REUSED.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medpay.insurance.v1 import insurance_pb2 as pb
from medpay.insurance.v1 import insurance_pb2_grpc

from services.insurance_adapter.domain import commands
from services.insurance_adapter.entrypoints import mapping
from services.insurance_adapter.entrypoints.validation import (
    MAX_PAGE,
    check_presettle,
    check_reconcile,
    check_settlement_id,
    check_voucher,
)
from services.insurance_adapter.service_layer.presettlement import PresettlementHandlers
from services.insurance_adapter.service_layer.reports import ReportHandlers
from services.insurance_adapter.service_layer.settlement import SettlementHandlers
from services.runtime.errors import NotOffered
from services.runtime.idempotency import IdempotencyStore, idempotent
from services.runtime.validation import Violations


@dataclass(frozen=True)
class InsuranceHandlers:
    presettlement: PresettlementHandlers
    settlement: SettlementHandlers
    reports: ReportHandlers


class InsuranceServicer(insurance_pb2_grpc.InsuranceServiceServicer):
    def __init__(self, handlers: InsuranceHandlers, idempotency: IdempotencyStore) -> None:
        self._handlers = handlers
        self.idempotency = idempotency

    async def QueryInsuredPerson(
        self, request: pb.QueryInsuredPersonRequest, context: Any
    ) -> pb.QueryInsuredPersonResponse:
        """1101: the insured person behind a voucher, identifiers masked."""
        violations = Violations()
        check_voucher(violations, request.voucher)
        violations.raise_if_any()
        person = await self._handlers.presettlement.query_person(mapping.voucher_from_proto(request.voucher))
        return pb.QueryInsuredPersonResponse(person=mapping.person_to_proto(person))

    @idempotent(pb.PresettleResponse)
    async def Presettle(self, request: pb.PresettleRequest, context: Any) -> pb.PresettleResponse:
        """1101 → 2201 → 2204 → 2206; an order's existing pre-settlement is continued or returned."""
        check_presettle(request).raise_if_any()
        if request.after_revoked_settlement_id:
            represettle = mapping.represettle_from_proto(request)
            settlement = await self._handlers.presettlement.represettle(represettle)
            return pb.PresettleResponse(settlement=mapping.settlement_to_proto(settlement))
        settlement = await self._handlers.presettlement.presettle(mapping.presettle_from_proto(request))
        return pb.PresettleResponse(settlement=mapping.settlement_to_proto(settlement))

    @idempotent(pb.SettleResponse)
    async def Settle(self, request: pb.SettleRequest, context: Any) -> pb.SettleResponse:
        """2207 under a msgid recorded first; a lost answer leaves it UNKNOWN until 5203 decides."""
        violations = Violations()
        check_settlement_id(violations, request.settlement_id)
        violations.require(len(request.invoice_no) <= 20, "invoice_no", "at most 20 characters")
        violations.raise_if_any()
        settlement = await self._handlers.settlement.settle(request.settlement_id, request.invoice_no)
        return pb.SettleResponse(settlement=mapping.settlement_to_proto(settlement))

    @idempotent(pb.CancelPresettlementResponse)
    async def CancelPresettlement(
        self, request: pb.CancelPresettlementRequest, context: Any
    ) -> pb.CancelPresettlementResponse:
        """2205: undo a pre-settlement that will not be paid."""
        if request.order_ref and not request.settlement_id:
            settlement = await self._handlers.presettlement.cancel_for_order(request.order_ref)
            return pb.CancelPresettlementResponse(settlement=mapping.settlement_to_proto(settlement))
        _require_settlement_id(request.settlement_id)
        settlement = await self._handlers.presettlement.cancel(request.settlement_id)
        return pb.CancelPresettlementResponse(settlement=mapping.settlement_to_proto(settlement))

    @idempotent(pb.RevokeSettlementResponse)
    async def RevokeSettlement(
        self, request: pb.RevokeSettlementRequest, context: Any
    ) -> pb.RevokeSettlementResponse:
        """2208: revoke a settled settlement."""
        violations = Violations()
        check_settlement_id(violations, request.settlement_id)
        violations.require(len(request.reason) <= 200, "reason", "at most 200 characters")
        violations.raise_if_any()
        settlement = await self._handlers.settlement.revoke(request.settlement_id)
        return pb.RevokeSettlementResponse(settlement=mapping.settlement_to_proto(settlement))

    async def GetSettlement(self, request: pb.GetSettlementRequest, context: Any) -> pb.GetSettlementResponse:
        """Read one; refresh = true asks the insurer (5203) to decide an UNKNOWN one."""
        _require_settlement_id(request.settlement_id)
        handlers = self._handlers
        if request.refresh:
            settlement = await handlers.settlement.refresh(request.settlement_id)
        else:
            settlement = await handlers.reports.get(request.settlement_id)
        return pb.GetSettlementResponse(settlement=mapping.settlement_to_proto(settlement))

    async def ListSettlements(
        self, request: pb.ListSettlementsRequest, context: Any
    ) -> pb.ListSettlementsResponse:
        violations = Violations()
        limit = violations.page_size(request.page_size, maximum=MAX_PAGE)
        day = violations.business_date(request.business_date) if request.business_date else None
        violations.require(request.status in pb.SettlementStatus.values(), "status", "not a SettlementStatus")
        violations.raise_if_any()
        query = commands.ListSettlements(
            limit, request.page_token, day, mapping.statuses_from_proto(request.status)
        )
        page = await self._handlers.reports.list_settlements(query)
        return pb.ListSettlementsResponse(
            settlements=[mapping.settlement_to_proto(item) for item in page.items],
            next_page_token=page.next_page_token,
        )

    @idempotent(pb.ReconcileTotalsResponse)
    async def ReconcileTotals(
        self, request: pb.ReconcileTotalsRequest, context: Any
    ) -> pb.ReconcileTotalsResponse:
        """3201 for one business day and insurance type."""
        violations = check_reconcile(request)
        violations.raise_if_any()
        day = violations.business_date(request.business_date)
        assert day is not None
        command = commands.ReconcileTotals(
            day, request.insutype, request.clr_type or commands.OUTPATIENT_CLEARING
        )
        statement = await self._handlers.reports.reconcile_totals(command)
        return pb.ReconcileTotalsResponse(statement=mapping.statement_to_proto(statement))

    async def ListInsurerMessages(
        self, request: pb.ListInsurerMessagesRequest, context: Any
    ) -> pb.ListInsurerMessagesResponse:
        """The message log, newest first, identifiers masked."""
        violations = Violations()
        limit = violations.page_size(request.page_size, maximum=MAX_PAGE)
        violations.require(len(request.infno) <= 6, "infno", "at most 6 characters")
        violations.require(len(request.order_ref) <= 64, "order_ref", "at most 64 characters")
        violations.raise_if_any()
        query = commands.ListInsurerMessages(limit, request.page_token, request.infno, request.order_ref)
        page = await self._handlers.reports.list_messages(query)
        return pb.ListInsurerMessagesResponse(
            messages=[mapping.message_to_proto(item) for item in page.items],
            next_page_token=page.next_page_token,
        )

    async def RegisterAdmission(
        self, request: pb.RegisterAdmissionRequest, context: Any
    ) -> pb.RegisterAdmissionResponse:
        """2401 inpatient admission: defined by the standard, not offered by this deployment yet."""
        raise NotOffered("RegisterAdmission (2401) is not offered yet", {"rpc": "RegisterAdmission"})

    async def UploadInpatientFees(
        self, request: pb.UploadInpatientFeesRequest, context: Any
    ) -> pb.UploadInpatientFeesResponse:
        """2301: defined by the standard, not offered by this deployment yet."""
        raise NotOffered("UploadInpatientFees (2301) is not offered yet", {"rpc": "UploadInpatientFees"})

    async def PresettleDischarge(
        self, request: pb.PresettleDischargeRequest, context: Any
    ) -> pb.PresettleDischargeResponse:
        """2402 + 2303: defined by the standard, not offered by this deployment yet."""
        raise NotOffered("PresettleDischarge (2402/2303) is not offered yet", {"rpc": "PresettleDischarge"})

    async def ReconcileDetails(
        self, request: pb.ReconcileDetailsRequest, context: Any
    ) -> pb.ReconcileDetailsResponse:
        """3202 with 9101/9102: defined by the standard, not offered by this deployment yet."""
        raise NotOffered("ReconcileDetails (3202) is not offered yet", {"rpc": "ReconcileDetails"})


def _require_settlement_id(settlement_id: str) -> None:
    violations = Violations()
    check_settlement_id(violations, settlement_id)
    violations.raise_if_any()
