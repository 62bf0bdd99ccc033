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
from services.runtime.idempotency import IdempotencyStore
from services.runtime.pagination import decode_page_token, encode_page_token
from services.runtime.validation import Violations, require_business_date

# grpc ships no type hints; the servicer reads the caller's deadline from the context, nothing else.
Context = Any
# Time kept back from the caller's deadline to read the run and send the answer: a fifth of what is
# left, at most this.
_ANSWER_MARGIN_S = 1.0


class ReconciliationServicer(reconciliation_pb2_grpc.ReconciliationServiceServicer):
    def __init__(
        self, handlers: ReconciliationHandlers, idempotency: IdempotencyStore, answer_within_s: float = 30.0
    ) -> None:
        self._handlers = handlers
        self.idempotency = idempotency
        self._answer_within_s = answer_within_s

    async def RunReconciliation(
        self, request: pb.RunReconciliationRequest, context: Context
    ) -> pb.RunReconciliationResponse:
        """Start (or join) the day's run and wait for it, bounded: the run COMPLETED or FAILED if it
        ended by then (a FAILED run is an answer, not an error), else RUNNING, to be polled."""
        run_id = await self._run_of_request(request)
        run = await self._handlers.await_run(run_id, _answer_within(context, self._answer_within_s))
        return pb.RunReconciliationResponse(run=run_to_proto(run))

    async def _run_of_request(self, request: pb.RunReconciliationRequest) -> str:
        """The run this request_id stands for: the one it started or joined before (a replay, then
        answered as it stands now), else the day's RUNNING run or a new one. The request_id is
        settled as soon as the run is stored, not when it ends, so a retry after a lost answer or a
        crash finds the run rather than REQUEST_IN_PROGRESS."""
        violations = Violations()
        violations.require_request_id(request.request_id)
        violations.raise_if_any()
        stored = await self.idempotency.claim("RunReconciliation", request.request_id, request)
        if stored is not None:
            return str(pb.RunReconciliationResponse.FromString(stored).run.run_id)
        try:
            run = await self._handlers.start_reconciliation(_day_to_reconcile(request.business_date))
        except BaseException:
            await self.idempotency.release(request.request_id)
            raise
        answer = pb.RunReconciliationResponse(run=run_to_proto(run))
        await self.idempotency.complete(request.request_id, answer)
        return run.run_id

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


def _answer_within(context: Context, ceiling_s: float) -> float:
    """How long RunReconciliation waits for its run: the configured ceiling, less when the caller's
    deadline is nearer (minus a margin to send the answer before it)."""
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return ceiling_s
    return max(0.0, min(ceiling_s, remaining - min(_ANSWER_MARGIN_S, remaining / 5)))


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
