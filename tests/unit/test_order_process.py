"""The order's process manager (domain.process.next_step): every (state, age) → step pair, as a table.

Each row builds an order in one state with the domain's own methods, looks at it `age` after its
last move, and names the one step the process manager must take. No I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.payment_core.domain import process as p
from services.payment_core.domain.model import (
    Attention,
    ChannelPaymentSeen,
    ChargeLine,
    InsuranceSplit,
    OrderStatus,
    PaymentStatus,
    PosSlip,
    RefundedLine,
)
from services.payment_core.domain.order import PaymentOrder
from services.runtime.errors import InvalidArgument
from services.runtime.money import Money

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TTL = timedelta(minutes=30)
QR = timedelta(minutes=15)
SCHEDULE = p.Schedule.escalating(timedelta(seconds=10), timedelta(seconds=5), max_attempts=4)
OID = "ord_0123456789abcdef01234567"
TRADE = f"{OID}_01"
s, m = timedelta(seconds=1), timedelta(minutes=1)


def _line() -> ChargeLine:
    return ChargeLine("1", "ZC0001", "110200001010000", "诊查费", "01", "02", 10_000,
                      Money(12_500), Money(12_500), "0301", "D0301")  # fmt: skip


def _order(insured: bool = False) -> PaymentOrder:
    return PaymentOrder(
        order_id=OID, create_request_id="req-1", his_order_no="MZ1", scene="OUTPATIENT", campus_code="FZ",
        dept_code="0301", his_patient_id="P1", masked_cert_no="3501**1234", lines=(_line(),),
        insured=insured, insutype="310" if insured else "", med_type="11",
        status=OrderStatus.PRESETTLING if insured else OrderStatus.AWAITING_PAYMENT,
        total=Money(12_500), cash_due=Money(0) if insured else Money(12_500), created_at=T0,
        expires_at=T0 + TTL, last_step_at=T0,
    )  # fmt: skip


def _split() -> InsuranceSplit:
    return InsuranceSplit.from_fen({
        "medfee_sumamt": 12_500, "inscp_scp_amt": 12_500, "hifp_pay": 8_750, "fund_pay_sumamt": 8_750,
        "psn_part_amt": 3_750, "acct_pay": 0, "psn_cash_pay": 3_750,
    })  # fmt: skip


def _seen(order: PaymentOrder) -> ChannelPaymentSeen:
    payment = order.payments[-1]
    return ChannelPaymentSeen(payment.out_trade_no, "4200001", payment.amount, T0 + m)


# ---- states, built with the domain's own moves -------------------------------------------------------


def presettling() -> PaymentOrder:
    return _order(insured=True)


def presettle_unknown() -> PaymentOrder:
    order = _order(insured=True)
    order.presettlement_unknown("timeout")
    return order


def awaiting(insured: bool = False) -> PaymentOrder:
    order = _order(insured)
    if insured:
        order.accept_presettlement("stl-1", _split(), "310")
    return order


def recorded_attempt(insured: bool = False) -> PaymentOrder:
    order = awaiting(insured)
    order.start_payment("pay_1", "WECHAT_PAY", "NATIVE_QR", T0, T0 + QR)
    return order


def placed(insured: bool = False) -> PaymentOrder:
    order = recorded_attempt(insured)
    order.payment_placed(order.payments[0], "weixin://wxpay/bizpayurl?pr=1")
    return order


def placed_asked(times: int) -> Callable[[], PaymentOrder]:
    def build() -> PaymentOrder:
        order = placed()
        for _ in range(times):
            order.still_waiting(T0)
        return order

    return build


def placement_unknown() -> PaymentOrder:
    order = recorded_attempt()
    order.payment_unknown(order.payments[0])
    return order


def closing_placed() -> PaymentOrder:
    order = placed()
    order.request_close("patient left")
    return order


def closing_without_attempt() -> PaymentOrder:
    order = awaiting()
    order.request_close("patient left")
    return order


def settling(attempts: int = 0) -> PaymentOrder:
    order = placed(insured=True)
    order.record_channel_success(_seen(order), T0)
    for _ in range(attempts):
        order.still_waiting(T0)
    return order


def settled() -> PaymentOrder:
    order = settling()
    order.settlement_confirmed("setl-1", None, T0)
    return order


def closed_insured(cancelled: bool = False) -> PaymentOrder:
    order = awaiting(insured=True)
    order.close("patient left")
    if cancelled:
        order.presettlement_undone()
    return order


def closed_insured_asked(times: int) -> PaymentOrder:
    order = closed_insured()
    for _ in range(times):
        order.still_waiting(T0)
    return order


def closed_self_pay() -> PaymentOrder:
    order = awaiting()
    order.close("patient left")
    return order


def paid_after_close() -> PaymentOrder:
    order = placed()
    order.close("patient left")
    order.record_channel_success(_seen(order), T0)
    return order


def giving_back_late_success() -> PaymentOrder:
    order = paid_after_close()
    order.give_back("rfd_1", order.payments[0], T0)
    return order


def refund_requested(insured: bool = True) -> PaymentOrder:
    order = settled() if insured else _self_pay_settled()
    order.begin_refund("rfd_1", Money(0), "drug returned", T0)
    return order


def _self_pay_settled() -> PaymentOrder:
    order = placed()
    order.record_channel_success(_seen(order), T0)
    return order


def partial_refund_requested() -> PaymentOrder:
    order = _self_pay_settled()
    order.begin_refund("rfd_1", Money(1_000), "one drug returned", T0, "op-7")
    return order


def partly_refunded() -> PaymentOrder:
    order = partial_refund_requested()
    order.payments[0].refunded = order.refunds[0].cash  # what storage's reservation did
    order.refund_succeeded(order.refunds[0], "50300001", T0)
    return order


def refund_revoked() -> PaymentOrder:
    order = refund_requested()
    order.settlement_revoked_for(order.refunds[0])
    return order


def refund_processing(attempts: int = 0) -> Callable[[], PaymentOrder]:
    def build() -> PaymentOrder:
        order = refund_revoked()
        order.refund_processing(order.refunds[0], "50300001")
        for _ in range(attempts):
            order.still_waiting(T0)
        return order

    return build


def at_window(method: str = "CASH", closing: bool = False, insured: bool = False) -> PaymentOrder:
    """Money the HIS reported taken at the window, not yet recorded PAID by its step."""
    order = awaiting(insured)
    slip = PosSlip("123456789012", "12345678", "000123") if method == "POS" else None
    order.start_window_payment("pay_1", method, method, T0, order.cash_due, "C001", slip)
    if closing:
        order.request_close("patient left")
    return order


def from_deposit(closing: bool = False) -> PaymentOrder:
    """A payment from the inpatient's deposit, recorded, not yet debited by its step."""
    order = awaiting()
    payment = order.start_payment("pay_1", "DEPOSIT", "DEPOSIT", T0, T0)
    payment.expires_at = None
    if closing:
        order.request_close("patient left")
    return order


