"""The process manager of a payment order: from the order's state and the clock, its single next step.

Every flow of an order (pre-settle → collect the cash → settle with the insurer → compensate, close,
expire, refund, a late success given back) is a sequence of the steps below. `next_step` is the only
place that decides which one comes next; the service layer's `OrderProcess.advance` runs it (intent
recorded before the outbound call, outcome recorded after) and asks again. Request handlers, channel
notifications and the janitor only record what they were told and then call `advance`.

Time enters only through `now` and the order's own clock fields (`last_step_at`, `attempts`, the
expiry times), so the decision is a pure function that a table-driven test covers completely. A
question to an outside party that comes back inconclusive is asked again on the escalating
`Schedule`; after `max_attempts` the order is handed to a person (NEEDS_ATTENTION), never guessed.

Orders paid by several payments. The cash share may be collected by several payments, on one
channel or on different ones, each for the amount PayPaymentOrder asked (absent: what remains).
What counts against the cash due is every payment that *covers* part of it: the successes the order
keeps and the attempts still open (`Payment.covers_share`). So a new attempt is refused unless it
fits what no payment covers yet (`PaymentOrder.cash_remaining`), and storage keeps the same sum in
`payment_orders.cash_placed_fen`, changed only relatively under CHECK (<= cash_due_fen): two
PayPaymentOrder calls for the whole remainder cannot both be placed, whatever each believed. Open
attempts rather than successes count because a patient should never be asked to pay what someone
else is paying at that moment: counting only successes would let both attempts be paid and one of
them be refunded as an excess, a double charge undone later instead of one that never happens.

The steps stay the ones above, taken per payment:
  - attempts open side by side share the order's clock; each inconclusive query passes the next
    question to the next open attempt (`order.attempts` modulo their number);
  - the order is paid (SETTLING, then the one 2207; SETTLED for self-pay) exactly when its kept
    successes reach the cash due; until then it is AWAITING_PAYMENT (PAYING while an attempt is
    open) with cash_paid < cash_due. A success of an attempt that had ended is kept if it still
    fits, else it is an excess and given back (RefundLateSuccess);
  - closing or expiring a partly paid order (`_ending`): ReturnPayment records a RETURN refund for
    each kept payment (PayOutRefund sends it to that payment's own channel), CloseAtChannel closes
    every open attempt after a query, CloseOrder closes the order, and only once every refund is
    final does CancelPresettlement (2205) go out for an insured order. An attempt whose outcome is
    unknown stays UNKNOWN until a query decides it; the returns of the others do not wait for it
    (while a return is on its way, the attempts are closed meanwhile), and a success that comes in
    once returns have begun is kept and returned too, never used to complete the order;
  - a settlement the insurer refuses (compensation) and a requested refund make one refund per
    payment, each to its own channel; every refund is sent before any answer is awaited
    (`_open_refund` takes an unsent one first), and the order is REFUNDED when the last one is.

Refunds by lines of an insured order (`_refunding_lines`): RevokeForLines (2208 of the whole
settlement) → PresettleRemaining (2204 + 2206 of what remains, same visit) → SettleRemaining (2207)
→ the freed cash (old cash share − new) as ordinary refunds, PayOutRefund each. Each step's
request id is derived from the order and the refund by lines' number, so a step repeated after a
crash is a replay at the insurer; a refusal or a split that does not fit stops for a person.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.payment_core.domain.model import (
    METHOD_BARCODE,
    Attention,
    LineRefund,
    LineRefundStage,
    OrderStatus,
    Payment,
    Refund,
    RefundKind,
    RefundStatus,
)
from services.payment_core.domain.order import PaymentOrder

S = OrderStatus


# ---- the step vocabulary ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Presettle:
    """1101 → 2201 → 2204 → 2206 at insurance-adapter; needs the voucher only the HIS holds."""


@dataclass(frozen=True, slots=True)
class PlacePayment:
    """Open the recorded attempt at its channel (only the request that asked for it may)."""

    out_trade_no: str


@dataclass(frozen=True, slots=True)
class RecordWindowPayment:
    """Money the HIS reports taken at the window (cash, a bank card on the POS): the window channel
    confirms it PAID from the report, and the order moves on as when a channel's notification
    arrives. Anyone may run it (nothing secret is needed, nothing leaves the platform)."""

    out_trade_no: str


@dataclass(frozen=True, slots=True)
class ConsumeDeposit:
    """Pay the attempt from the inpatient's deposit: the deposit channel confirms it PAID, and the
    balance is debited in the same transaction (a local step: storage, under CHECK balance >= 0,
    refuses it and the attempt with it when the balance does not cover it). The discharge of a
    self-pay inpatient is this step on the discharge order; an insured discharge puts the insurer's
    steps around it (Presettle as 2401/2301/2303, Settle as 2304) and takes the deposit for the cash
    share only."""

    out_trade_no: str


@dataclass(frozen=True, slots=True)
class QueryPayment:
    """Ask the channel about an attempt we have not heard of (lost notification, unknown placement)."""

    out_trade_no: str


@dataclass(frozen=True, slots=True)
class ReversePayment:
    """A code payment the patient did not confirm in time: query it, reverse it unless it is paid
    or ended (a reverse of a paid one gives the money back, so nothing is ever kept by guess)."""

    out_trade_no: str


@dataclass(frozen=True, slots=True)
class CloseAtChannel:
    """The order is expired or its close was asked for: query the attempt, close it only if unpaid."""

    out_trade_no: str


@dataclass(frozen=True, slots=True)
class CloseOrder:
    """No attempt is open and the order will not be paid: close it (no outbound call)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Settle:
    """2207 with the order's settle request_id (a repeat is a replay; the adapter queries 5203)."""


