"""Following one order as it changes (WatchPaymentOrder), driven by the commits that change it.

A watcher subscribes to the order's change signal first, then reads the order, then reads it again
after each signalled commit: subscribing before the first read means no commit can fall between
the two unseen. The watchers of one order share each read (SharedReads), so a kiosk crowd costs
one read per change, not one per kiosk. Reads go through PaymentOrders.get, the service's read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from services.payment_core.adapters.unit_of_work import order_changes
from services.payment_core.domain.model import OrderStatus
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.service_layer.handlers import PaymentOrders
from services.runtime.changes import ChangeBroker, SharedReads

# No further change comes to an order in these states unless someone asks for one (a refund of a
# SETTLED order). NEEDS_ATTENTION is not among them: a query or a person still moves it on.
FINAL_STATES = frozenset({OrderStatus.SETTLED, OrderStatus.CLOSED, OrderStatus.REFUNDED})


class OrderWatch:
    def __init__(self, orders: PaymentOrders, changes: ChangeBroker) -> None:
        self._orders = orders
        self._changes = changes
        self._reads: SharedReads[PaymentOrder] = SharedReads(changes)

    async def follow(self, order_id: str) -> AsyncGenerator[PaymentOrder, None]:
        """The order now, then as it is after each commit signalled for it, up to and including
        the first final state. NotFound when there is no such order. A signal whose commit changed
        nothing visible yields the same order again: callers compare."""
        key = order_changes(order_id)
        async with self._changes.subscribe(key) as subscription:
            while True:
                order = await self._reads.read(key, lambda: self._orders.get(order_id))
                yield order
                if order.status in FINAL_STATES:
                    return
                await subscription.changed()
