"""Domain -> proto (to_proto). The patient appears only as the HIS id and the masked certificate."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from medpay.common.v1 import common_pb2
from medpay.payment.v1 import payment_pb2

from services.payment_core.adapters.channels.ports import JsapiPayParams
from services.payment_core.adapters.queries import PAYMENT, MoneyMovement
from services.payment_core.domain.deposit import DepositAccount
from services.payment_core.domain.model import (
    METHOD_NATIVE_QR,
    ChargeLine,
    InsuranceSplit,
    LineRefund,
    OrderStatus,
    Payment,
    PosSlip,
    Refund,
)
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.domain.shift import CashierShift


def _stamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def order_status(status: OrderStatus) -> payment_pb2.OrderStatus.ValueType:
    return payment_pb2.OrderStatus.Value(f"ORDER_STATUS_{status.value}")


def order_to_proto(order: PaymentOrder) -> payment_pb2.PaymentOrder:
    return payment_pb2.PaymentOrder(
        order_id=order.order_id, his_order_no=order.his_order_no,
        scene=payment_pb2.Scene.Value(f"SCENE_{order.scene}"), status=order_status(order.status),
        campus_code=order.campus_code, dept_code=order.dept_code,
        patient=common_pb2.Patient(his_patient_id=order.his_patient_id, masked_cert_no=order.masked_cert_no),
        items=[_item(line) for line in order.lines], total_fen=order.total.fen, insured=order.insured,
        insutype=order.insutype, med_type=order.med_type, split=_split(order),
        cash_due_fen=order.cash_due.fen, cash_paid_fen=order.cash_paid.fen,
        refunded_cash_fen=order.refunded_cash.fen, payments=[payment_to_proto(p) for p in order.payments],
        refunds=[refund_to_proto(r) for r in order.refunds], setl_id=order.setl_id,
        created_at=_stamp(order.created_at), settled_at=_stamp(order.settled_at),
        attention_reason=order.attention_reason,
        expires_at=_stamp(order.expires_at),
        close_reason=order.close_reason if order.status is OrderStatus.CLOSED else "",
        line_refunds=[line_refund_to_proto(r) for r in order.line_refunds],
    )  # fmt: skip


def line_refund_to_proto(refund: LineRefund) -> payment_pb2.LineRefund:
    return payment_pb2.LineRefund(
        refund_id=refund.refund_id,
        stage=payment_pb2.LineRefundStage.Value(f"LINE_REFUND_STAGE_{refund.stage.value}"),
        lines=[
            payment_pb2.RefundLine(line_no=ln.line_no, quantity_ten_thousandths=ln.quantity_ten_thousandths)
            for ln in refund.lines
        ],
        revoked_settlement_id=refund.revoked_settlement_id, new_settlement_id=refund.new_settlement_id,
        cash_fen=refund.cash.fen, reason=refund.reason, created_at=_stamp(refund.created_at),
    )  # fmt: skip


def payment_to_proto(payment: Payment, jsapi: JsapiPayParams | None = None) -> payment_pb2.Payment:
    """`code_url` only for a QR payment (a JSAPI prepay_id travels inside `jsapi`, a code payment's
    masked code is not shown)."""
    code_url = payment.code_url if payment.method == METHOD_NATIVE_QR else ""
    return payment_pb2.Payment(
        payment_id=payment.payment_id, order_id=payment.order_id,
        channel=payment_pb2.Channel.Value(f"CHANNEL_{payment.channel}"),
        method=payment_pb2.PayMethod.Value(f"PAY_METHOD_{payment.method}"), amount_fen=payment.amount.fen,
        status=payment_pb2.PaymentStatus.Value(f"PAYMENT_STATUS_{payment.status.value}"),
        out_trade_no=payment.out_trade_no, channel_transaction_id=payment.channel_transaction_id,
        code_url=code_url, refunded_fen=payment.refunded.fen, created_at=_stamp(payment.created_at),
        succeeded_at=_stamp(payment.succeeded_at), jsapi=_jsapi(jsapi), pos=_slip(payment.pos),
        operator_id=payment.operator_id,
    )  # fmt: skip


def _slip(slip: PosSlip | None) -> payment_pb2.PosSlip | None:
    if slip is None:
        return None
    return payment_pb2.PosSlip(
        reference_no=slip.reference_no, terminal_id=slip.terminal_id, batch_no=slip.batch_no,
        masked_card_no=slip.masked_card_no,
    )  # fmt: skip


def _jsapi(params: JsapiPayParams | None) -> payment_pb2.JsapiPayParams | None:
    if params is None:
        return None
    return payment_pb2.JsapiPayParams(
        app_id=params.app_id, time_stamp=params.time_stamp, nonce_str=params.nonce_str,
        package=params.package, sign_type=params.sign_type, pay_sign=params.pay_sign,
    )  # fmt: skip


def refund_to_proto(refund: Refund) -> payment_pb2.Refund:
    return payment_pb2.Refund(
        refund_id=refund.refund_id, order_id=refund.order_id, payment_id=refund.payment_id or "",
        cash_fen=refund.cash.fen, fund_fen=refund.fund.fen, personal_account_fen=refund.personal_account.fen,
        status=payment_pb2.RefundStatus.Value(f"REFUND_STATUS_{refund.status.value}"),
        out_refund_no=refund.out_refund_no, reason=refund.reason, created_at=_stamp(refund.created_at),
        succeeded_at=_stamp(refund.succeeded_at), operator_id=refund.operator_id,
        requested_by=refund.requested_by,
        channel_refund_id=refund.channel_refund_id,
    )  # fmt: skip


def movement_to_proto(movement: MoneyMovement) -> payment_pb2.Transaction:
    kind = (
        payment_pb2.Transaction.KIND_PAYMENT
        if movement.kind == PAYMENT
        else payment_pb2.Transaction.KIND_REFUND
    )
    return payment_pb2.Transaction(
        kind=kind, order_id=movement.order_id, payment_id=movement.payment_id, refund_id=movement.refund_id,
        channel=payment_pb2.Channel.Value(f"CHANNEL_{movement.channel}"), out_trade_no=movement.out_trade_no,
        out_refund_no=movement.out_refund_no, channel_transaction_id=movement.channel_transaction_id,
        amount_fen=movement.amount.fen, status=movement.status, occurred_at=_stamp(movement.occurred_at),
        setl_id=movement.setl_id, insutype=movement.insutype, fund_fen=movement.fund.fen,
        personal_account_fen=movement.personal_account.fen, medfee_fen=movement.medfee.fen,
    )  # fmt: skip


def _item(line: ChargeLine) -> common_pb2.ChargeItem:
    return common_pb2.ChargeItem(
        hospital_code=line.hospital_code, national_code=line.national_code, name=line.name,
        chrgitm_lv=line.chrgitm_lv, med_chrgitm_type=line.med_chrgitm_type,
        quantity_ten_thousandths=line.quantity_ten_thousandths, unit_price_fen=line.unit_price.fen,
        line_total_fen=line.line_total.fen, dept_code=line.dept_code, doctor_code=line.doctor_code,
        line_no=line.line_no,
    )  # fmt: skip


def _split(order: PaymentOrder) -> common_pb2.SettlementBreakdown | None:
    """The insurer's split; absent only while an insured order's pre-settlement is not known."""
    if order.split is not None:
        return _breakdown(order.split)
    return None if order.insured else _breakdown(_all_cash(order))


def _all_cash(order: PaymentOrder) -> InsuranceSplit:
    """A self-pay bill's split: no insurer share at all, the whole bill the patient's own cash, so
    the contract's identities hold and psn_cash_pay = cash_due as on an insured order."""
    bill = order.total.fen
    return InsuranceSplit.from_fen(
        {"medfee_sumamt": bill, "fulamt_ownpay_amt": bill, "psn_part_amt": bill, "psn_cash_pay": bill}
    )


