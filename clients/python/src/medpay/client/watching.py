"""Following an order through WatchPaymentOrder: payment-core pushes each committed change of the
order, so a HIS waiting for settlement (or a kiosk showing progress) waits on one stream instead of
polling GetPaymentOrder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import grpc

from medpay.client.calls import RetryPolicy
from medpay.client.errors import MedPayError, error_from_rpc
from medpay.payment.v1 import payment_pb2

# The stream ends after these (see WatchPaymentOrder in payment.proto). NEEDS_ATTENTION is not
# final: a query or a person still moves such an order on.
FINAL_STATES = frozenset(
    {payment_pb2.ORDER_STATUS_SETTLED, payment_pb2.ORDER_STATUS_CLOSED, payment_pb2.ORDER_STATUS_REFUNDED}
)
_MIN_TIMEOUT_S = 0.001


async def stream_rpc(method: Callable[..., Any], request: Any, timeout_s: float) -> AsyncGenerator[Any, None]:
    """One server-streaming call with a deadline; its failure as MedPayError. The call is
    cancelled as soon as the caller stops reading."""
    call = method(request, timeout=timeout_s)
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError as error:
        raise error_from_rpc(error) from error
    finally:
        call.cancel()


async def follow_order(
    watch: Callable[..., Any], order_id: str, timeout_s: float, retry: RetryPolicy
) -> AsyncGenerator[payment_pb2.PaymentOrder, None]:
    """The order now, then each change as it commits, until a final state; MedPayError
    (DEADLINE_EXCEEDED) when `timeout_s` pass first. A stream that fails UNAVAILABLE (a replica
    going away) is opened again, at most `retry.attempts` times, and goes on where it was: the
    state it repeats first is not yielded twice."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + timeout_s
    request = payment_pb2.WatchPaymentOrderRequest(order_id=order_id)
    last: payment_pb2.PaymentOrder | None = None
    for attempt in range(1, retry.attempts + 1):
        left = max(give_up_at - loop.time(), _MIN_TIMEOUT_S)
        try:
            async with aclosing(stream_rpc(watch, request, left)) as responses:
                async for response in responses:
                    if response.order != last:
                        last = response.order
                        yield response.order
            return
        except MedPayError as error:
            if not error.retryable or attempt == retry.attempts:
                raise
        backoff = min(retry.initial_backoff_s * 2 ** (attempt - 1), retry.max_backoff_s)
        await asyncio.sleep(min(backoff, max(give_up_at - loop.time(), 0.0)))