def window_recorded(method: str = "CASH", insured: bool = False) -> PaymentOrder:
    order = at_window(method, insured=insured)
    order.record_channel_success(_seen(order), T0)
    return order


def window_refund_at_the_cashier() -> PaymentOrder:
    order = window_recorded()
    order.begin_refund("rfd_1", Money(0), "drug returned", T0)
    order.refund_processing(order.refunds[0], "")
    return order


def asked(build: Callable[[], PaymentOrder], times: int) -> PaymentOrder:
    order = build()
    for _ in range(times):
        order.still_waiting(T0)
    return order


def refund_unknown() -> PaymentOrder:
    order = refund_revoked()
    order.refund_unknown(order.refunds[0], "timeout")
    return order


def compensating() -> PaymentOrder:
    order = settling()
    order.settlement_refused("rfd_1", "insurer refused", T0)
    return order


def refund_abnormal() -> PaymentOrder:
    order = refund_revoked()
    order.refund_abnormal(order.refunds[0], "50300001")
    return order


CODE_WINDOW = SCHEDULE.code_payment_window  # 30 s
MASKED_CODE = "13************3456"


def code_recorded() -> PaymentOrder:
    order = awaiting()
    order.start_payment("pay_1", "WECHAT_PAY", "BARCODE", T0, T0 + CODE_WINDOW)
    return order


def code_sent(answer_after: timedelta = 0 * s) -> Callable[[], PaymentOrder]:
    """The codepay call went out (USERPAYING, or its answer was lost) and returned `answer_after`."""

    def build() -> PaymentOrder:
        order = code_recorded()
        order.code_payment_sent(order.payments[0], MASKED_CODE, T0 + answer_after + p.REVERSE_NOT_BEFORE)
        return order

    return build


# ---- a refund by lines of an insured order: 2208, 2204 + 2206 of what remains, 2207, cash back --------


def _drug() -> ChargeLine:
    return ChargeLine("2", "YP0001", "XA01AAA0001", "阿莫西林", "01", "09", 20_000,
                      Money(1_250), Money(2_500), "0301", "D0301")  # fmt: skip


def _split_of(bill: int, fund: int) -> InsuranceSplit:
    return InsuranceSplit.from_fen({
        "medfee_sumamt": bill, "inscp_scp_amt": bill, "hifp_pay": fund, "fund_pay_sumamt": fund,
        "psn_part_amt": bill - fund, "psn_cash_pay": bill - fund,
    })  # fmt: skip