@dataclass(frozen=True, slots=True)
class CancelPresettlement:
    """2205: undo the pre-settlement of an order that will not be paid."""


@dataclass(frozen=True, slots=True)
class RevokeSettlement:
    """2208 before the cash of a requested refund of a settled insured order goes back."""

    refund_id: str


@dataclass(frozen=True, slots=True)
class RevokeForLines:
    """A refund by lines, first step: 2208 of the whole settlement (request id from the order and
    the refund by lines' number, so a retry is a replay)."""

    refund_id: str


@dataclass(frozen=True, slots=True)
class PresettleRemaining:
    """A refund by lines, second step: the remaining lines pre-settled again on the same visit
    (insurance-adapter: 2204 of a new batch + 2206), under a request id derived the same way."""

    refund_id: str


@dataclass(frozen=True, slots=True)
class SettleRemaining:
    """A refund by lines, third step: 2207 of the new pre-settlement (then PayOutRefund of the
    freed cash, one refund per payment, largest refundable first)."""

    refund_id: str


@dataclass(frozen=True, slots=True)
class PayOutRefund:
    """Send the refund to the payment's channel with its out_refund_no (compensation included)."""

    refund_id: str


@dataclass(frozen=True, slots=True)
class QueryRefund:
    refund_id: str


@dataclass(frozen=True, slots=True)
class RefundLateSuccess:
    """A success the order must not keep (paid after close, paid twice): give it back."""

    payment_id: str


@dataclass(frozen=True, slots=True)
class ReturnPayment:
    """A closing order gives back a payment it was partly paid by: record a RETURN refund for it
    (then PayOutRefund sends it to the payment's own channel)."""

    payment_id: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The outside party stayed silent for `max_attempts`: a person decides (no outbound call)."""

    attention: Attention
    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do before `until` (the janitor comes back then)."""

    until: datetime


@dataclass(frozen=True, slots=True)
class Done:
    """Nothing will happen to this order unless someone asks (settled, closed, refunded, a person's)."""


Step = (
    Presettle | PlacePayment | RecordWindowPayment | ConsumeDeposit | QueryPayment | ReversePayment
    | CloseAtChannel | CloseOrder | Settle | CancelPresettlement | RevokeSettlement | PayOutRefund
    | QueryRefund | RefundLateSuccess | ReturnPayment | RevokeForLines | PresettleRemaining
    | SettleRemaining | GiveUp | Wait | Done
)  # fmt: skip
# Steps that only change the order's own record: run inside the deciding transaction.
LOCAL_STEPS = (CloseOrder, GiveUp, RefundLateSuccess, ReturnPayment, ConsumeDeposit)


