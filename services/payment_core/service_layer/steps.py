"""How each step of the process manager talks to the outside: one runner per step.

A runner makes the step's outbound call with the step's business key (out_trade_no, out_refund_no,
the insurer request_id) and returns an `Outcome`: what to record on the order, under its lock, once
the answer is in. Runners decide nothing about what comes next (domain.process does) and never touch
storage; an answer that says nothing new records nothing, which the process manager counts as an
inconclusive attempt and asks again on its schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.payment_core.adapters.channels import ports
from services.payment_core.adapters.insurance import InsurerSettlement, InsurerStatus, PresettleAsk
from services.payment_core.domain import keys, process
from services.payment_core.domain.model import (
    CHANNEL_NONE,
    METHOD_BARCODE,
    METHOD_JSAPI,
    ChannelPaymentSeen,
    LineRefund,
    LineRefundStage,
    Payment,
    PaymentStatus,
    RefundStatus,
)
from services.payment_core.domain.order import PaymentOrder
from services.payment_core.service_layer.channel_errors import as_runtime_error
from services.payment_core.service_layer.dependencies import Dependencies
from services.runtime import errors
from services.runtime.money import Money

Record = Callable[[PaymentOrder, datetime], None]
log = logging.getLogger(__name__)


def _nothing(order: PaymentOrder, now: datetime) -> None:
    """An answer that says nothing new."""


@dataclass(frozen=True)
class Outcome:
    record: Record = _nothing
    # Raised to the caller once the outcome is committed (the janitor only logs it).
    error: errors.MedPayError | None = None
    # The pre-settlement was refused before anything was owed: the order is forgotten.
    forget: bool = False


@dataclass(frozen=True)
class StepInputs:
    """What only the caller has: the voucher for Presettle, the screen text for PlacePayment."""

    presettle: PresettleAsk | None = None
    # The order was created by this very call: nothing earlier can have reached the insurer.
    first_presettle: bool = False
    description: str = ""
    # PlacePayment of a code payment: the patient's payment code (masked repr; used once).
    auth_code: ports.PaymentCode | None = None
    # PlacePayment of a JSAPI payment: the payer's openid.
    payer_openid: str = ""


_PAID = frozenset({ports.TradeState.PAID, ports.TradeState.REFUNDED})
_ENDED = {ports.TradeState.CLOSED: PaymentStatus.CLOSED, ports.TradeState.FAILED: PaymentStatus.FAILED}


class StepRunners:
    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps

    async def run(self, step: process.Step, order: PaymentOrder, inputs: StepInputs) -> Outcome:
        match step:
            case process.Presettle():
                assert inputs.presettle is not None
                return await self._presettle(order, inputs.presettle, inputs.first_presettle)
            case process.PlacePayment(out_trade_no):
                return await self._place(order, out_trade_no, inputs)
            case process.RecordWindowPayment(out_trade_no):
                return await self._record_window_payment(order, out_trade_no)
            case process.QueryPayment(out_trade_no):
                # A code payment the channel has not seen may still land (its answer was lost): its
                # window's end reverses it; never taken as closed on a guess.
                unseen_may_land = _payment(order, out_trade_no).method == METHOD_BARCODE
                return await self._query_payment(
                    order, out_trade_no, close_unpaid=False, unseen_may_land=unseen_may_land
                )
            case process.CloseAtChannel(out_trade_no):
                return await self._query_payment(order, out_trade_no, close_unpaid=True)
            case process.ReversePayment(out_trade_no):
                return await self._reverse(order, out_trade_no)
            case process.Settle():
                return await self._settle(order)
            case process.CancelPresettlement():
                return await self._cancel_presettlement(order)
            case process.RevokeSettlement(refund_id):
                return await self._revoke(order, refund_id)
            case process.RevokeForLines(refund_id):
                return await self._revoke_for_lines(order, refund_id)
            case process.PresettleRemaining(refund_id):
                return await self._presettle_remaining(order, refund_id)
            case process.SettleRemaining(refund_id):
                return await self._settle_remaining(order, refund_id)
            case process.PayOutRefund(refund_id):
                return await self._pay_out(order, refund_id)
            case process.QueryRefund(refund_id):
                return await self._query_refund(order, refund_id)
        raise AssertionError(f"no runner for {step!r}")

    # ---- the insurer ---------------------------------------------------------------------------

    async def _presettle(self, order: PaymentOrder, ask: PresettleAsk, first: bool) -> Outcome:
        try:
            answer = await self._deps.insurance.presettle(ask)
        except (errors.InvalidArgument, errors.StateConflict, errors.NotFound) as error:
            return Outcome(error=error, forget=True)  # refused before anything reached the insurer
        except errors.InsurerRejected as error:
            # A refused 2206 leaves 2201/2204 behind: the order is forgotten once they are undone.
            return Outcome(error=error, forget=await self._nothing_open(order))
        except errors.InsurerUnavailable as error:
            # Unreachable is not "nothing happened": insurance-adapter may have been cut off after
            # 2201/2204 landed. A first attempt is forgotten only once nothing is open for it;
            # otherwise the order waits PRESETTLING for the HIS's retry or its expiry, which undoes it.
            return Outcome(error=error, forget=first and await self._nothing_open(order))
        except errors.OutcomeUnknown as error:
            reason = error.message
            return Outcome(lambda o, _now: o.presettlement_unknown(reason), error=error)
        problems = answer.split.problems(order.total) if answer.split else ["no split in the answer"]
        if problems:
            await self._deps.insurance.cancel_presettlement(
                keys.insurer_request_id(order.order_id, "cancel"), answer.settlement_id
            )
            refused = errors.InsurerRejected("the insurer's split does not add up: " + "; ".join(problems))
            return Outcome(error=refused, forget=True)
        assert answer.split is not None
        split = answer.split
        return Outcome(lambda o, _now: o.accept_presettlement(answer.settlement_id, split, answer.insutype))

    async def _nothing_open(self, order: PaymentOrder) -> bool:
        """Whether the insurer holds nothing for `order`, after undoing whatever it held."""
        request_id = keys.insurer_request_id(order.order_id, "cancel")
        try:
            await self._deps.insurance.cancel_presettlement(request_id, "", order.order_id)
        except (errors.StateConflict, errors.NotFound):
            return True  # nothing open for this order
        except errors.MedPayError:
            return False
        return True

    async def _settle(self, order: PaymentOrder) -> Outcome:
        if not order.insured:
            return Outcome(lambda o, now: _confirm(o, None, now))
        try:
            answer = await self._deps.insurance.settle(
                keys.insurer_request_id(order.order_id, "settle"), order.settlement_id
            )
        except errors.InsurerRejected as error:
            return Outcome(_refused(self._deps.new_id("rfd"), error.message))
        except errors.MedPayError as error:
            # Unknown, unreachable or unexpected: asked again on the schedule; never guessed.
            reason = f"{error.reason}: {error.message}"
            return Outcome(lambda o, _now: o.note(reason))
        if answer.status is InsurerStatus.SETTLED:
            return Outcome(lambda o, now: _confirm(o, answer, now))
        if answer.status in (InsurerStatus.FAILED, InsurerStatus.CANCELLED):
            reason = answer.status_reason or f"settlement {answer.status.value}"
            return Outcome(_refused(self._deps.new_id("rfd"), reason))
        status = answer.status.value
        return Outcome(lambda o, _now: o.note(f"insurer settlement is {status}"))

    async def _cancel_presettlement(self, order: PaymentOrder) -> Outcome:
        request_id = keys.insurer_request_id(order.order_id, "cancel")
        try:
            await self._deps.insurance.cancel_presettlement(request_id, order.settlement_id, order.order_id)
        except (errors.StateConflict, errors.NotFound):
            pass  # nothing open at the insurer for this order (settled, failed or never pre-settled)
        except errors.MedPayError as error:
            return Outcome(error=error)
        return Outcome(lambda o, _now: o.presettlement_undone())

    async def _revoke(self, order: PaymentOrder, refund_id: str) -> Outcome:
        refund = order.refund_by_id(refund_id)
        request_id = keys.insurer_request_id(order.order_id, f"revoke{refund.refund_no}")
        try:
            await self._deps.insurance.revoke_settlement(request_id, order.settlement_id, refund.reason)
        except errors.OutcomeUnknown as error:
            reason = error.message
            return Outcome(lambda o, _now: o.note(f"2208: {reason}"), error=error)
        except errors.InsurerUnavailable as error:
            return Outcome(error=error)
        except errors.MedPayError as error:
            message = error.message
            return Outcome(lambda o, _now: o.refund_failed(o.refund_by_id(refund_id), message), error=error)
        return Outcome(lambda o, _now: o.settlement_revoked_for(o.refund_by_id(refund_id)))

    # ---- a refund by lines: 2208, 2204 + 2206 of what remains, 2207 ------------------------------

    async def _revoke_for_lines(self, order: PaymentOrder, refund_id: str) -> Outcome:
        line_refund = _line_refund(order, refund_id)
        request_id = _lines_request_id(order, line_refund, "revoke")
        try:
            await self._deps.insurance.revoke_settlement(
                request_id, line_refund.revoked_settlement_id, line_refund.reason
            )
        except (errors.InsurerRejected, errors.StateConflict, errors.NotFound) as error:
            message = error.message
            refused = _at_stage(
                refund_id, LineRefundStage.REVOKING, lambda o, _now: o.line_refund_not_revoked(message)
            )
            return Outcome(refused, error=error)
        except errors.MedPayError as error:
            # Unknown or unreachable: the same 2208 again on the schedule (a replay at the adapter).
            return _still_waiting("2208", error)
        return Outcome(
            _at_stage(refund_id, LineRefundStage.REVOKING, lambda o, _now: o.line_refund_revoked())
        )

    async def _presettle_remaining(self, order: PaymentOrder, refund_id: str) -> Outcome:
        line_refund = _line_refund(order, refund_id)
        request_id = _lines_request_id(order, line_refund, "presettle")
        try:
            answer = await self._deps.insurance.represettle(
                request_id, order.order_id, line_refund.revoked_settlement_id, order.billed_lines()
            )
        except (
            errors.InsurerRejected,
            errors.InvalidArgument,
            errors.StateConflict,
            errors.NotFound,
        ) as error:
            return _resettle_refused(refund_id, LineRefundStage.PRESETTLING, error)
        except errors.MedPayError as error:
            return _still_waiting("2206 of the remaining lines", error)
        if answer.status is not InsurerStatus.PRESETTLED or answer.split is None:
            return Outcome(lambda o, _now: o.note(f"re-settlement pre-settlement is {answer.status.value}"))
        split = answer.split
        return Outcome(
            _at_stage(
                refund_id,
                LineRefundStage.PRESETTLING,
                lambda o, _now: o.line_refund_presettled(answer.settlement_id, split),
            )
        )

    async def _settle_remaining(self, order: PaymentOrder, refund_id: str) -> Outcome:
        line_refund = _line_refund(order, refund_id)
        request_id = _lines_request_id(order, line_refund, "settle")
        try:
            answer = await self._deps.insurance.settle(request_id, line_refund.new_settlement_id)
        except errors.InsurerRejected as error:
            return _resettle_refused(refund_id, LineRefundStage.SETTLING, error)
        except errors.MedPayError as error:
            return _still_waiting("2207 of the remaining lines", error)
        if answer.status in (InsurerStatus.FAILED, InsurerStatus.CANCELLED):
            refusal = errors.InsurerRejected(answer.status_reason or f"settlement {answer.status.value}")
            return _resettle_refused(refund_id, LineRefundStage.SETTLING, refusal)
        if answer.status is not InsurerStatus.SETTLED:
            return Outcome(lambda o, _now: o.note(f"re-settlement is {answer.status.value}"))
        return Outcome(
            _at_stage(
                refund_id,
                LineRefundStage.SETTLING,
                lambda o, now: o.line_refund_settled(answer.setl_id, answer.split, now),
            )
        )

    # ---- the channel ---------------------------------------------------------------------------

    async def _place(self, order: PaymentOrder, out_trade_no: str, inputs: StepInputs) -> Outcome:
        payment = _payment(order, out_trade_no)
        assert payment.expires_at is not None
        text = inputs.description or f"{order.campus_code} 门诊缴费"
        if payment.method == METHOD_BARCODE:
            return await self._pay_by_code(payment, text, inputs.auth_code)
        channel, notify_url = (
            self._deps.channel_for(payment.channel),
            self._deps.notify_url_for(payment.channel),
        )
        try:
            if payment.method == METHOD_JSAPI:
                jsapi = await channel.place_jsapi_order(
                    out_trade_no, payment.amount, text, notify_url, payment.expires_at, inputs.payer_openid
                )
                placed = ports.PlacedOrder(out_trade_no, jsapi.prepay_id)
            else:
                placed = await channel.place_order(
                    out_trade_no, payment.amount, text, notify_url, payment.expires_at
                )
        except ports.ChannelRejected as error:
            return Outcome(_attempt_ended(out_trade_no, PaymentStatus.FAILED), error=as_runtime_error(error))
        except (ports.ChannelOutcomeUnknown, ports.ChannelProtocolError) as error:
            return Outcome(_attempt_unknown(out_trade_no), error=as_runtime_error(error))
        except ports.ChannelError as error:
            # Unavailable: nothing happened; the attempt stays open and is queried on the schedule.
            return Outcome(error=as_runtime_error(error))
        code_url = placed.code_url
        return Outcome(lambda o, _now: _if_open(o, out_trade_no, lambda p: o.payment_placed(p, code_url)))

    async def _record_window_payment(self, order: PaymentOrder, out_trade_no: str) -> Outcome:
        """The window channel confirms what the HIS reported: PAID, applied as a channel's word."""
        payment = _payment(order, out_trade_no)
        report = ports.WindowReport(
            operator_id=payment.operator_id,
            taken_at=payment.created_at,
            pos_reference_no=payment.pos.reference_no if payment.pos else "",
        )
        try:
            status = await self._deps.window_channel(payment.channel).record_taken(
                out_trade_no, payment.amount, report
            )
        except ports.ChannelRejected as error:
            return Outcome(_attempt_ended(out_trade_no, PaymentStatus.FAILED), error=as_runtime_error(error))
        except ports.ChannelError as error:
            return Outcome(error=as_runtime_error(error))
        return Outcome(trade_news(status))

    async def _pay_by_code(self, payment: Payment, text: str, code: ports.PaymentCode | None) -> Outcome:
        """Sent once: whatever happens the attempt is marked sent, and an answer that is not final
        (USERPAYING, lost, unreadable) is settled by queries, then a reverse; never a resend."""
        if code is None:
            raise errors.InvalidArgument(
                [errors.FieldViolation("auth_code", "required for PAY_METHOD_BARCODE")]
            )
        out_trade_no, masked = payment.out_trade_no, code.masked

        def sent(o: PaymentOrder, now: datetime, then: Record = _nothing) -> None:
            _if_open(
                o, out_trade_no, lambda p: o.code_payment_sent(p, masked, now + process.REVERSE_NOT_BEFORE)
            )
            then(o, now)

        try:
            status = await self._deps.channel_for(payment.channel).pay_by_code(
                out_trade_no, payment.amount, text, code
            )
        except ports.ChannelRejected as error:
            ended = _attempt_ended(out_trade_no, PaymentStatus.FAILED)
            return Outcome(lambda o, now: sent(o, now, ended), error=as_runtime_error(error))
        except (ports.ChannelOutcomeUnknown, ports.ChannelProtocolError) as error:
            unknown = _attempt_unknown(out_trade_no)
            return Outcome(lambda o, now: sent(o, now, unknown), error=as_runtime_error(error))
        except ports.ChannelError as error:
            # Unavailable: the code never reached the channel. The attempt is not marked sent: the
            # cashier's retry sends it (the same out_trade_no); otherwise its window's end ends it.
            return Outcome(error=as_runtime_error(error))
        return Outcome(lambda o, now: sent(o, now, trade_news(status)))

    async def _reverse(self, order: PaymentOrder, out_trade_no: str) -> Outcome:
        """Query first (the patient may have confirmed at the last moment: then it is paid, and
        kept); reverse only without a final answer. A reverse that did not go through is sent
        again on the schedule (it is idempotent)."""
        channel = self._deps.channel_for(_payment(order, out_trade_no).channel)
        try:
            status = await channel.query(out_trade_no)
            if status.state in _PAID or status.state in _ENDED:
                return Outcome(trade_news(status))
        except ports.ChannelRejected as error:
            if error.reason is not ports.RejectionReason.NOT_FOUND:
                return Outcome(error=as_runtime_error(error))
        except ports.ChannelError as error:
            return Outcome(error=as_runtime_error(error))
        try:
            await channel.reverse(out_trade_no)
        except ports.ChannelRejected as error:
            if error.reason is ports.RejectionReason.NOT_FOUND:
                return Outcome(_attempt_ended(out_trade_no, PaymentStatus.CLOSED))
            return Outcome(error=as_runtime_error(error))
        except ports.ChannelError as error:
            return Outcome(error=as_runtime_error(error))
        return Outcome(_attempt_ended(out_trade_no, PaymentStatus.CLOSED))

    async def _query_payment(
        self, order: PaymentOrder, out_trade_no: str, close_unpaid: bool, unseen_may_land: bool = False
    ) -> Outcome:
        payment = order.payment_by_trade_no(out_trade_no)
        try:
            channel = self._deps.channel if payment is None else self._deps.channel_for(payment.channel)
            status = await channel.query(out_trade_no)
            if status.state in _PAID:
                return Outcome(paid(status))
            if status.state in _ENDED:
                return Outcome(_attempt_ended(out_trade_no, _ENDED[status.state]))
            if close_unpaid and status.state is ports.TradeState.NOT_PAID:
                # Closed only after a query showed it unpaid; a patient paying now is refused by it.
                await channel.close(out_trade_no)
                return Outcome(_attempt_ended(out_trade_no, PaymentStatus.CLOSED))
        except ports.ChannelRejected as error:
            if unseen_may_land and error.reason is ports.RejectionReason.NOT_FOUND:
                return Outcome()
            placed = payment is not None and bool(payment.code_url)
            return self._query_refused(out_trade_no, error, close_unpaid, placed)
        except ports.ChannelError as error:
            return Outcome(error=as_runtime_error(error))
        return Outcome()

    def _query_refused(
        self, out_trade_no: str, error: ports.ChannelRejected, closing: bool, placed: bool = False
    ) -> Outcome:
        reason = error.reason
        if reason is ports.RejectionReason.ALREADY_PAID:
            return Outcome()  # paid between the query and the close: the next query applies it
        if reason is ports.RejectionReason.ALREADY_CLOSED:
            return Outcome(_attempt_ended(out_trade_no, PaymentStatus.CLOSED))
        if reason is ports.RejectionReason.NOT_FOUND:
            if placed and not closing:
                # The channel answered the placement with a QR code, so it is not lost: Alipay
                # creates a precreated trade only when the patient scans it (TRADE_NOT_EXIST until
                # then). Unpaid, then; it is closed when its QR code expires, like any other.
                return Outcome()
            # The channel never saw it (the placement was lost): nothing can be collected on it.
            return Outcome(_attempt_ended(out_trade_no, PaymentStatus.CLOSED))
        return Outcome(error=as_runtime_error(error))

    async def _pay_out(self, order: PaymentOrder, refund_id: str) -> Outcome:
        refund = order.refund_by_id(refund_id)
        payment = next((p for p in order.payments if p.payment_id == refund.payment_id), None)
        if refund.cash.fen == 0 or payment is None or payment.channel == CHANNEL_NONE:
            return Outcome(_refund_done(refund_id, ""))
        try:
            answer = await self._deps.channel_for(payment.channel).refund(
                refund.out_refund_no, payment.out_trade_no, refund.cash, payment.amount, refund.reason
            )
        except ports.ChannelRejected as error:
            return Outcome(_refund_refused(refund_id, error))
        except (ports.ChannelUnavailable, ports.ChannelOutcomeUnknown) as error:
            # Not now (unreachable, rate limited, the merchant's balance too low: WeChat NOT_ENOUGH)
            # or no answer (SYSTEM_ERROR, a timeout): the refund stays PENDING and is sent again on
            # the schedule with the same out_refund_no, which the channel answers as a replay when
            # the first one did land. Never a refusal: the patient is still owed the money.
            reason = f"refund not issued yet, sent again later: {error}"
            return Outcome(lambda o, _now: o.note(reason))
        except ports.ChannelError as error:
            reason = str(error)
            return Outcome(lambda o, _now: o.refund_unknown(o.refund_by_id(refund_id), reason))
        return Outcome(refund_answered(answer))

    async def _query_refund(self, order: PaymentOrder, refund_id: str) -> Outcome:
        refund = order.refund_by_id(refund_id)
        payment = next((p for p in order.payments if p.payment_id == refund.payment_id), None)
        out_trade_no = "" if payment is None else payment.out_trade_no
        try:
            channel = self._deps.channel if payment is None else self._deps.channel_for(payment.channel)
            answer = await channel.query_refund(refund.out_refund_no, out_trade_no)
        except ports.ChannelRejected as error:
            if error.reason is ports.RejectionReason.NOT_FOUND:
                # The refund never reached the channel: it is sent again with its out_refund_no.
                return Outcome(lambda o, _now: o.refund_not_at_channel(o.refund_by_id(refund_id)))
            return Outcome(error=as_runtime_error(error))
        except ports.ChannelError:
            return Outcome()
        return Outcome(refund_answered(answer))