def settled_two_lines() -> PaymentOrder:
    """An insured visit (诊查费 125 yuan + a drug 25 yuan), fund 105 yuan, 45 yuan paid by WeChat."""
    order = _order(insured=True)
    order.lines, order.total = (_line(), _drug()), Money(15_000)
    order.accept_presettlement("stl-1", _split_of(15_000, 10_500), "310")
    order.start_payment("pay_1", "WECHAT_PAY", "NATIVE_QR", T0, T0 + QR)
    order.payment_placed(order.payments[0], "weixin://wxpay/bizpayurl?pr=1")
    order.record_channel_success(_seen(order), T0)
    order.settlement_confirmed("setl-1", None, T0)
    return order


def lines_requested() -> PaymentOrder:
    order = settled_two_lines()
    order.begin_line_refund(RID, (RefundedLine("2", 0),), Money(0), "drug returned", T0, "C001")
    return order


def lines_revoked() -> PaymentOrder:
    order = lines_requested()
    order.line_refund_revoked()
    return order


def lines_presettled(new_fund: int = 8_750) -> Callable[[], PaymentOrder]:
    def build() -> PaymentOrder:
        order = lines_revoked()
        order.line_refund_presettled("stl-2", _split_of(12_500, new_fund))
        return order

    return build


def lines_resettled(new_fund: int = 8_750) -> Callable[[], PaymentOrder]:
    def build() -> PaymentOrder:
        order = lines_presettled(new_fund)()
        order.line_refund_settled("setl-2", _split_of(12_500, new_fund), T0)
        return order

    return build


def lines_paid_out() -> PaymentOrder:
    order = lines_resettled()()
    order.refund_succeeded(order.refunds[0], "50300001", T0)
    return order


def lines_not_revoked() -> PaymentOrder:
    order = lines_requested()
    order.line_refund_not_revoked("结算信息不存在")
    return order


def lines_resettle_refused() -> PaymentOrder:
    order = lines_revoked()
    order.line_refund_refused("该就诊已撤销")
    return order


def asked_at(build: Callable[[], PaymentOrder], at: timedelta, times: int = 1) -> Callable[[], PaymentOrder]:
    def asked_then() -> PaymentOrder:
        order = build()
        for _ in range(times):
            order.still_waiting(T0 + at)
        return order

    return asked_then


def code_sent_closing() -> PaymentOrder:
    order = code_sent()()
    order.request_close("patient left")
    return order


def jsapi_recorded() -> PaymentOrder:
    order = awaiting()
    order.start_payment("pay_1", "WECHAT_PAY", "JSAPI", T0, T0 + QR)
    return order


def jsapi_placed() -> PaymentOrder:
    order = jsapi_recorded()
    order.payment_placed(order.payments[0], "wx02090000000000000000000000000000")
    return order


def refunded() -> PaymentOrder:
    order = refund_revoked()
    order.refund_succeeded(order.refunds[0], "50300001", T0)
    return order


# ---- several payments: partly paid, attempts side by side, closing gives back what came in ---------

TRADE2 = f"{OID}_02"
RETURN_ID = "rfd_r1"


def partly_paid(insured: bool = False) -> PaymentOrder:
    """A first payment of 5,000 fen (1,000 of an insured 3,750 cash share) succeeded."""
    order = awaiting(insured)
    first = order.start_payment(
        "pay_1", "WECHAT_PAY", "NATIVE_QR", T0, T0 + QR, Money(1_000 if insured else 5_000)
    )
    order.payment_placed(first, "weixin://wxpay/bizpayurl?pr=1")
    order.record_channel_success(_seen(order), T0)
    return order


def partly_paid_second_open() -> PaymentOrder:
    order = partly_paid()
    second = order.start_payment("pay_2", "WECHAT_PAY", "NATIVE_QR", T0, T0 + QR)
    order.payment_placed(second, "weixin://wxpay/bizpayurl?pr=2")
    return order


def side_by_side(asked_times: int = 0) -> PaymentOrder:
    """Two attempts open at once (5,000 + the remaining 7,500 fen), nothing paid yet."""
    order = awaiting()
    for n, amount in ((1, 5_000), (2, 0)):
        attempt = order.start_payment(f"pay_{n}", "WECHAT_PAY", "NATIVE_QR", T0, T0 + QR, Money(amount))
        if n == 1:
            order.payment_placed(attempt, "weixin://wxpay/bizpayurl?pr=1")
    for _ in range(asked_times):
        order.still_waiting(T0)
    return order


def partly_paid_closing(second: str = "") -> PaymentOrder:
    order = partly_paid_second_open() if second else partly_paid()
    if second == "unknown":
        order.payment_unknown(order.payments[1])
    order.request_close("patient left")
    return order


def returning(sent: bool = False, second_open: bool = False, insured: bool = False) -> PaymentOrder:
    order = partly_paid_closing("placed" if second_open else "") if not insured else partly_paid(True)
    if insured:
        order.request_close("patient left")
    order.return_payment(RETURN_ID, order.payments[0], T0)
    if sent:
        order.refund_processing(order.refunds[0], "50300001")
    return order


