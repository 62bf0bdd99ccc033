"""medpay.data.v1.DataAggregationService: validate, ask the fact store, map the answer."""

from __future__ import annotations

from typing import Any

from medpay.data.v1 import data_pb2 as pb
from medpay.data.v1 import data_pb2_grpc

from services.data_aggregation.entrypoints.mapping import cursor_to_proto, summary_to_proto, times_to_proto
from services.data_aggregation.service_layer.handlers import AggregationQueries
from services.runtime.errors import NotOffered
from services.runtime.validation import require_business_date

# grpc ships no type hints; the servicer never touches the context.
Context = Any


class DataAggregationServicer(data_pb2_grpc.DataAggregationServiceServicer):
    def __init__(self, queries: AggregationQueries) -> None:
        self._queries = queries

    async def GetDailySummary(
        self, request: pb.GetDailySummaryRequest, context: Context
    ) -> pb.GetDailySummaryResponse:
        summary = await self._queries.daily_summary(require_business_date(request.business_date))
        return pb.GetDailySummaryResponse(summary=summary_to_proto(summary))

    async def GetSettlementTimes(
        self, request: pb.GetSettlementTimesRequest, context: Context
    ) -> pb.GetSettlementTimesResponse:
        slices = await self._queries.settlement_times(require_business_date(request.business_date))
        return pb.GetSettlementTimesResponse(slices=[times_to_proto(item) for item in slices])

    async def GetIngestStatus(
        self, request: pb.GetIngestStatusRequest, context: Context
    ) -> pb.GetIngestStatusResponse:
        cursors = await self._queries.ingest_status()
        return pb.GetIngestStatusResponse(sources=[cursor_to_proto(cursor) for cursor in cursors])

    async def ListSettlementFacts(
        self, request: pb.ListSettlementFactsRequest, context: Context
    ) -> pb.ListSettlementFactsResponse:
        raise NotOffered("ListSettlementFacts is not offered yet", {"rpc": "ListSettlementFacts"})

    async def ListCodeMappings(
        self, request: pb.ListCodeMappingsRequest, context: Context
    ) -> pb.ListCodeMappingsResponse:
        raise NotOffered("code-mapping dictionaries are not offered yet", {"rpc": "ListCodeMappings"})

    async def UpsertCodeMapping(
        self, request: pb.UpsertCodeMappingRequest, context: Context
    ) -> pb.UpsertCodeMappingResponse:
        raise NotOffered("code-mapping dictionaries are not offered yet", {"rpc": "UpsertCodeMapping"})