# ---- outcomes ----------------------------------------------------------------------------------------


def paid(status: ports.ChannelTradeStatus) -> Record:
    """The channel's word that an attempt was paid (a query answer or a notification)."""

    def record(order: PaymentOrder, now: datetime) -> None:
        if order.payment_by_trade_no(status.out_trade_no) is None:
            # A key in our shape that this order never placed: money no order knows (长款),
            # left to reconciliation, never applied to the order.
            log.error("channel reports payment %s that no order knows", status.out_trade_no)
            return
        seen = ChannelPaymentSeen(
            status.out_trade_no,
            status.transaction_id or "",
            Money(status.amount.fen),
            status.success_time or now,
        )
        order.record_channel_success(seen, now)

    return record


def trade_news(status: ports.ChannelTradeStatus) -> Record:
    if status.state in _PAID:
        return paid(status)
    if status.state in _ENDED:
        return _attempt_ended(status.out_trade_no, _ENDED[status.state])
    return _nothing


def refund_answered(answer: ports.ChannelRefund) -> Record:
    """The channel's word on a refund (its answer, a query or a notification); idempotent."""

    def record(order: PaymentOrder, now: datetime) -> None:
        refund = next((r for r in order.refunds if r.out_refund_no == answer.out_refund_no), None)
        # An ABNORMAL refund a person re-routed at the channel still ends by the channel's word.
        if refund is None or not (refund.is_open or refund.status is RefundStatus.ABNORMAL):
            return
        if answer.status is ports.RefundStatus.SUCCEEDED:
            order.refund_succeeded(refund, answer.refund_id, answer.success_time or now)
        elif answer.status is ports.RefundStatus.FAILED:
            order.refund_failed(refund, f"channel status {answer.channel_status}")
        elif answer.status is ports.RefundStatus.ABNORMAL:
            if refund.status is not RefundStatus.ABNORMAL:
                order.refund_abnormal(refund, answer.refund_id)
        elif refund.is_open:
            order.refund_processing(refund, answer.refund_id)

    return record