def returned_and_closed_insured() -> PaymentOrder:
    order = returning(sent=True, insured=True)
    order.close("patient left")
    order.refund_succeeded(order.refunds[0], "50300001", T0)
    return order


def compensating_two_payments() -> PaymentOrder:
    order = partly_paid(insured=True)
    second = order.start_payment("pay_2", "WECHAT_PAY", "NATIVE_QR", T0, T0 + QR)
    order.payment_placed(second, "weixin://wxpay/bizpayurl?pr=2")
    order.record_channel_success(_seen(order), T0)
    order.settlement_refused("rfd_1", "insurer refused", T0)
    return order


def compensation_first_sent() -> PaymentOrder:
    order = compensating_two_payments()
    order.refund_processing(order.refunds[0], "50300001")
    return order


@dataclass(frozen=True)
class Row:
    name: str
    build: Callable[[], PaymentOrder]
    age: timedelta
    expected: p.Step
    caller: p.Caller = p.Caller()  # noqa: RUF009 - frozen, one shared default is safe


VOUCHER, PLACING, LOOKING = p.Caller(has_voucher=True), p.Caller(placing=TRADE), p.Caller(eager=True)
RID = "rfd_1"
NOT_PRESETTLED = p.CloseOrder("not pre-settled before it expired")


def retry(build: Callable[[], PaymentOrder]) -> p.Wait:
    """Waiting for the schedule's next retry of the order `build` makes."""
    return p.Wait(SCHEDULE.retry_at(build(), T0))


