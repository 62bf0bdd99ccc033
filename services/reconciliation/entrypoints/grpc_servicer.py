"""medpay.reconciliation.v1.ReconciliationService: validate, call a handler, map the answer."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from medpay.reconciliation.v1 import reconciliation_pb2 as pb
from medpay.reconciliation.v1 import reconciliation_pb2_grpc

from services.reconciliation.entrypoints.mapping import (
    class_from_proto,
    discrepancy_to_proto,
    run_to_proto,
)
from services.reconciliation.service_layer.handlers import ReconciliationHandlers
from services.runtime.clock import business_date_of, utcnow
from services.runtime.errors import InvalidArgument, NotOffered
from services.runtime.idempotency import IdempotencyStore, idempotent
from services.runtime.pagination import decode_page_token, encode_page_token
from services.runtime.validation import Violations, require_business_date

# grpc ships no type hints; the servicer never touches the context beyond passing it on.
Context = Any


class ReconciliationServicer(reconciliation_pb2_grpc.ReconciliationServiceServicer):
    def __init__(self, handlers: ReconciliationHandlers, idempotency: IdempotencyStore) -> None:
        self._handlers = handlers
        self.idempotency = idempotency

    @idempotent(pb.RunReconciliationResponse)
    async def RunReconciliation(
        self, request: pb.RunReconciliationRequest, context: Context
    ) -> pb.RunReconciliationResponse:
        """Reconcile the day to the end; a FAILED run is an answer, not an error."""
        run = await self._handlers.run_reconciliation(_day_to_reconcile(request.business_date))
        return pb.RunReconciliationResponse(run=run_to_proto(run))

    async def GetReconciliationRun(
        self, request: pb.GetReconciliationRunRequest, context: Context
    ) -> pb.GetReconciliationRunResponse:
        violations = Violations()
        violations.require_text(request.run_id, "run_id")
        violations.raise_if_any()
        run = await self._handlers.reconciliation_run(request.run_id)
        return pb.GetReconciliationRunResponse(run=run_to_proto(run))

    async def ListReconciliationRuns(
        self, request: pb.ListReconciliationRunsRequest, context: Context
    ) -> pb.ListReconciliationRunsResponse:
        violations = Violations()
        page_size = violations.page_size(request.page_size)
        day = violations.business_date(request.business_date) if request.business_date else None
        violations.raise_if_any()
        runs = await self._handlers.reconciliation_runs(page_size + 1, _runs_cursor(request.page_token), day)
        page = runs[:page_size]
        token = ""
        if len(runs) > page_size:
            last = page[-1]
            token = encode_page_token({"started_at": last.started_at.isoformat(), "run_id": last.run_id})
        return pb.ListReconciliationRunsResponse(
            runs=[run_to_proto(run) for run in page], next_page_token=token
        )

    async def ListDiscrepancies(
        self, request: pb.ListDiscrepanciesRequest, context: Context
    ) -> pb.ListDiscrepanciesResponse:
        violations = Violations()
        violations.require_text(request.run_id, "run_id")
        page_size = violations.page_size(request.page_size)
        violations.require(request.discrepancy_class in pb.DiscrepancyClass.values(), "discrepancy_class",
                           "not a DiscrepancyClass value")  # fmt: skip
        violations.raise_if_any()
        wanted = class_from_proto(request.discrepancy_class)
        after = _discrepancy_cursor(request.page_token)
        found = await self._handlers.discrepancies(request.run_id, page_size + 1, after, wanted)
        page = found[:page_size]
        token = encode_page_token({"ordinal": page[-1].ordinal}) if len(found) > page_size else ""
        return pb.ListDiscrepanciesResponse(
            discrepancies=[discrepancy_to_proto(item) for item in page], next_page_token=token
        )

    async def ResolveDiscrepancy(
        self, request: pb.ResolveDiscrepancyRequest, context: Context
    ) -> pb.ResolveDiscrepancyResponse:
        # Resolution needs maker-checker and an audit trail; until then it is refused, not faked.
        raise NotOffered("ResolveDiscrepancy is not offered yet", {"rpc": "ResolveDiscrepancy"})

    async def ReviewResolution(
        self, request: pb.ReviewResolutionRequest, context: Context
    ) -> pb.ReviewResolutionResponse:
        raise NotOffered("ReviewResolution is not offered yet", {"rpc": "ReviewResolution"})

    async def ImportStatement(
        self, request: pb.ImportStatementRequest, context: Context
    ) -> pb.ImportStatementResponse:
        # Only the WeChat Pay bill is read in this release, downloaded by the run itself.
        raise NotOffered("ImportStatement is not offered yet", {"rpc": "ImportStatement"})


def _day_to_reconcile(text: str) -> date:
    """A run needs the day's bills, so a day that has not begun yet cannot be reconciled."""
    day = require_business_date(text)
    if day > business_date_of(utcnow()):
        raise InvalidArgument.field("business_date", "must not be after today (Asia/Shanghai)")
    return day


def _runs_cursor(token: str) -> tuple[datetime, str] | None:
    cursor = decode_page_token(token)
    if cursor is None:
        return None
    try:
        return datetime.fromisoformat(str(cursor["started_at"])), str(cursor["run_id"])
    except (KeyError, ValueError) as error:
        raise InvalidArgument.field("page_token", "not a page token this service issued") from error


def _discrepancy_cursor(token: str) -> int:
    cursor = decode_page_token(token)
    if cursor is None:
        return 0
    ordinal = cursor.get("ordinal")
    if not isinstance(ordinal, int) or isinstance(ordinal, bool) or ordinal < 0:
        raise InvalidArgument.field("page_token", "not a page token this service issued")
    return ordinal
