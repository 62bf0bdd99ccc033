"""medpay.payment.v1.PaymentService: proto -> command -> handler -> proto, nothing else. Errors are
raised as services.runtime.errors and mapped to rich statuses by the runtime interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from medpay.payment.v1 import payment_pb2, payment_pb2_grpc

from services.payment_core.entrypoints import bills, mapping, requests
from services.payment_core.service_layer.channel_bills import ChannelBills
from services.payment_core.service_layer.deposits import Deposits
from services.payment_core.service_layer.handlers import PaymentOrders
from services.payment_core.service_layer.shifts import CashierShifts
from services.payment_core.service_layer.watching import OrderWatch
from services.runtime.idempotency import IdempotencyStore, idempotent
from services.runtime.pagination import encode_page_token


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(
        self,
        orders: PaymentOrders,
        watch: OrderWatch,
        idempotency: IdempotencyStore,
        channel_bills: ChannelBills,
        shifts: CashierShifts,
        deposits: Deposits,
    ) -> None:
        self._orders = orders
        self._deposits = deposits
        self._shifts = shifts
        self._watch = watch
        self.idempotency = idempotency
        self._channel_bills = channel_bills

    @idempotent(payment_pb2.CreatePaymentOrderResponse)
    async def CreatePaymentOrder(
        self, request: payment_pb2.CreatePaymentOrderRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.CreatePaymentOrderResponse:
        """Create the order for one HIS bill; insured bills come back pre-settled with their split."""
        order = await self._orders.create(requests.create_order(request))
        return payment_pb2.CreatePaymentOrderResponse(order=mapping.order_to_proto(order))

    @idempotent(payment_pb2.PayPaymentOrderResponse)
    async def PayPaymentOrder(
        self, request: payment_pb2.PayPaymentOrderRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.PayPaymentOrderResponse:
        """Start collecting the cash share (WeChat Pay QR, JSAPI with its signed front-end parameters,
        or the patient's payment code), or settle at once when it is zero."""
        order, payment = await self._orders.pay(requests.pay_order(request))
        jsapi = self._orders.front_end_params(payment)
        return payment_pb2.PayPaymentOrderResponse(
            order=mapping.order_to_proto(order), payment=mapping.payment_to_proto(payment, jsapi)
        )

    async def GetPaymentOrder(
        self, request: payment_pb2.GetPaymentOrderRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.GetPaymentOrderResponse:
        order = await self._orders.get(requests.order_id(request))
        return payment_pb2.GetPaymentOrderResponse(order=mapping.order_to_proto(order))

    async def ListPaymentOrders(
        self, request: payment_pb2.ListPaymentOrdersRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.ListPaymentOrdersResponse:
        orders, cursor = await self._orders.listing(requests.list_orders(request))
        return payment_pb2.ListPaymentOrdersResponse(
            orders=[mapping.order_to_proto(order) for order in orders],
            next_page_token=encode_page_token(cursor) if cursor else "",
        )

    @idempotent(payment_pb2.ClosePaymentOrderResponse)
    async def ClosePaymentOrder(
        self, request: payment_pb2.ClosePaymentOrderRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.ClosePaymentOrderResponse:
        """Close an unpaid order: channel attempts closed, pre-settlement undone."""
        order = await self._orders.close(requests.close_order(request))
        return payment_pb2.ClosePaymentOrderResponse(order=mapping.order_to_proto(order))

    @idempotent(payment_pb2.RefundPaymentOrderResponse)
    async def RefundPaymentOrder(
        self, request: payment_pb2.RefundPaymentOrderRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.RefundPaymentOrderResponse:
        """Full, partial, or by lines: revoke the insurer settlement (2208) where there is one (and
        re-settle the remaining lines), then return the cash through the channels."""
        order, refund = await self._orders.refund(requests.refund_order(request))
        return payment_pb2.RefundPaymentOrderResponse(
            order=mapping.order_to_proto(order), refund=mapping.refund_to_proto(refund) if refund else None
        )

    @idempotent(payment_pb2.ConfirmWindowRefundResponse)
    async def ConfirmWindowRefund(
        self, request: payment_pb2.ConfirmWindowRefundRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.ConfirmWindowRefundResponse:
        """The cashier paid a CASH or POS refund out at the window: the refund succeeds."""
        order, refund = await self._orders.confirm_window_refund(requests.confirm_window_refund(request))
        return payment_pb2.ConfirmWindowRefundResponse(
            order=mapping.order_to_proto(order), refund=mapping.refund_to_proto(refund)
        )

    async def ExportTransactions(
        self, request: payment_pb2.ExportTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.ExportTransactionsResponse:
        """The business day's payments and refunds, with the insurance side, for reconciliation."""
        movements, cursor = await self._orders.export(requests.export_transactions(request))
        return payment_pb2.ExportTransactionsResponse(
            transactions=[mapping.movement_to_proto(movement) for movement in movements],
            next_page_token=encode_page_token(cursor) if cursor else "",
        )

    async def ExportChannelBill(
        self, request: payment_pb2.ExportChannelBillRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.ExportChannelBillResponse:
        """One page of a channel's bill of the day, read by that channel's adapter, with the whole
        bill's totals."""
        page = await self._channel_bills.export(bills.export_channel_bill(request))
        return bills.page_to_proto(page)

    async def WatchPaymentOrder(
        self, request: payment_pb2.WatchPaymentOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[payment_pb2.WatchPaymentOrderResponse]:
        """The order now, then each committed change visible in it, ending after SETTLED, CLOSED or
        REFUNDED (or at the caller's deadline, when gRPC cancels the call)."""
        order_id = requests.order_id(request)
        sent: payment_pb2.PaymentOrder | None = None
        async with aclosing(self._watch.follow(order_id)) as orders:
            async for order in orders:
                shown = mapping.order_to_proto(order)
                if shown != sent:
                    yield payment_pb2.WatchPaymentOrderResponse(order=shown)
                    sent = shown

    @idempotent(payment_pb2.TopUpDepositResponse)
    async def TopUpDeposit(
        self, request: payment_pb2.TopUpDepositRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.TopUpDepositResponse:
        """A deposit top-up: a payment order of scene INPATIENT_DEPOSIT, paid through the channel;
        the balance counts it once its payment succeeded (at once for CASH and POS)."""
        order, payment, account = await self._deposits.top_up(requests.top_up_deposit(request))
        return payment_pb2.TopUpDepositResponse(
            payment=mapping.payment_to_proto(payment),
            balance_fen=account.balance.fen,
            order_id=order.order_id,
        )

    async def GetDepositAccount(
        self, request: payment_pb2.GetDepositAccountRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.GetDepositAccountResponse:
        inpatient_no = requests.deposit_account(request)
        account = await self._deposits.account(inpatient_no)
        top_ups = await self._deposits.top_ups(inpatient_no)
        return payment_pb2.GetDepositAccountResponse(account=mapping.deposit_to_proto(account, top_ups))

    @idempotent(payment_pb2.SettleDischargeResponse)
    async def SettleDischarge(
        self, request: payment_pb2.SettleDischargeRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.SettleDischargeResponse:
        """A self-pay discharge: the bill paid from the deposit up to its balance, the surplus
        refunded to the top-ups' channels, or the shortfall left to collect on the order."""
        done = await self._deposits.discharge(requests.settle_discharge(request))
        top_ups = await self._deposits.top_ups(done.account.inpatient_no)
        return payment_pb2.SettleDischargeResponse(
            order=mapping.order_to_proto(done.order),
            account=mapping.deposit_to_proto(done.account, top_ups),
            deposit_refunds=[mapping.refund_to_proto(r) for r in done.refunds],
            shortfall_fen=done.shortfall.fen,
        )

    @idempotent(payment_pb2.RefundDepositResponse)
    async def RefundDeposit(
        self, request: payment_pb2.RefundDepositRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.RefundDepositResponse:
        """Unused deposit back to the top-ups' channels, newest top-up first."""
        account, refunds = await self._deposits.refund(requests.refund_deposit(request))
        top_ups = await self._deposits.top_ups(account.inpatient_no)
        return payment_pb2.RefundDepositResponse(
            account=mapping.deposit_to_proto(account, top_ups),
            refunds=[mapping.refund_to_proto(r) for r in refunds],
        )

    @idempotent(payment_pb2.CloseCashierShiftResponse)
    async def CloseCashierShift(
        self, request: payment_pb2.CloseCashierShiftRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.CloseCashierShiftResponse:
        """The cashier's shift (收费员日结) from the previous close to `closed_at`: per channel what
        the cashier collected and handed back, and the cash to hand over. Closing the same shift
        again (any request_id) answers the same figures."""
        shift = await self._shifts.close(requests.close_cashier_shift(request))
        return mapping.shift_to_proto(shift)
