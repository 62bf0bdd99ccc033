"""EventFeedSource over another service's medpay.events.v1.EventFeedService (gRPC)."""

from __future__ import annotations

import grpc
from medpay.events.v1 import events_pb2, events_pb2_grpc

from services.data_aggregation.adapters.event_facts import feed_event
from services.data_aggregation.service_layer.ports import FeedPage, FeedUnavailable
from services.runtime.interceptors import outbound_timeout


class GrpcEventFeed:
    def __init__(self, source_service: str, channel: grpc.aio.Channel, deadline_s: float) -> None:
        self._source_service = source_service
        self._stub = events_pb2_grpc.EventFeedServiceStub(channel)
        self._deadline_s = deadline_s

    @property
    def source_service(self) -> str:
        return self._source_service

    async def events_after(self, after_sequence: int, page_size: int, wait_s: float = 0.0) -> FeedPage:
        request = events_pb2.ListEventsRequest(
            after_sequence=after_sequence, page_size=page_size, wait_ms=round(wait_s * 1000)
        )
        try:
            # The deadline leaves room for the feed's wait (a long poll) on top of the usual one.
            response: events_pb2.ListEventsResponse = await self._stub.ListEvents(
                request, timeout=wait_s + outbound_timeout(self._deadline_s)
            )
        except grpc.aio.AioRpcError as error:
            reason = f"ListEvents {error.code().name}: {error.details()}"
            raise FeedUnavailable(self._source_service, reason) from error
        events = tuple(feed_event(self._source_service, envelope) for envelope in response.events)
        return FeedPage(events, response.head_sequence)