def _breakdown(split: InsuranceSplit) -> common_pb2.SettlementBreakdown:
    return common_pb2.SettlementBreakdown(**{f"{name}_fen": fen for name, fen in split.as_fen().items()})


def shift_to_proto(shift: CashierShift) -> payment_pb2.CloseCashierShiftResponse:
    return payment_pb2.CloseCashierShiftResponse(
        shift_id=shift.shift_id,
        cashier_id=shift.cashier_id,
        totals=[
            payment_pb2.ShiftChannelTotal(
                channel=payment_pb2.Channel.Value(f"CHANNEL_{t.channel}"),
                payment_count=t.payment_count,
                collected_fen=t.collected.fen,
                refund_count=t.refund_count,
                refunded_fen=t.refunded.fen,
            )
            for t in shift.totals
        ],
        cash_to_hand_over_fen=shift.cash_to_hand_over.fen,
    )


def deposit_to_proto(account: DepositAccount, top_ups: Sequence[Payment]) -> payment_pb2.DepositAccount:
    return payment_pb2.DepositAccount(
        inpatient_no=account.inpatient_no, his_patient_id=account.his_patient_id,
        balance_fen=account.balance.fen, topped_up_fen=account.topped_up.fen, used_fen=account.used.fen,
        refunded_fen=account.refunded.fen, top_ups=[payment_to_proto(payment) for payment in top_ups],
    )  # fmt: skip
