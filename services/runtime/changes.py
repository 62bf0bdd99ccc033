"""Signals that an aggregate changed, for whoever waits on it, driven by the commits that change it.

A unit of work marks the keys it changes (`uow.touch(key)`); after its commit, and never after a
rollback, each key is published to the process's `ChangeBroker`, which wakes the subscribers of
that key:

    async with broker.subscribe(key) as subscription:   # subscribe first,
        state = await read()                            # then read,
        while await subscription.changed(timeout_s):    # then wait for the next commit
            state = await read()

A signal carries no data, only "look again": a burst of changes wakes a subscriber once, nothing
queues up, and a topic exists only while someone subscribes to it, so memory stays bounded by the
number of subscribers. `SharedReads` lets the many subscribers of one key share one read per change.

Across replicas (PostgreSQL), the unit of work also sends each key with NOTIFY on the service's
channel inside its transaction (PostgreSQL delivers it only on commit), and one `ChangeListener`
connection per process publishes what other replicas sent into the local broker. SQLite is one
process, so the in-process publish is all there is.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)
T = TypeVar("T")


def aggregate_key(aggregate_type: str, aggregate_id: str) -> str:
    """The key under which one aggregate's changes are signalled ("payment_order:ord_...")."""
    return f"{aggregate_type}:{aggregate_id}"


def notify_channel(service: str) -> str:
    """The service's NOTIFY channel: "payment-core" -> "medpay_payment_core_changes"."""
    return f"medpay_{service.replace('-', '_')}_changes"


class Subscription:
    """One subscriber's view of one key: set when a change was published since it last looked."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._changed = asyncio.Event()

    def wake(self) -> None:
        self._changed.set()

    async def changed(self, timeout_s: float | None = None) -> bool:
        """Wait for a change published since the last call (or since subscribing). True when one
        came, False when `timeout_s` passed first (None waits as long as it takes)."""
        if not self._changed.is_set():
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except TimeoutError:
                return False
        self._changed.clear()
        return True


@dataclass(eq=False)
class _Topic:
    generation: int
    subscriptions: set[Subscription] = field(default_factory=set)


class ChangeBroker:
    """The process's broker of "aggregate changed" signals, keyed by aggregate key.

    `channel` is the NOTIFY channel units of work send on (PostgreSQL), None for in-process only.
    `origin` marks this process's own NOTIFYs, which its listener skips: they were published
    locally at commit already. Used from the event loop's thread only, like the rest of asyncio."""

    def __init__(self, channel: str | None = None) -> None:
        self.channel = channel
        self.origin = uuid.uuid4().hex[:16]
        self._topics: dict[str, _Topic] = {}
        # Counts every publish, so a generation is comparable across keys and topic lifetimes.
        self._clock = 0

    def publish(self, key: str) -> None:
        """`key` changed (its transaction has committed): wake its subscribers."""
        self._clock += 1
        topic = self._topics.get(key)
        if topic is None:
            return
        topic.generation = self._clock
        for subscription in topic.subscriptions:
            subscription.wake()

    def publish_all(self) -> None:
        """Anything may have changed (signals may have been lost): wake every subscriber."""
        for key in list(self._topics):
            self.publish(key)

    def generation(self, key: str) -> int:
        """Grows with every publish of `key`: a read begun at generation g sees every change
        published up to g (each was committed before it was published)."""
        topic = self._topics.get(key)
        return topic.generation if topic is not None else self._clock

    @asynccontextmanager
    async def subscribe(self, key: str) -> AsyncIterator[Subscription]:
        """Subscribe to `key` for the block; the subscription is gone when the block exits."""
        topic = self._topics.setdefault(key, _Topic(generation=self._clock))
        subscription = Subscription(key)
        topic.subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            topic.subscriptions.discard(subscription)
            if not topic.subscriptions and self._topics.get(key) is topic:
                del self._topics[key]

    def subscribers(self, key: str | None = None) -> int:
        """How many subscriptions are open (on `key`, or on any key)."""
        if key is not None:
            topic = self._topics.get(key)
            return len(topic.subscriptions) if topic else 0
        return sum(len(topic.subscriptions) for topic in self._topics.values())

    def notification(self, key: str) -> str:
        """The NOTIFY payload announcing `key`: "<origin> <key>"."""
        return f"{self.origin} {key}"

    def received(self, payload: str) -> None:
        """A NOTIFY from some replica: publish its key, unless this process sent it."""
        origin, _, key = payload.partition(" ")
        if origin != self.origin and key:
            self.publish(key)


class SharedReads(Generic[T]):
    """One read per change for all the subscribers of a key: a subscriber joins a read of that key
    that began at or after the key's current generation, else begins one. Only reads in flight are
    kept."""

    def __init__(self, broker: ChangeBroker) -> None:
        self._broker = broker
        self._reads: dict[str, tuple[int, asyncio.Future[T]]] = {}

    async def read(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        wanted = self._broker.generation(key)
        entry = self._reads.get(key)
        if entry is None or entry[0] < wanted:
            entry = (wanted, asyncio.ensure_future(load()))
            self._reads[key] = entry
            entry[1].add_done_callback(partial(self._forget, key, entry))
        # A subscriber that leaves (cancelled) must not cancel the read the others wait for.
        return await asyncio.shield(entry[1])

    def in_flight(self) -> int:
        return len(self._reads)

    def _forget(self, key: str, entry: tuple[int, asyncio.Future[T]], done: asyncio.Future[T]) -> None:
        if self._reads.get(key) is entry:
            del self._reads[key]
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have left before it failed


def listener_dsn(engine: AsyncEngine) -> str:
    """A plain asyncpg DSN for the engine's database (the listener holds its own connection)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeListener:
    """One LISTEN connection per process, publishing the channel's NOTIFYs into the broker.

    It reconnects (with back-off) when its connection drops, and wakes every subscriber after each
    (re)connect, since a signal sent while it was down is lost. A quiet connection is checked
    every `check_every_s`, so a connection that died silently is noticed. Runs until cancelled."""

    def __init__(
        self,
        broker: ChangeBroker,
        dsn: str,
        application_name: str,
        *,
        check_every_s: float = 30.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        if broker.channel is None:
            raise ValueError("a ChangeListener needs a broker with a NOTIFY channel")
        self._broker, self._channel = broker, broker.channel
        self._dsn, self._application_name = dsn, application_name
        self._check_every_s, self._max_backoff_s = check_every_s, max_backoff_s
        self.connected = asyncio.Event()
        self.backend_pid: int | None = None

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen()
                backoff = 0.1
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("change listener on %s lost: %s; reconnecting", self._channel, error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _listen(self) -> None:
        """Listen on one connection until it drops (returns) or the task is cancelled."""
        connection = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"application_name": self._application_name}
        )
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(self._channel, self._on_notify)
            self.backend_pid = connection.get_server_pid()
            self.connected.set()
            self._broker.publish_all()
            await self._until_lost(connection, lost)
        finally:
            self.connected.clear()
            connection.terminate()

    async def _until_lost(self, connection: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not connection.is_closed():
            try:
                await asyncio.wait_for(lost.wait(), self._check_every_s)
            except TimeoutError:
                await connection.fetchval("SELECT 1", timeout=self._check_every_s)
            else:
                return

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._broker.received(payload)
