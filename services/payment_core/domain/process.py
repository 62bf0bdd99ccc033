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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.payment_core.domain.model import (
    METHOD_BARCODE,
    Attention,
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
    Presettle | PlacePayment | QueryPayment | ReversePayment | CloseAtChannel | CloseOrder | Settle
    | CancelPresettlement | RevokeSettlement | PayOutRefund | QueryRefund | RefundLateSuccess | GiveUp
    | Wait | Done
)  # fmt: skip
# Steps that only change the order's own record: run inside the deciding transaction.
LOCAL_STEPS = (CloseOrder, GiveUp, RefundLateSuccess)


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
    refund = _open_refund(order)
    if refund is not None:
        return _refunding(order, refund, now, schedule)
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
}


# WeChat Pay: a code payment is not reversed sooner than 15 s after the payment call (v2 docs of
# 撤销订单; reference §2.6), and only when a query gave no final answer.
REVERSE_NOT_BEFORE = timedelta(seconds=15)


def _collecting(order: PaymentOrder, now: datetime, schedule: Schedule, caller: Caller) -> Step:
    payment = order.open_payment()
    ending = order.close_requested or now >= order.expires_at
    if payment is None:
        return CloseOrder(order.close_reason or "expired unpaid") if ending else Wait(order.expires_at)
    if payment.method == METHOD_BARCODE:
        return _code_payment(order, payment, now, schedule, caller)
    if ending or (payment.expires_at is not None and now >= payment.expires_at):
        return CloseAtChannel(payment.out_trade_no)
    if not payment.code_url and caller.placing == payment.out_trade_no:
        return PlacePayment(payment.out_trade_no)
    due = _payment_query_due(order, schedule, caller.eager)
    return QueryPayment(payment.out_trade_no) if now >= due else Wait(min(due, _expiry(order, payment)))


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
        # The first reverse right away; one the channel did not confirm again on the cadence (any
        # step after the window's end was a reverse).
        due = window_end if order.step_since < window_end else due
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
    return next((r for r in order.refunds if r.is_open), None)


def _needs_revoke(order: PaymentOrder, refund: Refund) -> bool:
    return refund.kind is RefundKind.REQUESTED and bool(order.setl_id) and not order.settlement_revoked


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
