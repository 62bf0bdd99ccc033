"""`MedPayClient`: one method per business step a HIS module needs, over the generated stubs.

    async with MedPayClient.connect() as medpay:
        order = await medpay.create_outpatient_order(his_order_no=..., his_patient_id=..., items=...)
        paid = await medpay.pay(order.order_id, CHANNEL_WECHAT_PAY, PAY_METHOD_NATIVE_QR)
        settled = await medpay.wait_until_settled(order.order_id, timeout_s=60)  # a stream, no polling

Every mutating call carries a request_id (a fresh uuid4 hex unless the caller passes one, e.g. to
make a retry after a crash a replay) and every attempt a deadline. UNAVAILABLE (and ABORTED
REQUEST_IN_PROGRESS) is retried a bounded number of times with the very same request, so a retry
can never be a second charge.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Self, TypeAlias, TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medpay.client.calls import Deadlines, RetryPolicy, call_rpc
from medpay.client.errors import MedPayError, OrderWaitError
from medpay.client.models import (
    DATA_ADDR,
    INSURANCE_ADDR,
    PAYMENT_ADDR,
    RECONCILIATION_ADDR,
    Addresses,
    ChargeLine,
    InsuredVisit,
    PayResult,
    RefundResult,
)
from medpay.client.watching import follow_order
from medpay.common.v1 import common_pb2
from medpay.data.v1 import data_pb2, data_pb2_grpc
from medpay.events.v1 import events_pb2, events_pb2_grpc
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc
from medpay.reconciliation.v1 import reconciliation_pb2, reconciliation_pb2_grpc

Response = TypeVar("Response")
OrderStatus: TypeAlias = payment_pb2.OrderStatus.ValueType

_PAGE_SIZE = 200
# A reconciliation run takes seconds to minutes: looking twice a second is plenty.
_RUN_POLL_S = 0.5
_REFUND_GIVEN_UP = (payment_pb2.REFUND_STATUS_FAILED, payment_pb2.REFUND_STATUS_ABNORMAL)


def new_request_id() -> str:
    return uuid.uuid4().hex


def _iso(day: date | str) -> str:
    return day.isoformat() if isinstance(day, date) else day


class MedPayClient:
    """An async client of the whole mesh. Create with `connect()`; use as an async context manager
    (or call `aclose()`)."""

    def __init__(
        self, channels: dict[str, grpc.aio.Channel], deadlines: Deadlines, retry: RetryPolicy
    ) -> None:
        self._channels = channels
        self._deadlines = deadlines
        self._retry = retry
        # grpc ships no type information, so the stubs' aio overload is chosen by hand.
        self._payment = cast(
            "payment_pb2_grpc.PaymentServiceAsyncStub",
            payment_pb2_grpc.PaymentServiceStub(channels["payment-core"]),
        )
        self._reconciliation = cast(
            "reconciliation_pb2_grpc.ReconciliationServiceAsyncStub",
            reconciliation_pb2_grpc.ReconciliationServiceStub(channels["reconciliation"]),
        )
        self._data = cast(
            "data_pb2_grpc.DataAggregationServiceAsyncStub",
            data_pb2_grpc.DataAggregationServiceStub(channels["data-aggregation"]),
        )

    @classmethod
    def connect(
        cls,
        payment: str = PAYMENT_ADDR,
        insurance: str = INSURANCE_ADDR,
        reconciliation: str = RECONCILIATION_ADDR,
        data: str = DATA_ADDR,
        *,
        interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
        deadlines: Deadlines | None = None,
        retry: RetryPolicy | None = None,
    ) -> MedPayClient:
        """Open (lazy) channels to the four services. Pass OpenTelemetry's
        `aio_client_interceptors()` as `interceptors` to continue the caller's trace into the mesh."""
        addresses = Addresses(payment, insurance, reconciliation, data)
        channels = {
            service: grpc.aio.insecure_channel(address, interceptors=list(interceptors or ()))
            for service, address in addresses.by_service().items()
        }
        return cls(channels, deadlines or Deadlines(), retry or RetryPolicy())

    @classmethod
    def from_env(cls, **kwargs: Any) -> MedPayClient:
        """Addresses from MEDPAY_*_ADDR (see `Addresses.from_env`)."""
        addresses = Addresses.from_env()
        return cls.connect(
            addresses.payment, addresses.insurance, addresses.reconciliation, addresses.data, **kwargs
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))

    async def _call(
        self, method: Callable[..., Awaitable[Response]], request: Any, timeout_s: float
    ) -> Response:
        return await call_rpc(method, request, timeout_s, self._retry)

    # ---- payment orders -------------------------------------------------------------------

    async def create_outpatient_order(
        self,
        *,
        his_order_no: str,
        his_patient_id: str,
        items: Sequence[ChargeLine],
        campus_code: str,
        dept_code: str,
        doctor_code: str = "",
        doctor_name: str = "",
        insurance: InsuredVisit | None = None,
        scene: payment_pb2.Scene.ValueType = payment_pb2.SCENE_OUTPATIENT,
        request_id: str | None = None,
    ) -> payment_pb2.PaymentOrder:
        """Create the order for one bill: self-pay without `insurance`, else pre-settled with the
        insurer before this returns (the order's `split` and `cash_due_fen` show what is owed)."""
        patient = common_pb2.Patient(
            his_patient_id=his_patient_id, voucher=insurance.voucher.to_proto() if insurance else None
        )
        request = payment_pb2.CreatePaymentOrderRequest(
            request_id=request_id or new_request_id(),
            his_order_no=his_order_no,
            scene=scene,
            campus_code=campus_code,
            dept_code=dept_code,
            patient=patient,
            items=[_charge_item(line, n, dept_code, doctor_code) for n, line in enumerate(items, start=1)],
            insurance=insurance.to_proto() if insurance else None,
            doctor_code=doctor_code,
            doctor_name=doctor_name,
        )
        response: payment_pb2.CreatePaymentOrderResponse = await self._call(
            self._payment.CreatePaymentOrder, request, self._deadlines.write_s
        )
        return response.order

    async def pay(
        self,
        order_id: str,
        channel: payment_pb2.Channel.ValueType,
        method: payment_pb2.PayMethod.ValueType = payment_pb2.PAY_METHOD_UNSPECIFIED,
        *,
        description: str = "",
        request_id: str | None = None,
        amount_fen: int = 0,
        auth_code: str = "",
        payer_openid: str = "",
        operator_id: str = "",
        pos: payment_pb2.PosSlip | None = None,
    ) -> PayResult:
        """Start collecting the cash share (CHANNEL_NONE when it is zero: the order settles at once).
        `amount_fen`: this payment's part of it (0: what remains); an order may be paid by several.
        PAY_METHOD_BARCODE needs the scanned `auth_code` (the patient's payment code: never log it);
        PAY_METHOD_JSAPI the `payer_openid`, and its result's payment carries the `jsapi`
        parameters for wx.requestPayment. PAY_METHOD_CASH and PAY_METHOD_POS report money already
        taken at the window: `amount_fen` and the cashier's `operator_id` are required, POS also the
        terminal's slip `pos`; the payment comes back SUCCEEDED."""
        request = payment_pb2.PayPaymentOrderRequest(
            request_id=request_id or new_request_id(),
            order_id=order_id,
            channel=channel,
            method=method,
            description=description,
            amount_fen=amount_fen,
            auth_code=auth_code,
            payer_openid=payer_openid,
            operator_id=operator_id,
            pos=pos,
        )
        response: payment_pb2.PayPaymentOrderResponse = await self._call(
            self._payment.PayPaymentOrder, request, self._deadlines.write_s
        )
        return PayResult(response.order, response.payment)

    async def get_order(self, order_id: str) -> payment_pb2.PaymentOrder:
        request = payment_pb2.GetPaymentOrderRequest(order_id=order_id)
        response: payment_pb2.GetPaymentOrderResponse = await self._call(
            self._payment.GetPaymentOrder, request, self._deadlines.read_s
        )
        return response.order

    async def list_orders(
        self,
        *,
        business_date: date | str | None = None,
        status: OrderStatus = payment_pb2.ORDER_STATUS_UNSPECIFIED,
        his_patient_id: str = "",
    ) -> AsyncIterator[payment_pb2.PaymentOrder]:
        """Orders newest first, every page."""
        token = ""
        while True:
            request = payment_pb2.ListPaymentOrdersRequest(
                page_size=_PAGE_SIZE,
                page_token=token,
                status=status,
                business_date=_iso(business_date) if business_date else "",
                his_patient_id=his_patient_id,
            )
            page: payment_pb2.ListPaymentOrdersResponse = await self._call(
                self._payment.ListPaymentOrders, request, self._deadlines.read_s
            )
            for order in page.orders:
                yield order
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def watch_order(
        self, order_id: str, timeout_s: float = 60.0
    ) -> AsyncGenerator[payment_pb2.PaymentOrder, None]:
        """The order now, then each change as payment-core commits it (WatchPaymentOrder, no
        polling), ending after SETTLED, CLOSED or REFUNDED; MedPayError DEADLINE_EXCEEDED when
        `timeout_s` pass first. For a kiosk showing progress."""
        states = follow_order(self._payment.WatchPaymentOrder, order_id, timeout_s, self._retry)
        async with aclosing(states):
            async for order in states:
                yield order

    async def wait_until_settled(self, order_id: str, timeout_s: float = 30.0) -> payment_pb2.PaymentOrder:
        """Wait until the order is SETTLED, following its changes as they commit; OrderWaitError
        (carrying the last state seen) if it closes or is refunded instead, or `timeout_s` pass.
        NEEDS_ATTENTION is waited through: a query may still settle it."""
        return await self._wait_for(order_id, payment_pb2.ORDER_STATUS_SETTLED, timeout_s)

    async def wait_until_refunded(self, order_id: str, timeout_s: float = 30.0) -> payment_pb2.PaymentOrder:
        """Wait until the order is REFUNDED (the channel confirms refunds asynchronously);
        OrderWaitError if it ends otherwise (a refused refund leaves it SETTLED) or time runs out."""
        return await self._wait_for(order_id, payment_pb2.ORDER_STATUS_REFUNDED, timeout_s)

    async def wait_until_refund_final(
        self, order_id: str, refund_id: str, timeout_s: float = 30.0
    ) -> payment_pb2.PaymentOrder:
        """Wait until the refund `refund_id` of the order is SUCCEEDED (a partial refund leaves the
        order SETTLED, so its status says nothing), and with it the other refunds the same request
        was split into (an order paid by several payments refunds each: `{refund_id}-2`, ...);
        OrderWaitError if one of them FAILED or is ABNORMAL, or `timeout_s` pass first. A window
        refund (CASH/POS) stays PROCESSING until `confirm_window_refund`."""
        last: payment_pb2.PaymentOrder | None = None
        try:
            async with aclosing(self._follow(order_id, timeout_s)) as states:
                async for last in states:
                    parts = [r for r in last.refunds if _part_of_refund(r.refund_id, refund_id)]
                    if not parts:
                        continue
                    given_up = next((r for r in parts if r.status in _REFUND_GIVEN_UP), None)
                    if given_up is not None:
                        raise OrderWaitError(last, f"refund {given_up.refund_id} ended {given_up.status}")
                    if all(r.status == payment_pb2.REFUND_STATUS_SUCCEEDED for r in parts):
                        return last
        except MedPayError as error:
            if error.code is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            seen = last if last is not None else await self.get_order(order_id)
            raise OrderWaitError(seen, f"refund {refund_id} not final after {timeout_s:g}s") from None
        seen = last if last is not None else await self.get_order(order_id)
        raise OrderWaitError(seen, f"refund {refund_id} will not succeed")

    async def _follow(
        self, order_id: str, timeout_s: float
    ) -> AsyncGenerator[payment_pb2.PaymentOrder, None]:
        """The order's states, and once the watch ends (a settled order), the order as it is now:
        a refund's outcome may commit after the watch has ended."""
        async with aclosing(self.watch_order(order_id, timeout_s)) as states:
            async for order in states:
                yield order
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout_s
        while loop.time() < give_up_at:
            yield await self.get_order(order_id)
            await asyncio.sleep(_RUN_POLL_S)
        raise MedPayError(grpc.StatusCode.DEADLINE_EXCEEDED, "refund wait timed out")

    async def _wait_for(
        self, order_id: str, wanted: OrderStatus, timeout_s: float
    ) -> payment_pb2.PaymentOrder:
        wanted_name = payment_pb2.OrderStatus.Name(wanted)
        last: payment_pb2.PaymentOrder | None = None
        try:
            async with aclosing(self.watch_order(order_id, timeout_s)) as states:
                async for last in states:
                    if last.status == wanted:
                        return last
        except MedPayError as error:
            if error.code is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            seen = last if last is not None else await self.get_order(order_id)
            raise OrderWaitError(seen, f"not {wanted_name} after {timeout_s:g}s") from None
        seen = last if last is not None else await self.get_order(order_id)
        raise OrderWaitError(seen, f"will not become {wanted_name}")

    async def close_order(
        self, order_id: str, reason: str = "", *, request_id: str | None = None
    ) -> payment_pb2.PaymentOrder:
        """Close an unpaid order (its channel order closed, any pre-settlement undone)."""
        request = payment_pb2.ClosePaymentOrderRequest(
            request_id=request_id or new_request_id(), order_id=order_id, reason=reason
        )
        response: payment_pb2.ClosePaymentOrderResponse = await self._call(
            self._payment.ClosePaymentOrder, request, self._deadlines.write_s
        )
        return response.order

    async def refund_order(
        self,
        order_id: str,
        reason: str,
        *,
        cash_fen: int = 0,
        operator_id: str = "",
        request_id: str | None = None,
    ) -> RefundResult:
        """Refund a settled order; `cash_fen=0` refunds everything still refundable, less is a
        partial refund (self-pay orders; `operator_id` required then)."""
        request = payment_pb2.RefundPaymentOrderRequest(
            request_id=request_id or new_request_id(), order_id=order_id, cash_fen=cash_fen, reason=reason,
            operator_id=operator_id,
        )  # fmt: skip
        response: payment_pb2.RefundPaymentOrderResponse = await self._call(
            self._payment.RefundPaymentOrder, request, self._deadlines.write_s
        )
        return RefundResult(response.order, response.refund)

    async def confirm_window_refund(
        self,
        order_id: str,
        refund_id: str,
        operator_id: str,
        *,
        pos: payment_pb2.PosSlip | None = None,
        request_id: str | None = None,
    ) -> RefundResult:
        """The cashier paid a CASH or POS refund out at the window (POS: with the 退货 slip)."""
        request = payment_pb2.ConfirmWindowRefundRequest(
            request_id=request_id or new_request_id(), order_id=order_id, refund_id=refund_id,
            operator_id=operator_id, pos=pos,
        )  # fmt: skip
        response: payment_pb2.ConfirmWindowRefundResponse = await self._call(
            self._payment.ConfirmWindowRefund, request, self._deadlines.write_s
        )
        return RefundResult(response.order, response.refund)

    # ---- inpatient deposits ----------------------------------------------------------------

    async def top_up_deposit(
        self,
        inpatient_no: str,
        amount_fen: int,
        channel: payment_pb2.Channel.ValueType,
        method: payment_pb2.PayMethod.ValueType,
        *,
        campus_code: str,
        his_patient_id: str,
        operator_id: str = "",
        pos: payment_pb2.PosSlip | None = None,
        request_id: str | None = None,
    ) -> payment_pb2.TopUpDepositResponse:
        """Top up an inpatient's deposit (预交金); CASH and POS need `operator_id` (POS its slip)."""
        request = payment_pb2.TopUpDepositRequest(
            request_id=request_id or new_request_id(), inpatient_no=inpatient_no, amount_fen=amount_fen,
            channel=channel, method=method, campus_code=campus_code, his_patient_id=his_patient_id,
            operator_id=operator_id, pos=pos,
        )  # fmt: skip
        response: payment_pb2.TopUpDepositResponse = await self._call(
            self._payment.TopUpDeposit, request, self._deadlines.write_s
        )
        return response

    async def deposit_account(self, inpatient_no: str) -> payment_pb2.DepositAccount:
        request = payment_pb2.GetDepositAccountRequest(inpatient_no=inpatient_no)
        response: payment_pb2.GetDepositAccountResponse = await self._call(
            self._payment.GetDepositAccount, request, self._deadlines.read_s
        )
        return response.account

    async def refund_deposit(
        self,
        inpatient_no: str,
        reason: str,
        *,
        amount_fen: int = 0,
        operator_id: str = "",
        request_id: str | None = None,
    ) -> payment_pb2.RefundDepositResponse:
        """Give back `amount_fen` of the balance (0: all of it) to the top-ups' channels."""
        request = payment_pb2.RefundDepositRequest(
            request_id=request_id or new_request_id(), inpatient_no=inpatient_no, amount_fen=amount_fen,
            reason=reason, operator_id=operator_id,
        )  # fmt: skip
        response: payment_pb2.RefundDepositResponse = await self._call(
            self._payment.RefundDeposit, request, self._deadlines.write_s
        )
        return response

    async def settle_discharge(
        self,
        *,
        inpatient_no: str,
        his_patient_id: str,
        items: Sequence[ChargeLine],
        campus_code: str,
        dept_code: str,
        discharged_at: datetime | str | None = None,
        request_id: str | None = None,
    ) -> payment_pb2.SettleDischargeResponse:
        """Self-pay discharge: the bill paid from the deposit, a surplus refunded to the top-ups'
        channels, a shortfall left to collect with `pay` on the answer's order."""
        moment = discharged_at or datetime.now(UTC)
        request = payment_pb2.SettleDischargeRequest(
            request_id=request_id or new_request_id(), inpatient_no=inpatient_no,
            campus_code=campus_code, dept_code=dept_code,
            patient=common_pb2.Patient(his_patient_id=his_patient_id),
            items=[_charge_item(line, n, dept_code, "") for n, line in enumerate(items, start=1)],
            discharged_at=moment.isoformat() if isinstance(moment, datetime) else moment,
        )  # fmt: skip
        response: payment_pb2.SettleDischargeResponse = await self._call(
            self._payment.SettleDischarge, request, self._deadlines.write_s
        )
        return response

    async def close_cashier_shift(
        self,
        cashier_id: str,
        campus_code: str,
        closed_at: datetime | str | None = None,
        *,
        request_id: str | None = None,
    ) -> payment_pb2.CloseCashierShiftResponse:
        """Close the cashier's shift (收费员日结) at `closed_at` (an aware datetime or RFC 3339; default
        now): per channel what the cashier took and handed back since the previous close, and the
        cash to hand over. Closing the same shift again answers the same figures."""
        moment = closed_at or datetime.now(UTC)
        request = payment_pb2.CloseCashierShiftRequest(
            request_id=request_id or new_request_id(), cashier_id=cashier_id, campus_code=campus_code,
            closed_at=moment.isoformat() if isinstance(moment, datetime) else moment,
        )  # fmt: skip
        response: payment_pb2.CloseCashierShiftResponse = await self._call(
            self._payment.CloseCashierShift, request, self._deadlines.write_s
        )
        return response

    # ---- reconciliation ------------------------------------------------------------------

    async def run_reconciliation(
        self, business_date: date | str, *, request_id: str | None = None, timeout_s: float | None = None
    ) -> reconciliation_pb2.ReconciliationRun:
        """Reconcile one business day three ways, and wait for the run to end: it is returned
        COMPLETED, FAILED (see its failure_reason), or still RUNNING when `timeout_s` (default
        `Deadlines.reconciliation_s`) passed first. The service answers a long run while it is still
        RUNNING, so this polls GetReconciliationRun meanwhile. A call for a day that has a RUNNING
        run answers that same run, so calling again after a timeout waits for it some more."""
        loop = asyncio.get_running_loop()
        budget_s = self._deadlines.reconciliation_s if timeout_s is None else timeout_s
        give_up_at = loop.time() + budget_s
        request = reconciliation_pb2.RunReconciliationRequest(
            request_id=request_id or new_request_id(), business_date=_iso(business_date)
        )
        response: reconciliation_pb2.RunReconciliationResponse = await self._call(
            self._reconciliation.RunReconciliation, request, budget_s
        )
        return await self._until_run_ended(response.run, give_up_at - loop.time())

    async def get_reconciliation_run(self, run_id: str) -> reconciliation_pb2.ReconciliationRun:
        request = reconciliation_pb2.GetReconciliationRunRequest(run_id=run_id)
        response: reconciliation_pb2.GetReconciliationRunResponse = await self._call(
            self._reconciliation.GetReconciliationRun, request, self._deadlines.read_s
        )
        return response.run

    async def wait_until_reconciled(
        self, run_id: str, timeout_s: float = 60.0
    ) -> reconciliation_pb2.ReconciliationRun:
        """Poll a run until it is COMPLETED or FAILED, or `timeout_s` pass; the run as last seen."""
        return await self._until_run_ended(await self.get_reconciliation_run(run_id), timeout_s)

    async def _until_run_ended(
        self, run: reconciliation_pb2.ReconciliationRun, timeout_s: float
    ) -> reconciliation_pb2.ReconciliationRun:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout_s
        while run.status == reconciliation_pb2.RUN_STATUS_RUNNING:
            left = give_up_at - loop.time()
            if left <= 0:
                return run
            await asyncio.sleep(min(_RUN_POLL_S, left))
            run = await self.get_reconciliation_run(run.run_id)
        return run

    async def list_discrepancies(self, run_id: str) -> AsyncIterator[reconciliation_pb2.Discrepancy]:
        token = ""
        while True:
            request = reconciliation_pb2.ListDiscrepanciesRequest(
                run_id=run_id, page_size=_PAGE_SIZE, page_token=token
            )
            page: reconciliation_pb2.ListDiscrepanciesResponse = await self._call(
                self._reconciliation.ListDiscrepancies, request, self._deadlines.read_s
            )
            for discrepancy in page.discrepancies:
                yield discrepancy
            if not page.next_page_token:
                return
            token = page.next_page_token

    # ---- data middle platform ------------------------------------------------------------

    async def daily_summary(self, business_date: date | str) -> data_pb2.DailySummary:
        request = data_pb2.GetDailySummaryRequest(business_date=_iso(business_date))
        response: data_pb2.GetDailySummaryResponse = await self._call(
            self._data.GetDailySummary, request, self._deadlines.read_s
        )
        return response.summary

    async def settlement_times(self, business_date: date | str) -> list[data_pb2.SettlementTimes]:
        """Order-to-settled percentiles: "all" first, then per scene and per channel."""
        request = data_pb2.GetSettlementTimesRequest(business_date=_iso(business_date))
        response: data_pb2.GetSettlementTimesResponse = await self._call(
            self._data.GetSettlementTimes, request, self._deadlines.read_s
        )
        return list(response.slices)

    async def ingest_status(self) -> list[data_pb2.SourceCursor]:
        response: data_pb2.GetIngestStatusResponse = await self._call(
            self._data.GetIngestStatus, data_pb2.GetIngestStatusRequest(), self._deadlines.read_s
        )
        return list(response.sources)

    async def feed_heads(self) -> dict[str, int]:
        """The highest event sequence of each service that serves an event feed (to measure ingest
        lag against `ingest_status`). Services without a feed are left out."""
        heads: dict[str, int] = {}
        for service in ("payment-core", "insurance-adapter", "reconciliation"):
            stub = cast(
                "events_pb2_grpc.EventFeedServiceAsyncStub",
                events_pb2_grpc.EventFeedServiceStub(self._channels[service]),
            )
            request = events_pb2.ListEventsRequest(after_sequence=0, page_size=1)
            try:
                page: events_pb2.ListEventsResponse = await self._call(
                    stub.ListEvents, request, self._deadlines.read_s
                )
            except MedPayError as error:
                if error.code is grpc.StatusCode.UNIMPLEMENTED:
                    continue
                raise
            heads[service] = page.head_sequence
        return heads

    # ---- operations ----------------------------------------------------------------------

    async def health(self, timeout_s: float = 2.0) -> dict[str, str]:
        """grpc.health.v1 status of each service: "SERVING", "NOT_SERVING", ... or "UNREACHABLE"."""
        services = list(self._channels)
        answers = await asyncio.gather(*(self._check(service, timeout_s) for service in services))
        return dict(zip(services, answers, strict=True))

    async def _check(self, service: str, timeout_s: float) -> str:
        stub = health_pb2_grpc.HealthStub(self._channels[service])
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            return "UNREACHABLE" if error.code() is grpc.StatusCode.UNAVAILABLE else error.code().name
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def _charge_item(line: ChargeLine, number: int, dept_code: str, doctor_code: str) -> common_pb2.ChargeItem:
    item = line.to_proto(line_no=str(number))
    item.dept_code = item.dept_code or dept_code
    item.doctor_code = item.doctor_code or doctor_code
    return item


def _part_of_refund(candidate: str, refund_id: str) -> bool:
    """`candidate` is the refund `refund_id` or one of the parts it was split into."""
    return candidate == refund_id or (
        candidate.startswith(f"{refund_id}-") and candidate[len(refund_id) + 1 :].isdigit()
    )
