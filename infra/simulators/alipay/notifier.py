"""Asynchronous notifications (异步通知) as Alipay sends them: an HTTP POST of
application/x-www-form-urlencoded parameters (notify_type trade_status_sync), RSA2-signed over the
sorted `k=v&...` of every parameter but sign and sign_type, to the notify_url of the trade.

Only the plain body `success` acknowledges; anything else (another body, an error status, no
answer within 5 s) is retried on Alipay's commonly quoted schedule 4m,10m,10m,1h,2h,6h,15h
(uncertain, see the reference notes), which `time_scale` shrinks for tests. Every attempt is
recorded in the store.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from infra.simulators.alipay.faults import NOTIFY_MODES, FaultBook
from infra.simulators.alipay.gateway import Clock, beijing
from infra.simulators.alipay.signing import AlipaySigner
from infra.simulators.alipay.store import DeliveryAttempt, SimStore
from infra.simulators.delivery import DeliveryFailed, NotificationPost

RETRY_INTERVALS_S: tuple[float, ...] = (4 * 60, 10 * 60, 10 * 60, 3600, 2 * 3600, 6 * 3600, 15 * 3600)
Sleep = Callable[[float], Awaitable[None]]
_log = logging.getLogger("alipay_sim.notifier")


def delivery_schedule(time_scale: float = 1.0) -> tuple[float, ...]:
    if time_scale <= 0:
        raise ValueError("time_scale must be positive")
    return (0.0, *(interval * time_scale for interval in RETRY_INTERVALS_S))


@dataclass(frozen=True, slots=True)
class Notice:
    params: dict[str, str]  # the business parameters; the common ones and the signature are added
    notify_url: str
    out_trade_no: str
    out_request_no: str | None
    traceparent: str | None


class Notifier:
    def __init__(
        self,
        post: NotificationPost,
        signer: AlipaySigner,
        app_id: str,
        store: SimStore,
        faults: FaultBook,
        clock: Clock,
        delays: tuple[float, ...],
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._post, self._signer, self._app_id = post, signer, app_id
        self._store, self._faults, self._clock = store, faults, clock
        self._delays, self._sleep = delays, sleep
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    def send(self, notice: Notice, fault_operation: str) -> None:
        """Schedule delivery, unless a `lost` fault swallows it; `duplicate` sends it twice."""
        if self._closed or not notice.notify_url:
            return
        fault = self._faults.take({fault_operation}, NOTIFY_MODES)
        if fault is not None and fault.mode == "lost":
            _log.info("notification lost on purpose", extra={"fields": {"out_trade_no": notice.out_trade_no}})
            return
        copies = 2 if fault is not None and fault.mode == "duplicate" else 1
        hold = fault.delay_s if fault is not None and fault.mode == "late" else 0.0
        self._spawn(self._deliver(notice, self._form(notice), copies, hold))

    async def close(self) -> None:
        self._closed = True
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def settle(self) -> None:
        """Wait for every scheduled delivery to finish (tests)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _form(self, notice: Notice) -> dict[str, str]:
        params = {
            "notify_time": beijing(self._clock()),
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16),
            "app_id": self._app_id,
            "auth_app_id": self._app_id,
            "charset": "utf-8",
            "version": "1.0",
            **notice.params,
        }
        return {**params, "sign": self._signer.sign_notification(params), "sign_type": "RSA2"}

    async def _deliver(self, notice: Notice, form: dict[str, str], copies: int, hold: float) -> None:
        parent = propagate.extract({"traceparent": notice.traceparent}) if notice.traceparent else Context()
        tracer = trace.get_tracer("alipay_sim.notifier")
        with tracer.start_as_current_span("notify trade_status_sync", context=parent, kind=SpanKind.CLIENT):
            await self._sleep(hold)
            for delivery in range(1, copies + 1):
                for attempt, delay in enumerate(self._delays, start=1):
                    await self._sleep(delay)
                    if await self._attempt(notice, form, delivery, attempt):
                        break
                else:
                    _log.warning(
                        "notification never acknowledged",
                        extra={"fields": {"out_trade_no": notice.out_trade_no}},
                    )

    async def _attempt(self, notice: Notice, form: dict[str, str], delivery: int, attempt: int) -> bool:
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        propagate.inject(headers)
        status_code: int | None = None
        answer: str | None = None
        error: str | None = None
        try:
            answered = await self._post.post(notice.notify_url, urlencode(form).encode(), headers)
            status_code, answer = answered.status, answered.text[:200]
        except DeliveryFailed as exc:
            error = str(exc)
        recorded = DeliveryAttempt(
            form["notify_id"], notice.out_trade_no, notice.out_request_no, notice.notify_url,
            delivery, attempt, status_code, answer, error, self._clock(),
        )  # fmt: skip
        self._store.record_delivery(recorded)
        return recorded.acknowledged