def _refund_refused(refund_id: str, error: ports.ChannelRejected) -> Record:
    """The channel said no to the refund. Refused credentials are ours to fix, not the patient's
    refusal: the refund stays owed and the order goes to a person; any other no is final."""
    message = f"{error.code}: {error.message}"

    def record(order: PaymentOrder, now: datetime) -> None:
        refund = order.refund_by_id(refund_id)
        if error.reason is ports.RejectionReason.NOT_AUTHORISED:
            order.refund_not_sent(refund, f"the channel refused our credentials ({message})")
        else:
            order.refund_failed(refund, message)

    return record


def _refund_done(refund_id: str, channel_refund_id: str) -> Record:
    def record(order: PaymentOrder, now: datetime) -> None:
        order.refund_succeeded(order.refund_by_id(refund_id), channel_refund_id, now)

    return record


def _confirm(order: PaymentOrder, answer: InsurerSettlement | None, now: datetime) -> None:
    if order.awaits_settlement:
        setl_id, split = (answer.setl_id, answer.split) if answer else ("", None)
        order.settlement_confirmed(setl_id, split, now)


def _refused(refund_id: str, reason: str) -> Record:
    """2207 refused for good: the cash goes back (a COMPENSATION refund) or the order closes."""

    def record(order: PaymentOrder, now: datetime) -> None:
        if order.awaits_settlement:
            order.settlement_refused(refund_id, reason, now)

    return record


