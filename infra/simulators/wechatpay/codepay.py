"""付款码支付 (code payment) at the simulated gateway: POST /v3/pay/transactions/codepay, and
POST /v3/pay/transactions/out-trade-no/{out_trade_no}/reverse.

A WeChat payment code is 18 digits starting 10-15 (anything else: 400 PARAM_ERROR, nothing kept).
What the patient does is armed by a test as a fault on operation "codepay" (one firing per new code
payment): without one the phone pays at once (200 and the SUCCESS transaction); `confirms`,
`cancels` and `never` answer 202 USERPAYING (the patient must enter a password) and the order turns
SUCCESS (confirms) or PAYERROR (cancels) `delay_s` seconds later on the simulator's clock, or stays
USERPAYING (never) until the merchant reverses it. /sim/pay on a USERPAYING order is the patient
confirming now, /sim/codepay/cancel the patient cancelling now. Code payments send no notification
(the request has no notify_url).

Reverse (撤销): any state but refunded becomes REVOKED (a paid order's money goes back to the payer),
again is a no-op. The docs say not to reverse sooner than 15 s after the payment call; the simulator
enforces it (400 INVALID_REQUEST before `reverse_not_before_s`), so a client that reverses too early
is caught.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from infra.simulators.wechatpay.gateway import Clock, Merchant, WechatError, param_error
from infra.simulators.wechatpay.patient import CANCELS, CONFIRMS, NEVER, confirmed
from infra.simulators.wechatpay.store import SimOrder, SimStore

PATIENT_MODES = frozenset({CONFIRMS, CANCELS, NEVER})
PAYMENT_CODE = re.compile(r"^1[0-5]\d{16}$")
_OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-*|]{6,32}$")
REVERSE_NOT_BEFORE_S = 15.0
USERPAYING_MESSAGE = "用户支付中，需要输入密码"


class CodePayDesk:
    def __init__(
        self, store: SimStore, merchant: Merchant, clock: Clock, reverse_not_before_s: float
    ) -> None:
        self._store, self._merchant, self._clock = store, merchant, clock
        self._reverse_not_before = timedelta(seconds=reverse_not_before_s)

    def pay(
        self, body: Mapping[str, object], traceparent: str | None, patient: tuple[str, float] | None
    ) -> SimOrder:
        """`patient`: (mode, delay_s) when the patient must confirm with a password. Replaying an
        out_trade_no answers the order as it stands (never a second debit)."""
        order = self._new_order(body, traceparent)
        existing = self._store.order(order.out_trade_no)
        if existing is not None:
            if (existing.trade_type, existing.total_fen) != ("MICROPAY", order.total_fen):
                raise WechatError(403, "OUT_TRADE_NO_USED", "商户订单号重复")
            return existing
        now = self._now()
        if patient is None:
            order = confirmed(order, now)
        else:
            mode, delay_s = patient
            action = None if mode == NEVER else mode
            order = replace(order, patient_action=action, patient_at=now + timedelta(seconds=delay_s))
        self._store.add_order(order)
        return order

    def reverse(self, out_trade_no: str, body: Mapping[str, object], current: SimOrder) -> None:
        if body.get("mchid") != self._merchant.mchid or body.get("appid") != self._merchant.appid:
            raise param_error("mchid 或 appid 与请求签名的商户号不一致")
        if current.trade_type != "MICROPAY":
            raise WechatError(400, "INVALID_REQUEST", "仅付款码支付订单可以撤销")
        if current.trade_state == "REVOKED":
            return
        if current.trade_state == "REFUND":
            raise WechatError(400, "INVALID_REQUEST", "订单已发生退款，不能撤销")
        if self._clock().astimezone(UTC) < current.created_at + self._reverse_not_before:
            raise WechatError(400, "INVALID_REQUEST", "请在支付请求15秒后再调用撤销")
        revoked = replace(current, trade_state="REVOKED", patient_action=None, patient_at=None)
        self._store.replace_order(revoked)

    def cancel(self, current: SimOrder) -> SimOrder:
        """The patient closes the password prompt: a USERPAYING code payment fails (PAYERROR)."""
        if current.trade_state != "USERPAYING":
            raise WechatError(409, "INVALID_REQUEST", f"订单状态为{current.trade_state}，不在用户支付中")
        failed = replace(current, trade_state="PAYERROR", patient_action=None, patient_at=None)
        self._store.replace_order(failed)
        return failed

    def _new_order(self, body: Mapping[str, object], traceparent: str | None) -> SimOrder:
        if body.get("mchid") != self._merchant.mchid or body.get("appid") != self._merchant.appid:
            raise param_error("mchid 或 appid 与请求签名的商户号不一致")
        out_trade_no = body.get("out_trade_no")
        if not isinstance(out_trade_no, str) or not _OUT_TRADE_NO.fullmatch(out_trade_no):
            raise param_error("out_trade_no 格式错误")
        payer = body.get("payer")
        code = payer.get("auth_code") if isinstance(payer, dict) else None
        if not isinstance(code, str) or not PAYMENT_CODE.fullmatch(code):
            raise param_error("付款码无效，请重新扫码")  # never echo the code
        description, amount = body.get("description"), body.get("amount")
        if not isinstance(description, str) or not 0 < len(description) <= 127:
            raise param_error("description 必填，且不超过127个字符")
        total = amount.get("total") if isinstance(amount, dict) else None
        if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
            raise param_error("amount.total 必须为正整数（分）")
        scene = body.get("scene_info")
        if not isinstance(scene, dict) or not isinstance(scene.get("store_info"), dict):
            raise param_error("scene_info.store_info 必填")
        return SimOrder(
            out_trade_no=out_trade_no, mchid=self._merchant.mchid, appid=self._merchant.appid,
            trade_type="MICROPAY", description=description, attach=None, total_fen=total,
            notify_url="", time_expire=None, code_url=None, prepay_id=None, trade_state="USERPAYING",
            transaction_id=None, success_time=None, payer_openid=f"oUpF8u{secrets.token_hex(11)}",
            created_at=self._clock().astimezone(UTC), traceparent=traceparent,
        )  # fmt: skip

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC).replace(microsecond=0)
