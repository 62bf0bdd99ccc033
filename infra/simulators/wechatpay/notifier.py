"""Payment and refund notifications (回调通知), signed and encrypted like the real ones.

Delivery runs in a background task: the first try at once, then retries at 0.2 / 0.5 / 1 s until a
2xx answer (the real gateway retries for 24 h; a simulator keeps it short and bounded). Every
attempt is recorded in the store.

Simulator convenience: the `traceparent` the merchant sent when it placed the order (or asked for
the refund) becomes the parent of the notification, so one settlement is one trace across the
mesh and the simulator. The real gateway knows nothing of our traces.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from infra.simulators.wechatpay.faults import NOTIFY_MODES, FaultBook
from infra.simulators.wechatpay.gateway import Clock
from infra.simulators.wechatpay.shapes import rfc3339
from infra.simulators.wechatpay.signing import PlatformSigner, encrypt_resource
from infra.simulators.wechatpay.store import DeliveryAttempt, SimStore

RETRY_DELAYS_S = (0.0, 0.2, 0.5, 1.0)
_log = logging.getLogger("wechatpay_sim.notifier")


@dataclass(frozen=True, slots=True)
class Notice:
    event_type: str  # TRANSACTION.SUCCESS | REFUND.SUCCESS
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
        client: httpx.AsyncClient,
        signer: PlatformSigner,
        apiv3_key: str,
        store: SimStore,
        faults: FaultBook,
        clock: Clock,
        delays: tuple[float, ...] = RETRY_DELAYS_S,
    ) -> None:
        self._client, self._signer, self._apiv3_key = client, signer, apiv3_key
        self._store, self._faults, self._clock, self._delays = store, faults, clock, delays
        self._pending: set[asyncio.Task[None]] = set()

    def send(self, notice: Notice, fault_operation: str) -> None:
        """Schedule delivery, unless a `lost` fault swallows it; `duplicate` delivers it twice."""
        fault = self._faults.take({fault_operation}, NOTIFY_MODES)
        if fault is not None and fault.mode == "lost":
            _log.info("notification lost on purpose", extra={"fields": {"out_trade_no": notice.out_trade_no}})
            return
        copies = 2 if fault is not None and fault.mode == "duplicate" else 1
        self._spawn(self._deliver(notice, self._envelope(notice), copies))

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

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
            for _ in range(copies):
                await self._deliver_with_retries(notice, body)

    async def _deliver_with_retries(self, notice: Notice, body: bytes) -> None:
        for attempt, delay in enumerate(self._delays, start=1):
            await asyncio.sleep(delay)
            if await self._attempt(notice, body, attempt):
                return
        _log.warning("notification not acknowledged", extra={"fields": {"out_trade_no": notice.out_trade_no}})

    async def _attempt(self, notice: Notice, body: bytes, attempt: int) -> bool:
        headers = {"Content-Type": "application/json", **self._signer.headers_for(body)}
        propagate.inject(headers)
        status_code: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(notice.notify_url, content=body, headers=headers)
            status_code = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._record(notice, body, attempt, status_code, error)
        return status_code is not None and 200 <= status_code < 300

    def _record(
        self, notice: Notice, body: bytes, attempt: int, status_code: int | None, error: str | None
    ) -> None:
        event_id = str(json.loads(body)["id"])
        self._store.record_delivery(
            DeliveryAttempt(
                event_id=event_id,
                event_type=notice.event_type,
                out_trade_no=notice.out_trade_no,
                out_refund_no=notice.out_refund_no,
                notify_url=notice.notify_url,
                attempt=attempt,
                status_code=status_code,
                error=error,
                sent_at=self._clock(),
            )
        )
