"""Exactly-once ingest of the other services' event feeds.

For each source, one follower loops: read the durable cursor, fetch the next page, and in ONE
transaction claim each event id, keep the facts of the new ones and move the cursor. A replayed page
or a duplicate delivery finds its event ids already claimed and has no second effect; a crash before
commit leaves nothing behind and the page is read again. Each source has its own follower, so a
source that is down is retried on its own schedule and never holds up the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from services.data_aggregation.adapters.repository import CursorStep
from services.data_aggregation.adapters.unit_of_work import UnitOfWork
from services.data_aggregation.domain.facts import FeedEvent
from services.data_aggregation.service_layer.ports import EventFeedSource, FeedUnavailable
from services.runtime.clock import utcnow

log = logging.getLogger(__name__)


class CursorMoved(Exception):
    """Another replica ingested this page first; this transaction must not commit."""


class FeedIngestor:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        feeds: Sequence[EventFeedSource],
        page_size: int,
        poll_interval_s: float,
        max_backoff_s: float,
        clock: Callable[[], datetime] = utcnow,
        feed_wait_s: float = 0.0,
        linger_s: float = 0.0,
    ) -> None:
        self._uow = unit_of_work
        self.feeds = list(feeds)
        self._page_size = page_size
        self._poll_interval_s = poll_interval_s
        # > 0: a caught-up follower waits in the feed's long poll instead of sleeping and asking.
        self._feed_wait_s = feed_wait_s
        # After a round that took events, a short pause: the events that follow (a settlement
        # emits several within ~100 ms) are then taken in one page, not one round each.
        self._linger_s = linger_s
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._known: set[str] = set()
        # Where this follower left each cursor with its own last commit. The cursor's move is a
        # compare-and-set on it, so a position another replica changed meanwhile fails that move
        # (CursorMoved) and is read afresh: no read of the cursor before every page.
        self._positions: dict[str, int] = {}

    async def ingest_page(self, feed: EventFeedSource, wait_s: float = 0.0) -> int:
        """Take one page of one feed; returns how many events the page held (new or not)."""
        source = feed.source_service
        start = await self._cursor_of(source)
        # The feed is read outside any transaction: no database lock is held across the network.
        page = await feed.events_after(start, self._page_size, wait_s)
        if not page.events:
            return 0
        try:
            async with self._uow() as uow:
                new_events = await self._take(uow, source, page.events)
                last = max(start, *(event.sequence for event in page.events))
                step = CursorStep(source, start, last, new_events, page.head_sequence)
                if not await uow.cursors.advance(step, self._clock()):
                    raise CursorMoved(f"{source}: cursor moved past {start} while this page was read")
        except BaseException:
            self._positions.pop(source, None)  # read it afresh next time
            raise
        self._positions[source] = last
        return len(page.events)

    async def _cursor_of(self, source: str) -> int:
        if source in self._positions:
            return self._positions[source]
        async with self._uow() as uow:
            if source not in self._known:
                await uow.cursors.ensure(source, self._clock())
            position = await uow.cursors.position(source)
        self._known.add(source)
        return position

    async def _take(self, uow: UnitOfWork, source: str, events: Sequence[FeedEvent]) -> int:
        new_events = 0
        claimed = await uow.events.claim(source, events, self._clock())
        for event in events:
            if event.event_id not in claimed:
                continue
            new_events += 1
            if event.fact is not None and not await uow.facts.add(event.fact):
                # A new event about something already kept (e.g. a second "settled" for one order):
                # counted as ingested, kept once.
                log.info("event %s from %s repeats a fact already kept", event.event_id, source)
        return new_events

    async def catch_up(self, feed: EventFeedSource, wait_s: float = 0.0) -> int:
        """Take pages until the feed has no full page left; returns the events seen. `wait_s`:
        the first page may wait that long in the feed for the next event."""
        seen = 0
        while True:
            count = await self.ingest_page(feed, wait_s if seen == 0 else 0.0)
            seen += count
            if count < self._page_size:
                return seen

    async def follow_feeds(self) -> None:
        """Background task: one follower per source feed."""
        async with asyncio.TaskGroup() as group:
            for feed in self.feeds:
                group.create_task(self._follow(feed), name=f"ingest:{feed.source_service}")

    async def _follow(self, feed: EventFeedSource) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            failures, seen = await self._one_round(feed, failures)
            # A long poll paces itself (it returns when there is news, or after its wait); a feed
            # that answers "nothing" at once (no long poll here) is asked again only after the
            # poll interval, and one that fails after the back-off.
            nothing_at_once = seen == 0 and loop.time() - started < self._poll_interval_s
            if failures or not self._feed_wait_s or nothing_at_once:
                await asyncio.sleep(self._pause(failures))
            elif seen and self._linger_s:
                await asyncio.sleep(self._linger_s)

    async def _one_round(self, feed: EventFeedSource, failures: int) -> tuple[int, int]:
        """One catch-up; returns the new count of consecutive failures and the events seen."""
        try:
            seen = await self.catch_up(feed, self._feed_wait_s)
        except FeedUnavailable as error:
            if failures == 0:
                log.warning(
                    "feed of %s unavailable, retrying in the background: %s", feed.source_service, error
                )
            return failures + 1, 0
        except CursorMoved as moved:
            log.info("%s", moved)
            return 0, 0
        except Exception:
            log.exception("ingest of %s failed; retrying", feed.source_service)
            return failures + 1, 0
        if failures:
            log.info("feed of %s is back after %d failed rounds", feed.source_service, failures)
        return 0, seen

    def _pause(self, failures: int) -> float:
        """The poll interval, doubled per consecutive failure up to a ceiling."""
        backoff = self._poll_interval_s * float(2 ** min(failures, 16))
        return min(backoff, max(self._max_backoff_s, self._poll_interval_s))
