"""The ledger is the source of truth for money, checked for any sequence of money movements.

Hypothesis draws whole days of one cashier window and one WeChat Pay channel (in-process harness:
real gRPC, FakeChannel, SQLite; the same harness runs on PostgreSQL in the other service tests):
bills paid by one to three payments across cash, a bank card and WeChat Pay, some closed while partly
paid (their payments go back), partial refunds in any amounts, a full refund after them, deposit
top-ups. After every day, from the ledger alone:

- every transaction balances and the whole ledger sums to zero;
- each channel's clearing account moved by exactly what the channel took minus what it gave back;
- receipts_unsettled holds exactly the cash of bills still partly paid (zero for every bill that
  settled or was closed and gave its payments back);
- revenue is each settled bill's total minus what was refunded of it;
- the deposit liability equals the accounts' balances;
- storage kept refunded <= paid for every payment and every order.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from medpay.common.v1 import common_pb2
from medpay.payment.v1 import payment_pb2 as pb

from tests.service import test_payment_core as base
from tests.service.test_payment_core import Harness, items
from tests.service.test_payment_core_deposits import account, top_up
from tests.service.test_payment_core_window import cash, pos, slip

harness = base.harness


# The other service tests run both backends; here each example replays a whole day, so one backend
# keeps the property run within seconds.
@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/payment_core.sqlite3"


CHANNELS = {"CASH": pb.CHANNEL_CASH, "POS": pb.CHANNEL_POS, "WECHAT_PAY": pb.CHANNEL_WECHAT_PAY}
NAMES = {number: name for name, number in {**CHANNELS, "DEPOSIT": pb.CHANNEL_DEPOSIT}.items()}
RECEIPTS = "liability:receipts_unsettled"


@dataclass(frozen=True)
class Bill:
    lines: tuple[int, ...]
    # Each payment's channel and its share of what remains, in per mille (the last one pays the
    # rest unless the bill is left partly paid).
    payments: tuple[tuple[str, int], ...]
    paid_in_full: bool
    # Partial refunds of the settled bill, each in per mille of what is still refundable.
    refunds: tuple[int, ...]
    refund_the_rest: bool
    # A bill not paid in full: closed (its payments go back) or left open, partly paid.
    closed: bool


bills = st.builds(
    Bill,
    lines=st.lists(st.integers(1, 40_000), min_size=1, max_size=3).map(tuple),
    payments=st.lists(
        st.tuples(st.sampled_from(sorted(CHANNELS)), st.integers(1, 999)), min_size=1, max_size=3
    ).map(tuple),
    paid_in_full=st.booleans(),
    refunds=st.lists(st.integers(1, 999), max_size=3).map(tuple),
    refund_the_rest=st.booleans(),
    closed=st.booleans(),
)
# The day's bills; an inpatient's top-ups; and, when topped up, the discharge bill of the stay (less
# or more than the deposit: the surplus goes back to the top-ups' channels, a shortfall in cash).
days = st.tuples(
    st.lists(bills, min_size=1, max_size=4),
    st.lists(st.integers(1, 900_000), max_size=2),
    st.lists(st.integers(1, 600_000), min_size=1, max_size=2),
)


def _bill(lines: tuple[int, ...]) -> pb.CreatePaymentOrderRequest:
    return pb.CreatePaymentOrderRequest(
        request_id=uuid.uuid4().hex, his_order_no=f"MZ{uuid.uuid4().hex[:10]}",
        scene=pb.SCENE_OUTPATIENT, campus_code="FZ900", dept_code="0301",
        patient=common_pb2.Patient(his_patient_id="P-0001"), items=items(*lines),
    )  # fmt: skip


async def _pay(h: Harness, order_id: str, channel: str, amount_fen: int) -> None:
    if channel == "CASH":
        await h.payment.PayPaymentOrder(cash(order_id, amount_fen))
    elif channel == "POS":
        card = slip(reference_no=str(uuid.uuid4().int)[:12])
        await h.payment.PayPaymentOrder(pos(order_id, amount_fen, card))
    else:
        request = base.pay(order_id)
        request.amount_fen = amount_fen
        await base.patient_pays(h, await h.payment.PayPaymentOrder(request))


async def _hand_over_window_refunds(h: Harness, order_id: str) -> None:
    """The cashier pays out what goes back to cash or a card (the window channel waits for it)."""
    order = await h.order(order_id)
    channel_of = {p.payment_id: p.channel for p in order.payments}
    for refund in order.refunds:
        if refund.status == pb.REFUND_STATUS_PROCESSING:
            card = slip(reference_no=str(uuid.uuid4().int)[:12])
            await h.payment.ConfirmWindowRefund(
                pb.ConfirmWindowRefundRequest(
                    request_id=uuid.uuid4().hex,
                    order_id=order_id,
                    refund_id=refund.refund_id,
                    operator_id="C001",
                    pos=card if channel_of[refund.payment_id] == pb.CHANNEL_POS else None,
                )
            )
    await h.settled()


async def _refund(h: Harness, order_id: str, cash_fen: int) -> None:
    await h.payment.RefundPaymentOrder(
        pb.RefundPaymentOrderRequest(
            request_id=uuid.uuid4().hex,
            order_id=order_id,
            cash_fen=cash_fen,
            reason="drug returned",
            operator_id="C001",
        )
    )
    await h.settled()
    await _hand_over_window_refunds(h, order_id)


async def _play(h: Harness, bill: Bill) -> str:
    order = (await h.payment.CreatePaymentOrder(_bill(bill.lines))).order
    for n, (channel, per_mille) in enumerate(bill.payments, start=1):
        now = await h.order(order.order_id)
        remaining = now.cash_due_fen - now.cash_paid_fen
        last = n == len(bill.payments) and bill.paid_in_full
        amount = remaining if last else remaining * per_mille // 1000
        if amount <= 0 or (amount == remaining and not bill.paid_in_full):
            continue
        await _pay(h, order.order_id, channel, amount)
    current = await h.order(order.order_id)
    if current.status == pb.ORDER_STATUS_SETTLED:
        for per_mille in bill.refunds:
            refundable = current.cash_paid_fen - current.refunded_cash_fen
            amount = refundable * per_mille // 1000
            if 0 < amount < refundable:
                await _refund(h, order.order_id, amount)
            current = await h.order(order.order_id)
        if bill.refund_the_rest:
            await _refund(h, order.order_id, 0)
    elif bill.closed:
        await h.payment.ClosePaymentOrder(
            pb.ClosePaymentOrderRequest(request_id=uuid.uuid4().hex, order_id=order.order_id, reason="left")
        )
        await h.settled()
        await _hand_over_window_refunds(h, order.order_id)
    return order.order_id


async def _discharge(h: Harness, inpatient_no: str, stay: list[int]) -> str:
    """The stay's self-pay discharge: paid from the deposit, the surplus back to the top-ups'
    channels (the cashier hands cash back), a shortfall paid in cash at the window."""
    request = pb.SettleDischargeRequest(
        request_id=uuid.uuid4().hex, inpatient_no=inpatient_no, campus_code="FZ900", dept_code="0301",
        patient=common_pb2.Patient(his_patient_id="P-0001"), items=items(*stay),
        discharged_at="2026-12-02T10:00:00+08:00",
    )  # fmt: skip
    done = await h.payment.SettleDischarge(request)
    await h.settled()
    for refund in done.deposit_refunds:
        await _hand_over_window_refunds(h, refund.order_id)
    if done.shortfall_fen:
        await _pay(h, done.order.order_id, "CASH", done.shortfall_fen)
    return done.order.order_id


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no "explain": it replays for minutes
)
@given(day=days)
async def test_the_ledger_accounts_for_every_fen_of_any_day(
    harness: Harness, day: tuple[list[Bill], list[int], list[int]]
) -> None:
    played, top_ups, stay = day
    order_ids = [await _play(harness, bill) for bill in played]
    inpatient_no = f"ZY{uuid.uuid4().hex[:10]}"
    top_up_orders = [
        (await harness.payment.TopUpDeposit(top_up(amount, inpatient_no=inpatient_no))).order_id
        for amount in top_ups
    ]
    if top_ups:
        order_ids.append(await _discharge(harness, inpatient_no, stay))

    for order_id in order_ids:
        order = await harness.order(order_id)
        entries = await harness.ledger(order_id)
        assert all(sum(p.amount.fen for p in e.postings) == 0 for e in entries)
        balances = Counter[str]()
        for entry in entries:
            for posting in entry.postings:
                balances[posting.account] += posting.amount.fen

        paid, back = Counter[str](), Counter[str]()
        for payment in order.payments:
            if payment.status == pb.PAYMENT_STATUS_SUCCEEDED:
                paid[NAMES[payment.channel]] += payment.amount_fen
                assert payment.refunded_fen <= payment.amount_fen
        by_payment = {p.payment_id: NAMES[p.channel] for p in order.payments}
        for refund in order.refunds:
            if refund.status == pb.REFUND_STATUS_SUCCEEDED:
                back[by_payment[refund.payment_id]] += refund.cash_fen
        for channel in CHANNELS:
            clearing = f"asset:channel_clearing:{channel}"
            assert balances[clearing] == paid[channel] - back[channel], (order.status, channel)
        # Paid from the deposit: the hospital owes the patient that much less.
        assert balances["liability:patient_deposit"] == paid["DEPOSIT"] - back["DEPOSIT"]

        assert order.refunded_cash_fen <= order.cash_paid_fen
        kept = order.cash_paid_fen - order.refunded_cash_fen
        revenue = balances["revenue:discharge" if order.scene == pb.SCENE_DISCHARGE else "revenue:outpatient"]
        if order.status in (pb.ORDER_STATUS_SETTLED, pb.ORDER_STATUS_REFUNDED):
            assert balances[RECEIPTS] == 0
            assert revenue == -kept
        elif order.status == pb.ORDER_STATUS_CLOSED:
            assert balances[RECEIPTS] == 0 and revenue == 0 and kept == 0
        else:
            assert order.status == pb.ORDER_STATUS_AWAITING_PAYMENT, order.status
            assert balances[RECEIPTS] == -order.cash_paid_fen and revenue == 0

    trial = await harness.trial_balance()
    assert sum(amount.fen for amount in trial.values()) == 0
    if top_ups:
        # The account's balance is what the ledger owes the patient for the stay: its top-ups, less
        # what the discharge took from it and what went back to the top-ups' channels.
        owed = 0
        for order_id in [*top_up_orders, order_ids[-1]]:
            for entry in await harness.ledger(order_id):
                owed += sum(p.amount.fen for p in entry.postings if p.account == "liability:patient_deposit")
        deposit = await account(harness, inpatient_no)
        assert deposit.balance_fen == -owed >= 0
        assert deposit.balance_fen == deposit.topped_up_fen - deposit.used_fen - deposit.refunded_fen
        assert deposit.topped_up_fen == sum(top_ups)
