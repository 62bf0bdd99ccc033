"""An in-memory event feed for tests and demos, with the misbehaviour a real feed can show: a page
served again, an event delivered twice, a source that is down."""

from __future__ import annotations

from dataclasses import dataclass, field

from medpay.events.v1 import events_pb2

from services.data_aggregation.adapters.event_facts import feed_event
from services.data_aggregation.service_layer.ports import FeedPage, FeedUnavailable


@dataclass
class InMemoryEventFeed:
    name: str
    envelopes: list[events_pb2.EventEnvelope] = field(default_factory=list)
    down: bool = False
    # The next this-many reads ignore the cursor and serve from the start again.
    replays_pending: int = 0
    # Every after_sequence a consumer asked for, in order.
    asked_after: list[int] = field(default_factory=list)

    @property
    def source_service(self) -> str:
        return self.name

    def publish(self, envelope: events_pb2.EventEnvelope) -> int:
        """Append at the next feed position (a copy, so one envelope can be delivered twice)."""
        copy = events_pb2.EventEnvelope()
        copy.CopyFrom(envelope)
        copy.sequence = len(self.envelopes) + 1
        self.envelopes.append(copy)
        return copy.sequence

    async def events_after(self, after_sequence: int, page_size: int, wait_s: float = 0.0) -> FeedPage:
        self.asked_after.append(after_sequence)
        if self.down:
            raise FeedUnavailable(self.name, "ListEvents UNAVAILABLE: connection refused")
        if self.replays_pending:
            self.replays_pending -= 1
            after_sequence = 0
        page = [envelope for envelope in self.envelopes if envelope.sequence > after_sequence][:page_size]
        events = tuple(feed_event(self.name, envelope) for envelope in page)
        return FeedPage(events, len(self.envelopes))
