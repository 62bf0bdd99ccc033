"""The runtime's change broker and shared reads (services.runtime.changes), in memory."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.changes import ChangeBroker, SharedReads, aggregate_key, notify_channel


async def test_a_burst_of_changes_wakes_a_watcher_once() -> None:
    broker = ChangeBroker()
    async with broker.subscribe("payment_order:ord_1") as subscription:
        for _ in range(50):
            broker.publish("payment_order:ord_1")
        assert await subscription.changed(timeout_s=1)
        assert not await subscription.changed(timeout_s=0.01)


async def test_a_change_before_the_wait_is_not_lost() -> None:
    broker = ChangeBroker()
    async with broker.subscribe("k") as subscription:
        broker.publish("k")
        assert await subscription.changed(timeout_s=0)


async def test_a_waiting_watcher_is_woken_by_a_later_change() -> None:
    broker = ChangeBroker()
    async with broker.subscribe("k") as subscription:
        waiting = asyncio.create_task(subscription.changed(timeout_s=5))
        await asyncio.sleep(0)  # let it start waiting
        broker.publish("k")
        assert await asyncio.wait_for(waiting, 1)


async def test_only_the_watchers_of_the_changed_key_wake() -> None:
    broker = ChangeBroker()
    async with broker.subscribe("a") as on_a, broker.subscribe("b") as on_b:
        broker.publish("a")
        assert await on_a.changed(timeout_s=0)
        assert not await on_b.changed(timeout_s=0)


async def test_every_watcher_of_a_key_wakes() -> None:
    broker = ChangeBroker()
    async with broker.subscribe("k") as first, broker.subscribe("k") as second:
        broker.publish("k")
        assert await first.changed(timeout_s=0) and await second.changed(timeout_s=0)


async def test_subscriptions_are_gone_when_their_block_exits_even_by_an_error() -> None:
    broker = ChangeBroker()
    async with broker.subscribe("k"):
        with pytest.raises(RuntimeError):
            async with broker.subscribe("k"):
                assert broker.subscribers("k") == 2
                raise RuntimeError("watcher failed")
        assert broker.subscribers("k") == 1
    assert broker.subscribers() == 0
    assert broker._topics == {}


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    broker = ChangeBroker()

    async def watch() -> None:
        async with broker.subscribe("k") as subscription:
            await subscription.changed()

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    assert broker.subscribers("k") == 1
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher
    assert broker.subscribers() == 0


def test_publishing_to_a_key_no_one_watches_keeps_nothing() -> None:
    broker = ChangeBroker()
    for n in range(10_000):
        broker.publish(f"payment_order:ord_{n}")
    assert broker._topics == {}


async def test_publish_all_wakes_every_watcher() -> None:
    broker = ChangeBroker()
    async with broker.subscribe("a") as on_a, broker.subscribe("b") as on_b:
        broker.publish_all()
        assert await on_a.changed(timeout_s=0) and await on_b.changed(timeout_s=0)


async def test_a_replicas_notification_is_published_and_our_own_is_skipped() -> None:
    here, there = ChangeBroker("medpay_payment_core_changes"), ChangeBroker("medpay_payment_core_changes")
    async with here.subscribe("payment_order:ord_1") as subscription:
        here.received(here.notification("payment_order:ord_1"))
        assert not await subscription.changed(timeout_s=0)
        here.received(there.notification("payment_order:ord_1"))
        assert await subscription.changed(timeout_s=0)


def test_keys_and_channels_are_named_by_aggregate_and_service() -> None:
    assert aggregate_key("payment_order", "ord_1") == "payment_order:ord_1"
    assert notify_channel("payment-core") == "medpay_payment_core_changes"


async def test_the_generation_of_a_key_grows_with_its_changes_and_survives_its_topic() -> None:
    broker = ChangeBroker()
    async with broker.subscribe("k"):
        before = broker.generation("k")
        broker.publish("k")
        assert broker.generation("k") > before
        seen = broker.generation("k")
    broker.publish("other")
    async with broker.subscribe("k"):
        assert broker.generation("k") >= seen


class Store:
    """A read the test releases by hand, counting how often it was started."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def load(self) -> int:
        self.reads += 1
        value = self.value
        self.started.set()
        await self.release.wait()
        return value


async def test_watchers_woken_by_one_change_share_one_read() -> None:
    broker, store = ChangeBroker(), Store()
    reads: SharedReads[int] = SharedReads(broker)
    async with broker.subscribe("k"):
        waiting = [asyncio.create_task(reads.read("k", store.load)) for _ in range(200)]
        await asyncio.sleep(0)
        store.release.set()
        assert await asyncio.gather(*waiting) == [0] * 200
    assert store.reads == 1 and reads.in_flight() == 0


async def test_a_read_begun_before_a_change_is_not_reused_after_it() -> None:
    broker, store = ChangeBroker(), Store()
    reads: SharedReads[int] = SharedReads(broker)
    async with broker.subscribe("k"):
        early = asyncio.create_task(reads.read("k", store.load))
        await asyncio.wait_for(store.started.wait(), 1)
        store.value = 1
        broker.publish("k")  # committed after the early read looked
        late = asyncio.create_task(reads.read("k", store.load))
        await asyncio.sleep(0)
        store.release.set()
        assert (await early, await late) == (0, 1)
    assert store.reads == 2


async def test_a_watcher_that_leaves_does_not_cancel_the_read_others_wait_for() -> None:
    broker, store = ChangeBroker(), Store()
    reads: SharedReads[int] = SharedReads(broker)
    async with broker.subscribe("k"):
        leaving = asyncio.create_task(reads.read("k", store.load))
        staying = asyncio.create_task(reads.read("k", store.load))
        await asyncio.sleep(0)
        leaving.cancel()
        store.release.set()
        assert await staying == 0
    assert leaving.cancelled() and store.reads == 1


async def test_a_failed_read_fails_every_waiter_and_is_not_kept() -> None:
    broker = ChangeBroker()
    reads: SharedReads[int] = SharedReads(broker)

    async def missing() -> int:
        await asyncio.sleep(0)
        raise LookupError("no such order")

    outcomes = await asyncio.gather(*(reads.read("k", missing) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(outcome, LookupError) for outcome in outcomes)
    assert reads.in_flight() == 0