TABLE = [
    # creating an insured order: only the HIS (it has the voucher) pre-settles; else it expires
    Row("presettling, the HIS asks", presettling, 0 * s, p.Presettle(), VOUCHER),
    Row("presettling, nobody with the voucher", presettling, 5 * m, p.Wait(T0 + TTL)),
    Row("presettling, expired", presettling, TTL, NOT_PRESETTLED),
    Row("presettle unknown, the HIS retries", presettle_unknown, 1 * m, p.Presettle(), VOUCHER),
    Row("presettle unknown, expired", presettle_unknown, TTL + s, NOT_PRESETTLED),
    # waiting for a payment
    Row("awaiting payment", awaiting, 1 * m, p.Wait(T0 + TTL)),
    Row("awaiting payment, expired", awaiting, TTL, p.CloseOrder("expired unpaid")),
    Row("insured awaiting, expired", lambda: awaiting(True), TTL, p.CloseOrder("expired unpaid")),
    Row("close asked, no attempt", closing_without_attempt, 0 * s, p.CloseOrder("patient left")),
    # an attempt: placed only by the request that asked for it; otherwise queried on the schedule
    Row("attempt recorded, its request", recorded_attempt, 0 * s, p.PlacePayment(TRADE), PLACING),
    Row("attempt recorded, request gone", recorded_attempt, 5 * s, p.Wait(T0 + 10 * s)),
    Row("attempt recorded, request gone 10 s", recorded_attempt, 10 * s, p.QueryPayment(TRADE)),
    Row("placed, no notification yet", placed, 9 * s, p.Wait(T0 + 10 * s)),
    Row("placed, first query due", placed, 10 * s, p.QueryPayment(TRADE)),
    Row("placed, a kiosk looks after 1 s", placed, 1 * s, p.Wait(T0 + 2 * s), LOOKING),
    Row("placed, a kiosk looks after 2 s", placed, 2 * s, p.QueryPayment(TRADE), LOOKING),
    Row("placed, asked once, 4 s", placed_asked(1), 4 * s, retry(placed_asked(1))),
    Row("placed, asked once, 7 s", placed_asked(1), 7 * s, p.QueryPayment(TRADE)),
    Row("placed, asked 3 times, 19 s", placed_asked(3), 19 * s, retry(placed_asked(3))),
    Row("placed, asked 3 times, 25 s", placed_asked(3), 25 * s, p.QueryPayment(TRADE)),
    Row("placed, asked 9 times, not capped", placed_asked(9), 15 * m - s, p.Wait(T0 + QR)),
    Row("placed, its QR expired", placed, QR, p.CloseAtChannel(TRADE)),
    Row("placed, the order expired", placed, TTL, p.CloseAtChannel(TRADE)),
    Row("placed, close asked", closing_placed, 0 * s, p.CloseAtChannel(TRADE)),
    Row("placement unknown", placement_unknown, 10 * s, p.QueryPayment(TRADE)),
    Row("placement unknown, HIS retries pay", placement_unknown, 1 * s, p.PlacePayment(TRADE), PLACING),
    # JSAPI: the same life as a QR payment (placed by its request, queried, closed at expiry)
    Row("jsapi recorded, its request", jsapi_recorded, 0 * s, p.PlacePayment(TRADE), PLACING),
    Row("jsapi placed, no notification yet", jsapi_placed, 9 * s, p.Wait(T0 + 10 * s)),
    Row("jsapi placed, first query due", jsapi_placed, 10 * s, p.QueryPayment(TRADE)),
    Row("jsapi placed, expired", jsapi_placed, QR, p.CloseAtChannel(TRADE)),
    # a code payment: sent once by the request holding the code, queried every 5 s while the patient
    # confirms, reversed once its window passed (never sooner than 15 s after the call came back)
    Row("code recorded, its request", code_recorded, 0 * s, p.PlacePayment(TRADE), PLACING),
    Row("code recorded, request gone", code_recorded, 4 * s, p.Wait(T0 + 5 * s)),
    Row("code recorded, request gone 5 s", code_recorded, 5 * s, p.QueryPayment(TRADE)),
    Row("code sent, its request again: never twice", code_sent(), 1 * s, p.Wait(T0 + 5 * s), PLACING),
    Row("code USERPAYING, 4 s", code_sent(), 4 * s, p.Wait(T0 + 5 * s)),
    Row("code USERPAYING, 5 s", code_sent(), 5 * s, p.QueryPayment(TRADE)),
    Row("code USERPAYING, asked at 20 s", asked_at(code_sent(), 20 * s), 22 * s, p.Wait(T0 + 25 * s)),
    Row("code USERPAYING, asked at 27 s", asked_at(code_sent(), 27 * s), 29 * s, p.Wait(T0 + CODE_WINDOW)),
    Row("code USERPAYING, window passed", code_sent(), CODE_WINDOW, p.ReversePayment(TRADE)),
    Row("code USERPAYING, asked 5 times, window passed", asked_at(code_sent(), 25 * s, 5), CODE_WINDOW,
        p.ReversePayment(TRADE)),
    Row("code answer came 25 s late, at 39 s", asked_at(code_sent(25 * s), 38 * s), 39 * s,
        p.Wait(T0 + 40 * s)),
    Row("code answer came 25 s late, at 40 s", code_sent(25 * s), 40 * s, p.ReversePayment(TRADE)),
    Row("code reverse not confirmed, 2 s later", asked_at(code_sent(), 31 * s), 33 * s, p.Wait(T0 + 36 * s)),
    Row("code reverse not confirmed, 5 s later", asked_at(code_sent(), 31 * s), 36 * s,
        p.ReversePayment(TRADE)),
    Row("code reverse not confirmed for 10 min: every 5 min", asked_at(code_sent(), CODE_WINDOW + 10 * m),
        CODE_WINDOW + 14 * m, p.Wait(T0 + CODE_WINDOW + 15 * m)),
    Row("code reverse not confirmed for a day: hourly", asked_at(code_sent(), CODE_WINDOW + 24 * 60 * m),
        CODE_WINDOW + 24 * 60 * m + 59 * m, p.Wait(T0 + CODE_WINDOW + 25 * 60 * m)),
    Row("code USERPAYING, close asked: still queried", code_sent_closing, 5 * s, p.QueryPayment(TRADE)),
    # money taken at the window: recorded PAID at once by whoever comes (nothing to place or query)
    Row("cash reported, its request", at_window, 0 * s, p.RecordWindowPayment(TRADE), PLACING),
    Row("cash reported, request gone (crash)", at_window, 1 * s, p.RecordWindowPayment(TRADE)),
    Row("pos reported, the janitor", lambda: at_window("POS"), 1 * m, p.RecordWindowPayment(TRADE)),
    Row("cash reported, close asked: recorded first", lambda: at_window(closing=True), 0 * s,
        p.RecordWindowPayment(TRADE)),
    Row("cash reported, order expired: recorded first", at_window, TTL, p.RecordWindowPayment(TRADE)),
    Row("cash recorded, self-pay", window_recorded, 0 * s, p.Done()),
    # paid from the deposit: debited in the transaction that recorded it (a local step)
    Row("deposit payment recorded", from_deposit, 0 * s, p.ConsumeDeposit(TRADE), PLACING),
    Row("deposit payment, close asked: debited first", lambda: from_deposit(closing=True), 0 * s,
        p.ConsumeDeposit(TRADE)),
    Row("pos recorded, insured: 2207", lambda: window_recorded("POS", True), 0 * s, p.Settle()),
    Row("cash refund at the cashier, fresh", window_refund_at_the_cashier, 2 * s,
        retry(window_refund_at_the_cashier)),
    # the insurer settlement
    Row("settling, first time", settling, 0 * s, p.Settle()),
    Row("settling, unknown once, 4 s", lambda: settling(1), 4 * s, retry(lambda: settling(1))),
    Row("settling, unknown once, 7 s", lambda: settling(1), 7 * s, p.Settle()),
    Row("settling, attempts spent", lambda: settling(4), 1 * m,
        p.GiveUp(Attention.SETTLEMENT_UNKNOWN, "the insurer's settlement outcome is still unknown")),
    Row("settled", settled, 1 * m, p.Done()),
    # closing an insured order undoes its pre-settlement once
    Row("closed insured, 2205 not yet", closed_insured, 0 * s, p.CancelPresettlement()),
    Row("closed insured, 2205 done", lambda: closed_insured(True), 0 * s, p.Done()),
    Row("closed insured, 2205 failed once", lambda: closed_insured_asked(1), 1 * s,
        retry(lambda: closed_insured_asked(1))),
    Row("closed insured, 2205 retry due", lambda: closed_insured_asked(1), 7 * s, p.CancelPresettlement()),
    Row("closed insured, 2205 attempts spent", lambda: closed_insured_asked(4), 1 * m,
        p.GiveUp(Attention.PRESETTLEMENT_OPEN, p._GIVE_UP_REASONS[Attention.PRESETTLEMENT_OPEN])),
    Row("closed self-pay", closed_self_pay, 0 * s, p.Done()),
    # a success that comes after close is given back, then its refund runs like any other
    Row("paid after close", paid_after_close, 0 * s, p.RefundLateSuccess("pay_1")),
    Row("late success being given back", giving_back_late_success, 0 * s, p.PayOutRefund(RID)),
    # refunds: revoke (insured) first, then pay out, then the channel's answer is awaited
    Row("refund requested, insured", refund_requested, 0 * s, p.RevokeSettlement(RID)),
    Row("refund requested, self-pay", lambda: refund_requested(False), 0 * s, p.PayOutRefund(RID)),
    Row("partial refund requested, self-pay: no 2208", partial_refund_requested, 0 * s, p.PayOutRefund(RID)),
    Row("partly refunded: settled, nothing to do", partly_refunded, 1 * m, p.Done()),
    Row("refund revoked", refund_revoked, 0 * s, p.PayOutRefund(RID)),
    Row("refund not sent, channel was down", lambda: asked(refund_revoked, 1), 7 * s, p.PayOutRefund(RID)),
    Row("refund not sent, waiting", lambda: asked(refund_revoked, 1), 1 * s,
        retry(lambda: asked(refund_revoked, 1))),
    Row("2208 not confirmed, retry due", lambda: asked(refund_requested, 1), 7 * s, p.RevokeSettlement(RID)),
    Row("2208 attempts spent", lambda: asked(refund_requested, 4), 1 * m,
        p.GiveUp(Attention.REVOKE_UNKNOWN, "the insurer did not confirm the revocation (2208)")),
    Row("compensation", compensating, 0 * s, p.PayOutRefund(RID)),
    Row("refund processing, fresh", refund_processing(), 2 * s, retry(refund_processing())),
    Row("refund processing, due", refund_processing(), 6 * s, p.QueryRefund(RID)),
    Row("refund processing, asked twice", refund_processing(2), 13 * s, p.QueryRefund(RID)),
    Row("refund unknown, due", refund_unknown, 6 * s, p.QueryRefund(RID)),
    Row("refund processing, attempts spent", refund_processing(4), 1 * m,
        p.GiveUp(Attention.REFUND_UNKNOWN, "no final answer from the channel about the refund")),
    Row("refund abnormal: a person", refund_abnormal, 1 * m, p.Done()),
    Row("refunded", refunded, 1 * m, p.Done()),
    # a refund by lines of an insured order: revoke, pre-settle and settle what remains, cash back
    Row("lines refund requested: 2208", lines_requested, 0 * s, p.RevokeForLines(RID)),
    Row("lines 2208 unknown once, waiting", lambda: asked(lines_requested, 1), 1 * s,
        retry(lambda: asked(lines_requested, 1))),
    Row("lines 2208 unknown once, retry due", lambda: asked(lines_requested, 1), 7 * s,
        p.RevokeForLines(RID)),
    Row("lines 2208 attempts spent", lambda: asked(lines_requested, 4), 1 * m,
        p.GiveUp(Attention.REVOKE_UNKNOWN, "the insurer did not confirm the revocation (2208)")),
    Row("lines 2208 refused: settled as before", lines_not_revoked, 1 * m, p.Done()),
    Row("lines revoked: what remains pre-settled", lines_revoked, 0 * s, p.PresettleRemaining(RID)),
    Row("lines 2206 unknown once, retry due", lambda: asked(lines_revoked, 1), 7 * s,
        p.PresettleRemaining(RID)),
    Row("lines 2206 attempts spent", lambda: asked(lines_revoked, 4), 1 * m,
        p.GiveUp(Attention.RESETTLE_UNKNOWN, p._GIVE_UP_REASONS[Attention.RESETTLE_UNKNOWN])),
    Row("lines pre-settled: 2207", lines_presettled(), 0 * s, p.SettleRemaining(RID)),
    Row("lines 2207 unknown once, waiting", lambda: asked(lines_presettled(), 1), 1 * s,
        retry(lambda: asked(lines_presettled(), 1))),
    Row("lines new cash share larger: a person", lines_presettled(7_000), 1 * m, p.Done()),
    Row("lines re-settlement refused: a person", lines_resettle_refused, 1 * m, p.Done()),
    Row("lines re-settled: freed cash paid out", lines_resettled(), 0 * s, p.PayOutRefund(RID)),
    Row("lines re-settled, no cash freed: settled", lines_resettled(10_500 - 2_500), 1 * m, p.Done()),
    Row("lines refund paid out: settled", lines_paid_out, 1 * m, p.Done()),
    # several payments: partly paid waits for the rest; attempts side by side are each asked in turn
    Row("partly paid, nothing open", partly_paid, 1 * m, p.Wait(T0 + TTL)),
    Row("partly paid insured, nothing open", lambda: partly_paid(True), 1 * m, p.Wait(T0 + TTL)),
    Row("partly paid, second placed, query due", partly_paid_second_open, 10 * s, p.QueryPayment(TRADE2)),
    Row("side by side, second's request places it", side_by_side, 0 * s, p.PlacePayment(TRADE2),
        p.Caller(placing=TRADE2)),
    Row("side by side, first question to the first", side_by_side, 10 * s, p.QueryPayment(TRADE)),
    Row("side by side, next question to the second", lambda: side_by_side(1), 7 * s, p.QueryPayment(TRADE2)),
    Row("side by side, close asked", lambda: _closing(side_by_side()), 0 * s, p.CloseAtChannel(TRADE)),
    # closing a partly paid order: each payment back to its own channel, the attempts closed, then the
    # order; an attempt whose outcome is unknown holds none of the returns up
    Row("partly paid, close asked", partly_paid_closing, 0 * s, p.ReturnPayment("pay_1")),
    Row("partly paid, expired", partly_paid, TTL, p.ReturnPayment("pay_1")),
    Row("partly paid, second unknown, close asked", lambda: partly_paid_closing("unknown"), 0 * s,
        p.ReturnPayment("pay_1")),
    Row("return recorded", returning, 0 * s, p.PayOutRefund(RETURN_ID)),
    Row("return recorded, second attempt open", lambda: returning(second_open=True), 0 * s,
        p.PayOutRefund(RETURN_ID)),
    Row("return sent, second attempt open", lambda: returning(True, True), 0 * s, p.CloseAtChannel(TRADE2)),
    Row("return sent, nothing open", lambda: returning(True), 0 * s, p.CloseOrder("patient left")),
    Row("return done, closed insured", returned_and_closed_insured, 0 * s, p.CancelPresettlement()),
    # a refused settlement gives every payment back, each refund sent before any answer is awaited
    Row("compensation, two payments", compensating_two_payments, 0 * s, p.PayOutRefund(RID)),
    Row("compensation, first sent", compensation_first_sent, 0 * s, p.PayOutRefund(f"{RID}-2")),
]  # fmt: skip


