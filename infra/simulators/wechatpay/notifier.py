"""Payment and refund notifications (回调通知), signed and encrypted like the real ones.

Delivery runs in a background task on WeChat Pay's own schedule: the first try at once, then, while
the merchant does not answer 2xx (an error status, no answer, or no answer within 5 s), resends
15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h later: 16 tries over 24h4m, then it gives
up. `time_scale` shrinks every wait (0.01 makes 15 s into 150 ms) so tests can run the whole
schedule. Every attempt is recorded in the store (delivery, attempt, status); stopping the
simulator cancels every delivery still waiting.

Simulator convenience: the `traceparent` the merchant sent when it placed the order (or asked for
the refund) becomes the parent of the notification, so one settlement is one trace across the
mesh and the simulator. The real gateway knows nothing of our traces.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from infra.simulators.delivery import DeliveryFailed, NotificationPost
from infra.simulators.wechatpay.faults import NOTIFY_MODES, FaultBook
from infra.simulators.wechatpay.gateway import Clock
from infra.simulators.wechatpay.shapes import rfc3339
from infra.simulators.wechatpay.signing import PlatformSigner, encrypt_resource
from infra.simulators.wechatpay.store import DeliveryAttempt, SimStore

# 通知频率 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h, 总计 24h4m (WeChat Pay API v3,
# 支付结果通知 / 退款结果通知): the wait before each resend, counted from the try before it.
RESEND_INTERVALS_S: tuple[float, ...] = (
    15, 15, 30, 3 * 60, 10 * 60, 20 * 60, 30 * 60, 30 * 60, 30 * 60, 60 * 60,
    3 * 3600, 3 * 3600, 3 * 3600, 6 * 3600, 6 * 3600,
)  # fmt: skip
Sleep = Callable[[float], Awaitable[None]]
_log = logging.getLogger("wechatpay_sim.notifier")


def delivery_schedule(time_scale: float = 1.0) -> tuple[float, ...]:
    """The wait before each try of one delivery: 0 for the first, then the resends, scaled."""
    if time_scale <= 0:
        raise ValueError("time_scale must be positive")
    return (0.0, *(interval * time_scale for interval in RESEND_INTERVALS_S))


@dataclass(frozen=True, slots=True)
class Notice:
    event_type: str  # TRANSACTION.SUCCESS | REFUND.SUCCESS | REFUND.ABNORMAL | REFUND.CLOSED
    summary: str
    original_type: str  # transaction | refund
    resource: dict[str, object]
    notify_url: str
    out_trade_no: str
    out_refund_no: str | None
    traceparent: str | None


class Notifier:
    def __init__(
        self,
        post: NotificationPost,
        signer: PlatformSigner,
        apiv3_key: str,
        store: SimStore,
        faults: FaultBook,
        clock: Clock,
        delays: tuple[float, ...] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._post, self._signer, self._apiv3_key = post, signer, apiv3_key
        self._store, self._faults, self._clock = store, faults, clock
        self._delays = delivery_schedule() if delays is None else delays
        self._sleep = sleep
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    def send(self, notice: Notice, fault_operation: str) -> None:
        """Schedule delivery, unless a `lost` fault swallows it; `duplicate` delivers it twice."""
        if self._closed:
            return
        fault = self._faults.take({fault_operation}, NOTIFY_MODES)
        if fault is not None and fault.mode == "lost":
            _log.info("notification lost on purpose", extra={"fields": {"out_trade_no": notice.out_trade_no}})
            return
        copies = 2 if fault is not None and fault.mode == "duplicate" else 1
        self._spawn(self._deliver(notice, self._envelope(notice), copies))

    async def close(self) -> None:
        """Stop: nothing new is sent, and deliveries waiting for their next try are cancelled."""
        self._closed = True
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        """Deliveries not finished: sending, or waiting for their next try."""
        return len(self._pending)

    async def settle(self) -> None:
        """Wait for every scheduled delivery to finish (tests and graceful stops)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _envelope(self, notice: Notice) -> bytes:
        plaintext = json.dumps(notice.resource, ensure_ascii=False)
        envelope = {
            "id": f"EV-{uuid.uuid4().hex[:20].upper()}",
            "create_time": rfc3339(self._clock()),
            "resource_type": "encrypt-resource",
            "event_type": notice.event_type,
            "summary": notice.summary,
            "resource": encrypt_resource(self._apiv3_key, plaintext, original_type=notice.original_type),
        }
        return json.dumps(envelope, ensure_ascii=False).encode("utf-8")

    async def _deliver(self, notice: Notice, body: bytes, copies: int) -> None:
        parent = propagate.extract({"traceparent": notice.traceparent}) if notice.traceparent else Context()
        tracer = trace.get_tracer("wechatpay_sim.notifier")
        span_name = f"notify {notice.event_type}"
        with tracer.start_as_current_span(span_name, context=parent, kind=SpanKind.CLIENT):
            for delivery in range(1, copies + 1):
                await self._deliver_on_schedule(notice, body, delivery)

    async def _deliver_on_schedule(self, notice: Notice, body: bytes, delivery: int) -> None:
        for attempt, delay in enumerate(self._delays, start=1):
            await self._sleep(delay)
            if await self._attempt(notice, body, delivery, attempt):
                return
        fields = {"out_trade_no": notice.out_trade_no, "attempts": len(self._delays)}
        _log.warning("notification never acknowledged; giving up", extra={"fields": fields})

    async def _attempt(self, notice: Notice, body: bytes, delivery: int, attempt: int) -> bool:
        headers = {"Content-Type": "application/json", **self._signer.headers_for(body)}
        propagate.inject(headers)
        status_code: int | None = None
        error: str | None = None
        try:
            status_code = (await self._post.post(notice.notify_url, body, headers)).status
        except DeliveryFailed as exc:
            error = str(exc)
        recorded = DeliveryAttempt(
            event_id=str(json.loads(body)["id"]),
            event_type=notice.event_type,
            out_trade_no=notice.out_trade_no,
            out_refund_no=notice.out_refund_no,
            notify_url=notice.notify_url,
            attempt=attempt,
            status_code=status_code,
            error=error,
            sent_at=self._clock(),
            delivery=delivery,
        )
        self._store.record_delivery(recorded)
        return recorded.acknowledged
