"""The event feeds data-aggregation reads, as a port: gRPC in production, in memory in tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.data_aggregation.domain.facts import FeedEvent
from services.runtime.masking import scrub


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: tuple[FeedEvent, ...]
    # The highest sequence the source has assigned, to report how far behind we are.
    head_sequence: int


class FeedUnavailable(Exception):
    """The source's feed could not be read now; it is tried again later."""

    def __init__(self, source_service: str, reason: str) -> None:
        self.source_service = source_service
        self.reason = scrub(reason)
        super().__init__(f"{source_service}: {self.reason}")


class EventFeedSource(Protocol):
    """One service's medpay.events.v1.EventFeedService."""

    @property
    def source_service(self) -> str:
        """The producing service's name ("payment-core", ...): the key of its durable cursor."""
        ...

    async def events_after(self, after_sequence: int, page_size: int, wait_s: float = 0.0) -> FeedPage:
        """Events with sequence > after_sequence, in order, at most page_size. May repeat events
        already seen (a replayed page); consumers deduplicate. With `wait_s`, a caught-up reader is
        answered when the next event is sequenced (or empty after wait_s). Raises FeedUnavailable."""
        ...
