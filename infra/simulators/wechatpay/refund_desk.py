"""Refunds after the answer: each PROCESSING refund reaches its outcome when its time comes, and the
REFUND.* notification goes to the notify_url the merchant gave with the refund.

The real gateway answers a refund PROCESSING and finishes it later (seconds for the patient's WeChat
balance, days for a bank card). Here the simulator's refund mode and delay, or an armed outcome
fault, decide how each new refund goes (see `plan`). Timers live in the event loop; the planned
outcome and its time are stored, so a restarted simulator picks up the refunds still in flight.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from infra.simulators.wechatpay.faults import Fault
from infra.simulators.wechatpay.gateway import SYNCHRONOUS_SUCCESS, Clock, RefundPlan, SimulatedGateway
from infra.simulators.wechatpay.notifier import Notice, Notifier, Sleep
from infra.simulators.wechatpay.shapes import refund_notice_json
from infra.simulators.wechatpay.store import SimOrder, SimRefund

REFUND_MODES = frozenset({"processing", "sync"})
# How long a refund stays PROCESSING by default, in simulated seconds (times the time scale): a
# refund to the patient's WeChat balance (零钱) usually lands within seconds.
DEFAULT_REFUND_DELAY_S = 5.0
_NOTICES = {
    "SUCCESS": ("REFUND.SUCCESS", "退款成功"),
    "ABNORMAL": ("REFUND.ABNORMAL", "退款异常"),
    "CLOSED": ("REFUND.CLOSED", "退款关闭"),
}
_FAULT_OUTCOMES = {"processing": "SUCCESS", "abnormal": "ABNORMAL", "closed": "CLOSED"}
_log = logging.getLogger("wechatpay_sim.refunds")


def refund_notice(refund: SimRefund, order: SimOrder) -> Notice:
    """The REFUND.* notification for a refund that has reached SUCCESS, ABNORMAL or CLOSED."""
    event_type, summary = _NOTICES[refund.status]
    return Notice(
        event_type,
        summary,
        "refund",
        refund_notice_json(refund, order),
        refund.notify_url or "",
        order.out_trade_no,
        refund.out_refund_no,
        refund.traceparent,
    )


class RefundDesk:
    def __init__(
        self,
        gateway: SimulatedGateway,
        notifier: Notifier,
        clock: Clock,
        mode: str,
        delay_s: float,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`mode` "processing" (the real gateway's way) or "sync" (SUCCESS in the answer);
        `delay_s` the wall-clock seconds a PROCESSING refund takes (already scaled)."""
        if mode not in REFUND_MODES or delay_s < 0:
            raise ValueError(f"refund mode must be one of {sorted(REFUND_MODES)}, delay >= 0")
        self._gateway, self._notifier, self._clock, self._sleep = gateway, notifier, clock, sleep
        self._mode, self._delay_s = mode, delay_s
        self._timers: dict[str, asyncio.Task[None]] = {}

    @property
    def delay_s(self) -> float:
        return self._delay_s

    def plan(self, fault: Fault | None) -> RefundPlan:
        """How the next new refund goes: an armed outcome fault, else the simulator's mode."""
        if fault is None:
            return SYNCHRONOUS_SUCCESS if self._mode == "sync" else RefundPlan("SUCCESS", self._delay_s)
        if fault.mode == "sync_success":
            return SYNCHRONOUS_SUCCESS
        return RefundPlan(_FAULT_OUTCOMES[fault.mode], fault.delay_s)

    def rerouted_plan(self) -> RefundPlan:
        """A re-routed ABNORMAL refund goes to a card that works: SUCCESS after the usual delay."""
        return RefundPlan("SUCCESS", self._delay_s)

    def start(self) -> None:
        """Take up the refunds a previous run left PROCESSING."""
        for refund in self._gateway.refunds_in_flight():
            self._schedule(refund)

    def accepted(self, refund: SimRefund, order: SimOrder) -> None:
        """A refund was created or re-routed: notify now if it is done, else finish it later."""
        if refund.status == "PROCESSING":
            self._schedule(refund)
        else:
            self._notify(refund, order)

    def finish_now(self, out_refund_no: str) -> tuple[SimRefund, SimOrder] | None:
        """Test control: the refund reaches its planned outcome now instead of at its time."""
        timer = self._timers.pop(out_refund_no, None)
        if timer is not None:
            timer.cancel()
        return self._finish(out_refund_no)

    async def settle(self) -> None:
        """Wait until every refund in flight has reached its outcome (tests)."""
        while self._timers:
            await asyncio.gather(*list(self._timers.values()), return_exceptions=True)

    async def close(self) -> None:
        timers = list(self._timers.values())
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

    def _schedule(self, refund: SimRefund) -> None:
        no, delay_s = refund.out_refund_no, _seconds_until(refund.outcome_at, self._clock())
        timer = asyncio.get_running_loop().create_task(self._finish_later(no, delay_s))
        self._timers[no] = timer
        timer.add_done_callback(lambda done: self._forget(no, done))

    def _forget(self, out_refund_no: str, timer: asyncio.Task[None]) -> None:
        if self._timers.get(out_refund_no) is timer:
            del self._timers[out_refund_no]

    async def _finish_later(self, out_refund_no: str, delay_s: float) -> None:
        await self._sleep(delay_s)
        self._finish(out_refund_no)

    def _finish(self, out_refund_no: str) -> tuple[SimRefund, SimOrder] | None:
        finished = self._gateway.finish_refund(out_refund_no)
        if finished is not None:
            self._notify(*finished)
        return finished

    def _notify(self, refund: SimRefund, order: SimOrder) -> None:
        if refund.notify_url:
            self._notifier.send(refund_notice(refund, order), "refund_notify")
        else:
            _log.info("refund finished without notify_url", extra={"fields": {"status": refund.status}})


def _seconds_until(moment: datetime | None, now: datetime) -> float:
    return 0.0 if moment is None else max(0.0, (moment - now).total_seconds())