# ---- when to ask again -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """How long the process manager waits before asking an outside party (again)."""

    # A placed payment with no notification is first queried this long after it was placed.
    first_payment_query: timedelta = timedelta(seconds=10)
    # After an inconclusive answer: the n-th retry waits retry_delays[n-1] (the last one repeats).
    retry_delays: tuple[timedelta, ...] = tuple(
        timedelta(seconds=s) for s in (5, 10, 20, 40, 80, 160, 300, 600, 1800, 3600)
    )
    # Up to this fraction of a delay is added, spread per order, so retries do not come in waves.
    jitter: float = 0.2
    # Inconclusive answers about a settlement or a refund before a person is asked to decide.
    max_attempts: int = 20
    # When someone is looking at the order (GetPaymentOrder), a pending payment is queried this soon.
    eager_query: timedelta = timedelta(seconds=2)
    # A code payment waiting for the patient's password is queried this often...
    code_payment_query: timedelta = timedelta(seconds=5)
    # ...for this long after it was recorded, then reversed (never sooner than REVERSE_NOT_BEFORE
    # after the payment call: see `Payment.expires_at`).
    code_payment_window: timedelta = timedelta(seconds=30)

    @classmethod
    def escalating(
        cls,
        first_payment_query: timedelta,
        base: timedelta,
        max_attempts: int,
        cap: timedelta = timedelta(hours=1),
    ) -> Schedule:
        """`base`, doubling on each inconclusive answer up to `cap`."""
        delays = [base]
        while delays[-1] < cap:
            delays.append(min(delays[-1] * 2, cap))
        return cls(
            first_payment_query=first_payment_query, retry_delays=tuple(delays), max_attempts=max_attempts
        )

    def retry_at(self, order: PaymentOrder, since: datetime) -> datetime:
        delays = self.retry_delays
        base = delays[min(max(order.attempts, 1), len(delays)) - 1]
        return since + base + base * self.jitter * _spread(order.order_id, order.attempts)