def _closing(order: PaymentOrder) -> PaymentOrder:
    order.request_close("patient left")
    return order


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_the_next_step_of_each_state(row: Row) -> None:
    order = row.build()
    assert p.next_step(order, T0 + row.age, SCHEDULE, row.caller) == row.expected


def test_every_step_kind_is_in_the_table() -> None:
    kinds = {type(row.expected) for row in TABLE}
    assert kinds == set(p.Step.__args__)  # type: ignore[attr-defined]


def test_a_refund_by_lines_re_settles_and_frees_the_cash_difference() -> None:
    order = lines_paid_out()
    assert order.status is OrderStatus.SETTLED
    assert [line.line_no for line in order.billed_lines()] == ["1"]
    assert (order.setl_id, order.settlement_id, order.settlement_step) == ("setl-2", "stl-2", "resettle1")
    # 45 yuan paid; the remaining 125 yuan bill leaves 37.50 yuan cash: 7.50 yuan back
    assert [r.cash.fen for r in order.refunds] == [750]
    assert order.split is not None and order.split.psn_cash_pay.fen == 3_750


def test_a_larger_new_cash_share_stops_for_a_person() -> None:
    order = lines_presettled(7_000)()
    assert order.status is OrderStatus.NEEDS_ATTENTION
    assert order.attention is Attention.RESETTLE_MISMATCH
    assert "more than the 4500 fen paid" in order.attention_reason
    assert order.refunds == []


