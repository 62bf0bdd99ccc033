"""`play_morning`: the outpatient front application layer of one hospital morning, through the
facade only, as a HIS cashier module would use it.

Each visit is one trace: a root span "his.outpatient_visit" around create order -> pay -> the
patient scanning the QR code (a POST to the WeChat Pay simulator, standing in for the phone) ->
waiting until SETTLED on the facade's watch of the order (WatchPaymentOrder: payment-core pushes
each change as it commits; nothing polls). With the facade's channels carrying OpenTelemetry's
client interceptors and httpx instrumented, that trace continues through every service and
simulator the visit touches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import TypeVar

import httpx
from medpay.client import MedPayClient, MedPayError, OrderWaitError
from medpay.payment.v1 import payment_pb2
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode

from infra.simulators.his_driver.report import Failure, MorningReport, RefundOutcome, VisitOutcome
from infra.simulators.his_driver.visits import VisitPlan, plan_visits
from services.runtime.telemetry import ATTR_AMOUNT_FEN, ATTR_ORDER_ID, ATTR_SCENE

T = TypeVar("T")
Result = TypeVar("Result")
Progress = Callable[[str], None]  # called with "visit" or "refund" as each one finishes
VISIT_SPAN = "his.outpatient_visit"
REFUND_SPAN = "his.outpatient_refund"
REFUND_REASON = "患者申请退费"
_EXPECTED_ERRORS = (MedPayError, OrderWaitError, httpx.HTTPError)
_tracer = trace.get_tracer("medpay.his_driver")


@dataclass(frozen=True, slots=True)
class DriverOptions:
    insured_share: float = 0.6
    use_personal_account: bool = True  # False: every insured patient owes cash through the channel
    concurrency: int = 4  # patients at the cashier windows at the same time
    population_size: int = 500  # insured people the NHSA simulator has seeded
    campus_code: str = "FZ01"
    wechat_sim_url: str = "http://127.0.0.1:9102"
    alipay_sim_url: str = "http://127.0.0.1:9103"
    # How the cash share is paid: WeChat native QR (the patient scans), a WeChat code payment
    # (the cashier scans the patient's 付款码), Alipay QR or code, two payments (half by WeChat
    # QR, the rest by WeChat code payment), or "mixed": each visit one of those in turn.
    way_to_pay: str = "wechat_qr"
    settle_timeout_s: float = 60.0
    run_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6].upper())


# A morning's ways to pay at the windows and kiosks, taken in turn by "mixed".
MIXED_WAYS = (
    "wechat_qr", "wechat_code", "alipay_qr", "cash", "wechat_qr", "two_payments", "alipay_code", "pos",
)  # fmt: skip
# The cashier at the window, as the HIS reports them with cash, POS payments and window refunds.
CASHIER_ID = "C001"
# Payment codes as a cashier's scanner reads them (WeChat: 18 digits from 10-15; Alipay: 25-30).
_WECHAT_CODE = "134567890123456789"
_ALIPAY_CODE = "286543210987654321"


class StepFailed(Exception):
    def __init__(self, step: str, error: Exception) -> None:
        super().__init__(f"{step}: {error}")
        self.step = step
        self.error = error


async def play_morning(
    client: MedPayClient,
    visits: int,
    refunds: int,
    seed: int,
    progress: Progress | None = None,
    *,
    options: DriverOptions | None = None,
) -> MorningReport:
    """Play `visits` outpatient visits, a few at a time, then refund `refunds` settled ones in full."""
    options = options or DriverOptions()
    plans = plan_visits(
        visits,
        seed,
        options.insured_share,
        options.population_size,
        options.run_tag,
        options.use_personal_account,
    )
    windows = asyncio.Semaphore(options.concurrency)
    async with httpx.AsyncClient(base_url=options.wechat_sim_url, trust_env=False, timeout=10.0) as wechat:
        cashier = Cashier(client, wechat, options)
        outcomes = await asyncio.gather(
            *(_at_window(windows, cashier.visit, p, progress, "visit") for p in plans)
        )
        chosen = choose_refunds(outcomes, refunds, seed)
        if options.way_to_pay == "mixed" and plans:
            # One inpatient discharged this morning (its bill is the first visit's lines, self-pay).
            stay = dataclasses.replace(plans[0], his_order_no=f"ZY{plans[0].his_order_no}", insurance=None)
            outcomes = [*outcomes, await cashier.inpatient_stay(stay)]
        refunded = await asyncio.gather(
            *(_at_window(windows, cashier.refund, v, progress, "refund") for v in chosen)
        )
    return MorningReport(list(outcomes), list(refunded))


async def _at_window(
    windows: asyncio.Semaphore,
    serve: Callable[[T], Awaitable[Result]],
    item: T,
    progress: Progress | None,
    phase: str,
) -> Result:
    async with windows:
        result = await serve(item)
    if progress is not None:
        progress(phase)
    return result


def choose_refunds(visits: Sequence[VisitOutcome], count: int, seed: int) -> list[VisitOutcome]:
    """`count` settled visits to refund, alternating insured and self-pay so both paths are used."""
    rng = random.Random(seed + 1)
    insured = [visit for visit in visits if visit.settled and visit.insured]
    self_pay = [visit for visit in visits if visit.settled and not visit.insured]
    rng.shuffle(insured)
    rng.shuffle(self_pay)
    mixed = [visit for pair in zip_longest(insured, self_pay) for visit in pair if visit is not None]
    return mixed[:count]


class Cashier:
    """One outpatient cashier module: bills a visit, has the patient pay, refunds on request."""

    def __init__(self, client: MedPayClient, wechat: httpx.AsyncClient, options: DriverOptions) -> None:
        self._client = client
        self._wechat = wechat
        self._options = options

    async def visit(self, plan: VisitPlan) -> VisitOutcome:
        with _tracer.start_as_current_span(VISIT_SPAN, context=Context()) as span:
            _describe_visit(span, plan)
            started = time.perf_counter()
            try:
                order = await self._settle(plan, span)
            except StepFailed as failed:
                return _failed_visit(plan, _failure(span, plan.his_order_no, failed))
            return _settled_visit(plan, order, _trace_id(span), (time.perf_counter() - started) * 1000)

    async def _settle(self, plan: VisitPlan, span: Span) -> payment_pb2.PaymentOrder:
        order = await _step("create", self._create(plan))
        span.set_attribute(ATTR_ORDER_ID, order.order_id)
        if order.cash_due_fen == 0:
            await _step("pay", self._client.pay(order.order_id, payment_pb2.CHANNEL_NONE))
        else:
            await self._collect(order, plan.index)
        timeout_s = self._options.settle_timeout_s
        return await _step("settle", self._client.wait_until_settled(order.order_id, timeout_s))

    async def _collect(self, order: payment_pb2.PaymentOrder, visit_index: int) -> None:
        way, due = self._options.way_to_pay, order.cash_due_fen
        if way == "mixed":
            way = MIXED_WAYS[visit_index % len(MIXED_WAYS)]
        if way == "two_payments" and due >= 2:
            await self._by_qr(order.order_id, payment_pb2.CHANNEL_WECHAT_PAY, due // 2)
            await self._by_code(order.order_id, payment_pb2.CHANNEL_WECHAT_PAY)
        elif way in ("wechat_code", "alipay_code"):
            channel = payment_pb2.CHANNEL_ALIPAY if way == "alipay_code" else payment_pb2.CHANNEL_WECHAT_PAY
            await self._by_code(order.order_id, channel)
        elif way == "alipay_qr":
            await self._by_qr(order.order_id, payment_pb2.CHANNEL_ALIPAY)
        elif way == "cash":
            method = payment_pb2.PAY_METHOD_CASH
            paying = self._client.pay(
                order.order_id, payment_pb2.CHANNEL_CASH, method, amount_fen=due, operator_id=CASHIER_ID
            )
            await _step("pay", paying)
        elif way == "pos":
            paying = self._client.pay(
                order.order_id, payment_pb2.CHANNEL_POS, payment_pb2.PAY_METHOD_POS, amount_fen=due,
                operator_id=CASHIER_ID, pos=_slip(),
            )  # fmt: skip
            await _step("pay", paying)
        else:
            await self._by_qr(order.order_id, payment_pb2.CHANNEL_WECHAT_PAY)

    async def _by_qr(
        self, order_id: str, channel: payment_pb2.Channel.ValueType, amount_fen: int = 0
    ) -> None:
        method = payment_pb2.PAY_METHOD_NATIVE_QR
        paid = await _step("pay", self._client.pay(order_id, channel, method, amount_fen=amount_fen))
        await _step("scan", self._patient_scans(paid.payment.out_trade_no, channel))

    async def _by_code(self, order_id: str, channel: payment_pb2.Channel.ValueType) -> None:
        """The cashier scans the patient's payment code: paid in the answer (what remains)."""
        code = _ALIPAY_CODE if channel == payment_pb2.CHANNEL_ALIPAY else _WECHAT_CODE
        method = payment_pb2.PAY_METHOD_BARCODE
        await _step("pay", self._client.pay(order_id, channel, method, auth_code=code))

    async def _create(self, plan: VisitPlan) -> payment_pb2.PaymentOrder:
        return await self._client.create_outpatient_order(
            his_order_no=plan.his_order_no,
            his_patient_id=plan.his_patient_id,
            items=plan.lines,
            campus_code=self._options.campus_code,
            dept_code=plan.department.code,
            doctor_code=plan.doctor.code,
            doctor_name=plan.doctor.name,
            insurance=plan.insurance,
        )

    async def _patient_scans(
        self, out_trade_no: str, channel: payment_pb2.Channel.ValueType = payment_pb2.CHANNEL_WECHAT_PAY
    ) -> None:
        """The patient's phone pays the QR code: the simulator's stand-in for the channel's app."""
        if channel == payment_pb2.CHANNEL_ALIPAY:
            async with httpx.AsyncClient(base_url=self._options.alipay_sim_url, timeout=10) as alipay:
                response = await alipay.post("/sim/pay", json={"out_trade_no": out_trade_no})
        else:
            response = await self._wechat.post("/sim/pay", json={"out_trade_no": out_trade_no})
        response.raise_for_status()

    async def refund(self, visit: VisitOutcome) -> RefundOutcome:
        with _tracer.start_as_current_span(REFUND_SPAN, context=Context()) as span:
            span.set_attribute(ATTR_ORDER_ID, visit.order_id)
            span.set_attribute("his.order_no", visit.his_order_no)
            # Every other self-pay refund is partial (a drug returned): half of what was paid.
            partial = not visit.insured and visit.cash_fen >= 2 and int(visit.order_id[-1], 16) % 2 == 0
            cash_fen = visit.cash_fen // 2 if partial else 0
            try:
                asking = self._client.refund_order(
                    visit.order_id, REFUND_REASON, cash_fen=cash_fen, operator_id=CASHIER_ID
                )
                asked = await _step("refund", asking)
                await self._hand_over_at_window(visit.order_id)
                timeout_s = self._options.settle_timeout_s
                final = self._client.wait_until_refund_final(
                    visit.order_id, asked.refund.refund_id, timeout_s
                )
                order = await _step("refund-confirm", final)
            except StepFailed as failed:
                failure = _failure(span, visit.his_order_no, failed)
                return RefundOutcome(visit.his_order_no, visit.order_id, failure.trace_id, failure=failure)
            return _refund_outcome(visit, order, _trace_id(span))

    async def _hand_over_at_window(self, order_id: str) -> None:
        """A refund to cash or a bank card waits for the cashier to pay it out: confirm each one."""
        order = await _step("refund-confirm", self._client.get_order(order_id))
        window = {
            p.payment_id: p.channel
            for p in order.payments
            if p.channel in (payment_pb2.CHANNEL_CASH, payment_pb2.CHANNEL_POS)
        }
        for refund in order.refunds:
            if refund.status == payment_pb2.REFUND_STATUS_PROCESSING and refund.payment_id in window:
                slip = _slip() if window[refund.payment_id] == payment_pb2.CHANNEL_POS else None
                confirming = self._client.confirm_window_refund(
                    order_id, refund.refund_id, CASHIER_ID, pos=slip
                )
                await _step("refund-confirm", confirming)

    async def inpatient_stay(self, plan: VisitPlan) -> VisitOutcome:
        """An inpatient: a deposit (预交金) paid in cash at admission, then the self-pay discharge
        bill taken from it; the surplus goes back to the cash window (the cashier pays it out)."""
        inpatient_no = f"ZY{plan.his_order_no[-10:]}"
        with _tracer.start_as_current_span("his.inpatient_stay", context=Context()) as span:
            started = time.perf_counter()
            deposit = plan.total_fen + 10_000
            try:
                await _step("top-up", self._client.top_up_deposit(
                    inpatient_no, deposit, payment_pb2.CHANNEL_CASH, payment_pb2.PAY_METHOD_CASH,
                    campus_code=self._options.campus_code, his_patient_id=plan.his_patient_id,
                    operator_id=CASHIER_ID,
                ))  # fmt: skip
                done = await _step("discharge", self._client.settle_discharge(
                    inpatient_no=inpatient_no, his_patient_id=plan.his_patient_id, items=plan.lines,
                    campus_code=self._options.campus_code, dept_code=plan.department.code,
                ))  # fmt: skip
                span.set_attribute(ATTR_ORDER_ID, done.order.order_id)
                for refund in done.deposit_refunds:  # the surplus, back to the cash top-up
                    await self._hand_over_at_window(refund.order_id)
                order = await _step(
                    "settle",
                    self._client.wait_until_settled(done.order.order_id, self._options.settle_timeout_s),
                )
            except StepFailed as failed:
                return _failed_visit(plan, _failure(span, plan.his_order_no, failed))
            return _settled_visit(plan, order, _trace_id(span), (time.perf_counter() - started) * 1000)


