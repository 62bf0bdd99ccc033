"""The payment order state machine (payment-core domain), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.payment_core.domain import keys
from services.payment_core.domain.model import (
    Attention,
    ChannelPaymentSeen,
    ChargeLine,
    InsuranceSplit,
    OrderStatus,
    PaymentOutcome,
    PaymentStatus,
    RefundKind,
    RefundStatus,
)
from services.payment_core.domain.order import TRANSITIONS, PaymentOrder, SplitDoesNotAddUp, split_refund
from services.runtime.errors import InvalidArgument, RefundExceedsPaid, StateConflict
from services.runtime.money import Money

NOW = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)
ORDER_ID = "ord_0123456789abcdef01234567"


def line(total_fen: int = 12_500, grade: str = "01") -> ChargeLine:
    return ChargeLine("1", "ZC0001", "110200001010000", "普通门诊诊查费", grade, "02", 10_000,
                      Money(total_fen), Money(total_fen), "0301", "D0301")  # fmt: skip


def make_order(insured: bool = False, total_fen: int = 12_500) -> PaymentOrder:
    return PaymentOrder(
        order_id=ORDER_ID, create_request_id="req-1", his_order_no="MZ0001", scene="OUTPATIENT",
        campus_code="FZ900", dept_code="0301", his_patient_id="P001", masked_cert_no="3501**********1234",
        lines=(line(total_fen),), insured=insured, insutype="310" if insured else "", med_type="11",
        status=OrderStatus.PRESETTLING if insured else OrderStatus.AWAITING_PAYMENT,
        total=Money(total_fen), cash_due=Money(0) if insured else Money(total_fen), created_at=NOW,
    )  # fmt: skip


def split(total: int = 12_500, fund: int = 8_750, account: int = 2_000) -> InsuranceSplit:
    cash = total - fund - account
    return InsuranceSplit.from_fen({
        "medfee_sumamt": total, "inscp_scp_amt": total, "hifp_pay": fund, "fund_pay_sumamt": fund,
        "psn_part_amt": account + cash, "acct_pay": account, "psn_cash_pay": cash,
    })  # fmt: skip


def paying(order: PaymentOrder) -> ChannelPaymentSeen:
    payment = order.start_payment("pay_1", "WECHAT_PAY", "NATIVE_QR", NOW, NOW + timedelta(minutes=15))
    order.payment_placed(payment, "weixin://wxpay/bizpayurl?pr=1")
    return ChannelPaymentSeen(payment.out_trade_no, "4200001", payment.amount, NOW + timedelta(minutes=1))


def settled_self_pay() -> PaymentOrder:
    order = make_order()
    order.record_channel_success(paying(order), NOW)
    return order


def insured_awaiting(cash_share: bool = True) -> PaymentOrder:
    order = make_order(insured=True)
    order.accept_presettlement("stl-1", split() if cash_share else split(fund=10_500, account=2_000), "310")
    return order


# ---- self-pay ---------------------------------------------------------------------------------------


def test_a_self_pay_order_owes_its_total_and_settles_on_the_channel_success() -> None:
    order = make_order()
    seen = paying(order)
    assert order.status is OrderStatus.PAYING
    assert seen.out_trade_no == f"{ORDER_ID}_01" and len(seen.out_trade_no) <= 32

    assert order.record_channel_success(seen, NOW) is PaymentOutcome.SETTLED

    assert order.status is OrderStatus.SETTLED
    assert order.cash_paid == Money(12_500) and order.settled_at == NOW
    assert order.payments[0].channel_transaction_id == "4200001"


def test_a_repeated_channel_success_changes_nothing() -> None:
    order = make_order()
    seen = paying(order)
    order.record_channel_success(seen, NOW)
    assert order.record_channel_success(seen, NOW + timedelta(hours=1)) is PaymentOutcome.DUPLICATE
    assert order.cash_paid == Money(12_500) and order.settled_at == NOW


def test_an_amount_that_differs_is_never_applied() -> None:
    order = make_order()
    seen = paying(order)
    wrong = ChannelPaymentSeen(seen.out_trade_no, seen.transaction_id, Money(1), seen.success_time)

    assert order.record_channel_success(wrong, NOW) is PaymentOutcome.AMOUNT_MISMATCH

    assert order.status is OrderStatus.NEEDS_ATTENTION and order.attention is Attention.AMOUNT_MISMATCH
    assert order.cash_paid == Money(0) and order.payments[0].status is PaymentStatus.UNKNOWN


def test_only_one_payment_attempt_is_open_at_a_time() -> None:
    order = make_order()
    paying(order)
    with pytest.raises(StateConflict):
        order.start_payment("pay_2", "WECHAT_PAY", "NATIVE_QR", NOW, NOW)


def test_a_refused_attempt_lets_the_order_wait_again_with_a_new_key() -> None:
    order = make_order()
    first = order.start_payment("pay_1", "WECHAT_PAY", "NATIVE_QR", NOW, NOW)
    order.payment_ended(first, PaymentStatus.FAILED)
    assert order.status is OrderStatus.AWAITING_PAYMENT
    second = order.start_payment("pay_2", "WECHAT_PAY", "NATIVE_QR", NOW, NOW)
    assert second.out_trade_no == keys.out_trade_no(ORDER_ID, 2) != first.out_trade_no


# ---- closing ----------------------------------------------------------------------------------------


def test_an_unpaid_order_closes_with_its_attempts() -> None:
    order = make_order()
    paying(order)
    order.close("patient left")
    assert order.status is OrderStatus.CLOSED and order.payments[0].status is PaymentStatus.CLOSED


def test_a_settled_order_cannot_be_closed() -> None:
    with pytest.raises(StateConflict):
        settled_self_pay().close("patient left")


def test_money_arriving_after_close_is_kept_flagged_and_given_back() -> None:
    order = make_order()
    seen = paying(order)
    order.close("patient left")

    assert order.record_channel_success(seen, NOW) is PaymentOutcome.NEEDS_REFUND
    assert order.attention is Attention.PAID_AFTER_CLOSE and order.cash_paid == Money(12_500)

    refund = order.begin_refund("rfd_1", Money(0), "paid after close", NOW)
    assert refund.kind is RefundKind.EXCESS and refund.cash == Money(12_500)
    assert order.refund_succeeded(refund, "50300001", NOW) is True
    assert order.status is OrderStatus.CLOSED and order.attention is None


# ---- insured ----------------------------------------------------------------------------------------


def test_the_presettlement_split_sets_the_cash_share() -> None:
    order = insured_awaiting()
    assert order.status is OrderStatus.AWAITING_PAYMENT
    assert order.cash_due == Money(1_750) and order.settlement_id == "stl-1"


def test_a_split_that_does_not_add_up_is_refused() -> None:
    order = make_order(insured=True)
    with pytest.raises(SplitDoesNotAddUp):
        order.accept_presettlement("stl-1", split(total=12_000), "310")
    assert order.status is OrderStatus.PRESETTLING


def test_insured_cash_moves_the_order_to_settling_then_the_insurer_settles_it() -> None:
    order = insured_awaiting()
    assert order.record_channel_success(paying(order), NOW) is PaymentOutcome.SETTLING
    assert order.status is OrderStatus.SETTLING and order.awaits_settlement

    assert order.settlement_confirmed("setl-9", split(), NOW) is True
    assert order.status is OrderStatus.SETTLED and order.setl_id == "setl-9"


def test_an_unknown_settlement_counts_its_attempts_and_can_still_complete() -> None:
    order = insured_awaiting()
    order.record_channel_success(paying(order), NOW)
    order.moved(NOW)
    order.still_waiting(NOW + timedelta(seconds=1))
    order.still_waiting(NOW + timedelta(seconds=6))
    assert order.status is OrderStatus.SETTLING and order.awaits_settlement and order.attempts == 2

    assert order.settlement_confirmed("setl-9", None, NOW)
    assert order.status is OrderStatus.SETTLED and order.attention is None


def test_a_final_split_that_contradicts_the_cash_paid_is_flagged_not_settled() -> None:
    order = insured_awaiting()
    order.record_channel_success(paying(order), NOW)
    assert order.settlement_confirmed("setl-9", split(fund=9_000), NOW) is False
    assert order.attention is Attention.SETTLEMENT_MISMATCH


def test_a_refused_settlement_gives_the_cash_back() -> None:
    order = insured_awaiting()
    order.record_channel_success(paying(order), NOW)
    refund = order.settlement_refused("rfd_1", "personal account frozen", NOW)
    assert refund is not None and refund.kind is RefundKind.COMPENSATION and refund.cash == Money(1_750)
    assert order.status is OrderStatus.REFUNDING
    order.refund_succeeded(refund, "50300001", NOW)
    assert order.status is OrderStatus.REFUNDED and "personal account frozen" in order.attention_reason


def test_a_zero_cash_share_settles_without_a_channel() -> None:
    order = insured_awaiting(cash_share=False)
    payment = order.settle_without_cash("pay_0", NOW)
    assert payment.channel == "NONE" and payment.status is PaymentStatus.SUCCEEDED
    assert order.status is OrderStatus.SETTLING


def test_settling_without_cash_is_refused_when_cash_is_owed() -> None:
    with pytest.raises(StateConflict):
        insured_awaiting().settle_without_cash("pay_0", NOW)


# ---- refunds ----------------------------------------------------------------------------------------


def _reserved(order: PaymentOrder) -> None:
    """What storage does when a refund is recorded (reserve_refund): count it against its payment."""
    for refund in order.refunds:
        if refund.status is RefundStatus.PENDING:
            payment = next(p for p in order.payments if p.payment_id == refund.payment_id)
            payment.refunded = payment.refunded + refund.cash


def _two_payment_order() -> PaymentOrder:
    order = make_order()
    order.record_channel_success(_pay(order, "pay_1", 5_000), NOW)
    order.record_channel_success(_pay(order, "pay_2", channel="ALIPAY"), NOW)  # 7,500 fen
    return order


def test_partial_refunds_in_sequence_keep_the_order_settled_until_everything_is_back() -> None:
    order = settled_self_pay()
    for n, cash in enumerate((1_000, 2_500, 4_000), start=1):
        refund = order.begin_refund(f"rfd_{n}", Money(cash), "one drug returned", NOW, "op-7")
        assert refund.cash == Money(cash) and refund.requested_by == "op-7"
        assert refund.out_refund_no == keys.out_refund_no(ORDER_ID, n)
        _reserved(order)
        assert order.status is OrderStatus.REFUNDING
        order.refund_succeeded(refund, f"5030000{n}", NOW)
        assert order.status is OrderStatus.SETTLED
    last = order.begin_refund("rfd_4", Money(0), "the rest", NOW, "op-7")
    assert last.cash == Money(12_500 - 7_500)
    order.refund_succeeded(last, "50300004", NOW)
    assert order.status is OrderStatus.REFUNDED


def test_a_partial_refund_of_exactly_what_remains_completes_the_order() -> None:
    order = settled_self_pay()
    first = order.begin_refund("rfd_1", Money(2_500), "x", NOW, "op-7")
    _reserved(order)
    order.refund_succeeded(first, "1", NOW)
    second = order.begin_refund("rfd_2", Money(10_000), "y", NOW, "op-7")
    order.refund_succeeded(second, "2", NOW)
    assert order.status is OrderStatus.REFUNDED


def test_a_partial_refund_goes_to_the_largest_refundable_payment_first() -> None:
    order = _two_payment_order()
    refund = order.begin_refund("rfd_1", Money(9_000), "x", NOW, "op-7")
    assert [(r.refund_id, r.payment_id, r.cash) for r in order.refunds] == [
        ("rfd_1", "pay_2", Money(7_500)), ("rfd_1-2", "pay_1", Money(1_500)),
    ]  # fmt: skip
    assert len({r.out_refund_no for r in order.refunds}) == 2 and refund.refund_id == "rfd_1"


def test_the_split_policy_counts_what_each_payment_has_left() -> None:
    order = _two_payment_order()
    first = order.begin_refund("rfd_1", Money(3_000), "x", NOW, "op-7")
    assert (first.payment_id, first.cash) == ("pay_2", Money(3_000))  # 7,500 is the larger
    _reserved(order)
    order.refund_succeeded(first, "1", NOW)
    second = order.begin_refund("rfd_2", Money(4_800), "y", NOW, "op-7")  # 5,000 vs 4,500 left
    assert [(r.payment_id, r.cash) for r in order.refunds[1:]] == [
        ("pay_1", Money(4_800)),
    ]
    assert second.cash == Money(4_800)


def test_on_a_tie_the_most_recent_payment_is_refunded_first() -> None:
    order = make_order(total_fen=10_000)
    order.record_channel_success(_pay(order, "pay_1", 5_000), NOW)
    order.record_channel_success(_pay(order, "pay_2"), NOW)
    assert order.begin_refund("rfd_1", Money(100), "x", NOW, "op-7").payment_id == "pay_2"


def test_a_refund_never_takes_more_than_a_payment_has_left() -> None:
    payments = _two_payment_order().payments
    payments[1].refunded = Money(7_000)
    parts = split_refund(payments, Money(5_200))
    assert [(p.payment_id, cash) for p, cash in parts] == [("pay_1", Money(5_000)), ("pay_2", Money(200))]
    with pytest.raises(RefundExceedsPaid):
        split_refund(payments, Money(5_501))


@pytest.mark.parametrize("cash", [12_501, 20_000])
def test_more_than_what_remains_refundable_is_refused_and_nothing_recorded(cash: int) -> None:
    order = settled_self_pay()
    with pytest.raises(RefundExceedsPaid):
        order.begin_refund("rfd_1", Money(cash), "x", NOW, "op-7")
    assert order.refunds == [] and order.status is OrderStatus.SETTLED


def test_a_negative_amount_is_refused_naming_cash_fen() -> None:
    order = settled_self_pay()
    with pytest.raises(InvalidArgument) as refused:
        order.begin_refund("rfd_1", Money(-1), "x", NOW, "op-7")
    assert [v.field for v in refused.value.violations] == ["cash_fen"] and order.refunds == []


def test_nothing_left_to_refund_is_refused() -> None:
    order = settled_self_pay()
    refund = order.begin_refund("rfd_1", Money(0), "x", NOW)
    _reserved(order)
    order.refund_succeeded(refund, "1", NOW)
    for cash in (0, 1):
        with pytest.raises(StateConflict):
            order.begin_refund("rfd_2", Money(cash), "again", NOW)
    assert len(order.refunds) == 1


def test_a_partial_refund_of_an_insured_order_is_refused_a_full_one_is_not() -> None:
    order = insured_awaiting()
    order.record_channel_success(paying(order), NOW)
    order.settlement_confirmed("setl-9", None, NOW)
    with pytest.raises(StateConflict, match=r"full refund .* insured"):
        order.begin_refund("rfd_1", Money(100), "partial", NOW, "op-7")
    assert order.refunds == [] and order.status is OrderStatus.SETTLED
    order.begin_refund("rfd_1", Money(0), "whole", NOW, "op-7")
    assert order.status is OrderStatus.REFUNDING


def test_a_refused_partial_refund_returns_the_order_to_settled() -> None:
    order = _two_payment_order()
    refund = order.begin_refund("rfd_1", Money(1_000), "x", NOW, "op-7")
    order.refund_failed(refund, "NOT_ENOUGH")
    assert order.status is OrderStatus.SETTLED and order.attention is None


def test_an_unpaid_order_has_nothing_to_refund() -> None:
    with pytest.raises(StateConflict):
        make_order().begin_refund("rfd_1", Money(0), "x", NOW)


def test_a_full_refund_of_a_settled_order() -> None:
    order = settled_self_pay()
    refund = order.begin_refund("rfd_1", Money(0), "wrong prescription", NOW)
    assert refund.out_refund_no == keys.out_refund_no(ORDER_ID, 1) and refund.cash == Money(12_500)
    assert order.status is OrderStatus.REFUNDING
    with pytest.raises(StateConflict):
        order.begin_refund("rfd_2", Money(0), "again", NOW)
    assert order.refund_succeeded(refund, "50300001", NOW) and order.status is OrderStatus.REFUNDED
    assert not order.refund_succeeded(refund, "50300001", NOW)


def test_a_refused_refund_returns_a_self_pay_order_to_settled() -> None:
    order = settled_self_pay()
    refund = order.begin_refund("rfd_1", Money(0), "x", NOW)
    order.refund_failed(refund, "NOT_ENOUGH")
    assert order.status is OrderStatus.SETTLED and refund.status is RefundStatus.FAILED


def test_a_refused_cash_refund_after_revocation_is_for_a_person() -> None:
    order = insured_awaiting()
    order.record_channel_success(paying(order), NOW)
    order.settlement_confirmed("setl-9", None, NOW)
    refund = order.begin_refund("rfd_1", Money(0), "x", NOW)
    order.settlement_revoked_for(refund)
    assert refund.fund == Money(8_750) and refund.personal_account == Money(2_000)
    order.refund_failed(refund, "NOT_ENOUGH")
    assert order.attention is Attention.REFUND_REFUSED


# ---- the machine itself -----------------------------------------------------------------------------


def test_terminal_states_only_lead_to_attention_or_refund() -> None:
    assert TRANSITIONS[OrderStatus.CLOSED] == {OrderStatus.NEEDS_ATTENTION}
    assert TRANSITIONS[OrderStatus.REFUNDED] == {OrderStatus.NEEDS_ATTENTION}
    assert TRANSITIONS[OrderStatus.SETTLED] == {OrderStatus.REFUNDING, OrderStatus.NEEDS_ATTENTION}


def test_every_status_has_a_transition_row() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)


def test_business_keys_are_derived_and_fit_the_channel() -> None:
    assert keys.out_trade_no(ORDER_ID, 7) == keys.out_trade_no(ORDER_ID, 7)
    assert len(keys.out_trade_no(ORDER_ID, 99)) <= 32 and len(keys.out_refund_no(ORDER_ID, 99)) <= 32
    with pytest.raises(ValueError):
        keys.out_trade_no(ORDER_ID, 100)


# ---- several payments -------------------------------------------------------------------------------


def _pay(
    order: PaymentOrder, payment_id: str, amount: int = 0, channel: str = "WECHAT_PAY"
) -> ChannelPaymentSeen:
    payment = order.start_payment(
        payment_id, channel, "NATIVE_QR", NOW, NOW + timedelta(minutes=15), Money(amount)
    )
    order.payment_placed(payment, f"weixin://wxpay/bizpayurl?pr={payment_id}")
    return ChannelPaymentSeen(payment.out_trade_no, f"42{payment_id}", payment.amount, NOW)


def test_a_self_pay_order_is_paid_by_two_payments_and_settles_only_with_the_second() -> None:
    order = make_order()
    first = _pay(order, "pay_1", 5_000)
    assert order.record_channel_success(first, NOW) is PaymentOutcome.PART_PAID
    assert order.status is OrderStatus.AWAITING_PAYMENT and order.cash_remaining == Money(7_500)

    second = _pay(order, "pay_2", channel="ALIPAY")  # zero: what remains
    assert second.amount == Money(7_500) and second.out_trade_no == keys.out_trade_no(ORDER_ID, 2)
    assert order.record_channel_success(second, NOW) is PaymentOutcome.SETTLED

    assert order.status is OrderStatus.SETTLED and order.cash_kept == order.cash_due == Money(12_500)
    assert [(p.channel, p.amount) for p in order.payments if p.is_kept] == [
        ("WECHAT_PAY", Money(5_000)),
        ("ALIPAY", Money(7_500)),
    ]


def test_an_insured_cash_share_paid_in_two_parts_waits_for_both_before_settling() -> None:
    order = insured_awaiting()
    assert order.record_channel_success(_pay(order, "pay_1", 750), NOW) is PaymentOutcome.PART_PAID
    assert not order.awaits_settlement
    assert order.record_channel_success(_pay(order, "pay_2"), NOW) is PaymentOutcome.SETTLING
    assert order.awaits_settlement and order.settlement_confirmed("setl-9", split(), NOW)


def test_attempts_may_be_open_side_by_side_but_never_cover_more_than_is_due() -> None:
    order = make_order()
    _pay(order, "pay_1", 5_000)
    _pay(order, "pay_2")
    assert order.cash_remaining == Money(0) and len(order.open_payments()) == 2
    with pytest.raises(StateConflict):
        order.start_payment("pay_3", "WECHAT_PAY", "NATIVE_QR", NOW, NOW)
    with pytest.raises(InvalidArgument) as refused:
        order.start_payment("pay_3", "WECHAT_PAY", "NATIVE_QR", NOW, NOW, Money(1))
    assert [v.field for v in refused.value.violations] == ["amount_fen"]
    assert len(order.payments) == 2


def test_more_than_what_remains_is_refused_naming_amount_fen() -> None:
    order = make_order()
    with pytest.raises(InvalidArgument) as refused:
        order.start_payment("pay_1", "WECHAT_PAY", "NATIVE_QR", NOW, NOW, Money(12_501))
    assert [v.field for v in refused.value.violations] == ["amount_fen"] and not order.payments


def test_a_closed_attempt_paid_late_is_kept_if_it_still_fits_else_given_back() -> None:
    order = make_order()
    late = _pay(order, "pay_1", 5_000)
    order.payment_ended(order.payments[0], PaymentStatus.CLOSED)
    assert order.record_channel_success(late, NOW) is PaymentOutcome.PART_PAID  # 5,000 still fits

    order = make_order()
    late = _pay(order, "pay_1", 5_000)
    order.payment_ended(order.payments[0], PaymentStatus.CLOSED)
    order.record_channel_success(_pay(order, "pay_2", 10_000), NOW)
    assert order.record_channel_success(late, NOW) is PaymentOutcome.NEEDS_REFUND  # only 2,500 remain
    assert order.attention is Attention.DUPLICATE_PAYMENT and order.payments[0].is_excess
    assert order.cash_kept == Money(10_000)


def test_an_open_attempt_paid_while_an_excess_is_given_back_still_counts() -> None:
    order = make_order()
    late = _pay(order, "pay_1", 5_000)
    order.payment_ended(order.payments[0], PaymentStatus.CLOSED)
    rest = _pay(order, "pay_2", 10_000)
    order.record_channel_success(_pay(order, "pay_3", 2_500), NOW)
    order.record_channel_success(late, NOW)  # 5,000 no longer fits: given back
    refund = order.give_back("rfd_1", order.payments[0], NOW)

    assert order.record_channel_success(rest, NOW) is PaymentOutcome.SETTLED
    assert order.status is OrderStatus.REFUNDING and not order.payments[1].excess
    order.refund_succeeded(refund, "50300001", NOW)
    assert order.status is OrderStatus.SETTLED and order.settled_at == NOW


def test_closing_a_partly_paid_order_returns_each_payment_without_moving_the_order() -> None:
    order = make_order()
    order.record_channel_success(_pay(order, "pay_1", 5_000), NOW)
    open_attempt = _pay(order, "pay_2")
    order.request_close("patient left")
    [kept] = order.payments_to_return()
    back = order.return_payment("rfd_1", kept, NOW)
    assert back.kind is RefundKind.RETURN and back.cash == Money(5_000) and order.returning
    assert order.status is OrderStatus.PAYING and not order.payments_to_return()

    # the open attempt is paid before it could be closed: kept, never completes the order now
    assert order.record_channel_success(open_attempt, NOW) is PaymentOutcome.PART_PAID
    assert order.status is OrderStatus.AWAITING_PAYMENT
    assert [p.payment_id for p in order.payments_to_return()] == ["pay_2"]
    order.refund_succeeded(back, "50300001", NOW)
    order.close("patient left")
    assert order.status is OrderStatus.CLOSED


def test_a_refused_settlement_refunds_every_payment_and_completes_with_the_last() -> None:
    order = insured_awaiting()
    order.record_channel_success(_pay(order, "pay_1", 750), NOW)
    order.record_channel_success(_pay(order, "pay_2"), NOW)
    first = order.settlement_refused("rfd_1", "personal account frozen", NOW)
    assert first is not None and [(r.kind, r.cash) for r in order.refunds] == [
        (RefundKind.COMPENSATION, Money(750)), (RefundKind.COMPENSATION, Money(1_000)),
    ]  # fmt: skip
    assert order.refunds[1].refund_id == "rfd_1-2" and order.refunds[1].payment_id == "pay_2"
    order.refund_succeeded(first, "50300001", NOW)
    assert order.status is OrderStatus.REFUNDING
    order.refund_succeeded(order.refunds[1], "50300002", NOW)
    assert order.status is OrderStatus.REFUNDED


def test_a_requested_refund_of_a_two_payment_order_refunds_both() -> None:
    order = make_order()
    order.record_channel_success(_pay(order, "pay_1", 5_000), NOW)
    order.record_channel_success(_pay(order, "pay_2"), NOW)
    order.begin_refund("rfd_1", Money(0), "wrong prescription", NOW)
    assert [r.cash for r in order.refunds] == [Money(5_000), Money(7_500)]
    order.refund_failed(order.refunds[1], "NOT_ENOUGH")
    assert order.attention is Attention.REFUND_REFUSED  # one went back, one did not: for a person


def test_an_attempt_whose_outcome_is_unknown_still_covers_its_part() -> None:
    order = make_order()
    order.start_payment("pay_1", "WECHAT_PAY", "NATIVE_QR", NOW, NOW, Money(5_000))
    order.payment_unknown(order.payments[0])  # it may have been paid: never guessed otherwise
    assert order.cash_remaining == Money(7_500)
    assert order.start_payment("pay_2", "WECHAT_PAY", "NATIVE_QR", NOW, NOW).amount == Money(7_500)
    with pytest.raises(StateConflict):
        order.start_payment("pay_3", "WECHAT_PAY", "NATIVE_QR", NOW, NOW)


def test_an_order_is_refunded_only_once_every_payment_went_back() -> None:
    order = insured_awaiting()
    order.record_channel_success(_pay(order, "pay_1", 750), NOW)
    order.record_channel_success(_pay(order, "pay_2"), NOW)
    order.settlement_refused("rfd_1", "personal account frozen", NOW)
    order.refund_failed(order.refunds[0], "NOT_ENOUGH")
    order.refund_succeeded(order.refunds[1], "50300002", NOW)
    assert order.status is OrderStatus.NEEDS_ATTENTION and order.attention is Attention.REFUND_REFUSED


def test_a_later_refund_of_a_single_payment_order_is_not_held_up_by_an_earlier_refused_one() -> None:
    order = settled_self_pay()
    order.refund_failed(order.begin_refund("rfd_1", Money(0), "x", NOW), "NOT_ENOUGH")
    again = order.begin_refund("rfd_2", Money(0), "x", NOW + timedelta(minutes=5))
    assert order.refund_succeeded(again, "50300002", NOW) and order.status is OrderStatus.REFUNDED


def test_a_refused_partial_refund_after_one_that_succeeded_at_the_same_instant_is_not_for_a_person() -> None:
    """Refunds are batched by the decision that made them, not only by their timestamp."""
    order = settled_self_pay()
    first = order.begin_refund("rfd_1", Money(1_000), "x", NOW, "op-7")
    _reserved(order)
    order.refund_succeeded(first, "1", NOW)
    second = order.begin_refund("rfd_2", Money(1_000), "y", NOW, "op-7")  # the same clock reading
    order.refund_failed(second, "NOT_ENOUGH")
    assert order.status is OrderStatus.SETTLED and order.attention is None