def test_the_cash_asked_back_must_be_what_the_new_split_frees() -> None:
    order = settled_two_lines()
    order.begin_line_refund(RID, (RefundedLine("2", 0),), Money(700), "drug returned", T0, "C001")
    order.line_refund_revoked()
    order.line_refund_presettled("stl-2", _split_of(12_500, 8_750))
    assert order.attention is Attention.RESETTLE_MISMATCH
    assert "frees 750 fen, not the 700 fen asked back" in order.attention_reason


def test_a_refund_by_lines_checks_its_lines() -> None:
    order = settled_two_lines()
    with pytest.raises(InvalidArgument) as unknown:
        order.begin_line_refund(RID, (RefundedLine("9", 0),), Money(0), "x", T0, "C001")
    assert unknown.value.violations[0].field == "lines[0].line_no"
    with pytest.raises(InvalidArgument) as too_much:
        order.begin_line_refund(RID, (RefundedLine("2", 30_000),), Money(0), "x", T0, "C001")
    assert too_much.value.violations[0].field == "lines[0].quantity_ten_thousandths"
    assert order.status is OrderStatus.SETTLED and order.line_refunds == []


def test_a_part_of_a_line_is_billed_at_its_unit_price() -> None:
    order = settled_two_lines()
    order.begin_line_refund(RID, (RefundedLine("2", 5_000),), Money(0), "one box back", T0, "C001")
    drug = order.billed_lines()[1]
    assert (drug.quantity_ten_thousandths, drug.line_total.fen) == (15_000, 1_875)