def _slip() -> payment_pb2.PosSlip:
    """A bank-card terminal's slip: its reference number (参考号) is unique per slip."""
    return payment_pb2.PosSlip(
        terminal_id="12345678", batch_no="000123", reference_no=str(uuid.uuid4().int)[:12],
        masked_card_no="622202******1234",
    )  # fmt: skip


async def _step(name: str, action: Awaitable[T]) -> T:
    """Await one step of a visit; an expected failure is named after the step."""
    try:
        return await action
    except _EXPECTED_ERRORS as error:
        raise StepFailed(name, error) from error


def _trace_id(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def _describe_visit(span: Span, plan: VisitPlan) -> None:
    # Only what the hospital may log: bill number, department, amounts. No patient identifier.
    span.set_attribute("his.order_no", plan.his_order_no)
    span.set_attribute("his.dept_code", plan.department.code)
    span.set_attribute("his.insured", plan.insurance is not None)
    span.set_attribute("his.item_count", len(plan.lines))
    span.set_attribute(ATTR_SCENE, "OUTPATIENT")
    span.set_attribute(ATTR_AMOUNT_FEN, plan.total_fen)


def _failure(span: Span, his_order_no: str, failed: StepFailed) -> Failure:
    span.set_status(Status(StatusCode.ERROR, f"{failed.step} failed"))
    span.set_attribute("his.failed_step", failed.step)
    return Failure(his_order_no, failed.step, str(failed.error), _trace_id(span))


def _failed_visit(plan: VisitPlan, failure: Failure) -> VisitOutcome:
    return VisitOutcome(
        plan.his_order_no, plan.department.name, plan.insurance is not None, failure.trace_id, failure=failure
    )


def _settled_visit(
    plan: VisitPlan, order: payment_pb2.PaymentOrder, trace_id: str, elapsed_ms: float
) -> VisitOutcome:
    return VisitOutcome(
        his_order_no=plan.his_order_no,
        dept_name=plan.department.name,
        insured=order.insured,
        trace_id=trace_id,
        order_id=order.order_id,
        settled=True,
        total_fen=order.total_fen,
        fund_fen=order.split.fund_pay_sumamt_fen,
        personal_account_fen=order.split.acct_pay_fen,
        cash_fen=order.cash_paid_fen,
        elapsed_ms=elapsed_ms,
    )


def _refund_outcome(visit: VisitOutcome, order: payment_pb2.PaymentOrder, trace_id: str) -> RefundOutcome:
    done = [refund for refund in order.refunds if refund.status == payment_pb2.REFUND_STATUS_SUCCEEDED]
    return RefundOutcome(
        his_order_no=visit.his_order_no,
        order_id=visit.order_id,
        trace_id=trace_id,
        refunded=True,
        cash_fen=sum(refund.cash_fen for refund in done),
        fund_fen=sum(refund.fund_fen for refund in done),
        personal_account_fen=sum(refund.personal_account_fen for refund in done),
        refund_count=len(done),
    )