def _line_refund(order: PaymentOrder, refund_id: str) -> LineRefund:
    found = next((r for r in order.line_refunds if r.refund_id == refund_id), None)
    if found is None:
        raise errors.NotFound(f"no refund by lines {refund_id} on {order.order_id}")
    return found


def _lines_request_id(order: PaymentOrder, line_refund: LineRefund, step: str) -> str:
    """The insurer request_id of one step of a refund by lines: from the order and its number."""
    return keys.insurer_request_id(order.order_id, f"lines{line_refund.line_refund_no}-{step}")


def _at_stage(refund_id: str, stage: LineRefundStage, change: Record) -> Record:
    """Apply `change` only if the refund by lines still stands where its step was decided
    (another caller may have recorded the same answer first)."""

    def record(order: PaymentOrder, now: datetime) -> None:
        found = next((r for r in order.line_refunds if r.refund_id == refund_id), None)
        if found is None or found.stage is not stage:
            return
        change(order, now)

    return record


def _resettle_refused(refund_id: str, stage: LineRefundStage, error: errors.MedPayError) -> Outcome:
    message = error.message
    return Outcome(_at_stage(refund_id, stage, lambda o, _now: o.line_refund_refused(message)), error=error)


def _still_waiting(what: str, error: errors.MedPayError) -> Outcome:
    reason = f"{what}: {error.reason}: {error.message}"
    return Outcome(lambda o, _now: o.note(reason), error=error)


def _attempt_ended(out_trade_no: str, status: PaymentStatus) -> Record:
    return lambda o, _now: _if_open(o, out_trade_no, lambda p: o.payment_ended(p, status))


def _attempt_unknown(out_trade_no: str) -> Record:
    return lambda o, _now: _if_open(o, out_trade_no, o.payment_unknown)


def _if_open(order: PaymentOrder, out_trade_no: str, change: Callable[..., None]) -> None:
    payment = order.payment_by_trade_no(out_trade_no)
    if payment is not None and payment.is_open:
        change(payment)


def _payment(order: PaymentOrder, out_trade_no: str) -> Payment:
    payment = order.payment_by_trade_no(out_trade_no)
    if payment is None:
        raise errors.NotFound(f"no payment {out_trade_no} on {order.order_id}")
    return payment