def test_every_line_named_is_a_full_refund() -> None:
    order = settled_two_lines()
    lines = (RefundedLine("1", 0), RefundedLine("2", 0))
    refund = order.begin_line_refund(RID, lines, Money(0), "visit cancelled", T0, "C001")
    assert refund is not None and refund.cash.fen == 4_500 and order.line_refunds == []
    assert p.next_step(order, T0, SCHEDULE) == p.RevokeSettlement(RID)


def test_the_schedule_escalates_with_bounded_jitter() -> None:
    order = settling(1)
    delays = []
    for attempts in range(1, 12):
        order.attempts = attempts
        delays.append(SCHEDULE.retry_at(order, T0) - T0)
    bases = [min(5 * 2 ** (n - 1), 3600) for n in range(1, 12)]
    assert all(b <= d.total_seconds() <= b * 1.2 for d, b in zip(delays, bases, strict=True))
    assert delays == sorted(delays)


def test_jitter_spreads_orders_but_is_the_same_for_the_same_order() -> None:
    first, second = settling(2), settling(2)
    second.order_id = "ord_fedcba9876543210fedcba98"
    assert SCHEDULE.retry_at(first, T0) == SCHEDULE.retry_at(settling(2), T0)
    assert SCHEDULE.retry_at(first, T0) != SCHEDULE.retry_at(second, T0)


def test_a_closed_attempt_leaves_the_order_waiting_for_another() -> None:
    order = placed()
    order.payment_ended(order.payments[0], PaymentStatus.CLOSED)
    assert p.next_step(order, T0 + m, SCHEDULE) == p.Wait(T0 + TTL)


def test_a_code_payment_is_never_reversed_sooner_than_the_channel_allows() -> None:
    order = code_recorded()
    payment = order.payments[0]
    order.code_payment_sent(payment, MASKED_CODE, T0 + 20 * s + p.REVERSE_NOT_BEFORE)
    assert payment.expires_at == T0 + 35 * s  # not the recorded window (T0 + 30 s)
    assert payment.code_url == MASKED_CODE and payment.is_open


def test_once_a_person_was_asked_the_step_goes_on_at_the_slowest_pace() -> None:
    """A second spent schedule used to give up again on every look (GiveUp reached the step runner
    as if it were a call, which raised): an owed refund was then never sent again."""
    order = refund_processing(4)()
    give_up = p.next_step(order, T0 + m, SCHEDULE)
    assert isinstance(give_up, p.GiveUp)
    order.give_up(give_up.attention, give_up.reason)
    order.moved(T0 + m)  # what the process manager records when the order changes
    for _ in range(SCHEDULE.max_attempts):
        order.still_waiting(T0 + m)
    slowest = SCHEDULE.retry_delays[-1]
    assert p.next_step(order, T0 + 2 * m, SCHEDULE) == p.Wait(T0 + m + slowest)
    assert p.next_step(order, T0 + m + slowest, SCHEDULE) == p.QueryRefund(RID)


def test_two_late_successes_are_both_given_back() -> None:
    """Two attempts open side by side, both paid after the order closed: the second success arrived
    while the first was being given back, and used to be forgotten once that refund succeeded (the
    order went back to CLOSED with the second payment's money kept)."""
    order = side_by_side()
    order.payment_placed(order.payments[1], "weixin://wxpay/bizpayurl?pr=2")
    order.close("patient left")
    order.record_channel_success(ChannelPaymentSeen(TRADE, "4200001", Money(5_000), T0), T0)
    back = order.give_back("rfd_1", order.payments[0], T0)
    order.record_channel_success(ChannelPaymentSeen(TRADE2, "4200002", Money(7_500), T0), T0)

    order.refund_succeeded(back, "50300001", T0)

    assert order.attention is Attention.PAID_AFTER_CLOSE
    assert p.next_step(order, T0, SCHEDULE) == p.RefundLateSuccess("pay_2")