def _spread(order_id: str, attempts: int) -> float:
    """A deterministic number in [0, 1) per order and attempt: jitter without randomness."""
    digest = hashlib.blake2b(f"{order_id}:{attempts}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32


@dataclass(frozen=True, slots=True)
class Caller:
    """What the one asking can do that the janitor cannot."""

    # CreatePaymentOrder of the HIS: it holds the patient's voucher, so it may pre-settle.
    has_voucher: bool = False
    # PayPaymentOrder: it may open this attempt at the channel (and show the QR code it returns).
    placing: str = ""
    # GetPaymentOrder: someone is looking at the order, so a pending payment is queried sooner.
    eager: bool = False


# ---- the decision ----------------------------------------------------------------------------------


def next_step(order: PaymentOrder, now: datetime, schedule: Schedule, caller: Caller | None = None) -> Step:
    """The single next step of `order` at `now`, for `caller` (None: the janitor or a notification)."""
    caller = caller or Caller()
    if order.status is S.PRESETTLING or order.attention is Attention.PRESETTLE_UNKNOWN:
        return _creating(order, now, caller.has_voucher)
    if order.line_refund is not None:
        return _refunding_lines(order, order.line_refund, now, schedule)
    refund = _open_refund(order)
    if refund is not None:
        step = _refunding(order, refund, now, schedule)
        if isinstance(step, Wait) and order.status in (S.AWAITING_PAYMENT, S.PAYING):
            # A closing order's returns are on their way back: close its attempts meanwhile.
            collecting = _collecting(order, now, schedule, caller)
            return Wait(min(step.until, collecting.until)) if isinstance(collecting, Wait) else collecting
        return step
    if order.awaits_settlement:
        return _settling(order, now, schedule)
    excess = _excess_payment(order)
    if excess is not None:
        return RefundLateSuccess(excess.payment_id)
    if order.status is S.CLOSED:
        if not _presettlement_open(order):
            return Done()
        return _when_due(CancelPresettlement(), order, now, schedule, Attention.PRESETTLEMENT_OPEN)
    if order.status in (S.AWAITING_PAYMENT, S.PAYING):
        return _collecting(order, now, schedule, caller)
    return Done()


def _creating(order: PaymentOrder, now: datetime, has_voucher: bool) -> Step:
    # Only the HIS holds the voucher, so only its (retried) CreatePaymentOrder can pre-settle. If it
    # never comes back, the order expires; whatever the insurer pre-settled is then undone.
    if has_voucher:
        return Presettle()
    if now < order.expires_at:
        return Wait(order.expires_at)
    return CloseOrder("not pre-settled before it expired")


def _refunding(order: PaymentOrder, refund: Refund, now: datetime, schedule: Schedule) -> Step:
    if refund.status is RefundStatus.PENDING and _needs_revoke(order, refund):
        return _when_due(RevokeSettlement(refund.refund_id), order, now, schedule, Attention.REVOKE_UNKNOWN)
    if refund.status is RefundStatus.PENDING:
        return _when_due(PayOutRefund(refund.refund_id), order, now, schedule, Attention.REFUND_UNKNOWN)
    # Sent: the channel's answer (notification or query) is awaited, first after one retry delay.
    return _when_due(
        QueryRefund(refund.refund_id), order, now, schedule, Attention.REFUND_UNKNOWN, first=False
    )


def _refunding_lines(order: PaymentOrder, refund: LineRefund, now: datetime, schedule: Schedule) -> Step:
    """Revoke the whole settlement, pre-settle and settle what remains, each on the schedule until
    the insurer answers; a refusal or a split that does not fit waits for a person. (The freed
    cash then goes back as ordinary refunds: `_refunding`.)"""
    if refund.stage is LineRefundStage.NEEDS_ATTENTION:
        return Done()
    if refund.stage is LineRefundStage.REVOKING:
        return _when_due(RevokeForLines(refund.refund_id), order, now, schedule, Attention.REVOKE_UNKNOWN)
    step: Step = (
        PresettleRemaining(refund.refund_id)
        if refund.stage is LineRefundStage.PRESETTLING
        else SettleRemaining(refund.refund_id)
    )
    return _when_due(step, order, now, schedule, Attention.RESETTLE_UNKNOWN)


def _settling(order: PaymentOrder, now: datetime, schedule: Schedule) -> Step:
    return _when_due(Settle(), order, now, schedule, Attention.SETTLEMENT_UNKNOWN)


def _when_due(
    step: Step,
    order: PaymentOrder,
    now: datetime,
    schedule: Schedule,
    attention: Attention,
    first: bool = True,
) -> Step:
    """`step` now if it was never tried (and `first`), else when the schedule says; a person decides
    once the schedule's attempts are spent."""
    if order.attempts == 0 and first:
        return step
    if order.attempts >= schedule.max_attempts:
        if order.attention is not attention:
            return GiveUp(attention, _GIVE_UP_REASONS[attention])
        # A person was asked already: the step still goes on, at the schedule's slowest pace
        # (an owed refund keeps being offered to a channel that says "not now").
        due = order.step_since + schedule.retry_delays[-1]
        return step if now >= due else Wait(due)
    due = schedule.retry_at(order, order.step_since)
    return step if now >= due else Wait(due)


_GIVE_UP_REASONS = {
    Attention.SETTLEMENT_UNKNOWN: "the insurer's settlement outcome is still unknown",
    Attention.REFUND_UNKNOWN: "no final answer from the channel about the refund",
    Attention.REVOKE_UNKNOWN: "the insurer did not confirm the revocation (2208)",
    Attention.PRESETTLEMENT_OPEN: "the insurer did not confirm undoing the pre-settlement (2205)",
    Attention.RESETTLE_UNKNOWN: "the insurer did not answer the re-settlement of the remaining lines",
}


# WeChat Pay: a code payment is not reversed sooner than 15 s after the payment call (v2 docs of
# 撤销订单; reference §2.6), and only when a query gave no final answer.
REVERSE_NOT_BEFORE = timedelta(seconds=15)


def _collecting(order: PaymentOrder, now: datetime, schedule: Schedule, caller: Caller) -> Step:
    attempts = order.open_payments()
    from_deposit = next((p for p in attempts if p.from_deposit), None)
    if from_deposit is not None:
        # Decided and debited in the transaction that recorded it: nothing is ever left open.
        return ConsumeDeposit(from_deposit.out_trade_no)
    window = next((p for p in attempts if p.at_window), None)
    if window is not None:
        # The money is in the drawer already (an order closing meanwhile gives it back after).
        return RecordWindowPayment(window.out_trade_no)
    code = next((p for p in attempts if p.method == METHOD_BARCODE), None)
    if code is not None:
        # A code payment cannot be closed, even when the order is ending: queried on its short
        # cadence while the patient confirms, reversed once its window has passed.
        return _code_payment(order, code, now, schedule, caller)
    if order.is_ending(now):
        return _ending(order, attempts)
    if not attempts:
        return Wait(order.expires_at)
    expired = next((p for p in attempts if p.expires_at is not None and now >= p.expires_at), None)
    if expired is not None:
        return CloseAtChannel(expired.out_trade_no)
    placing = next((p for p in attempts if not p.code_url and caller.placing == p.out_trade_no), None)
    if placing is not None:
        return PlacePayment(placing.out_trade_no)
    due = _payment_query_due(order, schedule, caller.eager)
    # Several attempts open side by side share the order's clock: each inconclusive answer passes
    # the next question to the next attempt, so none waits behind another.
    asked = attempts[order.attempts % len(attempts)]
    if now >= due:
        return QueryPayment(asked.out_trade_no)
    return Wait(min(due, *(_expiry(order, p) for p in attempts)))


def _ending(order: PaymentOrder, attempts: list[Payment]) -> Step:
    """Closing (asked, or expired): what it was partly paid goes back first, each payment to its
    own channel (an attempt whose outcome is unknown holds none of that up); the open attempts are
    closed, each only after a query shows it unpaid; then the order closes."""
    to_return = order.payments_to_return()
    if to_return:
        return ReturnPayment(to_return[0].payment_id)
    if attempts:
        return CloseAtChannel(attempts[0].out_trade_no)
    return CloseOrder(order.close_reason or "expired unpaid")


def _code_payment(
    order: PaymentOrder, payment: Payment, now: datetime, schedule: Schedule, caller: Caller
) -> Step:
    """Sent once (only by the request holding the code); queried on a short cadence while the
    patient confirms, even when the order is closing (a code payment cannot be closed); reversed
    once its window has passed, again on the same cadence until the channel confirms."""
    if not payment.code_url and caller.placing == payment.out_trade_no:
        return PlacePayment(payment.out_trade_no)
    due = order.step_since + schedule.code_payment_query
    window_end = payment.expires_at or order.expires_at
    if now >= window_end:
        # The first reverse right away; one the channel did not confirm again (any step after the
        # window's end was a reverse), on the cadence at first, then ever more slowly: the interval
        # grows with the time the reverses have taken (half of it, up to the schedule's slowest
        # pace), so a channel that stays down is not asked every few seconds for ever.
        if order.step_since < window_end:
            due = window_end
        else:
            interval = max(schedule.code_payment_query, (order.step_since - window_end) / 2)
            due = order.step_since + min(interval, schedule.retry_delays[-1])
        return ReversePayment(payment.out_trade_no) if now >= due else Wait(due)
    return QueryPayment(payment.out_trade_no) if now >= due else Wait(min(due, window_end))


def _payment_query_due(order: PaymentOrder, schedule: Schedule, eager: bool) -> datetime:
    since = order.step_since
    due = since + schedule.first_payment_query if order.attempts == 0 else schedule.retry_at(order, since)
    return min(due, since + schedule.eager_query) if eager else due


def _expiry(order: PaymentOrder, payment: Payment) -> datetime:
    return min(order.expires_at, payment.expires_at or order.expires_at)


# ---- reading the order -----------------------------------------------------------------------------


def _open_refund(order: PaymentOrder) -> Refund | None:
    """The refund to move on: one not sent yet first (an order paid by several payments sends
    every refund before it waits for the channels' answers), else the first one on its way."""
    unsent = next((r for r in order.refunds if r.status is RefundStatus.PENDING), None)
    return unsent or next((r for r in order.refunds if r.is_open), None)


def _needs_revoke(order: PaymentOrder, refund: Refund) -> bool:
    # A refund by lines pays out what its re-settlement freed: the settlement that stands stays.
    requested = refund.kind is RefundKind.REQUESTED and not order.is_line_refund(refund)
    return requested and bool(order.setl_id) and not order.settlement_revoked


def _excess_payment(order: PaymentOrder) -> Payment | None:
    """A succeeded payment the order must not keep and that no refund has taken care of."""
    if order.status is not S.NEEDS_ATTENTION or order.attention not in _EXCESS:
        return None
    refunded = {r.payment_id for r in order.refunds if r.kind is RefundKind.EXCESS}
    excess = [p for p in order.payments if p.is_excess and p.payment_id not in refunded]
    return excess[0] if excess else None


_EXCESS = frozenset({Attention.PAID_AFTER_CLOSE, Attention.DUPLICATE_PAYMENT})


def _presettlement_open(order: PaymentOrder) -> bool:
    """A closed insured order whose pre-settlement has not been undone yet."""
    return order.insured and not order.setl_id and not order.presettlement_cancelled
